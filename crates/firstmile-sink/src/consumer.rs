//! The Kafka side of a sink: a consumer group member on its input topic
//! (`read_committed`, static membership, offsets committed by hand after the
//! target has the batch), batches bounded by size and time, and dead letters
//! written before the batch's offsets are committed.

use std::collections::BTreeMap;
use std::time::Duration;

use firstmile_config::{Kafka, SinkSettings};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use firstmile_kafka::lag::{enable_statistics, ConsumerLag};
use firstmile_kafka::{client_config, dlq, raw, BatchWindow, ClientKind};
use firstmile_metrics::Component;

/// A sink's settings with the defaults filled in.
pub struct SinkTopics {
    /// `timescale`, `elasticsearch`: names the group and the dead letters.
    pub name: String,
    pub input: String,
    pub group: String,
    pub instance_id: String,
    pub dlq: String,
    pub batch_records: usize,
    pub batch: Duration,
    /// Zero: no idle cut.
    pub batch_idle: Duration,
}

impl SinkTopics {
    /// `default_input`: the enrich stage's output.
    pub fn new(name: &str, settings: &SinkSettings, default_input: &str) -> SinkTopics {
        SinkTopics {
            name: name.into(),
            input: settings
                .input
                .clone()
                .unwrap_or_else(|| default_input.into()),
            group: settings
                .group
                .clone()
                .unwrap_or_else(|| format!("firstmile-sink-{name}")),
            instance_id: settings
                .instance_id
                .clone()
                .unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned()),
            dlq: settings.dlq.clone(),
            batch_records: settings.batch_records.max(1),
            batch: Duration::from_millis(settings.batch_ms.max(1)),
            batch_idle: Duration::from_millis(settings.batch_idle_ms),
        }
    }
}

/// The sink's consumer and its dead-letter producer.
pub struct SinkConsumer {
    consumer: StreamConsumer<ConsumerLag>,
    dead_letters: FutureProducer,
    topics: SinkTopics,
}

/// A record the sink gives up on: its error kind and message.
pub type DeadLetter<'a> = (&'a OwnedMessage, &'static str, String);

impl SinkConsumer {
    /// `metrics`: where the consumer lag of its partitions is reported.
    pub fn new(
        kafka: &Kafka,
        topics: SinkTopics,
        metrics: &Component,
    ) -> Result<SinkConsumer, KafkaError> {
        let mut config = client_config(kafka, ClientKind::Consumer);
        // Static membership, as the stages: a restarted sink takes its
        // partitions back without waiting out its old session.
        config
            .set("group.id", &topics.group)
            .set(
                "group.instance.id",
                format!("{}-{}", topics.group, topics.instance_id),
            )
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .set("auto.offset.reset", "earliest");
        if config.get("session.timeout.ms").is_none() {
            config.set("session.timeout.ms", "10000");
        }
        enable_statistics(&mut config);
        let lag = ConsumerLag::new(Some(metrics.clone()), &topics.group);
        let consumer: StreamConsumer<ConsumerLag> = config.create_with_context(lag)?;
        consumer.subscribe(&[topics.input.as_str()])?;
        let dead_letters = client_config(kafka, ClientKind::Producer)
            .set("enable.idempotence", "true")
            .create()?;
        tracing::info!(sink = %topics.name, input = %topics.input, group = %topics.group, "sink running");
        Ok(SinkConsumer {
            consumer,
            dead_letters,
            topics,
        })
    }

    pub fn topics(&self) -> &SinkTopics {
        &self.topics
    }

    /// Up to `batch_records` records, or what arrived within `batch`, or
    /// what arrived before the input went idle for `batch_idle`.
    pub async fn poll_batch(&self) -> Vec<OwnedMessage> {
        let mut batch = Vec::new();
        let mut window = BatchWindow::start(self.topics.batch, self.topics.batch_idle);
        while batch.len() < self.topics.batch_records {
            let left = window.left(!batch.is_empty());
            if left.is_zero() {
                break;
            }
            match tokio::time::timeout(left, self.consumer.recv()).await {
                Ok(Ok(m)) => {
                    batch.push(m.detach());
                    window.record();
                }
                Ok(Err(e)) => tracing::debug!(error = %e, "consumer"),
                Err(_) => break,
            }
        }
        batch
    }

    /// Writes the dead letters and waits until Kafka has them (librdkafka
    /// retries through a broker outage: the batch waits, nothing is lost).
    pub async fn dead_letter(&self, dead: &[DeadLetter<'_>]) -> Result<(), KafkaError> {
        let stage = format!("sink:{}", self.topics.name);
        let sends = dead.iter().map(|(record, kind, message)| {
            let headers = dlq::headers(record, &stage, kind, message);
            let mut out = FutureRecord::<[u8], [u8]>::to(&self.topics.dlq)
                .payload(record.payload().unwrap_or_default())
                .headers(headers);
            if let Some(key) = record.key() {
                out = out.key(key);
            }
            self.dead_letters.send(out, rdkafka::util::Timeout::Never)
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
