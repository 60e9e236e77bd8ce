//! What status and audit read from Kafka: watermarks, group offsets and
//! members, record counts by time, and records read back. Blocking calls
//! (librdkafka's); the async callers run them on blocking threads.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use firstmile_config::Kafka;
use firstmile_kafka::assigned_reader_config;
use firstmile_kafka::range::{PartitionRange, Reader};
use jiff::Timestamp;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};

use crate::ObserveError;

pub(crate) const TIMEOUT: Duration = Duration::from_secs(10);

/// A `read_committed` consumer that never joins a group (it is assigned
/// partitions); `group` is the group whose committed offsets it reads.
pub(crate) fn consumer(kafka: &Kafka, group: &str) -> Result<BaseConsumer, ObserveError> {
    Ok(settings(kafka, group).create()?)
}

fn settings(kafka: &Kafka, group: &str) -> rdkafka::ClientConfig {
    let mut c = assigned_reader_config(kafka, group);
    c.set("auto.offset.reset", "earliest")
        // Status reads to the end of partitions that get nothing new: the
        // broker would hold each such fetch for librdkafka's default 500 ms.
        .set("fetch.wait.max.ms", "20");
    c
}

/// Reaching the end of a partition is what status waits for, not an error
/// to log.
pub(crate) struct Quiet;

impl rdkafka::ClientContext for Quiet {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        if matches!(error, rdkafka::error::KafkaError::PartitionEOF(_))
            || error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF)
        {
            return;
        }
        tracing::warn!(%error, reason, "kafka");
    }
}

impl rdkafka::consumer::ConsumerContext for Quiet {}

/// Per partition: the oldest retained offset and the next to be written.
pub(crate) use firstmile_kafka::range::watermarks;

/// Per partition, the first offset at or after `at` (the high watermark
/// where there is none).
pub(crate) fn offsets_at(
    consumer: &BaseConsumer,
    topic: &str,
    marks: &BTreeMap<i32, (i64, i64)>,
    at: Timestamp,
) -> Result<BTreeMap<i32, i64>, ObserveError> {
    let mut query = TopicPartitionList::new();
    for p in marks.keys() {
        query.add_partition_offset(topic, *p, Offset::Offset(at.as_millisecond()))?;
    }
    let answer = consumer.offsets_for_times(query, TIMEOUT)?;
    let mut out = BTreeMap::new();
    for (p, (_, high)) in marks {
        let offset = answer
            .find_partition(topic, *p)
            .and_then(|e| match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            })
            .unwrap_or(*high);
        out.insert(*p, offset.min(*high));
    }
    Ok(out)
}

/// Offsets from `at` to the end, summed over partitions: the records
/// received since then (give or take transaction markers).
pub(crate) fn records_since(
    consumer: &BaseConsumer,
    topic: &str,
    marks: &BTreeMap<i32, (i64, i64)>,
    at: Timestamp,
) -> Result<u64, ObserveError> {
    let starts = offsets_at(consumer, topic, marks, at)?;
    Ok(marks
        .iter()
        .map(|(p, (_, high))| (high - starts.get(p).copied().unwrap_or(*high)).max(0) as u64)
        .sum())
}

/// A group's committed offset per partition of `topic` (`None`: nothing
/// committed yet).
pub(crate) fn committed(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: impl Iterator<Item = i32>,
) -> Result<BTreeMap<i32, Option<i64>>, ObserveError> {
    let mut query = TopicPartitionList::new();
    let partitions: Vec<i32> = partitions.collect();
    for p in &partitions {
        query.add_partition(topic, *p);
    }
    let answer = consumer.committed_offsets(query, TIMEOUT)?;
    Ok(partitions
        .into_iter()
        .map(|p| {
            let offset = answer
                .find_partition(topic, p)
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                });
            (p, offset)
        })
        .collect())
}

/// The group's state (`Stable`, `Empty`, …; `Dead` when unknown) and its
/// number of members.
pub(crate) fn group_members(
    consumer: &BaseConsumer,
    group: &str,
) -> Result<(String, usize), ObserveError> {
    let list = firstmile_kafka::client::fetch_group_list(consumer, group, TIMEOUT)?;
    Ok(list
        .groups()
        .iter()
        .find(|g| g.name() == group)
        .map_or(("Dead".to_string(), 0), |g| {
            (g.state().to_string(), g.members().len())
        }))
}

/// Which of the given positions (partition → offset) have no committed
/// record left to read: where a consumer that stopped after its last
/// record still counts transaction markers as lag.
pub(crate) fn caught_up(
    kafka: &Kafka,
    group: &str,
    topic: &str,
    positions: &BTreeMap<i32, i64>,
) -> Result<Vec<i32>, ObserveError> {
    if positions.is_empty() {
        return Ok(Vec::new());
    }
    let consumer: BaseConsumer<Quiet> = settings(kafka, group)
        .set("enable.partition.eof", "true")
        .create_with_context(Quiet)?;
    let mut assignment = TopicPartitionList::new();
    for (p, offset) in positions {
        assignment.add_partition_offset(topic, *p, Offset::Offset(*offset))?;
    }
    consumer.assign(&assignment)?;
    let mut answered: BTreeMap<i32, bool> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    while answered.len() < positions.len() && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                answered.entry(m.partition()).or_insert(false);
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                answered.entry(p).or_insert(true);
            }
            _ => {}
        }
    }
    Ok(answered
        .into_iter()
        .filter(|(_, eof)| *eof)
        .map(|(p, _)| p)
        .collect())
}

/// Reads the records of `topic` from `starts` to the current ends, calling
/// `each`; at most `limit` records (then `false`: the count is partial).
pub(crate) fn read_from(
    consumer: &BaseConsumer,
    topic: &str,
    ranges: &[PartitionRange],
    limit: u64,
    mut each: impl FnMut(&OwnedMessage),
) -> Result<bool, ObserveError> {
    let mut reader = Reader::start(consumer, topic, ranges)?;
    let mut read = 0u64;
    while !reader.all_done() {
        for m in reader.read_batch(10_000)? {
            if read >= limit {
                return Ok(false);
            }
            each(&m);
            read += 1;
        }
    }
    Ok(true)
}

/// The last `per_partition` records of each partition.
pub(crate) fn tail(
    consumer: &BaseConsumer,
    topic: &str,
    marks: &BTreeMap<i32, (i64, i64)>,
    per_partition: i64,
) -> Result<Vec<OwnedMessage>, ObserveError> {
    let ranges: Vec<_> = marks
        .iter()
        .map(|(p, (low, high))| PartitionRange {
            partition: *p,
            start: (*high - per_partition).max(*low),
            end: *high,
        })
        .collect();
    let mut out = Vec::new();
    read_from(consumer, topic, &ranges, u64::MAX, |m| out.push(m.clone()))?;
    Ok(out)
}
