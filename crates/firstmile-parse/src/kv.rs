//! `key=value` pairs (logfmt and the common firewall/app style):
//! `level=info msg="disk full" user=alice retries=3 empty=`. Values may be
//! double-quoted with `\"` and `\\` escapes. Words without `=` are kept, in
//! order, as `message`.

use crate::Fields;

/// `None` when the line holds no `key=value` pair at all.
pub fn parse_kv(line: &str) -> Option<Fields> {
    let mut fields = Fields::new();
    let mut loose = Vec::new();
    let mut rest = line.trim_start();
    while !rest.is_empty() {
        let word_end = rest.find([' ', '=', '"']).unwrap_or(rest.len());
        let key = &rest[..word_end];
        if rest[word_end..].starts_with('=') && !key.is_empty() {
            let value_start = &rest[word_end + 1..];
            let (value, after) = if let Some(q) = value_start.strip_prefix('"') {
                unquote(q)?
            } else {
                let end = value_start.find(' ').unwrap_or(value_start.len());
                (value_start[..end].to_string(), &value_start[end..])
            };
            fields.push((key.to_string(), value));
            rest = after.trim_start();
        } else {
            let end = rest.find(' ').unwrap_or(rest.len());
            loose.push(&rest[..end]);
            rest = rest[end..].trim_start();
        }
    }
    if fields.is_empty() {
        return None;
    }
    if !loose.is_empty() {
        fields.push(("message".into(), loose.join(" ")));
    }
    Some(fields)
}

/// logfmt escapes the quote, the backslash and newlines.
fn unquote(s: &str) -> Option<(String, &str)> {
    crate::quoted::read_quoted(s, |e| match e {
        '"' | '\\' => Some(e),
        'n' => Some('\n'),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logfmt_and_kv() {
        let f = parse_kv(
            r#"level=info msg="disk \"sda\" full" user=alice empty= retries=3 trailing words"#,
        )
        .unwrap();
        assert_eq!(
            f,
            vec![
                ("level".into(), "info".into()),
                ("msg".into(), "disk \"sda\" full".into()),
                ("user".into(), "alice".into()),
                ("empty".into(), "".into()),
                ("retries".into(), "3".into()),
                ("message".into(), "trailing words".into()),
            ]
        );
        assert_eq!(parse_kv("no pairs here"), None);
        assert_eq!(parse_kv(r#"a="unterminated"#), None);
    }
}
