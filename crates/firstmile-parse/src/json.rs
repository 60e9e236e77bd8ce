//! One JSON object per line, flattened to dotted field names
//! (`{"http":{"status":200}}` → `http.status = 200`). Strings stay as they
//! are; numbers and booleans keep their JSON text; arrays are kept as JSON;
//! `null` is left out. Anything but an object is not an event.

use serde_json::Value;

use crate::Fields;

pub fn parse_json(line: &str) -> Option<Fields> {
    let Value::Object(map) = serde_json::from_str::<Value>(line).ok()? else {
        return None;
    };
    let mut fields = Fields::new();
    flatten("", &Value::Object(map), &mut fields);
    Some(fields)
}

fn flatten(prefix: &str, value: &Value, out: &mut Fields) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        Value::Null => {}
        Value::String(s) => out.push((prefix.to_string(), s.clone())),
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flattens_objects() {
        let f = parse_json(r#"{"@timestamp":"2026-01-01T00:00:00Z","http":{"status":200,"ok":true},"tags":["a","b"],"gone":null,"msg":"hi"}"#).unwrap();
        assert_eq!(
            f,
            vec![
                ("@timestamp".into(), "2026-01-01T00:00:00Z".into()),
                ("http.ok".into(), "true".into()),
                ("http.status".into(), "200".into()),
                ("msg".into(), "hi".into()),
                ("tags".into(), r#"["a","b"]"#.into()),
            ]
        );
        assert_eq!(parse_json("[1,2]"), None);
        assert_eq!(parse_json("{truncated"), None);
    }
}
