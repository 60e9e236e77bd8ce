//! `firstmile replay --dry-run`: the chain runs over the range, nothing is
//! written, and the [`Report`] says what a replay would change.

use std::sync::atomic::{AtomicBool, Ordering};

use firstmile_event::Event;
use firstmile_kafka::dlq::names;
use firstmile_kafka::range::{record_at, since_if_any, Reader};
use firstmile_kafka::{assigned_reader_config, header_str};
use firstmile_schema::{Decoder, Registry};
use firstmile_stages::Chain;
use jiff::Timestamp;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, OwnedMessage};

use crate::diff::{Earliers, Report};
use crate::range::Plan;
use crate::{ReplayError, Setup};

const BATCH: usize = 5_000;
/// Earlier events read back for the examples, at most.
const EXAMPLE_READS: usize = 30;

/// What the dry run is doing, for a progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading the events and dead-letter topics for earlier outcomes.
    Earlier,
    /// Running the chain over the range.
    Chain,
}

/// Runs the chain over `plan` without writing and compares each outcome
/// with the record's latest earlier one in the events and dead-letter
/// topics, read from the time of the range's oldest record on. Blocking
/// (registry calls go through `runtime`).
pub fn dry_run(
    setup: &Setup<'_>,
    plan: &Plan,
    chain: &mut Chain,
    runtime: &tokio::runtime::Handle,
    stop: &AtomicBool,
    progress: &mut dyn FnMut(Phase, u64),
) -> Result<Report, ReplayError> {
    let Setup {
        config,
        topology,
        consumer,
    } = setup;
    let registry = Registry::new(&config.schema_registry)?;
    let mut decoder = Decoder::new(registry, firstmile_event::event_schema());
    let mut report = Report::default();
    let Some(since_time) = oldest(consumer, plan)? else {
        return Ok(report);
    };
    // librdkafka wants a group even to assign; this one never commits.
    let group = format!("{}-dry-run", setup.replay_group(&plan.source)?);
    let scanner: BaseConsumer = assigned_reader_config(&config.kafka, &group).create()?;
    let mut earliers = Earliers::default();
    let mut seen = 0u64;
    let output = topology.events_topic().to_string();
    // Every dead-letter topic: a stage's or a sink's may be set apart.
    let topics = std::iter::once(output.as_str()).chain(topology.dlq_topics());
    for topic in topics {
        let ranges = since_if_any(&scanner, topic, since_time)?;
        let mut reader = Reader::start(&scanner, topic, &ranges)?;
        while !reader.all_done() && !stop.load(Ordering::SeqCst) {
            let batch = reader.read_batch(BATCH)?;
            if topic == output {
                fetch_schemas(&mut decoder, runtime, &batch)?;
            }
            for m in &batch {
                if topic == output {
                    add_event(&mut earliers, &decoder, plan, m);
                } else {
                    add_dead_letter(&mut earliers, plan, m);
                }
            }
            seen += batch.len() as u64;
            progress(Phase::Earlier, seen);
        }
    }
    tracing::info!(
        earlier_outcomes = earliers.len(),
        "earlier outcomes of the range"
    );

    let mut reader = Reader::start(consumer, &plan.topic, &plan.ranges)?;
    while !reader.all_done() && !stop.load(Ordering::SeqCst) {
        chain.refresh();
        for record in reader.read_batch(BATCH)? {
            let source = chain.source_of(&record);
            let new = chain.run(&record, &source);
            report.compare(&earliers, (record.partition(), record.offset()), &new);
        }
        progress(Phase::Chain, report.records);
    }
    consumer.unassign()?;

    for (partition, offset) in report.example_locations().into_iter().take(EXAMPLE_READS) {
        let Some(m) = record_at(&scanner, &output, partition, offset)? else {
            continue;
        };
        if let Some(event) = decode(&decoder, &m) {
            report.fill_old_values((partition, offset), &event);
        }
    }
    Ok(report)
}

/// The earliest timestamp of the plan's first records: every earlier
/// outcome was written after it.
fn oldest(consumer: &BaseConsumer, plan: &Plan) -> Result<Option<Timestamp>, ReplayError> {
    let mut oldest: Option<Timestamp> = None;
    for r in plan.ranges.iter().filter(|r| !r.is_empty()) {
        let first = record_at(consumer, &plan.topic, r.partition, r.start)?;
        let at = first
            .and_then(|m| m.timestamp().to_millis())
            .and_then(|ms| Timestamp::from_millisecond(ms).ok());
        if let Some(at) = at {
            oldest = Some(oldest.map_or(at, |o| o.min(at)));
        }
    }
    Ok(oldest)
}

fn fetch_schemas(
    decoder: &mut Decoder,
    runtime: &tokio::runtime::Handle,
    batch: &[OwnedMessage],
) -> Result<(), ReplayError> {
    let missing = decoder.missing(batch.iter().map(|m| m.payload().unwrap_or_default()));
    for id in missing {
        runtime.block_on(decoder.fetch(id))?;
    }
    Ok(())
}

fn decode(decoder: &Decoder, m: &OwnedMessage) -> Option<Event> {
    decoder.decode_event(m.payload().unwrap_or_default()).ok()
}

fn in_plan(plan: &Plan, partition: i32, offset: i64) -> bool {
    plan.ranges
        .iter()
        .any(|r| r.partition == partition && r.start <= offset && offset < r.end)
}

fn seen_at(m: &OwnedMessage) -> i64 {
    m.timestamp().to_millis().unwrap_or(0)
}

fn add_event(earliers: &mut Earliers, decoder: &Decoder, plan: &Plan, m: &OwnedMessage) {
    let Some(event) = decode(decoder, m) else {
        return;
    };
    let (p, o) = (event.origin.partition, event.origin.offset);
    if event.origin.topic == plan.topic && in_plan(plan, p, o) {
        earliers.add_event((p, o), &event, seen_at(m), (m.partition(), m.offset()));
    }
}

fn add_dead_letter(earliers: &mut Earliers, plan: &Plan, m: &OwnedMessage) {
    let header = |name: &str| header_str(m, name);
    if header(names::TOPIC) != Some(plan.topic.as_str()) {
        return;
    }
    let (Some(p), Some(o)) = (
        header(names::PARTITION).and_then(|p| p.parse().ok()),
        header(names::OFFSET).and_then(|o| o.parse().ok()),
    ) else {
        return;
    };
    if in_plan(plan, p, o) {
        earliers.add_dead_letter((p, o), seen_at(m));
    }
}
