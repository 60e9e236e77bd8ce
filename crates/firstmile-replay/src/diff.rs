//! `--dry-run`: what a replay would change. Each raw record's new outcome
//! (an event, a dead letter, a drop) is compared with its latest earlier
//! outcome, found in the events and dead-letter topics.
//!
//! Memory: one compact digest per earlier event of the range (a 64-bit hash
//! per field, about 250 bytes an event), not the events themselves. The few
//! examples shown are read back from the events topic at the end.

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};

use firstmile_event::Event;
use firstmile_stages::Outcome;
use serde_json::Value;

/// Examples kept per changed field.
const EXAMPLES: usize = 3;
/// Not compared field by field: every replay with a new version changes it.
/// Reported on its own (`Report::earlier_versions`).
const VERSION_FIELD: &str = "pipeline_version";

/// Where a record sits in a topic: partition and offset.
pub type Location = (i32, i64);

enum Earlier {
    Event {
        /// The events record's Kafka timestamp: the latest outcome wins.
        seen_at: i64,
        location: Location,
        version: u16,
        fields: Box<[(u16, u64)]>,
    },
    DeadLetter {
        seen_at: i64,
    },
}

impl Earlier {
    fn seen_at(&self) -> i64 {
        match self {
            Earlier::Event { seen_at, .. } | Earlier::DeadLetter { seen_at } => *seen_at,
        }
    }
}

/// The earlier outcomes of the raw records in a replay's range.
#[derive(Default)]
pub struct Earliers {
    names: Vec<String>,
    ids: HashMap<String, u16>,
    by_origin: HashMap<Location, Earlier>,
}

impl Earliers {
    /// An earlier event of the raw record at `origin`, found at `location`
    /// of the events topic, written at `seen_at` (ms).
    pub fn add_event(&mut self, origin: Location, event: &Event, seen_at: i64, location: Location) {
        let fields = self.digest(event);
        let version = self.intern(&event.pipeline_version);
        self.keep_latest(
            origin,
            Earlier::Event {
                seen_at,
                location,
                version,
                fields,
            },
        );
    }

    /// An earlier dead letter of the raw record at `origin`.
    pub fn add_dead_letter(&mut self, origin: Location, seen_at: i64) {
        self.keep_latest(origin, Earlier::DeadLetter { seen_at });
    }

    pub fn len(&self) -> usize {
        self.by_origin.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_origin.is_empty()
    }

    fn keep_latest(&mut self, origin: Location, earlier: Earlier) {
        match self.by_origin.get(&origin) {
            Some(kept) if kept.seen_at() > earlier.seen_at() => {}
            _ => {
                self.by_origin.insert(origin, earlier);
            }
        }
    }

    fn intern(&mut self, name: &str) -> u16 {
        if let Some(id) = self.ids.get(name) {
            return *id;
        }
        let id = u16::try_from(self.names.len()).unwrap_or(u16::MAX);
        self.names.push(name.to_string());
        self.ids.insert(name.to_string(), id);
        id
    }

    /// (field id, hash of its value), sorted by field id.
    fn digest(&mut self, event: &Event) -> Box<[(u16, u64)]> {
        let mut out: Vec<(u16, u64)> = flatten(event)
            .into_iter()
            .filter(|(name, _)| name != VERSION_FIELD)
            .map(|(name, value)| (self.intern(&name), hash(&value)))
            .collect();
        out.sort_unstable();
        out.into_boxed_slice()
    }
}

/// One changed field.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FieldChange {
    pub events: u64,
    pub examples: Vec<Example>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// The raw record's partition and offset.
    pub origin: Location,
    /// Filled by [`Report::fill_old_values`]; `None` also when absent.
    pub old: Option<String>,
    pub new: Option<String>,
    /// Where the earlier event is, to read its value back.
    pub earlier_at: Location,
}

/// What the replay would change, record by record, summed up.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Raw records run through the chain.
    pub records: u64,
    /// An event before and the same event now (pipeline_version aside).
    pub unchanged: u64,
    /// An event before and now, with at least one field different.
    pub changed: u64,
    /// A dead letter before, an event now.
    pub now_parse: u64,
    /// An event before, a dead letter now: by error kind.
    pub now_fail: BTreeMap<String, u64>,
    /// A dead letter before and now.
    pub still_fail: u64,
    /// An event before, dropped by a drop rule now: by rule.
    pub now_dropped: BTreeMap<String, u64>,
    /// No earlier event or dead letter found: dropped before, not processed
    /// yet, or older than the events topic's retention. By new outcome.
    pub not_seen: BTreeMap<&'static str, u64>,
    /// Changed fields: how many events, and examples.
    pub fields: BTreeMap<String, FieldChange>,
    /// The pipeline versions of the earlier events, and how many each.
    pub earlier_versions: BTreeMap<String, u64>,
}

impl Report {
    /// Compares the new outcome of the raw record at `origin` with its
    /// earlier one.
    pub fn compare(&mut self, earliers: &Earliers, origin: Location, new: &Result<Event, Outcome>) {
        self.records += 1;
        let Some(earlier) = earliers.by_origin.get(&origin) else {
            let what = match new {
                Ok(_) => "event",
                Err(Outcome::DeadLetter { .. }) => "dead letter",
                Err(_) => "dropped",
            };
            *self.not_seen.entry(what).or_default() += 1;
            return;
        };
        match (earlier, new) {
            (Earlier::DeadLetter { .. }, Ok(_)) => self.now_parse += 1,
            (Earlier::DeadLetter { .. }, Err(Outcome::DeadLetter { .. })) => self.still_fail += 1,
            (Earlier::DeadLetter { .. }, Err(_)) => {
                *self.not_seen.entry("dropped").or_default() += 1;
            }
            (Earlier::Event { .. }, Err(Outcome::DeadLetter { kind, .. })) => {
                *self.now_fail.entry(kind.to_string()).or_default() += 1;
            }
            (Earlier::Event { .. }, Err(Outcome::Dropped { rule })) => {
                *self.now_dropped.entry(rule.clone()).or_default() += 1;
            }
            (Earlier::Event { .. }, Err(Outcome::Output(_))) => {}
            (
                Earlier::Event {
                    location,
                    version,
                    fields,
                    ..
                },
                Ok(event),
            ) => {
                let name = |id: u16| earliers.names[id as usize].as_str();
                *self
                    .earlier_versions
                    .entry(name(*version).to_string())
                    .or_default() += 1;
                let now: BTreeMap<String, String> = flatten(event)
                    .into_iter()
                    .filter(|(n, _)| n != VERSION_FIELD)
                    .collect();
                let before: BTreeMap<&str, u64> =
                    fields.iter().map(|(id, h)| (name(*id), *h)).collect();
                let mut differs = false;
                for (field, value) in &now {
                    if before.get(field.as_str()) != Some(&hash(value)) {
                        differs = true;
                        self.note(field, origin, Some(value.clone()), *location);
                    }
                }
                for field in before.keys().filter(|f| !now.contains_key(**f)) {
                    differs = true;
                    self.note(field, origin, None, *location);
                }
                if differs {
                    self.changed += 1;
                } else {
                    self.unchanged += 1;
                }
            }
        }
    }

    fn note(&mut self, field: &str, origin: Location, new: Option<String>, earlier_at: Location) {
        let change = self.fields.entry(field.to_string()).or_default();
        change.events += 1;
        if change.examples.len() < EXAMPLES {
            change.examples.push(Example {
                origin,
                old: None,
                new,
                earlier_at,
            });
        }
    }

    /// The events-topic locations of the examples' earlier events.
    pub fn example_locations(&self) -> Vec<Location> {
        let mut out: Vec<Location> = self
            .fields
            .values()
            .flat_map(|c| c.examples.iter().map(|e| e.earlier_at))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Sets the examples' old values from the earlier event read back at
    /// `location`.
    pub fn fill_old_values(&mut self, location: Location, earlier: &Event) {
        let values: BTreeMap<String, String> = flatten(earlier).into_iter().collect();
        for (field, change) in &mut self.fields {
            for example in change
                .examples
                .iter_mut()
                .filter(|e| e.earlier_at == location)
            {
                example.old = values.get(field).cloned();
            }
        }
    }

    /// True when the replay would change nothing downstream.
    pub fn is_noop(&self) -> bool {
        self.changed == 0
            && self.now_parse == 0
            && self.now_fail.is_empty()
            && self.now_dropped.is_empty()
    }
}

/// An event as `path → value text`, paths as in the Elasticsearch document
/// (`@timestamp`, `source.ip`, `labels.team`, `fields.pid`).
pub fn flatten(event: &Event) -> Vec<(String, String)> {
    let mut out = Vec::new();
    match serde_json::to_value(event) {
        Ok(value) => walk("", &value, &mut out),
        Err(e) => out.push(("(unserializable)".into(), e.to_string())),
    }
    out
}

fn walk(prefix: &str, value: &Value, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                walk(&path, v, out);
            }
        }
        Value::Null => {}
        Value::String(s) => out.push((prefix.to_string(), s.clone())),
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

fn hash(value: &str) -> u64 {
    let mut h = DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use firstmile_event::Origin;

    fn event(offset: i64, host: &str, version: &str) -> Event {
        let origin = Origin {
            source: "linux".into(),
            topic: "raw.linux".into(),
            partition: 0,
            offset,
        };
        let mut e = Event::new(
            origin,
            jiff::Timestamp::from_second(1_000).unwrap(),
            version,
        );
        e.host.name = Some(host.into());
        e.message = Some("hello".into());
        e
    }

    fn dead_letter() -> Outcome {
        Outcome::DeadLetter {
            kind: firstmile_event::DeadLetterKind::NoMatch,
            message: "no pattern matched".into(),
        }
    }

    #[test]
    fn each_kind_of_change_is_counted_where_it_belongs() {
        let mut earlier = Earliers::default();
        earlier.add_event((0, 1), &event(1, "a", "1"), 10, (5, 100));
        earlier.add_event((0, 2), &event(2, "a", "1"), 10, (5, 101));
        earlier.add_event((0, 3), &event(3, "a", "1"), 10, (5, 102));
        earlier.add_dead_letter((0, 4), 10);
        earlier.add_event((0, 5), &event(5, "a", "1"), 10, (5, 103));
        let mut report = Report::default();
        report.compare(&earlier, (0, 1), &Ok(event(1, "a", "2")));
        report.compare(&earlier, (0, 2), &Ok(event(2, "b", "2")));
        report.compare(&earlier, (0, 3), &Err(dead_letter()));
        report.compare(&earlier, (0, 4), &Ok(event(4, "a", "2")));
        report.compare(
            &earlier,
            (0, 5),
            &Err(Outcome::Dropped {
                rule: "noise".into(),
            }),
        );
        report.compare(&earlier, (0, 6), &Ok(event(6, "a", "2")));
        assert_eq!(report.records, 6);
        assert_eq!(report.unchanged, 1, "only the version differs: unchanged");
        assert_eq!(report.changed, 1);
        assert_eq!(report.now_fail.get("no_match"), Some(&1));
        assert_eq!(report.now_parse, 1);
        assert_eq!(report.now_dropped.get("noise"), Some(&1));
        assert_eq!(report.not_seen.get("event"), Some(&1));
        assert_eq!(report.earlier_versions.get("1"), Some(&2));
        assert!(!report.is_noop());
        let host = &report.fields["host.name"];
        assert_eq!(host.events, 1);
        assert_eq!(host.examples[0].origin, (0, 2));
        assert_eq!(host.examples[0].new.as_deref(), Some("b"));
        assert_eq!(report.fields.len(), 1, "{:?}", report.fields.keys());
    }

    #[test]
    fn a_field_that_disappears_is_a_change_and_examples_get_old_values() {
        let mut earlier = Earliers::default();
        earlier.add_event((0, 1), &event(1, "a", "1"), 10, (2, 7));
        let mut now = event(1, "a", "1");
        now.message = None;
        let mut report = Report::default();
        report.compare(&earlier, (0, 1), &Ok(now));
        assert_eq!(report.changed, 1);
        assert_eq!(report.example_locations(), vec![(2, 7)]);
        report.fill_old_values((2, 7), &event(1, "a", "1"));
        let example = &report.fields["message"].examples[0];
        assert_eq!(example.old.as_deref(), Some("hello"));
        assert_eq!(example.new, None);
    }

    #[test]
    fn the_latest_earlier_outcome_wins() {
        let mut earlier = Earliers::default();
        earlier.add_event((0, 1), &event(1, "new", "2"), 20, (0, 9));
        earlier.add_event((0, 1), &event(1, "old", "1"), 10, (0, 3));
        earlier.add_dead_letter((0, 2), 10);
        earlier.add_event((0, 2), &event(2, "a", "2"), 20, (0, 10));
        let mut report = Report::default();
        report.compare(&earlier, (0, 1), &Ok(event(1, "new", "3")));
        report.compare(&earlier, (0, 2), &Ok(event(2, "a", "3")));
        assert_eq!(report.unchanged, 2);
        assert!(report.is_noop());
        assert_eq!(report.earlier_versions.get("2"), Some(&2));
    }
}
