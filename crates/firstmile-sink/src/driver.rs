//! The one loop every sink runs: poll a batch, decode it, keep the last copy
//! of each event, write it through the [`Sink`] until every event is written
//! or refused, dead-letter the refused and undecodable, commit the offsets,
//! report. One error policy for every sink:
//! - a record's content (not Avro, an unknown schema, a value the target
//!   refuses) → a dead letter of its kind, the rest of the batch goes on;
//! - the target, the registry or the brokers unavailable → the batch waits
//!   with backoff (250 ms → 30 s) and is retried, nothing is dead-lettered,
//!   nothing more is read (memory stays at one batch plus librdkafka's
//!   bounded prefetch);
//! - an error writing dead letters (the brokers refused them for good) ends
//!   the sink: its offsets are not committed, so its restart reads the batch
//!   again.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use firstmile_config::{Config, SinkName, Topology};
use firstmile_event::{DeadLetterKind, Event};
use firstmile_metrics::{Component, KnownLabels};
use rdkafka::message::{Message, OwnedMessage};

use crate::consumer::{source_of, DeadLetter, SinkConsumer, SinkTopics};
use crate::{observe_committed, Backoff, EventDecoder, ItemOutcome, Sink, SinkError, StartError};

/// Runs `sink` as a member of its group until `stop` is set (checked between
/// batches and between attempts).
pub async fn run<S: Sink + ?Sized>(
    config: &Config,
    topology: &Topology,
    sink: &mut S,
    metrics: &Component,
    stop: &AtomicBool,
) -> Result<(), SinkError> {
    let name = sink.name();
    // Before the first batch (a daily index takes the template when its
    // first document creates it, say).
    let mut backoff = Backoff::default();
    loop {
        match sink.start().await {
            Ok(()) => break,
            Err(StartError::Refused(message)) => {
                return Err(SinkError::Setup {
                    sink: name,
                    message,
                })
            }
            Err(StartError::Unavailable(why)) => {
                metrics.error(sink.profile().unavailable_error);
                tracing::warn!(sink = %name, error = %why, retry_in = ?backoff.current(), "target unavailable at start");
                if !backoff.wait(stop).await {
                    return Ok(());
                }
            }
        }
    }
    metrics.declare(&known_labels(config, &*sink));
    let topics = SinkTopics::new(topology.sink(name), sink_settings(config, name));
    let consumer = SinkConsumer::new(&config.kafka, topics, metrics)?;
    let mut decoder = EventDecoder::new(&config.schema_registry)?;

    while !stop.load(Ordering::SeqCst) {
        let batch = consumer.poll_batch().await?;
        if batch.is_empty() || !decoder.prepare(&batch, stop).await {
            continue;
        }
        let mut dead: Vec<DeadLetter> = Vec::new();
        let mut events: Vec<(Event, &OwnedMessage)> = Vec::with_capacity(batch.len());
        for record in &batch {
            match decoder.decode(record) {
                Ok(event) => events.push((event, record)),
                Err((kind, message)) => dead.push((record, kind, message)),
            }
        }
        let events = last_copies(events);
        let writing = Instant::now();
        let Some(outcomes) = write_all(sink, &events, metrics, stop).await else {
            break; // stopped before everything was written: nothing committed
        };
        let write_seconds = writing.elapsed().as_secs_f64();
        let mut written: Vec<&Event> = Vec::with_capacity(events.len());
        // Per source: events written and their bytes as read from Kafka.
        let mut sent: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        for ((event, record), outcome) in events.iter().zip(outcomes) {
            match outcome {
                ItemOutcome::Rejected { kind, message } => dead.push((record, kind, message)),
                _ => {
                    let s = sent.entry(event.origin.source.as_str()).or_default();
                    s.0 += 1;
                    s.1 += payload_len(record);
                    written.push(event);
                }
            }
        }
        if !dead.is_empty() {
            match consumer.dead_letter(&dead, stop).await {
                Ok(()) => {}
                // Stopped while waiting for Kafka: the batch is not
                // committed, its next reader writes it again.
                Err(_) if stop.load(Ordering::SeqCst) => break,
                Err(e) => return Err(e.into()),
            }
        }
        consumer.commit(&batch);
        sink.written(&written, false).await;
        report(metrics, &batch, sent, &dead);
        let received_at: Vec<jiff::Timestamp> = written.iter().map(|e| e.received_at).collect();
        observe_committed(metrics, write_seconds, &received_at);
    }
    sink.written(&[], true).await;
    tracing::info!(sink = %name, "sink stopped");
    Ok(())
}

/// A sink counts every configured source, the target's outage, items
/// retried, and dead letters of decoding and of its target.
fn known_labels<S: Sink + ?Sized>(config: &Config, sink: &S) -> KnownLabels {
    let sources: Vec<String> = config.sources.keys().cloned().collect();
    let kinds = DeadLetterKind::DECODING
        .iter()
        .chain(sink.profile().rejection_kinds);
    let discarded = kinds
        .flat_map(|kind| sources.iter().map(|s| (s.clone(), kind.discard_reason())))
        .collect();
    KnownLabels {
        sources,
        errors: vec![
            sink.profile().unavailable_error.to_string(),
            ITEM_RETRY.to_string(),
        ],
        discarded,
        rejected: Vec::new(),
    }
}

/// Counted when the target takes some items of a batch later.
const ITEM_RETRY: &str = "item_retry";

fn sink_settings(config: &Config, name: SinkName) -> &firstmile_config::SinkSettings {
    match name {
        SinkName::Timescale => &config.sinks.timescale,
        SinkName::Elasticsearch => &config.sinks.elasticsearch,
    }
}

/// The last copy of each event, in the order of first appearance: a batch
/// can hold an event twice (at-least-once upstream, a replay), one upsert
/// cannot touch a row twice, and concurrent bulk requests must not race an
/// older copy against a newer one.
fn last_copies(events: Vec<(Event, &OwnedMessage)>) -> Vec<(Event, &OwnedMessage)> {
    let mut position: HashMap<uuid::Uuid, usize> = HashMap::with_capacity(events.len());
    let mut kept: Vec<Option<(Event, &OwnedMessage)>> = Vec::with_capacity(events.len());
    for item in events {
        match position.get(&item.0.event_id) {
            Some(&i) => kept[i] = Some(item),
            None => {
                position.insert(item.0.event_id, kept.len());
                kept.push(Some(item));
            }
        }
    }
    kept.into_iter().flatten().collect()
}

/// Writes every event until each is written or rejected: the events the
/// target answered `Retry` for, and every event while it is unavailable,
/// are written again after a backoff. `None` if `stop` was set first.
async fn write_all<S: Sink + ?Sized>(
    sink: &mut S,
    events: &[(Event, &OwnedMessage)],
    metrics: &Component,
    stop: &AtomicBool,
) -> Option<Vec<ItemOutcome>> {
    let mut outcomes: Vec<Option<ItemOutcome>> = vec![None; events.len()];
    let mut pending: Vec<usize> = (0..events.len()).collect();
    let mut backoff = Backoff::default();
    while !pending.is_empty() {
        let batch: Vec<&Event> = pending.iter().map(|&i| &events[i].0).collect();
        let mut retry = Vec::new();
        match sink.write(&batch).await {
            Ok(answers) if answers.len() == pending.len() => {
                let mut first_reason = None;
                for (&i, answer) in pending.iter().zip(answers) {
                    match answer {
                        ItemOutcome::Retry(why) => {
                            first_reason.get_or_insert(why);
                            retry.push(i);
                        }
                        done => outcomes[i] = Some(done),
                    }
                }
                if let Some(why) = first_reason {
                    metrics.error(ITEM_RETRY);
                    tracing::warn!(sink = %sink.name(), items = retry.len(), reason = %why, retry_in = ?backoff.current(), "the target will take some items later");
                }
            }
            Ok(answers) => {
                // A sink's bug, not the data's: never dead-letter for it.
                tracing::error!(sink = %sink.name(), asked = pending.len(), answered = answers.len(), "the sink answered for a different number of events; writing them again");
                retry = pending.clone();
            }
            Err(e) => {
                metrics.error(sink.profile().unavailable_error);
                tracing::warn!(sink = %sink.name(), error = %e, retry_in = ?backoff.current(), "target unavailable; the batch waits");
                retry = pending.clone();
            }
        }
        pending = retry;
        if !pending.is_empty() && !backoff.wait(stop).await {
            return None;
        }
    }
    Some(
        outcomes
            .into_iter()
            .map(|o| o.unwrap_or(ItemOutcome::Written))
            .collect(),
    )
}

/// Per source: received (every record of the batch), sent (written events;
/// bytes as read from Kafka) and discarded (dead letters, by kind).
fn report(
    metrics: &Component,
    batch: &[OwnedMessage],
    sent: BTreeMap<&str, (u64, u64)>,
    dead: &[DeadLetter],
) {
    let mut received: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for record in batch {
        let r = received.entry(source_of(record)).or_default();
        r.0 += 1;
        r.1 += payload_len(record);
    }
    for (source, (n, bytes)) in received {
        metrics.received(source, n, bytes);
    }
    for (source, (n, bytes)) in sent {
        metrics.sent(source, n, bytes);
    }
    for (record, kind, _) in dead {
        metrics.discarded(source_of(record), &kind.discard_reason(), 1);
    }
}

fn payload_len(record: &OwnedMessage) -> u64 {
    record.payload().map_or(0, <[u8]>::len) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::OwnedHeaders;
    use rdkafka::Timestamp as KafkaTime;

    fn record(offset: i64) -> OwnedMessage {
        OwnedMessage::new(
            None,
            None,
            "events".into(),
            KafkaTime::NotAvailable,
            0,
            offset,
            Some(OwnedHeaders::new()),
        )
    }

    fn event(offset: i64, message: &str) -> Event {
        let origin = firstmile_event::Origin {
            source: "s".into(),
            topic: "raw.s".into(),
            partition: 0,
            offset,
        };
        let mut e = Event::new(origin, "2026-11-23T12:00:00Z".parse().unwrap(), "1");
        e.message = Some(message.into());
        e
    }

    #[test]
    fn the_last_copy_of_each_event_wins_in_first_seen_order() {
        let records: Vec<OwnedMessage> = (0..4).map(record).collect();
        let events = vec![
            (event(1, "a1"), &records[0]),
            (event(2, "b"), &records[1]),
            (event(1, "a2"), &records[2]),
            (event(3, "c"), &records[3]),
        ];
        let kept = last_copies(events);
        let got: Vec<(&str, i64)> = kept
            .iter()
            .map(|(e, r)| (e.message.as_deref().unwrap_or(""), r.offset()))
            .collect();
        assert_eq!(got, [("a2", 2), ("b", 1), ("c", 3)]);
    }

    /// Answers `Retry` for each event the first `refusals` times it sees
    /// it, `Rejected` for messages "bad", and is unavailable on the calls
    /// listed.
    struct Flaky {
        refusals: usize,
        seen: HashMap<uuid::Uuid, usize>,
        calls: usize,
        unavailable_on: Vec<usize>,
        writes: Vec<usize>,
    }

    #[async_trait::async_trait]
    impl Sink for Flaky {
        fn profile(&self) -> &'static crate::Profile {
            &crate::Profile {
                name: SinkName::Timescale,
                unavailable_error: "test_unavailable",
                rejection_kinds: &[DeadLetterKind::RejectedByDatabase],
            }
        }
        async fn write(
            &mut self,
            events: &[&Event],
        ) -> Result<Vec<ItemOutcome>, crate::Unavailable> {
            self.calls += 1;
            if self.unavailable_on.contains(&self.calls) {
                return Err(crate::Unavailable("down".into()));
            }
            self.writes.push(events.len());
            Ok(events
                .iter()
                .map(|e| {
                    let n = self.seen.entry(e.event_id).or_default();
                    *n += 1;
                    if e.message.as_deref() == Some("bad") {
                        ItemOutcome::Rejected {
                            kind: DeadLetterKind::RejectedByDatabase,
                            message: "no".into(),
                        }
                    } else if *n <= self.refusals {
                        ItemOutcome::Retry("busy".into())
                    } else {
                        ItemOutcome::Written
                    }
                })
                .collect())
        }
        async fn check(&self) -> Result<(), String> {
            Ok(())
        }
        async fn freshness(&self, _: jiff::Timestamp) -> Result<crate::Freshness, String> {
            Ok(crate::Freshness::default())
        }
        async fn holds(
            &self,
            _: &[uuid::Uuid],
        ) -> Result<std::collections::HashSet<uuid::Uuid>, String> {
            Ok(Default::default())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn outages_and_retried_items_are_written_again_and_only_content_is_rejected() {
        let records: Vec<OwnedMessage> = (0..3).map(record).collect();
        let events = vec![
            (event(0, "ok"), &records[0]),
            (event(1, "bad"), &records[1]),
            (event(2, "ok"), &records[2]),
        ];
        let mut sink = Flaky {
            refusals: 1,
            seen: HashMap::new(),
            calls: 0,
            unavailable_on: vec![1, 3],
            writes: Vec::new(),
        };
        let metrics =
            firstmile_metrics::Metrics::new().component(firstmile_metrics::Kind::Sink, "test");
        let stop = AtomicBool::new(false);
        let outcomes = write_all(&mut sink, &events, &metrics, &stop)
            .await
            .unwrap();
        assert_eq!(outcomes[0], ItemOutcome::Written);
        assert!(matches!(
            outcomes[1],
            ItemOutcome::Rejected {
                kind: DeadLetterKind::RejectedByDatabase,
                ..
            }
        ));
        assert_eq!(outcomes[2], ItemOutcome::Written);
        // Call 1 unavailable; call 2 writes all three (two retried, one
        // rejected); call 3 unavailable; call 4 writes the two again.
        assert_eq!(sink.writes, [3, 2]);
        assert_eq!(sink.calls, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_while_the_target_is_away_writes_nothing_more() {
        let records = [record(0)];
        let events = vec![(event(0, "ok"), &records[0])];
        let mut sink = Flaky {
            refusals: 0,
            seen: HashMap::new(),
            calls: 0,
            unavailable_on: vec![1],
            writes: Vec::new(),
        };
        let metrics =
            firstmile_metrics::Metrics::new().component(firstmile_metrics::Kind::Sink, "test");
        let stop = AtomicBool::new(true);
        assert!(write_all(&mut sink, &events, &metrics, &stop)
            .await
            .is_none());
        assert_eq!(sink.calls, 1);
    }
}
