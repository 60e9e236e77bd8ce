//! The producer side of the roles that turn input records into output
//! records (the stages, replay): batches written with the inputs' offsets in
//! one Kafka transaction, so each input appears downstream exactly once for
//! `read_committed` readers; or, for brokers without transactions,
//! acknowledged before the offsets are committed. Blocking (librdkafka's
//! transactional calls block): run it on a thread of its own.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use firstmile_config::Kafka;
use firstmile_metrics::Component;
use rdkafka::client::ClientContext;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::TopicPartitionList;

use crate::limits::RecordLimits;
use crate::{client_config, ClientKind};

/// Counts records the producer finally failed to deliver. Transactions
/// surface those at commit; at-least-once needs them counted to know whether
/// a batch may be committed.
#[derive(Default)]
pub struct DeliveryFailures(AtomicU64);

impl ClientContext for DeliveryFailures {}

impl ProducerContext for DeliveryFailures {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            tracing::warn!(error = %e, "delivery failed");
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// An idempotent producer, transactional when made with
/// [`BatchWriter::transactional`].
pub struct BatchWriter {
    producer: ThreadedProducer<DeliveryFailures>,
    /// The largest record each topic it writes takes.
    limits: RecordLimits,
    /// How long one transactional call (init, send offsets, commit, abort)
    /// may take.
    timeout: Duration,
    /// Where each resumed call is counted ([`TRANSACTION_RESUMED`]).
    metrics: Option<Component>,
}

/// The error type (`errors_total{error_type}`) of a transactional call that
/// did not finish in time and is resumed: a transaction waiting for its
/// coordinator.
pub const TRANSACTION_RESUMED: &str = "transaction_resumed";

impl BatchWriter {
    /// A transactional producer of `transactional_id` (its earlier
    /// incarnation is fenced). `transaction_timeout`: how long the broker
    /// lets a transaction stay open before it aborts it, unless
    /// `[kafka.producer]` sets `transaction.timeout.ms`; an open transaction
    /// of a worker gone for good blocks `read_committed` readers that long.
    /// `limits`: of the topics it writes (the producer's own limits are set
    /// from them).
    pub fn transactional(
        kafka: &Kafka,
        transactional_id: &str,
        transaction_timeout: Duration,
        timeout: Duration,
        mut limits: RecordLimits,
    ) -> Result<BatchWriter, KafkaError> {
        let mut config = client_config(kafka, ClientKind::Producer);
        limits.configure(&mut config);
        config
            .set("enable.idempotence", "true")
            .set("transactional.id", transactional_id);
        if config.get("transaction.timeout.ms").is_none() {
            config.set(
                "transaction.timeout.ms",
                transaction_timeout.as_millis().to_string(),
            );
        }
        let producer: ThreadedProducer<DeliveryFailures> =
            config.create_with_context(DeliveryFailures::default())?;
        producer.init_transactions(timeout)?;
        Ok(BatchWriter {
            producer,
            limits,
            timeout,
            metrics: None,
        })
    }

    /// An idempotent producer without transactions (at-least-once).
    pub fn idempotent(
        kafka: &Kafka,
        timeout: Duration,
        mut limits: RecordLimits,
    ) -> Result<BatchWriter, KafkaError> {
        let mut config = client_config(kafka, ClientKind::Producer);
        limits.configure(&mut config);
        let producer = config
            .set("enable.idempotence", "true")
            .create_with_context(DeliveryFailures::default())?;
        Ok(BatchWriter {
            producer,
            limits,
            timeout,
            metrics: None,
        })
    }

    /// Counts every resumed transactional call in `metrics` as
    /// [`TRANSACTION_RESUMED`], as it happens (a stuck commit shows while it
    /// is stuck).
    pub fn counting_resumes_in(mut self, metrics: Component) -> BatchWriter {
        self.metrics = Some(metrics);
        self
    }

    /// The largest record `topic` takes.
    pub fn limit(&self, topic: &str) -> usize {
        self.limits.of(topic)
    }

    /// Produces one record, waiting while the producer's queue is full.
    pub fn send(&self, mut record: BaseRecord<'_, [u8], [u8]>) -> Result<(), KafkaError> {
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// One transaction: `produce` writes the batch (through
    /// [`BatchWriter::send`]) and answers the input offsets to commit with
    /// it; they go to the transaction with the group's metadata (KIP-447),
    /// then it commits once every record is acknowledged. Sending the
    /// offsets and committing are resumed while they time out (the
    /// coordinator away), until `stop` is set. On an error the transaction is
    /// not committed, and the caller decides: [`BatchWriter::abandon`] and
    /// read again, or end.
    pub fn transaction<T>(
        &self,
        group: &ConsumerGroupMetadata,
        stop: &AtomicBool,
        produce: impl FnOnce(&BatchWriter) -> Result<(TopicPartitionList, T), KafkaError>,
    ) -> Result<T, KafkaError> {
        self.producer.begin_transaction()?;
        let (offsets, value) = produce(self)?;
        self.resumed("sending the offsets to the transaction", stop, || {
            self.producer
                .send_offsets_to_transaction(&offsets, group, self.timeout)
        })?;
        self.wait_delivered(self.timeout)?;
        self.resumed("committing the transaction", stop, || {
            self.producer.commit_transaction(self.timeout)
        })?;
        Ok(value)
    }

    pub fn abort(&self) -> Result<(), KafkaError> {
        self.producer.abort_transaction(self.timeout)
    }

    /// Gives up the open transaction, if any, after `failed` ended it:
    /// aborts (librdkafka accepts an abort after any error but a fatal one),
    /// trying again with backoff while the brokers cannot answer. `Err` only
    /// if the producer cannot go on (fenced) or `stop` was set.
    pub fn abandon(&self, stop: &AtomicBool) -> Result<(), KafkaError> {
        let mut backoff = crate::Backoff::default();
        loop {
            match self.producer.abort_transaction(self.timeout) {
                Ok(()) => return Ok(()),
                // No transaction was open (it failed before beginning).
                Err(KafkaError::Transaction(e)) if e.code() == RDKafkaErrorCode::State => {
                    return Ok(())
                }
                Err(e) if is_fatal(&e) || stop.load(Ordering::SeqCst) => return Err(e),
                Err(e) => {
                    let wait = backoff.next_wait();
                    tracing::warn!(error = %e, retry_in = ?wait, "cannot abort the transaction yet");
                    std::thread::sleep(wait);
                }
            }
        }
    }

    /// At-least-once: `produce` writes the batch; true if every record of
    /// it was acknowledged within `timeout` (only then may its offsets be
    /// committed).
    pub fn delivered(
        &self,
        timeout: Duration,
        produce: impl FnOnce(&BatchWriter) -> Result<(), KafkaError>,
    ) -> Result<bool, KafkaError> {
        let failures = &self.producer.context().0;
        failures.store(0, Ordering::SeqCst);
        produce(self)?;
        let flushed = self.wait_delivered(timeout);
        let failed = failures.load(Ordering::SeqCst);
        if flushed.is_err() || failed > 0 {
            tracing::warn!(failed, flushed = ?flushed, "not every record was delivered");
            return Ok(false);
        }
        Ok(true)
    }

    /// Waits until every produced record is acknowledged (its delivery
    /// report served by the producer's own polling thread).
    ///
    /// rust-rdkafka's `flush` (which `commit_transaction` calls first) polls
    /// in slices that always last 100 ms, so every transaction took at least
    /// 100 ms; by the time it runs after this there is nothing left to wait
    /// for.
    fn wait_delivered(&self, timeout: Duration) -> Result<(), KafkaError> {
        let deadline = Instant::now() + timeout;
        while self.producer.in_flight_count() > 0 {
            if Instant::now() > deadline {
                return Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    /// Calls `call` again while it fails with a retriable error: a
    /// transactional call that timed out (its coordinator away) goes on
    /// inside librdkafka, and only calling it again resumes it. Aborting
    /// instead is refused ("Conflicting commit_transaction API call is
    /// already in progress") for as long as one tries, and a commit that did
    /// complete would have its batch written twice. Stops trying once `stop`
    /// is set.
    fn resumed(
        &self,
        what: &str,
        stop: &AtomicBool,
        call: impl Fn() -> Result<(), KafkaError>,
    ) -> Result<(), KafkaError> {
        let mut backoff = crate::Backoff::default();
        loop {
            match call() {
                Err(KafkaError::Transaction(e))
                    if e.is_retriable() && !stop.load(Ordering::SeqCst) =>
                {
                    if let Some(metrics) = &self.metrics {
                        metrics.error(TRANSACTION_RESUMED);
                    }
                    let wait = backoff.next_wait();
                    tracing::warn!(error = %e, retry_in = ?wait, "{what} did not finish; resuming it once Kafka answers");
                    std::thread::sleep(wait);
                }
                result => return result,
            }
        }
    }
}

/// True if the producer cannot go on after `e`: it was fenced (another
/// worker took its transactional id) or librdkafka says so. Anything else of
/// a transaction (a broker down, a coordinator moving, a timeout) is a
/// reason to abort and write the batch again.
pub fn is_fatal(e: &KafkaError) -> bool {
    match e {
        KafkaError::Transaction(t) => {
            t.is_fatal()
                || matches!(
                    t.code(),
                    RDKafkaErrorCode::Fenced | RDKafkaErrorCode::ProducerFenced
                )
        }
        _ => false,
    }
}
