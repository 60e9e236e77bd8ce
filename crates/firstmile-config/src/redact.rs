//! The one rule for secrets in what firstmile prints: every URL, connection
//! string and error message goes through [`redact`] before it reaches a log
//! line, an error, a health answer or `status`/`audit` output.

use std::sync::LazyLock;

use regex::Regex;

/// `scheme://user:password@` → `scheme://user:***@`.
static USERINFO: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b([a-z][a-z0-9+.\-]*://)([^/@\s:]*):[^/@\s]*@").expect("valid regex")
});

/// `password=…` and other parameters named like a secret, in a query string
/// (`?password=x&…`) or a key/value connection string (`password=x host=…`).
static SECRET_PARAMETER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)\b(password|passwd|pwd|pass|secret|client_secret|token|access_token|api_?key|sslpassword)=([^&\s'"]*)"#,
    )
    .expect("valid regex")
});

/// `text` with every URL's password and every secret-named parameter's value
/// replaced by `***`.
pub fn redact(text: &str) -> String {
    let text = USERINFO.replace_all(text, "${1}${2}:***@");
    SECRET_PARAMETER.replace_all(&text, "${1}=***").into_owned()
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_and_secret_parameters_are_hidden_the_rest_kept() {
        for (text, expected) in [
            (
                "postgresql://fm:hunter2@db:5432/events?sslmode=require",
                "postgresql://fm:***@db:5432/events?sslmode=require",
            ),
            (
                "postgresql://fm@db/events?password=hunter2&sslmode=verify-full",
                "postgresql://fm@db/events?password=***&sslmode=verify-full",
            ),
            (
                "host=db user=fm password=hunter2 dbname=events",
                "host=db user=fm password=*** dbname=events",
            ),
            // A value runs to `&`, white space or a quote: hiding the `)`
            // after it too errs on the safe side.
            (
                "error sending request for url (https://u:p%40ss@es:9200/_bulk?api_key=abc) x",
                "error sending request for url (https://u:***@es:9200/_bulk?api_key=*** x",
            ),
            ("PASSWORD=x TOKEN=y", "PASSWORD=*** TOKEN=***"),
            // Nothing secret: unchanged.
            ("http://127.0.0.1:9200", "http://127.0.0.1:9200"),
            ("postgresql://fm@db/events", "postgresql://fm@db/events"),
            ("bypass=1 compass=2", "bypass=1 compass=2"),
        ] {
            assert_eq!(redact(text), expected, "{text}");
        }
    }
}
