//! Ranges of offsets and the reads they need, for the readers that are
//! assigned partitions instead of joining a group (replay, its dry run,
//! `status`, `audit`): watermarks, offsets by time (`offsetsForTimes`),
//! ranges refused when retention already deleted part of them, the ranges a
//! replay committed as its progress, and [`Reader`], which reads ranges to
//! their ends. Blocking calls (librdkafka's).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};

mod reader;

pub use reader::Reader;

const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum RangeError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("topic {0} does not exist")]
    NoTopic(String),
    #[error("{topic}: the broker answered no offset for partition {partition}")]
    NoOffset { topic: String, partition: i32 },
    #[error(
        "{topic} partition {partition}: retention has already deleted {requested}; the oldest record left is offset {oldest_offset}{}. \
         Replay what is left explicitly: --from {} (every partition) or --offsets {partition}:{oldest_offset}-",
        oldest_time.as_ref().map(|t| format!(", received {t}")).unwrap_or_default(),
        oldest_time.as_deref().unwrap_or("<that time>")
    )]
    Retention {
        topic: String,
        partition: i32,
        requested: String,
        oldest_offset: i64,
        oldest_time: Option<String>,
    },
    #[error("{0}: retention deleted records of the range while they were being read")]
    DeletedWhileReading(String),
}

/// Offsets `start..end` (end exclusive) of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionRange {
    pub partition: i32,
    pub start: i64,
    pub end: i64,
}

impl PartitionRange {
    pub fn len(&self) -> u64 {
        (self.end - self.start).max(0) as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a partition holds now.
pub struct Retained {
    pub partition: i32,
    /// The oldest offset retention has kept.
    pub low: i64,
    /// The next offset to be written: every replay ends here at the latest.
    pub high: i64,
}

/// Every partition of `topic`, in order, with what it holds now.
pub fn retained(consumer: &BaseConsumer, topic: &str) -> Result<Vec<Retained>, RangeError> {
    Ok(watermarks(consumer, topic)?
        .into_iter()
        .map(|(partition, (low, high))| Retained {
            partition,
            low,
            high,
        })
        .collect())
}

/// Per partition of `topic`, in order: the oldest retained offset and the
/// next to be written.
pub fn watermarks(
    consumer: &BaseConsumer,
    topic: &str,
) -> Result<BTreeMap<i32, (i64, i64)>, RangeError> {
    let metadata = consumer.fetch_metadata(Some(topic), TIMEOUT)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(RangeError::NoTopic(topic.to_string()));
    }
    let mut out = BTreeMap::new();
    for partition in partitions {
        out.insert(
            partition,
            consumer.fetch_watermarks(topic, partition, TIMEOUT)?,
        );
    }
    Ok(out)
}

/// The ranges of the records received from `from` (inclusive) to `to`
/// (exclusive; default: everything there is now), by the records' Kafka
/// timestamps (`offsetsForTimes`).
///
/// If retention has already deleted records of the range, this is an error
/// naming the oldest record still available: a replay never silently covers
/// less than was asked.
pub fn by_time(
    consumer: &BaseConsumer,
    topic: &str,
    from: Timestamp,
    to: Option<Timestamp>,
) -> Result<Vec<PartitionRange>, RangeError> {
    let retained = retained(consumer, topic)?;
    let starts = offsets_for(consumer, topic, &retained, from)?;
    let ends = match to {
        Some(to) => Some(offsets_for(consumer, topic, &retained, to)?),
        None => None,
    };
    let mut ranges = Vec::new();
    for (i, r) in retained.iter().enumerate() {
        let end = ends.as_ref().map_or(r.high, |e| e[i].min(r.high));
        let start = starts[i].min(end);
        // offsetsForTimes answers from what is retained: a start at the
        // oldest retained record that is younger than `from` means older
        // records of the range may be gone.
        if start == r.low && r.low > 0 && start < end {
            let oldest = oldest_timestamp(consumer, topic, r)?;
            if oldest.is_some_and(|t| t > from) {
                return Err(retention(topic, r, format!("records from {from}"), oldest));
            }
        }
        ranges.push(PartitionRange {
            partition: r.partition,
            start,
            end,
        });
    }
    Ok(ranges)
}

/// Every partition of `topic` from its first record at or after `since` to
/// its current end (whatever retention kept).
pub fn since(
    consumer: &BaseConsumer,
    topic: &str,
    since: Timestamp,
) -> Result<Vec<PartitionRange>, RangeError> {
    let retained = retained(consumer, topic)?;
    let starts = offsets_for(consumer, topic, &retained, since)?;
    Ok(retained
        .iter()
        .zip(starts)
        .map(|(r, start)| PartitionRange {
            partition: r.partition,
            start: start.min(r.high),
            end: r.high,
        })
        .collect())
}

/// [`since`], where a topic that does not exist holds nothing: for the
/// dead-letter topics, which a deployment may not have created for every
/// stage and sink that could write one.
pub fn since_if_any(
    consumer: &BaseConsumer,
    topic: &str,
    since_time: Timestamp,
) -> Result<Vec<PartitionRange>, RangeError> {
    match since(consumer, topic, since_time) {
        Err(RangeError::NoTopic(_)) => Ok(Vec::new()),
        other => other,
    }
}

/// Per partition (in `retained` order), the first offset whose timestamp is
/// at or after `at`; the high watermark where there is none.
fn offsets_for(
    consumer: &BaseConsumer,
    topic: &str,
    retained: &[Retained],
    at: Timestamp,
) -> Result<Vec<i64>, RangeError> {
    let mut query = TopicPartitionList::new();
    for r in retained {
        query.add_partition_offset(topic, r.partition, Offset::Offset(at.as_millisecond()))?;
    }
    let answer = consumer.offsets_for_times(query, TIMEOUT)?;
    retained
        .iter()
        .map(|r| {
            let elem =
                answer
                    .find_partition(topic, r.partition)
                    .ok_or_else(|| RangeError::NoOffset {
                        topic: topic.to_string(),
                        partition: r.partition,
                    })?;
            elem.error()?;
            Ok(match elem.offset() {
                Offset::Offset(o) => o,
                _ => r.high,
            })
        })
        .collect()
}

/// Where the replay of `topic` stands, as its group (the consumer's) last
/// committed it: per partition, from the next offset to replay to the end
/// fixed when it started. Empty when no replay of the topic was started.
pub fn committed_progress(
    consumer: &BaseConsumer,
    topic: &str,
) -> Result<Vec<PartitionRange>, RangeError> {
    let retained = retained(consumer, topic)?;
    committed_ranges(consumer, topic, &retained)
}

/// The partitions whose offset committed for the consumer's group carries
/// a range's end ([`range_end_metadata`]): from the committed offset to that
/// end. How a replay's progress is read back (`--resume`, `status`).
pub fn committed_ranges(
    consumer: &BaseConsumer,
    topic: &str,
    retained: &[Retained],
) -> Result<Vec<PartitionRange>, RangeError> {
    let mut query = TopicPartitionList::new();
    for r in retained {
        query.add_partition(topic, r.partition);
    }
    let committed = consumer.committed_offsets(query, TIMEOUT)?;
    Ok(retained
        .iter()
        .filter_map(|r| {
            let elem = committed.find_partition(topic, r.partition)?;
            let Offset::Offset(start) = elem.offset() else {
                return None;
            };
            let end = range_end(elem.metadata())?;
            Some(PartitionRange {
                partition: r.partition,
                start,
                end,
            })
        })
        .collect())
}

/// An error if retention already deleted offsets of `start..end`, naming
/// the oldest record left.
pub fn check_retained(
    consumer: &BaseConsumer,
    topic: &str,
    r: &Retained,
    start: i64,
    end: i64,
) -> Result<(), RangeError> {
    if start < r.low && start < end {
        let oldest = if r.low < r.high {
            oldest_timestamp(consumer, topic, r)?
        } else {
            None
        };
        return Err(retention(topic, r, format!("offset {start}"), oldest));
    }
    Ok(())
}

/// Retention already deleted `requested` of the partition `r`.
fn retention(
    topic: &str,
    r: &Retained,
    requested: String,
    oldest: Option<Timestamp>,
) -> RangeError {
    RangeError::Retention {
        topic: topic.to_string(),
        partition: r.partition,
        requested,
        oldest_offset: r.low,
        oldest_time: oldest.map(|t| t.to_string()),
    }
}

/// The timestamp of the oldest retained record of a partition (for the
/// message that says where a replay could start instead).
fn oldest_timestamp(
    consumer: &BaseConsumer,
    topic: &str,
    r: &Retained,
) -> Result<Option<Timestamp>, RangeError> {
    timestamp_at(consumer, topic, r.partition, r.low)
}

/// The Kafka timestamp of the first record at or after `offset`.
fn timestamp_at(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<Option<Timestamp>, RangeError> {
    Ok(
        record_at(consumer, topic, partition, offset)?.and_then(|m| {
            m.timestamp()
                .to_millis()
                .and_then(|ms| Timestamp::from_millisecond(ms).ok())
        }),
    )
}

/// The first record at or after `offset`, if one comes within 10 s. Leaves
/// the consumer unassigned.
pub fn record_at(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<Option<OwnedMessage>, RangeError> {
    let mut at = TopicPartitionList::new();
    at.add_partition_offset(topic, partition, Offset::Offset(offset))?;
    consumer.assign(&at)?;
    // A partition paused by an earlier read stays paused across assigns.
    consumer.resume(&at)?;
    let deadline = Instant::now() + TIMEOUT;
    let mut found = None;
    while found.is_none() && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            found = Some(m.detach());
        }
    }
    consumer.unassign()?;
    Ok(found)
}

const RANGE_END: &str = "firstmile-replay end=";

/// The metadata of a committed offset that records the end of its range.
pub fn range_end_metadata(end: i64) -> String {
    format!("{RANGE_END}{end}")
}

/// The end recorded by [`range_end_metadata`]; `None` for offsets committed
/// otherwise.
pub fn range_end(metadata: &str) -> Option<i64> {
    metadata.strip_prefix(RANGE_END)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_end_survives_the_metadata_round_trip() {
        assert_eq!(range_end(&range_end_metadata(12_345)), Some(12_345));
        assert_eq!(range_end(""), None);
        assert_eq!(range_end("something else"), None);
        assert_eq!(range_end("firstmile-replay end=x"), None);
    }
}
