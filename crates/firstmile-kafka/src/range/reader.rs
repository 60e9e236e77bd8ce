//! Reading planned ranges: each partition from its start, paused at its end.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};

use super::{PartitionRange, RangeError};

/// A batch is cut after this long, so progress (and Ctrl-C) stays prompt.
const BATCH_TIME: Duration = Duration::from_secs(1);

pub struct Reader<'a> {
    consumer: &'a BaseConsumer,
    topic: String,
    ends: BTreeMap<i32, i64>,
    done: BTreeSet<i32>,
}

impl<'a> Reader<'a> {
    /// Assigns the consumer the ranges' partitions at their starts.
    pub fn start(
        consumer: &'a BaseConsumer,
        topic: &str,
        ranges: &[PartitionRange],
    ) -> Result<Reader<'a>, RangeError> {
        let mut assignment = TopicPartitionList::new();
        let mut done = BTreeSet::new();
        for r in ranges {
            if r.is_empty() {
                done.insert(r.partition);
            } else {
                assignment.add_partition_offset(topic, r.partition, Offset::Offset(r.start))?;
            }
        }
        consumer.assign(&assignment)?;
        // A partition paused by an earlier read stays paused across assigns.
        consumer.resume(&assignment)?;
        Ok(Reader {
            consumer,
            topic: topic.to_string(),
            ends: ranges.iter().map(|r| (r.partition, r.end)).collect(),
            done,
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn end(&self, partition: i32) -> i64 {
        self.ends.get(&partition).copied().unwrap_or(0)
    }

    pub fn is_done(&self, partition: i32) -> bool {
        self.done.contains(&partition)
    }

    pub fn all_done(&self) -> bool {
        self.ends.keys().all(|p| self.done.contains(p))
    }

    /// Up to `limit` records of the ranges (fewer after a second, none once
    /// every range is read).
    pub fn read_batch(&mut self, limit: usize) -> Result<Vec<OwnedMessage>, RangeError> {
        let mut batch = Vec::new();
        let started = Instant::now();
        while batch.len() < limit && !self.all_done() && started.elapsed() < BATCH_TIME {
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    let end = self.end(m.partition());
                    if m.offset() < end {
                        batch.push(m.detach());
                    }
                    if m.offset() + 1 >= end {
                        self.finish(m.partition())?;
                    }
                }
                Some(Err(e)) => {
                    let gone = matches!(
                        e.rdkafka_error_code(),
                        Some(
                            RDKafkaErrorCode::OffsetOutOfRange | RDKafkaErrorCode::AutoOffsetReset
                        )
                    );
                    if gone {
                        return Err(RangeError::DeletedWhileReading(format!(
                            "{}: {e}",
                            self.topic
                        )));
                    }
                    tracing::warn!(topic = %self.topic, error = %e, "consumer error");
                }
                // Nothing came: a partition whose position passed its end
                // (transaction markers after its last record) is finished.
                None => self.finish_passed()?,
            }
        }
        Ok(batch)
    }

    fn finish(&mut self, partition: i32) -> Result<(), RangeError> {
        if self.done.insert(partition) {
            let mut p = TopicPartitionList::new();
            p.add_partition(&self.topic, partition);
            self.consumer.pause(&p)?;
        }
        Ok(())
    }

    fn finish_passed(&mut self) -> Result<(), RangeError> {
        let positions = self.consumer.position()?;
        for elem in positions.elements_for_topic(&self.topic) {
            if let Offset::Offset(position) = elem.offset() {
                if position >= self.end(elem.partition()) {
                    self.finish(elem.partition())?;
                }
            }
        }
        Ok(())
    }
}
