//! Which records a replay covers: per partition, a start offset and an end
//! offset fixed when the replay starts (so it always terminates, however
//! much live traffic arrives meanwhile).

use std::fmt;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};

use crate::progress;
use crate::ReplayError;

const TIMEOUT: Duration = Duration::from_secs(10);

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

/// What a replay reads: one raw topic, a range per partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub source: String,
    pub topic: String,
    /// Every partition of the topic, in order; empty ranges included.
    pub ranges: Vec<PartitionRange>,
}

impl Plan {
    /// Offsets in the ranges: the records to replay, give or take the
    /// transaction markers a transactional producer leaves.
    pub fn offsets(&self) -> u64 {
        self.ranges.iter().map(PartitionRange::len).sum()
    }
}

impl fmt::Display for Plan {
    /// `raw.linux 0:120-480 1:99-400`: the non-empty ranges, as `--offsets`
    /// takes them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.topic)?;
        let mut any = false;
        for r in self.ranges.iter().filter(|r| !r.is_empty()) {
            write!(f, " {}:{}-{}", r.partition, r.start, r.end)?;
            any = true;
        }
        if !any {
            write!(f, " (nothing)")?;
        }
        Ok(())
    }
}

/// One `--offsets` entry: `PARTITION:START-END` (END exclusive) or
/// `PARTITION:START-` (to the end as of the replay's start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetSpec {
    pub partition: i32,
    pub start: i64,
    pub end: Option<i64>,
}

/// Parses `0:100-200,1:50-`: comma-separated [`OffsetSpec`]s.
pub fn parse_offsets(spec: &str) -> Result<Vec<OffsetSpec>, ReplayError> {
    let bad = |why: &str| {
        ReplayError::BadOffsets(format!(
            "`{spec}`: {why} (expected PARTITION:START-END or PARTITION:START-, comma-separated, END exclusive)"
        ))
    };
    let mut out: Vec<OffsetSpec> = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (partition, range) = part
            .split_once(':')
            .ok_or_else(|| bad(&format!("`{part}` has no `:`")))?;
        let (start, end) = range
            .split_once('-')
            .ok_or_else(|| bad(&format!("`{part}` has no `-`")))?;
        let number = |text: &str, what: &str| -> Result<i64, ReplayError> {
            text.trim()
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| bad(&format!("{what} `{text}` is not a number ≥ 0")))
        };
        let partition = number(partition, "partition")?;
        let partition = i32::try_from(partition).map_err(|_| bad("partition out of range"))?;
        let start = number(start, "start")?;
        let end = match end.trim() {
            "" => None,
            e => Some(number(e, "end")?),
        };
        if end.is_some_and(|e| e < start) {
            return Err(bad(&format!("`{part}` ends before it starts")));
        }
        if out.iter().any(|o| o.partition == partition) {
            return Err(bad(&format!("partition {partition} appears twice")));
        }
        out.push(OffsetSpec {
            partition,
            start,
            end,
        });
    }
    if out.is_empty() {
        return Err(bad("no partition given"));
    }
    Ok(out)
}

/// What a partition holds now.
struct Retained {
    partition: i32,
    /// The oldest offset retention has kept.
    low: i64,
    /// The next offset to be written: every replay ends here at the latest.
    high: i64,
}

fn retained(consumer: &BaseConsumer, topic: &str) -> Result<Vec<Retained>, ReplayError> {
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
) -> Result<std::collections::BTreeMap<i32, (i64, i64)>, ReplayError> {
    let metadata = consumer.fetch_metadata(Some(topic), TIMEOUT)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(ReplayError::NoTopic(topic.to_string()));
    }
    let mut out = std::collections::BTreeMap::new();
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
    source: &str,
    topic: &str,
    from: Timestamp,
    to: Option<Timestamp>,
) -> Result<Plan, ReplayError> {
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
                return Err(ReplayError::Retention {
                    topic: topic.to_string(),
                    partition: r.partition,
                    requested: format!("records from {from}"),
                    oldest_offset: r.low,
                    oldest_time: oldest.map(|t| t.to_string()),
                });
            }
        }
        ranges.push(PartitionRange {
            partition: r.partition,
            start,
            end,
        });
    }
    Ok(plan(source, topic, ranges))
}

fn plan(source: &str, topic: &str, ranges: Vec<PartitionRange>) -> Plan {
    Plan {
        source: source.to_string(),
        topic: topic.to_string(),
        ranges,
    }
}

/// Every partition of `topic` from its first record at or after `since` to
/// its current end (whatever retention kept).
pub fn since(
    consumer: &BaseConsumer,
    topic: &str,
    since: Timestamp,
) -> Result<Vec<PartitionRange>, ReplayError> {
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

/// Per partition (in `retained` order), the first offset whose timestamp is
/// at or after `at`; the high watermark where there is none.
fn offsets_for(
    consumer: &BaseConsumer,
    topic: &str,
    retained: &[Retained],
    at: Timestamp,
) -> Result<Vec<i64>, ReplayError> {
    let mut query = TopicPartitionList::new();
    for r in retained {
        query.add_partition_offset(topic, r.partition, Offset::Offset(at.as_millisecond()))?;
    }
    let answer = consumer.offsets_for_times(query, TIMEOUT)?;
    retained
        .iter()
        .map(|r| {
            let elem = answer.find_partition(topic, r.partition).ok_or_else(|| {
                ReplayError::Setup(format!("no offset for partition {}", r.partition))
            })?;
            elem.error()?;
            Ok(match elem.offset() {
                Offset::Offset(o) => o,
                _ => r.high,
            })
        })
        .collect()
}

/// The ranges `--offsets` names; the topic's other partitions get empty
/// ranges. A start retention already deleted is an error naming the oldest
/// offset still available.
pub fn by_offsets(
    consumer: &BaseConsumer,
    source: &str,
    topic: &str,
    specs: &[OffsetSpec],
) -> Result<Plan, ReplayError> {
    let retained = retained(consumer, topic)?;
    for spec in specs {
        if !retained.iter().any(|r| r.partition == spec.partition) {
            return Err(ReplayError::BadOffsets(format!(
                "{topic} has no partition {} (it has {})",
                spec.partition,
                retained.len()
            )));
        }
    }
    let mut ranges = Vec::new();
    for r in &retained {
        let Some(spec) = specs.iter().find(|s| s.partition == r.partition) else {
            ranges.push(PartitionRange {
                partition: r.partition,
                start: r.high,
                end: r.high,
            });
            continue;
        };
        let end = spec.end.unwrap_or(r.high).min(r.high);
        if spec.start > r.high {
            return Err(ReplayError::BadOffsets(format!(
                "partition {} starts at {}, after its last offset {}",
                r.partition,
                spec.start,
                r.high - 1
            )));
        }
        check_retained(consumer, topic, r, spec.start, end)?;
        ranges.push(PartitionRange {
            partition: r.partition,
            start: spec.start,
            end,
        });
    }
    Ok(plan(source, topic, ranges))
}

/// The rest of the replay that was stopped: from the offsets it committed
/// to the ends it fixed when it started.
pub fn resumed(consumer: &BaseConsumer, source: &str, topic: &str) -> Result<Plan, ReplayError> {
    let retained = retained(consumer, topic)?;
    let committed = committed_ranges(consumer, topic, &retained)?;
    let mut ranges = Vec::new();
    for r in &retained {
        let Some(range) = committed.iter().find(|c| c.partition == r.partition) else {
            return Err(ReplayError::NothingToResume(source.to_string()));
        };
        check_retained(consumer, topic, r, range.start, range.end)?;
        ranges.push(*range);
    }
    Ok(plan(source, topic, ranges))
}

/// Where the replay of `topic` stands, as its group (the consumer's) last
/// committed it: per partition, from the next offset to replay to the end
/// fixed when it started. Empty when no replay of the topic was started.
pub fn committed_progress(
    consumer: &BaseConsumer,
    topic: &str,
) -> Result<Vec<PartitionRange>, ReplayError> {
    let retained = retained(consumer, topic)?;
    committed_ranges(consumer, topic, &retained)
}

/// The partitions whose committed offset carries a replay's end.
fn committed_ranges(
    consumer: &BaseConsumer,
    topic: &str,
    retained: &[Retained],
) -> Result<Vec<PartitionRange>, ReplayError> {
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
            let end = progress::end_of(elem.metadata())?;
            Some(PartitionRange {
                partition: r.partition,
                start,
                end,
            })
        })
        .collect())
}

fn check_retained(
    consumer: &BaseConsumer,
    topic: &str,
    r: &Retained,
    start: i64,
    end: i64,
) -> Result<(), ReplayError> {
    if start < r.low && start < end {
        let oldest = if r.low < r.high {
            oldest_timestamp(consumer, topic, r)?
        } else {
            None
        };
        return Err(ReplayError::Retention {
            topic: topic.to_string(),
            partition: r.partition,
            requested: format!("offset {start}"),
            oldest_offset: r.low,
            oldest_time: oldest.map(|t| t.to_string()),
        });
    }
    Ok(())
}

/// The timestamp of the oldest retained record of a partition (for the
/// message that says where a replay could start instead).
fn oldest_timestamp(
    consumer: &BaseConsumer,
    topic: &str,
    r: &Retained,
) -> Result<Option<Timestamp>, ReplayError> {
    timestamp_at(consumer, topic, r.partition, r.low)
}

/// The Kafka timestamp of the first record at or after `offset`.
fn timestamp_at(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<Option<Timestamp>, ReplayError> {
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
pub(crate) fn record_at(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<Option<OwnedMessage>, ReplayError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_spec_parses_ranges_and_open_ends() {
        let specs = parse_offsets("0:100-200, 2:5-").unwrap();
        assert_eq!(
            specs,
            vec![
                OffsetSpec {
                    partition: 0,
                    start: 100,
                    end: Some(200)
                },
                OffsetSpec {
                    partition: 2,
                    start: 5,
                    end: None
                },
            ]
        );
    }

    #[test]
    fn offsets_spec_errors_say_what_is_wrong() {
        for (spec, says) in [
            ("", "no partition given"),
            ("0-100", "has no `:`"),
            ("0:100", "has no `-`"),
            ("0:200-100", "ends before it starts"),
            ("x:1-2", "partition `x`"),
            ("0:-5-", "start ``"),
            ("0:1-2,0:3-4", "partition 0 appears twice"),
        ] {
            let e = parse_offsets(spec).unwrap_err().to_string();
            assert!(e.contains(says), "{spec}: {e}");
        }
    }

    #[test]
    fn a_plan_prints_as_offsets_for_the_non_empty_ranges() {
        let plan = Plan {
            source: "linux".into(),
            topic: "raw.linux".into(),
            ranges: vec![
                PartitionRange {
                    partition: 0,
                    start: 3,
                    end: 10,
                },
                PartitionRange {
                    partition: 1,
                    start: 7,
                    end: 7,
                },
            ],
        };
        assert_eq!(plan.to_string(), "raw.linux 0:3-10");
        assert_eq!(plan.offsets(), 7);
    }
}
