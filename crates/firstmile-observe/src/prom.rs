//! The Prometheus text exposition a role serves, read back: each sample's
//! name, labels and value. Enough for `firstmile status` to sum a role's
//! `firstmile_component_*` counters; not a general parser (no escapes
//! beyond `\"`, `\\` and `\n` in label values, which is all we write).

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).map_or("", String::as_str)
    }
}

/// The samples of `text`; lines that are not samples (comments, blanks,
/// malformed) are skipped.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter_map(sample).collect()
}

fn sample(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let (labels, after) = labels(&line[open + 1..])?;
            (&line[..open], labels, after)
        }
        None => {
            let space = line.find(' ')?;
            (&line[..space], BTreeMap::new(), &line[space..])
        }
    };
    // A sample may carry a timestamp after its value.
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// `a="x",b="y"}` → the labels and what follows the `}`.
fn labels(mut s: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut out = BTreeMap::new();
    loop {
        s = s.trim_start_matches([',', ' ']);
        if let Some(rest) = s.strip_prefix('}') {
            return Some((out, rest));
        }
        let eq = s.find('=')?;
        let name = s[..eq].trim().to_string();
        let mut chars = s[eq + 1..].char_indices();
        if chars.next()?.1 != '"' {
            return None;
        }
        let mut value = String::new();
        let mut end = None;
        let mut escaped = false;
        for (i, c) in chars {
            match (escaped, c) {
                (true, 'n') => {
                    value.push('\n');
                    escaped = false;
                }
                (true, c) => {
                    value.push(c);
                    escaped = false;
                }
                (false, '\\') => escaped = true,
                (false, '"') => {
                    end = Some(eq + 1 + i + 1);
                    break;
                }
                (false, c) => value.push(c),
            }
        }
        out.insert(name, value);
        s = &s[end?..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_with_and_without_labels_are_read() {
        let text = "# HELP x help\n# TYPE x counter\n\
            firstmile_component_sent_events_total{component_id=\"parse\",component_kind=\"stage\",source=\"a \\\"b\\\"\"} 42\n\
            up 1 1700000000000\n\
            h_bucket{le=\"+Inf\"} 7\n\
            broken{x=1} 3\n";
        let samples = parse(text);
        assert_eq!(samples.len(), 3, "{samples:?}");
        assert_eq!(samples[0].name, "firstmile_component_sent_events_total");
        assert_eq!(samples[0].label("component_id"), "parse");
        assert_eq!(samples[0].label("source"), "a \"b\"");
        assert_eq!(samples[0].value, 42.0);
        assert_eq!(samples[1].name, "up");
        assert_eq!(samples[1].value, 1.0);
        assert_eq!(samples[2].label("le"), "+Inf");
        assert_eq!(samples[2].value, 7.0);
    }

    #[test]
    fn what_our_registry_writes_is_read_back() {
        let metrics = firstmile_metrics_free_text();
        let samples = parse(&metrics);
        let discarded: f64 = samples
            .iter()
            .filter(|s| s.name == "firstmile_component_discarded_events_total")
            .filter(|s| s.label("reason") == "dlq_parse_error")
            .map(|s| s.value)
            .sum();
        assert_eq!(discarded, 5.0);
    }

    /// A fragment as the prometheus crate's text encoder writes it.
    fn firstmile_metrics_free_text() -> String {
        "# HELP firstmile_component_discarded_events_total Events a component dropped on purpose, by reason.\n\
         # TYPE firstmile_component_discarded_events_total counter\n\
         firstmile_component_discarded_events_total{component_id=\"parse\",component_kind=\"stage\",reason=\"dlq_parse_error\",source=\"linux\"} 3\n\
         firstmile_component_discarded_events_total{component_id=\"parse\",component_kind=\"stage\",reason=\"dlq_parse_error\",source=\"openssh\"} 2\n\
         firstmile_component_discarded_events_total{component_id=\"parse\",component_kind=\"stage\",reason=\"drop_rule_debug\",source=\"openssh\"} 9\n"
            .to_string()
    }
}
