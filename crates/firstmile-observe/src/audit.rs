//! `firstmile audit --from --to`: were all rows captured? For each source,
//! the raw records received in the range are followed record by record:
//! their `event_id`s (from the raw coordinates) are looked for in `events`
//! and `dlq`, and the events found are looked for in TimescaleDB and
//! Elasticsearch. Counts per stage, and the first few ids a sink misses.
//!
//! Memory: one id per raw record of the range (about 50 bytes each); audit
//! a busy source over hours, not months.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::AtomicBool;

use firstmile_config::{Config, Topology};
use firstmile_kafka::dlq::names as dlq_headers;
use firstmile_kafka::header_str;
use firstmile_kafka::range::Reader;
use firstmile_sink::{EventDecoder, Sink};
use jiff::Timestamp;
use rdkafka::message::OwnedMessage;
use rdkafka::Message;
use serde::Serialize;
use uuid::Uuid;

use crate::kafka::{self, consumer};
use crate::ObserveError;

/// Ids listed per sink when it misses some.
pub const MISSING_SHOWN: usize = 10;

#[derive(Debug, Clone, Serialize)]
pub struct AuditReport {
    pub from: Timestamp,
    pub to: Timestamp,
    pub sources: Vec<SourceAudit>,
}

impl AuditReport {
    /// Whether every raw record is accounted for and both sinks hold every event.
    pub fn complete(&self) -> bool {
        self.sources.iter().all(|s| {
            s.unaccounted == 0
                && s.sinks
                    .iter()
                    .all(|k| k.error.is_none() && k.missing_count == 0)
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SourceAudit {
    pub source: String,
    pub topic: String,
    /// The raw records received in the range.
    pub raw: u64,
    /// Of those, the ones with an event in `events`.
    pub events: u64,
    /// Of those, the ones with a dead letter (and no event).
    pub dlq: u64,
    /// Neither event nor dead letter: dropped by a rule, or lost.
    pub unaccounted: u64,
    /// The first unaccounted records, as `topic:partition:offset`.
    pub unaccounted_records: Vec<String>,
    pub sinks: Vec<SinkAudit>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SinkAudit {
    /// `timescale`, `elasticsearch`.
    pub sink: String,
    /// Events of the range the sink holds.
    pub present: u64,
    /// Events the sink gave up on for their content: in its dead-letter
    /// topic (stage `sink:<name>`), with the reason.
    pub dead_lettered: u64,
    /// Events the sink neither holds nor dead-lettered.
    pub missing_count: u64,
    /// The first [`MISSING_SHOWN`] missing `event_id`s, in order.
    pub missing: Vec<Uuid>,
    pub error: Option<String>,
}

/// A source's raw records in the range: event id → (partition, offset).
type RawIds = HashMap<Uuid, (i32, i64)>;

/// Audits `sources` (every configured source when empty) over `[from, to)`
/// in every dead-letter topic and each of `sinks`.
pub async fn audit(
    config: &Config,
    topology: &Topology,
    sinks: &[Box<dyn Sink>],
    from: Timestamp,
    to: Timestamp,
    sources: &[String],
) -> Result<AuditReport, ObserveError> {
    crate::brokers_answer(&config.kafka).await?;
    let names: Vec<String> = if sources.is_empty() {
        config.sources.keys().cloned().collect()
    } else {
        for s in sources {
            if !config.sources.contains_key(s) {
                return Err(ObserveError::UnknownSource {
                    name: s.clone(),
                    known: config
                        .sources
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        }
        sources.to_vec()
    };
    let mut expected: BTreeMap<String, (String, RawIds)> = BTreeMap::new();
    let c = consumer(&config.kafka, &topology.observer_group)?;
    for name in &names {
        let Some(topic) = topology.sources.get(name).map(|s| s.raw_topic.clone()) else {
            continue;
        };
        let ranges = tokio::task::block_in_place(|| {
            firstmile_kafka::range::by_time(&c, &topic, from, Some(to))
        })?;
        let mut ids = HashMap::new();
        tokio::task::block_in_place(|| {
            kafka::read_from(&c, &topic, &ranges, u64::MAX, |m| {
                let id = firstmile_event::event_id(m.topic(), m.partition(), m.offset());
                ids.insert(id, (m.partition(), m.offset()));
            })
        })?;
        expected.insert(name.clone(), (topic, ids));
    }
    let all: HashSet<Uuid> = expected
        .values()
        .flat_map(|(_, ids)| ids.keys().copied())
        .collect();

    let mut decoder = EventDecoder::new(&config.schema_registry)?;
    let events_topic = topology.events_topic();
    let mut with_event: HashSet<Uuid> = HashSet::new();
    scan_since(&c, events_topic, from, &mut decoder, |_, decoded| {
        if let Some(id) = decoded.map(|e| e.event_id) {
            if all.contains(&id) {
                with_event.insert(id);
            }
        }
    })
    .await?;
    let mut with_dead_letter: HashSet<Uuid> = HashSet::new();
    // By the stage or sink that gave up (`firstmile.dlq.stage`).
    let mut dead_letters_by: HashMap<String, HashSet<Uuid>> = HashMap::new();
    for dlq in topology.dlq_topics() {
        scan_since(&c, dlq, from, &mut decoder, |m, decoded| {
            if let Some(id) = dead_letter_id(m, decoded.map(|e| e.event_id)) {
                if all.contains(&id) {
                    with_dead_letter.insert(id);
                    let by = header_str(m, dlq_headers::STAGE).unwrap_or("unknown");
                    dead_letters_by
                        .entry(by.to_string())
                        .or_default()
                        .insert(id);
                }
            }
        })
        .await?;
    }
    let no_dead_letters = HashSet::new();

    let mut report = AuditReport {
        from,
        to,
        sources: Vec::new(),
    };
    for (name, (topic, ids)) in &expected {
        let mut events: Vec<Uuid> = ids
            .keys()
            .filter(|id| with_event.contains(id))
            .copied()
            .collect();
        events.sort_unstable();
        let dlq = ids
            .keys()
            .filter(|id| !with_event.contains(id) && with_dead_letter.contains(id))
            .count() as u64;
        let mut unaccounted: Vec<(i32, i64)> = ids
            .iter()
            .filter(|(id, _)| !with_event.contains(id) && !with_dead_letter.contains(id))
            .map(|(_, at)| *at)
            .collect();
        unaccounted.sort_unstable();
        let held = futures::future::join_all(sinks.iter().map(|s| s.holds(&events))).await;
        report.sources.push(SourceAudit {
            source: name.clone(),
            topic: topic.clone(),
            raw: ids.len() as u64,
            events: events.len() as u64,
            dlq,
            unaccounted: unaccounted.len() as u64,
            unaccounted_records: unaccounted
                .iter()
                .take(MISSING_SHOWN)
                .map(|(p, o)| format!("{topic}:{p}:{o}"))
                .collect(),
            sinks: sinks
                .iter()
                .zip(held)
                .map(|(sink, held)| {
                    let given_up = dead_letters_by
                        .get(&sink.name().worker())
                        .unwrap_or(&no_dead_letters);
                    sink_audit(sink.name().as_str(), &events, held, given_up)
                })
                .collect(),
        });
    }
    Ok(report)
}

/// Compares the events a sink should hold with what it holds and what it
/// dead-lettered. Pure.
pub fn sink_audit(
    sink: &str,
    events: &[Uuid],
    present: Result<HashSet<Uuid>, String>,
    dead_lettered: &HashSet<Uuid>,
) -> SinkAudit {
    match present {
        Ok(present) => {
            let absent = events.iter().filter(|id| !present.contains(id));
            let (given_up, missing): (Vec<Uuid>, Vec<Uuid>) =
                absent.partition(|id| dead_lettered.contains(id));
            SinkAudit {
                sink: sink.into(),
                present: (events.len() - missing.len() - given_up.len()) as u64,
                dead_lettered: given_up.len() as u64,
                missing_count: missing.len() as u64,
                missing: missing.into_iter().take(MISSING_SHOWN).collect(),
                error: None,
            }
        }
        Err(e) => SinkAudit {
            sink: sink.into(),
            present: 0,
            dead_lettered: 0,
            missing_count: 0,
            missing: Vec::new(),
            error: Some(e),
        },
    }
}

/// The raw record a dead letter stands for: the event it carries (the
/// enrich stage and the sinks give up on events), else its coordinates (the
/// parse stage gives up on the raw record itself).
fn dead_letter_id(m: &OwnedMessage, carried: Option<Uuid>) -> Option<Uuid> {
    if carried.is_some() {
        return carried;
    }
    let topic = header_str(m, dlq_headers::TOPIC)?;
    let partition = header_str(m, dlq_headers::PARTITION)?.parse().ok()?;
    let offset = header_str(m, dlq_headers::OFFSET)?.parse().ok()?;
    Some(firstmile_event::event_id(topic, partition, offset))
}

/// Reads `topic` from `since` to its current end, decoding what is Avro.
async fn scan_since(
    c: &rdkafka::consumer::BaseConsumer,
    topic: &str,
    since: Timestamp,
    decoder: &mut EventDecoder,
    mut each: impl FnMut(&OwnedMessage, Option<&firstmile_event::Event>),
) -> Result<(), ObserveError> {
    let ranges =
        tokio::task::block_in_place(|| firstmile_kafka::range::since_if_any(c, topic, since))?;
    let mut reader = Reader::start(c, topic, &ranges)?;
    let stop = AtomicBool::new(false);
    while !reader.all_done() {
        let batch = tokio::task::block_in_place(|| reader.read_batch(10_000))?;
        // Dead letters of the parse stage are raw bytes, not Avro: the
        // decoder asks for no schema for them and decodes them to nothing.
        // A registry outage is waited out (`stop` is never set).
        decoder.prepare(&batch, &stop).await;
        for m in &batch {
            let event = decoder.decode(m).ok();
            each(m, event.as_ref());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sink_misses_what_it_does_not_hold_first_few_listed() {
        let events: Vec<Uuid> = (0..20u128).map(Uuid::from_u128).collect();
        let present: HashSet<Uuid> = events.iter().skip(8).copied().collect();
        let none = HashSet::new();
        let a = sink_audit("timescale", &events, Ok(present.clone()), &none);
        assert_eq!(a.present, 12);
        assert_eq!(a.missing_count, 8);
        assert_eq!(a.missing, events[..8].to_vec());

        // Of the 8 absent, 3 were dead-lettered by the sink: not missing.
        let given_up: HashSet<Uuid> = events[2..5].iter().copied().collect();
        let a = sink_audit("timescale", &events, Ok(present), &given_up);
        assert_eq!((a.present, a.dead_lettered, a.missing_count), (12, 3, 5));
        assert_eq!(a.missing, [&events[..2], &events[5..8]].concat());

        let all: HashSet<Uuid> = events.iter().copied().collect();
        let a = sink_audit("elasticsearch", &events, Ok(all), &none);
        assert_eq!((a.present, a.missing_count), (20, 0));

        let a = sink_audit("timescale", &events, Err("database: refused".into()), &none);
        assert_eq!(a.error.as_deref(), Some("database: refused"));
    }

    #[test]
    fn an_incomplete_report_says_so() {
        let source = |unaccounted, missing_count| SourceAudit {
            source: "linux".into(),
            topic: "raw.linux".into(),
            raw: 10,
            events: 10,
            dlq: 0,
            unaccounted,
            unaccounted_records: Vec::new(),
            sinks: vec![SinkAudit {
                sink: "timescale".into(),
                present: 10 - missing_count,
                dead_lettered: 0,
                missing_count,
                missing: Vec::new(),
                error: None,
            }],
        };
        let report = |s| AuditReport {
            from: Timestamp::UNIX_EPOCH,
            to: Timestamp::UNIX_EPOCH,
            sources: vec![s],
        };
        assert!(report(source(0, 0)).complete());
        assert!(!report(source(1, 0)).complete());
        assert!(!report(source(0, 2)).complete());
    }
}
