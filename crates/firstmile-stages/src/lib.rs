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

mod chain;
mod encoder;
mod enrich_stage;
mod parse_stage;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use firstmile_config::{Config, Delivery, StageName, Topology};
use firstmile_event::DeadLetterKind;
use firstmile_kafka::dlq;
use firstmile_kafka::lag::ConsumerLag;
use firstmile_kafka::limits::record_size;
use firstmile_kafka::raw::headers;
use firstmile_kafka::{
    fatal_consumer_error, group_member_config, writer, Backoff, BatchWindow, BatchWriter,
    RecordLimits,
};
use firstmile_metrics::{Component, KnownLabels};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::BaseRecord;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

pub use chain::Chain;
pub use enrich_stage::EnrichStep;
/// Re-exported: where dead letters say what went wrong.
pub use firstmile_kafka::dlq::names as dlq_headers;
pub use parse_stage::ParseStep;

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("sources.{name}.parse: {error}")]
    Parser {
        name: String,
        error: firstmile_parse::ParserConfigError,
    },
    #[error("sources.{name}.enrich: {error}")]
    Rules {
        name: String,
        error: firstmile_enrich::EnrichError,
    },
    #[error("enrich: {0}")]
    Enrich(firstmile_enrich::EnrichError),
    #[error("schema registry: {0}")]
    Registry(#[from] firstmile_schema::RegistryError),
    #[error("registering the event schema under {subject}: {error}")]
    Register {
        subject: String,
        error: firstmile_schema::RegistryError,
    },
    #[error("no sources: nothing to parse")]
    NoSources,
    #[error("the consumer cannot go on: {0}")]
    Consumer(String),
}

/// What a step makes of one input record.
pub enum Outcome {
    /// An output record value (the key is the input's).
    Output(Vec<u8>),
    /// A dead letter: the error kind and message.
    DeadLetter {
        kind: DeadLetterKind,
        message: String,
    },
    /// Dropped on purpose by the named rule; counted, not written.
    Dropped { rule: String },
}

/// The transformation a stage applies, record by record.
pub trait Step: Send {
    /// Called with each batch before its transaction opens, to do the I/O
    /// the batch needs (fetch schemas, reload files). `Err` means a
    /// dependency is unavailable: the runtime waits, keeping its group
    /// membership, and calls again; nothing goes to the dead-letter topic.
    fn prepare(&mut self, _batch: &[OwnedMessage]) -> Result<(), String> {
        Ok(())
    }
    /// `source` is what [`Step::source_of`] said of the record (worked out
    /// once per record by the runtime).
    fn apply(&mut self, record: &OwnedMessage, source: &str) -> Outcome;
    /// The source an input record belongs to, for metrics.
    fn source_of(&self, record: &OwnedMessage) -> String;
    /// The sources the step reads for and the discard reasons it can count
    /// for each ([`Outcome::discard_reason`]), exported at zero from the
    /// start.
    fn known_labels(&self) -> KnownLabels;
}

impl Outcome {
    /// The `discarded_events_total` reason of a dead letter or a drop.
    pub fn discard_reason(&self) -> Option<String> {
        match self {
            Outcome::Output(_) => None,
            Outcome::DeadLetter { kind, .. } => Some(kind.discard_reason()),
            Outcome::Dropped { rule } => Some(drop_reason(rule)),
        }
    }
}

/// The discard reason of the drop rule `rule`.
pub fn drop_reason(rule: &str) -> String {
    format!("drop_rule_{rule}")
}

// The error types the stage runtime counts (`errors_total{error_type}`).
const DEPENDENCY_UNAVAILABLE: &str = "dependency_unavailable";
const TRANSACTION_ABORTED: &str = "transaction_aborted";
const DELIVERY_FAILED: &str = "delivery_failed";
const OFFSET_COMMIT: &str = "offset_commit";
const ERROR_TYPES: [&str; 5] = [
    DEPENDENCY_UNAVAILABLE,
    TRANSACTION_ABORTED,
    writer::TRANSACTION_RESUMED,
    DELIVERY_FAILED,
    OFFSET_COMMIT,
];

/// Where a stage reads and writes (its part of the [`Topology`]) and how it
/// batches and delivers.
pub struct StageTopics {
    pub name: StageName,
    pub inputs: Vec<String>,
    pub output: String,
    pub dlq: String,
    pub group: String,
    /// The transactional id, also the static group membership id.
    pub transactional_id: String,
    pub delivery: Delivery,
    pub batch_records: usize,
    pub batch: Duration,
    /// Zero: no idle cut.
    pub batch_idle: Duration,
}

impl StageTopics {
    /// The stage `name` as the topology names it and its configuration
    /// batches it.
    pub fn new(config: &Config, topology: &Topology, name: StageName) -> StageTopics {
        let names = topology.stage(name);
        let stage = match name {
            StageName::Parse => &config.stages.parse,
            StageName::Enrich => &config.stages.enrich,
        };
        StageTopics {
            name,
            inputs: names.inputs.clone(),
            output: names.output.clone(),
            dlq: names.dlq.clone(),
            group: names.group.clone(),
            transactional_id: names.member_id.clone(),
            delivery: stage.delivery,
            batch_records: stage.batch_records.max(1),
            batch: Duration::from_millis(stage.batch_ms.max(1)),
            batch_idle: Duration::from_millis(stage.batch_idle_ms),
        }
    }
}

const TXN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an at-least-once batch may take to be acknowledged.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

/// The partitions rebalances took from this member since the runtime last
/// looked. Rebalances are served inside `poll`, so a batch being filled can
/// straddle one, and its records from a revoked partition must go: the
/// partition's next owner (perhaps this member again, from the committed
/// offset) reads them again. Writing them too would duplicate them, and the
/// transaction would still commit: by then it carries the new generation.
struct Revocations {
    /// This member's id, for what a fatal consumer error says.
    member_id: String,
    revoked: Mutex<Revoked>,
    /// Set when `revoked` holds something: the check after every poll
    /// (every record) is one atomic load, not a lock.
    pending: AtomicBool,
    lag: ConsumerLag,
}

#[derive(Default)]
struct Revoked {
    /// A failed rebalance unassigns everything.
    all: bool,
    partitions: BTreeSet<(String, i32)>,
}

impl ClientContext for Revocations {
    fn stats(&self, statistics: rdkafka::Statistics) {
        self.lag.record(&statistics);
    }
}

impl ConsumerContext for Revocations {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let mut revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
        if !matches!(rebalance, Rebalance::Assign(_)) {
            self.pending.store(true, Ordering::SeqCst);
        }
        match rebalance {
            Rebalance::Assign(_) => {}
            Rebalance::Revoke(partitions) => {
                for p in partitions.elements() {
                    revoked
                        .partitions
                        .insert((p.topic().to_string(), p.partition()));
                }
            }
            Rebalance::Error(_) => revoked.all = true,
        }
    }
}

impl Revocations {
    fn new(lag: ConsumerLag, member_id: &str) -> Revocations {
        Revocations {
            member_id: member_id.to_string(),
            revoked: Mutex::default(),
            pending: AtomicBool::new(false),
            lag,
        }
    }

    /// Removes from `batch` the records of partitions revoked since the last
    /// call.
    fn drop_revoked(&self, batch: &mut Vec<OwnedMessage>) {
        if !self.pending.swap(false, Ordering::SeqCst) {
            return;
        }
        let revoked = std::mem::take(&mut *self.revoked.lock().unwrap_or_else(|e| e.into_inner()));
        let before = batch.len();
        batch.retain(|r| {
            !revoked.all
                && !revoked
                    .partitions
                    .contains(&(r.topic().to_string(), r.partition()))
        });
        tracing::info!(
            dropped = before - batch.len(),
            revoked = ?revoked.partitions,
            "rebalance: records of revoked partitions dropped from the batch; their next owner reads them again"
        );
    }
}

type StageConsumer = BaseConsumer<Revocations>;

/// Runs a stage until `stop` is set (between transactions) or a fatal error.
/// Blocking: run it on a thread of its own.
pub fn run(
    config: &Config,
    topics: &StageTopics,
    step: &mut dyn Step,
    metrics: &Component,
    stop: &Arc<AtomicBool>,
) -> Result<(), StageError> {
    let limits = match RecordLimits::describe_blocking(
        &config.kafka,
        &[topics.output.as_str(), topics.dlq.as_str()],
        stop,
    ) {
        Ok(limits) => limits,
        Err(_) if stop.load(Ordering::SeqCst) => return Ok(()),
        Err(e) => {
            return Err(StageError::Consumer(format!(
                "the output topics' limits: {e}"
            )))
        }
    };
    run_with_limits(config, topics, step, metrics, limits, stop)
}

/// [`run`] with the output topics' record limits known (asked of the
/// broker by [`run`]; given outright where the broker cannot describe its
/// topics, as librdkafka's mock cluster cannot).
pub fn run_with_limits(
    config: &Config,
    topics: &StageTopics,
    step: &mut dyn Step,
    metrics: &Component,
    limits: RecordLimits,
    stop: &Arc<AtomicBool>,
) -> Result<(), StageError> {
    let mut known = step.known_labels();
    known.errors = ERROR_TYPES.iter().map(|e| e.to_string()).collect();
    metrics.declare(&known);
    let consumer_config =
        group_member_config(&config.kafka, &topics.group, &topics.transactional_id);
    let lag = ConsumerLag::new(Some(metrics.clone()), &topics.group);
    let consumer: StageConsumer =
        consumer_config.create_with_context(Revocations::new(lag, &topics.transactional_id))?;
    let Some(writer) = batch_writer(config, topics, limits, stop)? else {
        return Ok(());
    };
    let writer = writer.counting_resumes_in(metrics.clone());
    let inputs: Vec<&str> = topics.inputs.iter().map(String::as_str).collect();
    consumer.subscribe(&inputs)?;
    tracing::info!(stage = %topics.name, group = %topics.group, transactional_id = %topics.transactional_id, delivery = ?topics.delivery, inputs = ?topics.inputs, output = %topics.output, "stage running");

    let mut backoff = Backoff::default();
    while !stop.load(Ordering::SeqCst) {
        let polling = Instant::now();
        let mut batch = poll_batch(&consumer, topics, stop)?;
        if batch.is_empty() || !prepared(&consumer, step, metrics, stop, &mut batch)? {
            continue;
        }
        let writing = Instant::now();
        let result = write_batch(&consumer, &writer, topics, step, metrics, &batch, stop);
        tracing::debug!(
            records = batch.len(),
            poll_ms = (writing - polling).as_millis() as u64,
            write_ms = writing.elapsed().as_millis() as u64,
            "batch"
        );
        match result {
            Ok(()) => backoff = Backoff::default(),
            Err(e) if writer::is_fatal(&e) => return Err(e.into()),
            // Anything else is the cluster's, never the batch's (each record
            // was checked against its topic's limit): a broker down, a
            // coordinator moving, a timeout. Abort, read the batch again,
            // and write it once the brokers answer.
            Err(e) => {
                metrics.error(TRANSACTION_ABORTED);
                metrics.transaction(false);
                let wait = backoff.next_wait();
                tracing::warn!(error = %e, retry_in = ?wait, "the batch was not written; it is read again and written once Kafka answers");
                if topics.delivery == Delivery::ExactlyOnce {
                    writer.abandon(stop)?;
                }
                wait_and_rewind(&consumer, batch, wait, stop)?;
            }
        }
    }
    tracing::info!(stage = %topics.name, "stage stopped");
    Ok(())
}

/// The stage's producer, once Kafka answers (`None`: stopped meanwhile).
fn batch_writer(
    config: &Config,
    topics: &StageTopics,
    limits: RecordLimits,
    stop: &AtomicBool,
) -> Result<Option<BatchWriter>, StageError> {
    let mut backoff = Backoff::default();
    loop {
        let writer = if topics.delivery == Delivery::ExactlyOnce {
            // A worker that dies for good leaves its open transaction
            // blocking read_committed readers of the output until the broker
            // aborts it; batches commit in well under a second, so keep this
            // short.
            BatchWriter::transactional(
                &config.kafka,
                &topics.transactional_id,
                Duration::from_secs(15),
                TXN_TIMEOUT,
                limits.clone(),
            )
        } else {
            BatchWriter::idempotent(&config.kafka, TXN_TIMEOUT, limits.clone())
        };
        match writer {
            Ok(writer) => return Ok(Some(writer)),
            Err(e) if writer::is_fatal(&e) => return Err(e.into()),
            Err(e) => {
                let wait = backoff.next_wait();
                tracing::warn!(error = %e, retry_in = ?wait, "cannot start the stage's producer; waiting for Kafka");
                let until = Instant::now() + wait;
                while Instant::now() < until {
                    if stop.load(Ordering::SeqCst) {
                        return Ok(None);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}

/// After a failed write: waits `wait` (or until `stop`) polling with every
/// partition paused, so the group keeps this member and rebalances are
/// served, then rewinds to the batch's first offsets. A record a poll still
/// brings (fetched before the pause) joins the batch, so the rewind covers
/// its partition too.
fn wait_and_rewind(
    consumer: &StageConsumer,
    mut batch: Vec<OwnedMessage>,
    wait: Duration,
    stop: &AtomicBool,
) -> Result<(), StageError> {
    let assignment = consumer.assignment()?;
    consumer.pause(&assignment)?;
    let until = Instant::now() + wait;
    while Instant::now() < until && !stop.load(Ordering::SeqCst) {
        poll_into(consumer, &mut batch, Duration::from_millis(100))?;
    }
    rewind(consumer, &batch)?;
    consumer.resume(&consumer.assignment()?)?;
    Ok(())
}

/// Lets the step prepare the batch; while it reports an outage, waits with
/// backoff, its partitions paused and polling on so the group keeps it.
/// False if the worker was stopped meanwhile (the batch stays uncommitted),
/// or a rebalance meanwhile took every partition the batch came from.
fn prepared(
    consumer: &StageConsumer,
    step: &mut dyn Step,
    metrics: &Component,
    stop: &AtomicBool,
    batch: &mut Vec<OwnedMessage>,
) -> Result<bool, StageError> {
    let mut backoff = Backoff::default();
    let mut paused: Option<TopicPartitionList> = None;
    let membership = consumer.context().lag.membership();
    loop {
        match step.prepare(batch) {
            Ok(()) => {
                if let Some(m) = membership {
                    m.waiting_for(None);
                }
                break;
            }
            Err(why) => {
                if let Some(m) = membership {
                    m.waiting_for(Some(why.clone()));
                }
                metrics.error(DEPENDENCY_UNAVAILABLE);
                let wait = backoff.next_wait();
                tracing::warn!(error = %why, retry_in = ?wait, "waiting for a dependency; nothing is dead-lettered meanwhile");
                if paused.is_none() {
                    let assignment = consumer.assignment()?;
                    consumer.pause(&assignment)?;
                    paused = Some(assignment);
                }
                let until = Instant::now() + wait;
                while Instant::now() < until {
                    if stop.load(Ordering::SeqCst) {
                        return Ok(false);
                    }
                    // Paused: polling keeps the membership
                    // (max.poll.interval.ms) and serves rebalances. A record
                    // fetched before the pause may still come: it joins the
                    // batch (its position is already past it), and the batch
                    // is prepared again.
                    poll_into(consumer, batch, Duration::from_millis(100))?;
                }
            }
        }
    }
    if paused.is_some() {
        // The current assignment: a rebalance may have changed it meanwhile.
        consumer.resume(&consumer.assignment()?)?;
    }
    Ok(!batch.is_empty())
}

/// A batch: up to `batch_records`, within the batch window, or what came
/// before `stop` (a stopping worker writes what it has at once rather than
/// filling its window: it must be gone within the stop grace).
fn poll_batch(
    consumer: &StageConsumer,
    topics: &StageTopics,
    stop: &AtomicBool,
) -> Result<Vec<OwnedMessage>, StageError> {
    let mut batch = Vec::new();
    let mut window = BatchWindow::start(topics.batch, topics.batch_idle);
    while batch.len() < topics.batch_records && !stop.load(Ordering::SeqCst) {
        let left = window.left(!batch.is_empty());
        if left.is_zero() && !batch.is_empty() {
            break;
        }
        // Short polls, so a stop is seen within a tenth of a second.
        let wait = left.clamp(Duration::from_millis(10), Duration::from_millis(100));
        let polled = poll_into(consumer, &mut batch, wait)?;
        if polled {
            window.record();
        }
        if !polled && batch.is_empty() && window.expired() {
            break;
        }
    }
    Ok(batch)
}

/// Polls once and adds the record, if one came, to the batch. A rebalance
/// served by this poll first takes out the batch's records from the
/// partitions it revoked; the record the poll returns comes from the new
/// assignment (librdkafka discards what was fetched under the old one).
/// An error: the consumer cannot go on (fenced, or out of its group for
/// good); the stage ends.
fn poll_into(
    consumer: &StageConsumer,
    batch: &mut Vec<OwnedMessage>,
    timeout: Duration,
) -> Result<bool, StageError> {
    let polled = consumer.poll(timeout);
    let context = consumer.context();
    context.lag.polled().map_err(StageError::Consumer)?;
    context.drop_revoked(batch);
    match polled {
        Some(Ok(m)) => {
            batch.push(m.detach());
            Ok(true)
        }
        Some(Err(e)) => match fatal_consumer_error(&e, &context.member_id) {
            Some(why) => Err(StageError::Consumer(why)),
            // A broker restarting, say: librdkafka recovers; keep polling.
            None => {
                tracing::warn!(error = %e, "consumer error");
                Ok(false)
            }
        },
        None => Ok(false),
    }
}

/// Where a stage's outcomes go.
pub struct Destinations<'a> {
    /// Named in dead letters' `firstmile.dlq.stage`.
    pub stage: &'a str,
    pub output: &'a str,
    pub dlq: &'a str,
}

/// Produces an outcome of `record`: an output under the input's key with the
/// `firstmile.source` header (the next stage counts per source without
/// decoding), or a dead letter with the input's bytes and headers plus
/// `firstmile.dlq.*`. A drop writes nothing. An output too large for its
/// topic becomes a `too_large` dead letter instead (the broker would refuse
/// it, and with it the whole batch, again and again); a dead letter too large
/// for its topic keeps a prefix of the input ([`dlq::dead_letter`]).
/// Answers the outcome written.
pub fn write_outcome(
    writer: &BatchWriter,
    to: &Destinations<'_>,
    record: &OwnedMessage,
    source: &str,
    outcome: Outcome,
) -> Result<Outcome, KafkaError> {
    let key = record.key().unwrap_or_default();
    let outcome = match outcome {
        Outcome::Output(value) => {
            let source_header = OwnedHeaders::new().insert(Header {
                key: headers::SOURCE,
                value: Some(source),
            });
            let (size, limit) = (
                record_size(key, &value, Some(&source_header)),
                writer.limit(to.output),
            );
            if size <= limit {
                writer.send(
                    BaseRecord::to(to.output)
                        .key(key)
                        .payload(value.as_slice())
                        .headers(source_header),
                )?;
                return Ok(Outcome::Output(value));
            }
            Outcome::DeadLetter {
                kind: DeadLetterKind::TooLarge,
                message: format!(
                    "the event is {size} bytes; topic `{}` takes at most {limit} (its max.message.bytes)",
                    to.output
                ),
            }
        }
        other => other,
    };
    if let Outcome::DeadLetter { kind, message } = &outcome {
        let letter = dlq::dead_letter(
            record,
            to.stage,
            kind.as_str(),
            message,
            writer.limit(to.dlq),
        );
        let mut out = BaseRecord::to(to.dlq)
            .payload(letter.payload)
            .headers(letter.headers);
        if let Some(key) = letter.key {
            out = out.key(key);
        }
        writer.send(out)?;
    }
    Ok(outcome)
}

/// What a batch did, per source, reported once the batch is committed (an
/// aborted batch is read again and must not count twice).
#[derive(Default)]
struct SourceCounts {
    read: u64,
    written: u64,
    /// `dlq_<kind>` and `drop_rule_<rule>`, as the discarded reason.
    discarded: BTreeMap<String, u64>,
}

type Counts = BTreeMap<String, SourceCounts>;

/// Produces the batch's outputs and dead letters; returns the offsets to
/// commit and the counts to report once they are committed.
fn produce_batch(
    writer: &BatchWriter,
    topics: &StageTopics,
    step: &mut dyn Step,
    batch: &[OwnedMessage],
) -> Result<(TopicPartitionList, Counts), KafkaError> {
    let mut next_offsets: BTreeMap<(String, i32), i64> = BTreeMap::new();
    let mut counts = Counts::new();
    let to = Destinations {
        stage: topics.name.as_str(),
        output: &topics.output,
        dlq: &topics.dlq,
    };
    for record in batch {
        let source = step.source_of(record);
        let outcome = step.apply(record, &source);
        let outcome = write_outcome(writer, &to, record, &source, outcome)?;
        let count = counts.entry(source).or_default();
        count.read += 1;
        match outcome.discard_reason() {
            None => count.written += 1,
            Some(reason) => *count.discarded.entry(reason).or_default() += 1,
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
    Ok((offsets, counts))
}

fn report(metrics: &Component, counts: Counts, started: Instant) {
    let mut events = 0;
    for (source, count) in counts {
        metrics.received(&source, count.read, 0);
        metrics.sent(&source, count.written, 0);
        for (reason, n) in count.discarded {
            metrics.discarded(&source, &reason, n);
        }
        events += count.read;
    }
    metrics.batch_written(events as usize, started.elapsed().as_secs_f64());
}

/// Writes the batch's outcomes with its offsets as the stage delivers, and
/// reports it once they are committed.
fn write_batch(
    consumer: &StageConsumer,
    writer: &BatchWriter,
    topics: &StageTopics,
    step: &mut dyn Step,
    metrics: &Component,
    batch: &[OwnedMessage],
    stop: &AtomicBool,
) -> Result<(), KafkaError> {
    let started = Instant::now();
    let produce = |w: &BatchWriter| produce_batch(w, topics, step, batch);
    let counts = match topics.delivery {
        Delivery::ExactlyOnce => {
            // No group metadata means the consumer has not joined its group yet.
            let group = consumer
                .group_metadata()
                .ok_or(KafkaError::MessageConsumption(RDKafkaErrorCode::State))?;
            let counts = writer.transaction(&group, stop, produce)?;
            metrics.transaction(true);
            counts
        }
        Delivery::AtLeastOnce => match deliver_then_commit(consumer, writer, metrics, produce)? {
            Some(counts) => counts,
            None => return rewind(consumer, batch),
        },
    };
    report(metrics, counts, started);
    Ok(())
}

/// At-least-once: every output acknowledged, then the offsets committed.
/// `None` when the batch must be read again (its delivered records twice):
/// a delivery failed, or the commit did (a rebalance, typically: the
/// partitions' new owner reads the batch again).
fn deliver_then_commit(
    consumer: &StageConsumer,
    writer: &BatchWriter,
    metrics: &Component,
    produce: impl FnOnce(&BatchWriter) -> Result<(TopicPartitionList, Counts), KafkaError>,
) -> Result<Option<Counts>, KafkaError> {
    let mut produced = None;
    let delivered = writer.delivered(FLUSH_TIMEOUT, |w| {
        produced = Some(produce(w)?);
        Ok(())
    })?;
    let Some((offsets, counts)) = produced.filter(|_| delivered) else {
        metrics.error(DELIVERY_FAILED);
        tracing::warn!("the batch is read again");
        return Ok(None);
    };
    if let Err(e) = consumer.commit(&offsets, CommitMode::Sync) {
        metrics.error(OFFSET_COMMIT);
        tracing::warn!(error = %e, "committing offsets failed; the batch will be read again");
        return Ok(None);
    }
    Ok(Some(counts))
}

/// After an abort: read the batch again from its first offsets, on the
/// partitions still assigned (a rebalance hands the others, uncommitted, to
/// their new owner). A partition still ours that cannot be rewound is an
/// error: going on would commit past records never written.
fn rewind(consumer: &StageConsumer, batch: &[OwnedMessage]) -> Result<(), KafkaError> {
    let assigned = consumer.assignment()?;
    let mut first: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for r in batch {
        let offset = first
            .entry((r.topic().to_string(), r.partition()))
            .or_insert(r.offset());
        *offset = (*offset).min(r.offset());
    }
    for ((topic, partition), offset) in first {
        if assigned.find_partition(&topic, partition).is_none() {
            tracing::info!(%topic, partition, "not rewound: no longer assigned");
            continue;
        }
        consumer.seek(
            &topic,
            partition,
            Offset::Offset(offset),
            Duration::from_secs(10),
        )?;
    }
    Ok(())
}
