//! Which records a replay covers: per partition, a start offset and an end
//! offset fixed when the replay starts (so it always terminates, however
//! much live traffic arrives meanwhile).

use std::fmt;

use firstmile_kafka::range::{check_retained, committed_ranges, retained};
pub use firstmile_kafka::range::{since, watermarks, PartitionRange};
use jiff::Timestamp;
use rdkafka::consumer::BaseConsumer;

use crate::ReplayError;

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

/// The ranges of the records received from `from` (inclusive) to `to`
/// (exclusive; default: everything there is now), by the records' Kafka
/// timestamps; refused if retention already deleted part of it
/// ([`firstmile_kafka::range::by_time`]).
pub fn by_time(
    consumer: &BaseConsumer,
    source: &str,
    topic: &str,
    from: Timestamp,
    to: Option<Timestamp>,
) -> Result<Plan, ReplayError> {
    let ranges = firstmile_kafka::range::by_time(consumer, topic, from, to)?;
    Ok(plan(source, topic, ranges))
}

fn plan(source: &str, topic: &str, ranges: Vec<PartitionRange>) -> Plan {
    Plan {
        source: source.to_string(),
        topic: topic.to_string(),
        ranges,
    }
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
