//! What every sink shares. A sink is a consumer group on `events` that
//! writes each batch to its target idempotently (keyed by `event_id`), then
//! commits the batch's offsets: a crash in between writes the batch again,
//! which the target turns into the same rows or documents. Bad records go to
//! `dlq` with the reason; an outage of the target, the registry or the broker
//! is waited out (backoff 250 ms → 30 s), never dead-lettered.

mod consumer;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use firstmile_event::Event;
use firstmile_schema::{Decoder, Registry};
use rdkafka::message::{Message, OwnedMessage};

pub use consumer::{source_of, DeadLetter, SinkConsumer, SinkTopics};

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
    #[error("{0}")]
    Setup(String),
}

/// The longest wait between two attempts at an unavailable dependency.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Exponential backoff from 250 ms to [`MAX_BACKOFF`].
pub struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Backoff(Duration::from_millis(250))
    }
}

impl Backoff {
    /// Sleeps for the current wait plus up to a quarter more (jitter, so
    /// workers that failed together do not retry together), then doubles
    /// the wait; false if `stop` was set.
    pub async fn wait(&mut self, stop: &AtomicBool) -> bool {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let jitter = self.0.mul_f64(f64::from(nanos % 1000) / 4000.0);
        tokio::time::sleep(self.0 + jitter).await;
        self.0 = (self.0 * 2).min(MAX_BACKOFF);
        !stop.load(Ordering::SeqCst)
    }

    pub fn current(&self) -> Duration {
        self.0
    }
}

/// Events out of the sink's input: Avro, writer schemas fetched by id.
pub struct EventDecoder(Decoder);

impl EventDecoder {
    pub fn new(config: &firstmile_config::SchemaRegistry) -> Result<EventDecoder, SinkError> {
        let registry = Registry::new(config).map_err(|e| SinkError::Setup(e.to_string()))?;
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
    pub fn decode(&self, record: &OwnedMessage) -> Result<Event, (&'static str, String)> {
        self.0
            .decode_event(record.payload().unwrap_or_default())
            .map_err(|e| (e.kind, e.message))
    }
}
