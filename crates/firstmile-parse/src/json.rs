//! One JSON object per line, flattened to dotted field names
//! (`{"http":{"status":200}}` → `http.status = 200`). Strings stay as they
//! are; numbers and booleans keep their JSON text; arrays are kept as JSON;
//! `null` is left out. Anything but an object is not an event.

use serde_json::Value;

use crate::Fields;

pub fn parse_json(line: &str) -> Option<Fields> {
    parse_json_within(line, usize::MAX).ok()
}

/// Why a line is not an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonError {
    NotAnObject,
    /// The flattened fields would take more than the budget: every leaf
    /// repeats its whole path, so a deeply nested line of 200 KB can
    /// flatten to gigabytes. Flattening stops at the budget.
    TooLarge {
        budget: usize,
    },
}

/// [`parse_json`], giving up once the flattened names and values take more
/// than `budget` bytes.
pub fn parse_json_within(line: &str, budget: usize) -> Result<Fields, JsonError> {
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(line) else {
        return Err(JsonError::NotAnObject);
    };
    let mut fields = Fields::new();
    let mut left = budget;
    flatten("", &Value::Object(map), &mut fields, &mut left)
        .ok_or(JsonError::TooLarge { budget })?;
    Ok(fields)
}

/// `None` once `left` runs out.
fn flatten(prefix: &str, value: &Value, out: &mut Fields, left: &mut usize) -> Option<()> {
    let mut take = |key: &str, value: String| {
        *left = left.checked_sub(key.len() + value.len())?;
        out.push((key.to_string(), value));
        Some(())
    };
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    // At most as long as the line: the budget is checked
                    // when a leaf takes it.
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out, left)?;
            }
            Some(())
        }
        Value::Null => Some(()),
        Value::String(s) => take(prefix, s.clone()),
        other => take(prefix, other.to_string()),
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

    #[test]
    fn flattening_stops_at_the_budget() {
        // 2,000 leaves under a 10 KB name: 20 MB flattened from a 14 KB line.
        let name = "n".repeat(10_000);
        let leaves: Vec<String> = (0..2_000).map(|i| format!(r#""{i}":1"#)).collect();
        let line = format!(r#"{{"{name}":{{{}}}}}"#, leaves.join(","));
        assert_eq!(
            parse_json_within(&line, 100_000),
            Err(JsonError::TooLarge { budget: 100_000 })
        );
        let small = r#"{"a":{"b":"c"}}"#;
        assert_eq!(
            parse_json_within(small, 4),
            Ok(vec![("a.b".into(), "c".into())])
        );
        assert_eq!(
            parse_json_within(small, 3),
            Err(JsonError::TooLarge { budget: 3 })
        );
    }
}
