//! Syslog RFC 5424: `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD] MSG`,
//! `-` for an absent header field. Structured-data parameters become fields
//! `sd.<SD-ID>.<PARAM-NAME>` with `\"`, `\\` and `\]` unescaped. A UTF-8 BOM at
//! the start of MSG is dropped.

use crate::Fields;

pub fn parse_rfc5424(line: &str) -> Option<Fields> {
    let mut fields = Fields::new();
    let after = line.strip_prefix('<')?;
    let end = after.find('>')?;
    let pri: u16 = after[..end].parse().ok()?;
    if pri > 191 {
        return None;
    }
    fields.push(("log.syslog.priority".into(), pri.to_string()));
    let rest = after[end + 1..].strip_prefix("1 ")?;
    let mut parts = rest.splitn(6, ' ');
    let mut header = |name: &str, fields: &mut Fields| -> Option<()> {
        let v = parts.next()?;
        if v.is_empty() {
            return None;
        }
        if v != "-" {
            fields.push((name.to_string(), v.to_string()));
        }
        Some(())
    };
    header("timestamp", &mut fields)?;
    header("host.name", &mut fields)?;
    header("process.name", &mut fields)?;
    header("process.pid", &mut fields)?;
    header("log.syslog.msgid", &mut fields)?;
    let tail = parts.next().unwrap_or("");
    let message = if let Some(after_nil) = tail.strip_prefix('-') {
        after_nil
    } else if tail.starts_with('[') {
        structured_data(tail, &mut fields)?
    } else {
        return None;
    };
    let message = message.strip_prefix(' ').unwrap_or(message);
    let message = message.strip_prefix('\u{feff}').unwrap_or(message);
    fields.push(("message".into(), message.to_string()));
    Some(fields)
}

/// Parses `[id k="v" …][id2 …]`; returns what follows.
fn structured_data<'a>(mut s: &'a str, fields: &mut Fields) -> Option<&'a str> {
    while let Some(inner) = s.strip_prefix('[') {
        let id_end = inner.find([' ', ']'])?;
        let id = &inner[..id_end];
        if id.is_empty() {
            return None;
        }
        let mut rest = &inner[id_end..];
        loop {
            if let Some(after) = rest.strip_prefix(']') {
                rest = after;
                break;
            }
            rest = rest.strip_prefix(' ')?;
            let eq = rest.find('=')?;
            let name = &rest[..eq];
            let quoted = rest[eq + 1..].strip_prefix('"')?;
            let (value, after) = unescape_until_quote(quoted)?;
            fields.push((format!("sd.{id}.{name}"), value));
            rest = after;
        }
        s = rest;
    }
    Some(s)
}

/// RFC 5424 PARAM-VALUE escapes `"`, `\\` and `]`.
fn unescape_until_quote(s: &str) -> Option<(String, &str)> {
    crate::quoted::read_quoted(s, |e| matches!(e, '"' | '\\' | ']').then_some(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_examples() {
        let f = parse_rfc5424(
            r#"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3" eventSource="Appl\"ication" eventID="1011"][examplePriority@32473 class="high"] An application event"#,
        )
        .unwrap();
        let get = |k: &str| f.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("timestamp"), Some("2003-10-11T22:14:15.003Z"));
        assert_eq!(get("host.name"), Some("mymachine.example.com"));
        assert_eq!(get("process.name"), Some("evntslog"));
        assert_eq!(get("process.pid"), None);
        assert_eq!(get("log.syslog.msgid"), Some("ID47"));
        assert_eq!(
            get("sd.exampleSDID@32473.eventSource"),
            Some("Appl\"ication")
        );
        assert_eq!(get("sd.examplePriority@32473.class"), Some("high"));
        assert_eq!(get("message"), Some("An application event"));

        let f = parse_rfc5424(
            "<34>1 2003-10-11T22:14:15.003Z host su - ID47 - \u{feff}'su root' failed",
        )
        .unwrap();
        assert_eq!(f.last().unwrap().1, "'su root' failed");
        for bad in [
            "<34>2 x",
            "<34>1 a b c d e [broken",
            "<34>1 a b c d",
            "34>1 a b c d e -",
        ] {
            assert_eq!(parse_rfc5424(bad), None, "{bad}");
        }
    }
}
