//! The replay loop: read a batch of the planned ranges, run each record
//! through the current parse and enrich chain, and write the events and dead
//! letters with the batch's progress in one Kafka transaction.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use firstmile_config::{Config, Topology};
use firstmile_kafka::assigned_reader_config;
use firstmile_kafka::range::{range_end_metadata, Reader};
use firstmile_kafka::{writer, Backoff, BatchWriter, RecordLimits};
use firstmile_stages::{write_outcome, Chain, Destinations, Outcome};
use rdkafka::consumer::{BaseConsumer, Consumer};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};

use crate::range::Plan;
use crate::{ReplayError, Setup};

const TXN_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Options {
    /// At most this many records a second; `None`: as fast as it goes.
    pub rate: Option<u32>,
    /// Records per transaction, at most.
    pub batch_records: usize,
}

/// What a replay has done so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub read: u64,
    pub written: u64,
    pub dead_lettered: u64,
    pub dropped: u64,
    /// Every range read to its end (false: stopped early; `--resume` goes on).
    pub finished: bool,
    /// From the first read to the last commit (set up not included).
    pub elapsed: Duration,
}

/// The consumer a replay plans and reads with: its own group (for the
/// progress offsets only; partitions are assigned, never subscribed),
/// `read_committed`, and no silent reset when an offset is gone.
pub fn consumer(
    config: &Config,
    topology: &Topology,
    source: &str,
) -> Result<BaseConsumer, ReplayError> {
    let names = topology
        .sources
        .get(source)
        .ok_or_else(|| ReplayError::UnknownSource(source.to_string()))?;
    let mut c = assigned_reader_config(&config.kafka, &names.replay_group);
    c.set("auto.offset.reset", "error");
    Ok(c.create()?)
}

/// Replays `plan` until every range is read or `stop` is set (checked
/// between batches: the batch in hand is committed first). `progress` is
/// called after each committed batch. Blocking: run it on a thread of its own.
pub fn run(
    setup: &Setup<'_>,
    plan: &Plan,
    chain: &mut Chain,
    options: &Options,
    stop: &AtomicBool,
    progress: &mut dyn FnMut(&Summary),
) -> Result<Summary, ReplayError> {
    // One transactional id per source: a second replay of the same source
    // fences the first.
    let Setup {
        config,
        topology,
        consumer,
    } = setup;
    let group = setup.replay_group(&plan.source)?;
    let dlq = topology.parse.dlq.clone();
    let output = topology.events_topic().to_string();
    let limits = RecordLimits::describe_blocking(&config.kafka, &[&output, &dlq], stop)?;
    let writer = BatchWriter::transactional(
        &config.kafka,
        group,
        Duration::from_secs(60),
        TXN_TIMEOUT,
        limits,
    )
    .map_err(|e| fenced_or(e, &plan.source))?;
    let group_metadata = consumer.group_metadata().ok_or(ReplayError::NoGroup)?;

    // The plan's ends go to Kafka before anything else, so `--resume` finds
    // them even if this run stops before its first batch.
    let mut start = TopicPartitionList::new();
    for r in &plan.ranges {
        start.add_partition_offset(&plan.topic, r.partition, Offset::Offset(r.start))?;
        set_end(&mut start, &plan.topic, r.partition, r.end);
    }
    writer
        .transaction(&group_metadata, stop, |_| Ok((start, ())))
        .map_err(|e| fenced_or(e, &plan.source))?;

    let mut reader = Reader::start(consumer, &plan.topic, &plan.ranges)?;
    let to = Destinations {
        stage: "replay",
        output: &output,
        dlq: &dlq,
    };
    let limit = match options.rate {
        Some(rate) => options.batch_records.min(rate.max(1) as usize),
        None => options.batch_records,
    }
    .max(1);
    let started = Instant::now();
    let mut summary = Summary::default();
    while !reader.all_done() && !stop.load(Ordering::SeqCst) {
        let batch = reader.read_batch(limit)?;
        if batch.is_empty() {
            continue;
        }
        chain.refresh();
        let mut backoff = Backoff::default();
        loop {
            let written = writer.transaction(&group_metadata, stop, |w| {
                write_batch(w, &to, chain, &batch, &reader)
            });
            match written {
                Ok(counts) => {
                    summary.read += batch.len() as u64;
                    summary.written += counts.written;
                    summary.dead_lettered += counts.dead_lettered;
                    summary.dropped += counts.dropped;
                    break;
                }
                Err(e) if writer::is_fatal(&e) || stop.load(Ordering::SeqCst) => {
                    return Err(fenced_or(e, &plan.source))
                }
                // The cluster's, not the batch's: abort, wait, write it again.
                Err(e) => {
                    let wait = backoff.next_wait();
                    tracing::warn!(error = %e, retry_in = ?wait, "the batch was not written; it is written again once Kafka answers");
                    writer
                        .abandon(stop)
                        .map_err(|e| fenced_or(e, &plan.source))?;
                    std::thread::sleep(wait);
                }
            }
        }
        progress(&summary);
        if let Some(rate) = options.rate {
            let due =
                started + Duration::from_secs_f64(summary.read as f64 / f64::from(rate.max(1)));
            while Instant::now() < due && !stop.load(Ordering::SeqCst) {
                std::thread::sleep((due - Instant::now()).min(Duration::from_millis(100)));
            }
        }
    }
    summary.finished = reader.all_done();
    summary.elapsed = started.elapsed();
    Ok(summary)
}

#[derive(Default)]
struct Counts {
    written: u64,
    dead_lettered: u64,
    dropped: u64,
}

/// The batch's outcomes, and its progress: the next offsets, each with the
/// range's end (written in one transaction: nothing is counted unless it
/// commits).
fn write_batch(
    writer: &BatchWriter,
    to: &Destinations<'_>,
    chain: &mut Chain,
    batch: &[OwnedMessage],
    reader: &Reader<'_>,
) -> Result<(TopicPartitionList, Counts), KafkaError> {
    let mut counts = Counts::default();
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    for record in batch {
        let source = chain.source_of(record);
        let outcome = match chain.run(record, &source) {
            Ok(event) => chain.encode(&event),
            Err(outcome) => outcome,
        };
        let outcome = write_outcome(writer, to, record, &source, outcome)?;
        match outcome {
            Outcome::Output(_) => counts.written += 1,
            Outcome::DeadLetter { .. } => counts.dead_lettered += 1,
            Outcome::Dropped { .. } => counts.dropped += 1,
        }
        next.insert(record.partition(), record.offset() + 1);
    }
    let mut offsets = TopicPartitionList::new();
    for (partition, offset) in &next {
        let end = reader.end(*partition);
        // A finished partition records its end: transaction markers may
        // follow its last record.
        let offset = if reader.is_done(*partition) {
            end
        } else {
            *offset
        };
        offsets.add_partition_offset(reader.topic(), *partition, Offset::Offset(offset))?;
        set_end(&mut offsets, reader.topic(), *partition, end);
    }
    Ok((offsets, counts))
}

fn set_end(offsets: &mut TopicPartitionList, topic: &str, partition: i32, end: i64) {
    if let Some(mut elem) = offsets.find_partition(topic, partition) {
        elem.set_metadata(range_end_metadata(end));
    }
}

/// A fenced producer means another replay of the source took over.
fn fenced_or(e: KafkaError, source: &str) -> ReplayError {
    let fenced = match &e {
        KafkaError::Transaction(t) => t.code() == RDKafkaErrorCode::Fenced,
        _ => false,
    };
    if fenced {
        ReplayError::Fenced(source.to_string())
    } else {
        ReplayError::Kafka(e)
    }
}
