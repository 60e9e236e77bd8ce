//! Web server access logs, common and combined format (Apache, nginx):
//! `host ident user [time] "request" status bytes ["referer" "user-agent"]`.

use crate::Fields;

pub fn parse_access_log(line: &str) -> Option<Fields> {
    let mut fields = Fields::new();
    let (client, rest) = line.split_once(' ')?;
    let (ident, rest) = rest.split_once(' ')?;
    let (user, rest) = rest.split_once(' ')?;
    fields.push(("source.ip".into(), client.to_string()));
    if ident != "-" {
        fields.push(("user.id".into(), ident.to_string()));
    }
    if user != "-" {
        fields.push(("user.name".into(), user.to_string()));
    }
    let rest = rest.strip_prefix('[')?;
    let end = rest.find(']')?;
    fields.push(("timestamp".into(), rest[..end].to_string()));
    let rest = rest[end + 1..].strip_prefix(" \"")?;
    let (request, rest) = quoted(rest)?;
    fields.push(("http.request.line".into(), request.clone()));
    let mut request_parts = request.splitn(3, ' ');
    if let (Some(method), Some(url)) = (request_parts.next(), request_parts.next()) {
        fields.push(("http.request.method".into(), method.to_string()));
        fields.push(("url.original".into(), url.to_string()));
        if let Some(version) = request_parts.next().and_then(|v| v.strip_prefix("HTTP/")) {
            fields.push(("http.version".into(), version.to_string()));
        }
    }
    let rest = rest.strip_prefix(' ')?;
    let (status, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    if status.len() != 3 || !status.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    fields.push(("http.response.status_code".into(), status.to_string()));
    let (bytes, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    if bytes != "-" {
        if !bytes.bytes().all(|b| b.is_ascii_digit()) || bytes.is_empty() {
            return None;
        }
        fields.push(("http.response.body.bytes".into(), bytes.to_string()));
    }
    if let Some(after) = rest.strip_prefix('"') {
        let (referer, rest) = quoted(after)?;
        if referer != "-" {
            fields.push(("http.request.referrer".into(), referer));
        }
        let after = rest.strip_prefix(" \"")?;
        let (agent, _) = quoted(after)?;
        if agent != "-" {
            fields.push(("user_agent.original".into(), agent));
        }
    }
    Some(fields)
}

/// Access logs escape only the quote.
fn quoted(s: &str) -> Option<(String, &str)> {
    crate::quoted::read_quoted(s, |e| (e == '"').then_some('"'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combined_and_common() {
        let f = parse_access_log(
            r#"203.0.113.9 - alice [10/Oct/2000:13:55:36 -0700] "GET /a.gif?x=1 HTTP/1.1" 200 2326 "http://ex.com/" "Mozilla/4.08 [en] (Win98; \"I\")""#,
        )
        .unwrap();
        let get = |k: &str| f.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("source.ip"), Some("203.0.113.9"));
        assert_eq!(get("user.name"), Some("alice"));
        assert_eq!(get("timestamp"), Some("10/Oct/2000:13:55:36 -0700"));
        assert_eq!(get("http.request.method"), Some("GET"));
        assert_eq!(get("url.original"), Some("/a.gif?x=1"));
        assert_eq!(get("http.version"), Some("1.1"));
        assert_eq!(get("http.response.status_code"), Some("200"));
        assert_eq!(get("http.response.body.bytes"), Some("2326"));
        assert_eq!(get("http.request.referrer"), Some("http://ex.com/"));
        assert_eq!(
            get("user_agent.original"),
            Some("Mozilla/4.08 [en] (Win98; \"I\")")
        );

        let f = parse_access_log(r#"::1 - - [10/Oct/2000:13:55:36 +0000] "-" 408 -"#).unwrap();
        assert!(f
            .iter()
            .any(|(k, v)| k == "http.response.status_code" && v == "408"));
        assert!(!f
            .iter()
            .any(|(k, _)| k == "user.name" || k == "http.request.method"));

        for bad in [
            "",
            "a b c d",
            r#"1.2.3.4 - - [x] "GET / HTTP/1.1" 2000 1"#,
            r#"1.2.3.4 - - [x] "GET /" 200 12x"#,
        ] {
            assert_eq!(parse_access_log(bad), None, "{bad}");
        }
    }
}
