//! The sink framework. A sink is a consumer group member on `events` that
//! writes each batch to its target idempotently (keyed by `event_id`), then
//! commits the batch's offsets: a crash in between writes the batch again,
//! which the target turns into the same rows or documents.
//!
//! The framework owns everything but the target (as Vector's components
//! do): [`run`] polls, decodes, keeps the last copy of each event, writes
//! through a [`Sink`], retries what the target could not take (an outage,
//! or items it answers "later"), dead-letters what it refused for the
//! content, commits and reports. Each sink crate implements [`Sink`] for its
//! target; `status`, `audit` and readiness ask the same trait what the
//! target holds.

mod consumer;
mod driver;

use std::collections::HashSet;
use std::sync::atomic::AtomicBool;

use firstmile_config::SinkName;
use firstmile_event::{DeadLetterKind, Event};
use firstmile_schema::{Decoder, Registry};
use jiff::Timestamp;
use rdkafka::message::{Message, OwnedMessage};
use uuid::Uuid;

pub use consumer::{source_of, SinkConsumer, SinkTopics};
pub use driver::run;
pub use firstmile_kafka::Backoff;

/// What the target made of one event of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemOutcome {
    /// Durable in the target.
    Written,
    /// Not taken for now for a reason of the target's (overloaded, a shard
    /// unavailable): written again after a backoff, never dead-lettered.
    Retry(String),
    /// Refused for its content: a dead letter of `kind` with the target's
    /// message.
    Rejected {
        kind: DeadLetterKind,
        message: String,
    },
}

/// The target cannot take writes at all now (down, unreachable, refusing
/// credentials): the batch waits and is written again.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

/// What a sink is, for the driver's logs and metrics.
#[derive(Debug)]
pub struct Profile {
    pub name: SinkName,
    /// The `errors_total{error_type}` counted while the target is
    /// unavailable (`database_unavailable`, `elasticsearch_unavailable`).
    pub unavailable_error: &'static str,
    /// The kinds [`ItemOutcome::Rejected`] can carry (besides what decoding
    /// rejects), exported at zero from the start.
    pub rejection_kinds: &'static [DeadLetterKind],
}

/// Why a sink could not start.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StartError {
    /// Tried again after a backoff.
    #[error("{0}")]
    Unavailable(String),
    /// The target refused what the sink needs (its configuration is
    /// wrong): the sink ends.
    #[error("{0}")]
    Refused(String),
}

/// The newest `received_at` in the target and how many rows or documents
/// were received after a time.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Freshness {
    pub newest: Option<Timestamp>,
    pub recent: u64,
}

/// A target: the one thing each sink crate implements. The write side is
/// run by [`run`]; the read side answers readiness, `status` and `audit`.
#[async_trait::async_trait]
pub trait Sink: Send + Sync {
    fn profile(&self) -> &'static Profile;

    fn name(&self) -> SinkName {
        self.profile().name
    }

    /// Once before the first batch (an index template, say); called again
    /// after a backoff while it reports the target unavailable.
    async fn start(&mut self) -> Result<(), StartError> {
        Ok(())
    }

    /// Writes `events` (no `event_id` twice); answers one outcome per event,
    /// in order. `Err`: nothing can be written now, the batch waits.
    async fn write(&mut self, events: &[&Event]) -> Result<Vec<ItemOutcome>, Unavailable>;

    /// After a batch is written and its offsets committed, with the events
    /// written (`stopping`: the last call, the driver is stopping): work
    /// that may lag the writes, such as refreshing rollups.
    async fn written(&mut self, _events: &[&Event], _stopping: bool) {}

    /// Whether the target answers, for `/health/ready`.
    async fn check(&self) -> Result<(), String>;

    /// The newest event the target holds and how many it received since
    /// `since` (by `received_at`), for `status`.
    async fn freshness(&self, since: Timestamp) -> Result<Freshness, String>;

    /// Which of `ids` the target holds, for `audit`.
    async fn holds(&self, ids: &[Uuid]) -> Result<HashSet<Uuid>, String>;
}

/// Records a committed batch: its size, how long the write took, and each
/// written event's end-to-end latency (its `received_at` to now).
pub fn observe_committed(
    metrics: &firstmile_metrics::Component,
    write_seconds: f64,
    received_at: &[jiff::Timestamp],
) {
    metrics.batch_written(received_at.len(), write_seconds);
    let latency = metrics.end_to_end_latency_histogram();
    let now = jiff::Timestamp::now();
    for t in received_at {
        // A clock behind the receiver's would give a negative latency.
        latency.observe(now.duration_since(*t).as_secs_f64().max(0.0));
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("schema registry: {0}")]
    Registry(#[from] firstmile_schema::RegistryError),
    #[error("{sink}: {message}")]
    Setup { sink: SinkName, message: String },
    #[error("{sink}: the consumer cannot go on: {why}")]
    Consumer { sink: SinkName, why: String },
}

/// Events out of the sink's input: Avro, writer schemas fetched by id.
pub struct EventDecoder(Decoder);

impl EventDecoder {
    pub fn new(config: &firstmile_config::SchemaRegistry) -> Result<EventDecoder, SinkError> {
        let registry = Registry::new(config)?;
        Ok(EventDecoder(Decoder::new(
            registry,
            firstmile_event::event_schema(),
        )))
    }

    /// Fetches the writer schemas the batch needs, waiting out a registry
    /// outage; false if `stop` was set meanwhile.
    pub async fn prepare(&mut self, batch: &[OwnedMessage], stop: &AtomicBool) -> bool {
        let mut backoff = Backoff::default();
        for id in self
            .0
            .missing(batch.iter().map(|r| r.payload().unwrap_or_default()))
        {
            while let Err(e) = self.0.fetch(id).await {
                tracing::warn!(schema_id = id, error = %e, retry_in = ?backoff.current(), "schema registry unavailable");
                if !backoff.wait(stop).await {
                    return false;
                }
            }
        }
        true
    }

    /// The record's event, or its dead-letter kind and message.
    pub fn decode(&self, record: &OwnedMessage) -> Result<Event, (DeadLetterKind, String)> {
        self.0
            .decode_event(record.payload().unwrap_or_default())
            .map_err(|e| (e.kind, e.message))
    }
}
