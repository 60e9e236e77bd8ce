//! The Kafka side of a sink: a consumer group member on its input topic
//! (`read_committed`, static membership, offsets committed by hand after the
//! target has the batch), batches bounded by size and time, and dead letters
//! written before the batch's offsets are committed.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use firstmile_config::{Kafka, SinkName, SinkSettings, SinkTopology};
use firstmile_event::DeadLetterKind;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use firstmile_kafka::lag::ConsumerLag;
use firstmile_kafka::{
    client_config, dlq, fatal_consumer_error, group_member_config, raw, BatchWindow, ClientKind,
    RecordLimits,
};

use crate::SinkError;
use firstmile_metrics::Component;

/// A sink's part of the topology, and its batching.
pub struct SinkTopics {
    pub name: SinkName,
    pub input: String,
    pub group: String,
    /// The static group membership id.
    pub member_id: String,
    pub dlq: String,
    pub batch_records: usize,
    pub batch: Duration,
    /// Zero: no idle cut.
    pub batch_idle: Duration,
}

impl SinkTopics {
    pub fn new(names: &SinkTopology, settings: &SinkSettings) -> SinkTopics {
        SinkTopics {
            name: names.name,
            input: names.input.clone(),
            group: names.group.clone(),
            member_id: names.member_id.clone(),
            dlq: names.dlq.clone(),
            batch_records: settings.batch_records.max(1),
            batch: Duration::from_millis(settings.batch_ms.max(1)),
            batch_idle: Duration::from_millis(settings.batch_idle_ms),
        }
    }
}

/// The sink's consumer and its dead-letter producer.
pub struct SinkConsumer {
    consumer: StreamConsumer<ConsumerLag>,
    /// Made at the first dead letter (most sinks never write one): the
    /// producer, and the largest record the dead-letter topic takes, which
    /// the broker is asked for then.
    dead_letters: tokio::sync::OnceCell<(FutureProducer, usize)>,
    kafka: Kafka,
    topics: SinkTopics,
}

/// A record the sink gives up on: its error kind and message.
pub type DeadLetter<'a> = (&'a OwnedMessage, DeadLetterKind, String);

impl SinkConsumer {
    /// `metrics`: where the consumer lag of its partitions is reported.
    pub fn new(
        kafka: &Kafka,
        topics: SinkTopics,
        metrics: &Component,
    ) -> Result<SinkConsumer, KafkaError> {
        let config = group_member_config(kafka, &topics.group, &topics.member_id);
        let lag = ConsumerLag::new(Some(metrics.clone()), &topics.group);
        let consumer: StreamConsumer<ConsumerLag> = config.create_with_context(lag)?;
        consumer.subscribe(&[topics.input.as_str()])?;
        tracing::info!(sink = %topics.name, input = %topics.input, group = %topics.group, "sink running");
        Ok(SinkConsumer {
            consumer,
            dead_letters: tokio::sync::OnceCell::new(),
            kafka: kafka.clone(),
            topics,
        })
    }

    /// Up to `batch_records` records, or what arrived within `batch`, or
    /// what arrived before the input went idle for `batch_idle`.
    /// An error: the consumer cannot go on (fenced, or out of its group for
    /// good); the sink ends.
    pub async fn poll_batch(&self) -> Result<Vec<OwnedMessage>, SinkError> {
        let mut batch = Vec::new();
        let mut window = BatchWindow::start(self.topics.batch, self.topics.batch_idle);
        while batch.len() < self.topics.batch_records {
            let left = window.left(!batch.is_empty());
            if left.is_zero() {
                break;
            }
            let received = tokio::time::timeout(left, self.consumer.recv()).await;
            if let Err(why) = self.consumer.context().polled() {
                return Err(SinkError::Consumer {
                    sink: self.topics.name,
                    why,
                });
            }
            match received {
                Ok(Ok(m)) => {
                    batch.push(m.detach());
                    window.record();
                }
                Ok(Err(e)) => match fatal_consumer_error(&e, &self.topics.member_id) {
                    Some(why) => {
                        return Err(SinkError::Consumer {
                            sink: self.topics.name,
                            why,
                        })
                    }
                    None => tracing::warn!(sink = %self.topics.name, error = %e, "consumer error"),
                },
                Err(_) => break,
            }
        }
        Ok(batch)
    }

    /// Writes the dead letters and waits until Kafka has them (librdkafka
    /// retries through a broker outage: the batch waits, nothing is lost).
    pub async fn dead_letter(
        &self,
        dead: &[DeadLetter<'_>],
        stop: &AtomicBool,
    ) -> Result<(), KafkaError> {
        let (producer, limit) = self
            .dead_letters
            .get_or_try_init(|| async {
                let dlq = self.topics.dlq.as_str();
                let mut limits = RecordLimits::describe(&self.kafka, &[dlq], stop)
                    .await
                    .map_err(|_| KafkaError::Canceled)?;
                let mut producer = client_config(&self.kafka, ClientKind::Producer);
                limits.configure(&mut producer);
                let producer: FutureProducer =
                    producer.set("enable.idempotence", "true").create()?;
                Ok::<_, KafkaError>((producer, limits.of(dlq)))
            })
            .await?;
        let stage = self.topics.name.worker();
        let sends = dead.iter().map(|(record, kind, message)| {
            let letter = dlq::dead_letter(record, &stage, kind.as_str(), message, *limit);
            let mut out = FutureRecord::<[u8], [u8]>::to(&self.topics.dlq)
                .payload(letter.payload)
                .headers(letter.headers);
            if let Some(key) = letter.key {
                out = out.key(key);
            }
            producer.send(out, rdkafka::util::Timeout::Never)
        });
        for result in futures::future::join_all(sends).await {
            result.map_err(|(e, _)| e)?;
        }
        Ok(())
    }

    /// Commits the batch's offsets. A failure (a rebalance took the
    /// partitions) means the new owner writes the batch again: harmless,
    /// sinks write idempotently.
    pub fn commit(&self, batch: &[OwnedMessage]) {
        let mut next: BTreeMap<(&str, i32), i64> = BTreeMap::new();
        for r in batch {
            let e = next.entry((r.topic(), r.partition())).or_insert(0);
            *e = (*e).max(r.offset() + 1);
        }
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), offset) in next {
            if let Err(e) = offsets.add_partition_offset(topic, partition, Offset::Offset(offset)) {
                tracing::warn!(error = %e, "offset not committed");
            }
        }
        if let Err(e) = self.consumer.commit(&offsets, CommitMode::Sync) {
            tracing::warn!(error = %e, "committing offsets failed; the batch will be written again");
        }
    }
}

/// The `firstmile.source` header of a record, or `unknown`.
pub fn source_of(record: &OwnedMessage) -> &str {
    firstmile_kafka::header_str(record, raw::headers::SOURCE).unwrap_or("unknown")
}
