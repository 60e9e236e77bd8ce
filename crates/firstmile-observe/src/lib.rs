//! The pipeline observed from outside its workers: `firstmile status` (one
//! screen: sources, stage and sink groups, sink targets, the roles' own
//! metrics, with "stalled" and "stopped updating" flags and their likely
//! causes) and `firstmile audit` (a time range followed from the raw topics
//! to both sinks, record by record).
//!
//! Everything is read: group offsets, watermarks and records from Kafka,
//! the newest rows and documents from the targets, `/metrics` from the
//! roles. Nothing is written anywhere.

pub mod audit;
mod kafka;
pub mod prom;
pub mod status;

pub use audit::{audit, AuditReport};
pub use status::{collect, Options, Status};

#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Range(#[from] firstmile_kafka::range::RangeError),
    #[error(transparent)]
    Sink(#[from] firstmile_sink::SinkError),
    #[error("source `{name}` is not configured (known: {known})")]
    UnknownSource { name: String, known: String },
    #[error("a reader ended abnormally: {0}")]
    Reader(String),
    #[error("cannot reach the brokers at {brokers}: {why}")]
    Brokers { brokers: String, why: String },
}

/// Fails at once, naming the brokers, when they do not answer one metadata
/// request within `kafka.request_timeout_ms`: otherwise every read of a
/// report would wait out its own timeout (minutes, all told).
pub(crate) async fn brokers_answer(kafka: &firstmile_config::Kafka) -> Result<(), ObserveError> {
    let timeout = std::time::Duration::from_millis(kafka.request_timeout_ms);
    firstmile_kafka::BrokerProbe::new(kafka)?
        .check(timeout)
        .await
        .map_err(|why| ObserveError::Brokers {
            brokers: kafka.brokers.clone(),
            why,
        })
}
