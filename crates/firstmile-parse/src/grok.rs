//! Grok patterns (`%{NAME}` and `%{NAME:field}`) compiled to the `regex`
//! crate's linear-time engine: no input, however hostile, makes a pattern
//! backtrack (Logstash's grok on Oniguruma can take seconds on one line).
//! Features only a backtracking engine has — look-around, backreferences,
//! possessive or atomic groups — are refused when the pattern is compiled.

use std::collections::BTreeMap;

use regex::bytes::Regex;

use crate::patterns::BASE;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrokError {
    #[error("unknown grok pattern %{{{0}}}")]
    UnknownPattern(String),
    #[error("grok pattern %{{{0}}} refers to itself")]
    Recursive(String),
    #[error("unterminated %{{ in `{0}`")]
    Unterminated(String),
    #[error(
        "pattern needs a backtracking regex feature (look-around, backreference, atomic or \
         possessive group), which firstmile refuses so that no line can make it slow: {0}"
    )]
    Backtracking(String),
    #[error("invalid pattern: {0}")]
    Regex(String),
}

/// A compiled grok pattern.
#[derive(Debug, Clone)]
pub struct Grok {
    regex: Regex,
    /// Capture group name (`g0`, `g1`, …) → event field name.
    fields: Vec<(String, String)>,
}

impl Grok {
    /// Compiles `pattern` with the base library plus `custom` definitions
    /// (which may use each other and the base ones).
    pub fn compile(pattern: &str, custom: &BTreeMap<String, String>) -> Result<Grok, GrokError> {
        let mut fields = Vec::new();
        let mut stack = Vec::new();
        let expanded = expand(pattern, custom, &mut fields, &mut stack)?;
        let anchored = format!("^(?:{expanded})$");
        let regex = Regex::new(&anchored).map_err(|e| {
            let text = e.to_string();
            if ["look-around", "backreference", "lookbehind", "lookahead"]
                .iter()
                .any(|w| text.contains(w))
            {
                GrokError::Backtracking(text)
            } else {
                GrokError::Regex(text)
            }
        })?;
        Ok(Grok { regex, fields })
    }

    /// The fields of a matching line, in pattern order; `None` if it does not match.
    /// Values that are not UTF-8 are converted lossily.
    pub fn parse(&self, line: &[u8]) -> Option<Vec<(String, String)>> {
        let caps = self.regex.captures(line)?;
        Some(
            self.fields
                .iter()
                .filter_map(|(group, field)| {
                    let m = caps.name(group)?;
                    Some((
                        field.clone(),
                        String::from_utf8_lossy(m.as_bytes()).into_owned(),
                    ))
                })
                .collect(),
        )
    }
}

fn expand(
    pattern: &str,
    custom: &BTreeMap<String, String>,
    fields: &mut Vec<(String, String)>,
    stack: &mut Vec<String>,
) -> Result<String, GrokError> {
    let mut out = String::with_capacity(pattern.len() * 2);
    let mut rest = pattern;
    while let Some(start) = rest.find("%{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| GrokError::Unterminated(pattern.to_string()))?;
        let reference = &after[..end];
        let (name, field) = match reference.split_once(':') {
            Some((n, f)) => (n, Some(f)),
            None => (reference, None),
        };
        if stack.iter().any(|s| s == name) {
            return Err(GrokError::Recursive(name.to_string()));
        }
        let body = custom
            .get(name)
            .map(String::as_str)
            .or_else(|| BASE.iter().find(|(n, _)| *n == name).map(|(_, b)| *b))
            .ok_or_else(|| GrokError::UnknownPattern(name.to_string()))?;
        stack.push(name.to_string());
        // Captures inside a referenced pattern are not fields of this one.
        let inner = expand(body, custom, &mut Vec::new(), stack)?;
        stack.pop();
        match field {
            Some(field) => {
                let group = format!("g{}", fields.len());
                out.push_str(&format!("(?P<{group}>{inner})"));
                fields.push((group, field.to_string()));
            }
            None => out.push_str(&format!("(?:{inner})")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    if out.contains("(?=")
        || out.contains("(?!")
        || out.contains("(?<=")
        || out.contains("(?<!")
        || out.contains("(?>")
    {
        return Err(GrokError::Backtracking(pattern.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(p: &str, line: &str) -> Option<Vec<(String, String)>> {
        Grok::compile(p, &BTreeMap::new())
            .unwrap()
            .parse(line.as_bytes())
    }

    #[test]
    fn named_references_become_fields() {
        let got = fields(
            "%{TIMESTAMP_ISO8601:ts} %{LOGLEVEL:log.level} \\[%{DATA:thread}\\] %{GREEDYDATA:message}",
            "2015-10-18 18:01:47,978 INFO [main] Created MRAppMaster",
        )
        .unwrap();
        assert_eq!(
            got,
            vec![
                ("ts".into(), "2015-10-18 18:01:47,978".into()),
                ("log.level".into(), "INFO".into()),
                ("thread".into(), "main".into()),
                ("message".into(), "Created MRAppMaster".into()),
            ]
        );
        assert_eq!(fields("%{INT:n}", "12a"), None, "patterns are anchored");
    }

    #[test]
    fn custom_patterns_nest_and_errors_are_clear() {
        let custom = BTreeMap::from([
            ("BLOCK".to_string(), "blk_-?%{INT}".to_string()),
            ("LOOP".to_string(), "%{LOOP}".to_string()),
        ]);
        let g = Grok::compile("%{BLOCK:block} ok", &custom).unwrap();
        assert_eq!(
            g.parse(b"blk_-42 ok"),
            Some(vec![("block".into(), "blk_-42".into())])
        );
        assert_eq!(
            Grok::compile("%{NOPE:x}", &custom).unwrap_err(),
            GrokError::UnknownPattern("NOPE".into())
        );
        assert_eq!(
            Grok::compile("%{LOOP}", &custom).unwrap_err(),
            GrokError::Recursive("LOOP".into())
        );
        assert!(matches!(
            Grok::compile("(?=a)a", &custom),
            Err(GrokError::Backtracking(_))
        ));
        assert!(matches!(
            Grok::compile("(a)\\1", &custom),
            Err(GrokError::Backtracking(_) | GrokError::Regex(_))
        ));
        assert!(matches!(
            Grok::compile("%{INT", &custom),
            Err(GrokError::Unterminated(_))
        ));
    }

    #[test]
    fn a_hostile_line_takes_linear_time() {
        // (a+)+b on "aaaa…c" is the classic catastrophic case for backtracking.
        let g = Grok::compile("(a+)+b", &BTreeMap::new()).unwrap();
        let line = format!("{}c", "a".repeat(100_000));
        let started = std::time::Instant::now();
        assert_eq!(g.parse(line.as_bytes()), None);
        // Generous bound: a backtracking engine would not finish at all.
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}
