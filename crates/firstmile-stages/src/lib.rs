//! The processing stages. A stage is a consumer group that reads input
//! topics, turns each record into an output record or a dead letter, and
//! writes both with the consumed offsets in one Kafka transaction, so each
//! input record appears downstream exactly once (for readers that use
//! `read_committed`), across crashes and rebalances.
//!
//! The loop: poll a batch (up to `batch_records` or `batch_ms`), begin a
//! transaction, produce outputs and dead letters, send the batch's offsets to
//! the transaction with the group's metadata (KIP-447, so one transactional id
//! per worker is enough), commit. On an abortable error the transaction is
//! aborted and the consumer rewinds to the batch's first offsets; a fatal one
//! (a fenced zombie, say) ends the worker, and its orchestrator restarts it.

mod parse_stage;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use firstmile_config::Config;
use firstmile_kafka::{client_config, ClientKind};
use firstmile_metrics::Component;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

pub use parse_stage::ParseStep;

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("{0}")]
    Setup(String),
}

/// What a step makes of one input record.
pub enum Outcome {
    /// An output record value (the key is the input's).
    Output(Vec<u8>),
    /// A dead letter: the error kind and message.
    DeadLetter { kind: &'static str, message: String },
}

/// The transformation a stage applies, record by record.
pub trait Step: Send {
    fn apply(&mut self, record: &OwnedMessage) -> Outcome;
    /// The source an input record belongs to, for metrics.
    fn source_of(&self, record: &OwnedMessage) -> String;
}

/// Where a stage reads and writes.
pub struct StageTopics {
    pub name: String,
    pub inputs: Vec<String>,
    pub output: String,
    pub dlq: String,
    pub group: String,
    pub transactional_id: String,
    pub batch_records: usize,
    pub batch: Duration,
}

const TXN_TIMEOUT: Duration = Duration::from_secs(30);

/// Header names a dead letter carries besides the input's own headers.
pub mod dlq_headers {
    pub const STAGE: &str = "firstmile.dlq.stage";
    pub const ERROR_KIND: &str = "firstmile.dlq.error_kind";
    pub const ERROR_MESSAGE: &str = "firstmile.dlq.error_message";
    pub const TOPIC: &str = "firstmile.dlq.topic";
    pub const PARTITION: &str = "firstmile.dlq.partition";
    pub const OFFSET: &str = "firstmile.dlq.offset";
}

/// Runs a stage until `stop` is set (between transactions) or a fatal error.
/// Blocking: run it on a thread of its own.
pub fn run(
    config: &Config,
    topics: &StageTopics,
    step: &mut dyn Step,
    metrics: &Component,
    stop: &Arc<AtomicBool>,
) -> Result<(), StageError> {
    let mut consumer_config = client_config(&config.kafka, ClientKind::Consumer);
    // Static membership: a worker restarted under the same instance id takes
    // its partitions back at once instead of waiting out its old session.
    consumer_config
        .set("group.id", &topics.group)
        .set("group.instance.id", &topics.transactional_id)
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest");
    if consumer_config.get("session.timeout.ms").is_none() {
        consumer_config.set("session.timeout.ms", "10000");
    }
    let consumer: BaseConsumer = consumer_config.create()?;
    let producer: ThreadedProducer<DefaultProducerContext> =
        client_config(&config.kafka, ClientKind::Producer)
            .set("transactional.id", &topics.transactional_id)
            .set("enable.idempotence", "true")
            // A worker that dies for good leaves its open transaction blocking
            // read_committed readers of the output until the broker aborts it;
            // batches commit in well under a second, so keep this short.
            .set("transaction.timeout.ms", "15000")
            .create()?;
    producer.init_transactions(TXN_TIMEOUT)?;
    let inputs: Vec<&str> = topics.inputs.iter().map(String::as_str).collect();
    consumer.subscribe(&inputs)?;
    tracing::info!(stage = %topics.name, group = %topics.group, transactional_id = %topics.transactional_id, inputs = ?topics.inputs, output = %topics.output, "stage running");

    while !stop.load(Ordering::SeqCst) {
        let batch = poll_batch(&consumer, topics)?;
        if batch.is_empty() {
            continue;
        }
        match transact(&consumer, &producer, topics, step, metrics, &batch) {
            Ok(()) => {}
            Err(KafkaError::Transaction(e)) if e.txn_requires_abort() && !e.is_fatal() => {
                metrics.error("transaction_aborted");
                tracing::warn!(error = %e, "aborting the transaction; the batch is read again");
                producer.abort_transaction(TXN_TIMEOUT)?;
                rewind(&consumer, &batch)?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    tracing::info!(stage = %topics.name, "stage stopped");
    Ok(())
}

fn poll_batch(
    consumer: &BaseConsumer,
    topics: &StageTopics,
) -> Result<Vec<OwnedMessage>, KafkaError> {
    let mut batch = Vec::new();
    let started = Instant::now();
    while batch.len() < topics.batch_records {
        let left = topics.batch.saturating_sub(started.elapsed());
        if left.is_zero() && !batch.is_empty() {
            break;
        }
        match consumer.poll(left.max(Duration::from_millis(10))) {
            Some(Ok(m)) => batch.push(m.detach()),
            // Transient consumer errors (a broker restarting): keep polling.
            Some(Err(e)) => tracing::debug!(error = %e, "consumer"),
            None if batch.is_empty() && started.elapsed() > topics.batch => return Ok(batch),
            None => {}
        }
    }
    Ok(batch)
}

fn transact(
    consumer: &BaseConsumer,
    producer: &ThreadedProducer<DefaultProducerContext>,
    topics: &StageTopics,
    step: &mut dyn Step,
    metrics: &Component,
    batch: &[OwnedMessage],
) -> Result<(), KafkaError> {
    producer.begin_transaction()?;
    let mut next_offsets: BTreeMap<(String, i32), i64> = BTreeMap::new();
    let mut counts: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    for record in batch {
        let source = step.source_of(record);
        let count = counts.entry(source.clone()).or_default();
        count.0 += 1;
        let key = record.key().unwrap_or_default();
        match step.apply(record) {
            Outcome::Output(value) => {
                send(
                    producer,
                    BaseRecord::to(&topics.output).key(key).payload(&value),
                )?;
                count.1 += 1;
            }
            Outcome::DeadLetter { kind, message } => {
                let headers = dead_letter_headers(record, &topics.name, kind, &message);
                let payload = record.payload().unwrap_or_default();
                send(
                    producer,
                    BaseRecord::to(&topics.dlq)
                        .key(key)
                        .payload(payload)
                        .headers(headers),
                )?;
                count.2 += 1;
                metrics.discarded(&source, &format!("dlq_{kind}"), 1);
            }
        }
        next_offsets.insert(
            (record.topic().to_string(), record.partition()),
            record.offset() + 1,
        );
    }
    let mut offsets = TopicPartitionList::new();
    for ((topic, partition), next) in &next_offsets {
        offsets.add_partition_offset(topic, *partition, Offset::Offset(*next))?;
    }
    // No group metadata means the consumer has not joined its group yet.
    let group = consumer
        .group_metadata()
        .ok_or(KafkaError::MessageConsumption(RDKafkaErrorCode::State))?;
    producer.send_offsets_to_transaction(&offsets, &group, TXN_TIMEOUT)?;
    producer.commit_transaction(TXN_TIMEOUT)?;
    for (source, (received, sent, _)) in counts {
        metrics.received(&source, received, 0);
        metrics.sent(&source, sent, 0);
    }
    Ok(())
}

fn send(
    producer: &ThreadedProducer<DefaultProducerContext>,
    mut record: BaseRecord<'_, [u8], [u8]>,
) -> Result<(), KafkaError> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

fn dead_letter_headers(
    record: &OwnedMessage,
    stage: &str,
    kind: &str,
    message: &str,
) -> OwnedHeaders {
    let mut headers = OwnedHeaders::new();
    if let Some(original) = record.headers() {
        for h in original.iter() {
            headers = headers.insert(Header {
                key: h.key,
                value: h.value,
            });
        }
    }
    let (partition, offset) = (record.partition().to_string(), record.offset().to_string());
    for (key, value) in [
        (dlq_headers::STAGE, stage),
        (dlq_headers::ERROR_KIND, kind),
        (dlq_headers::ERROR_MESSAGE, message),
        (dlq_headers::TOPIC, record.topic()),
        (dlq_headers::PARTITION, partition.as_str()),
        (dlq_headers::OFFSET, offset.as_str()),
    ] {
        headers = headers.insert(Header {
            key,
            value: Some(value),
        });
    }
    headers
}

/// After an abort: read the batch again from its first offsets.
fn rewind(consumer: &BaseConsumer, batch: &[OwnedMessage]) -> Result<(), KafkaError> {
    let mut first: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for r in batch {
        first
            .entry((r.topic().to_string(), r.partition()))
            .or_insert(r.offset());
    }
    for ((topic, partition), offset) in first {
        consumer.seek(
            &topic,
            partition,
            Offset::Offset(offset),
            Duration::from_secs(10),
        )?;
    }
    Ok(())
}

/// The default instance id: this host's name.
pub fn default_instance_id() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}
