//! ArcSight Common Event Format:
//! `CEF:Version|Vendor|Product|Version|Signature ID|Name|Severity|Extension`,
//! alone or after a syslog header. Header fields escape `\|` and `\\`;
//! extension values run to the next ` key=` and escape `\=`, `\\`, `\n`, `\r`.
//! Common extension keys map to ECS names; every key is also kept as
//! `cef.extension.<key>`.

use crate::Fields;

const MAPPED: &[(&str, &str)] = &[
    ("src", "source.ip"),
    ("spt", "source.port"),
    ("dst", "destination.ip"),
    ("dpt", "destination.port"),
    ("suser", "source.user.name"),
    ("duser", "user.name"),
    ("shost", "source.address"),
    ("dhost", "destination.address"),
    ("act", "event.action"),
    ("outcome", "event.outcome"),
    ("request", "url.original"),
    ("requestMethod", "http.request.method"),
    ("requestClientApplication", "user_agent.original"),
    ("msg", "message"),
];

pub fn parse_cef(line: &str) -> Option<Fields> {
    let start = line.find("CEF:")?;
    let body = &line[start + 4..];
    let mut fields = Fields::new();
    let mut header = Vec::with_capacity(7);
    let mut current = String::new();
    let mut chars = body.char_indices();
    let mut extension_at = None;
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, e @ ('|' | '\\'))) => current.push(e),
                Some((_, other)) => {
                    current.push('\\');
                    current.push(other);
                }
                None => current.push('\\'),
            },
            '|' => {
                header.push(std::mem::take(&mut current));
                if header.len() == 7 {
                    extension_at = Some(i + 1);
                    break;
                }
            }
            _ => current.push(c),
        }
    }
    let extension_at = extension_at?;
    let names = [
        "cef.version",
        "observer.vendor",
        "observer.product",
        "observer.version",
        "event.code",
        "cef.name",
        "event.severity",
    ];
    for (name, value) in names.iter().zip(header) {
        fields.push((name.to_string(), value));
    }
    for (key, value) in extension(&body[extension_at..]) {
        if let Some((_, ecs)) = MAPPED.iter().find(|(k, _)| *k == key) {
            fields.push((ecs.to_string(), value.clone()));
        }
        fields.push((format!("cef.extension.{key}"), value));
    }
    Some(fields)
}

/// Splits `k1=v1 k2=v two k3=v3` where a value runs to the next ` key=`.
fn extension(s: &str) -> Vec<(String, String)> {
    // Positions of unescaped '=' preceded by a key.
    let bytes = s.as_bytes();
    let mut starts = Vec::new(); // (key start, '=' index)
    for (i, &b) in bytes.iter().enumerate() {
        if b != b'=' || (i > 0 && bytes[i - 1] == b'\\') {
            continue;
        }
        let key_start = s[..i]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']')))
            .map_or(0, |p| p + 1);
        let at_boundary = key_start == 0 || bytes[key_start - 1] == b' ';
        if key_start < i && at_boundary {
            starts.push((key_start, i));
        }
    }
    let mut out = Vec::new();
    for (n, &(key_start, eq)) in starts.iter().enumerate() {
        let value_end = starts
            .get(n + 1)
            .map_or(s.len(), |&(next, _)| next.saturating_sub(1));
        let raw = s.get(eq + 1..value_end.max(eq + 1)).unwrap_or("");
        out.push((s[key_start..eq].to_string(), unescape_value(raw.trim_end())));
    }
    out
}

fn unescape_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('=') => out.push('='),
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_extension() {
        let f = parse_cef(
            r"Sep 19 08:26:10 host CEF:0|Security|threat\|manager|1.0|100|worm successfully stopped|10|src=10.0.0.1 dst=2.1.2.2 spt=1232 msg=Detected a threat. No action needed a\=b suser=alice",
        )
        .unwrap();
        let get = |k: &str| f.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("observer.vendor"), Some("Security"));
        assert_eq!(get("observer.product"), Some("threat|manager"));
        assert_eq!(get("event.code"), Some("100"));
        assert_eq!(get("cef.name"), Some("worm successfully stopped"));
        assert_eq!(get("event.severity"), Some("10"));
        assert_eq!(get("source.ip"), Some("10.0.0.1"));
        assert_eq!(get("destination.ip"), Some("2.1.2.2"));
        assert_eq!(get("source.port"), Some("1232"));
        assert_eq!(
            get("message"),
            Some("Detected a threat. No action needed a=b")
        );
        assert_eq!(get("source.user.name"), Some("alice"));
        assert_eq!(get("cef.extension.suser"), Some("alice"));
        assert_eq!(parse_cef("CEF:0|a|b|c"), None);
        assert_eq!(parse_cef("no cef"), None);
    }
}
