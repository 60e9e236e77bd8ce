//! `firstmile replay`: reprocess a retained range of a raw topic through the
//! current parse and enrich chain into the events and dead-letter topics.
//!
//! - [`range`] fixes the range when the replay starts: per partition, a
//!   start (by time with `offsetsForTimes`, or given offsets) and an end (so
//!   a replay always terminates). Records retention already deleted are an
//!   error naming the oldest one left, never a silent partial replay.
//! - [`run`] reads the range outside any live consumer group and writes each
//!   batch's events and dead letters with its progress in one transaction
//!   ([`progress`]): stopped anywhere, `--resume` goes on exactly after the
//!   last batch written.
//! - [`dry_run`] writes nothing and reports what a replay would change
//!   ([`diff`]).
//!
//! Events keep their `event_id` (from the raw record's coordinates) and
//! `received_at`, which is what the sinks key and partition on: a replayed
//! event replaces its earlier version in TimescaleDB and Elasticsearch, also
//! when the fix changed its `@timestamp`.

pub mod diff;
mod dry_run;
pub mod progress;
pub mod range;
pub mod reader;
mod run;

pub use dry_run::{dry_run, Phase};
pub use run::{consumer, run, Options, Summary};

use rdkafka::error::KafkaError;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("{0}")]
    Stage(#[from] firstmile_stages::StageError),
    #[error("topic {0} does not exist")]
    NoTopic(String),
    #[error("--offsets {0}")]
    BadOffsets(String),
    #[error(
        "{topic} partition {partition}: retention has already deleted {requested}; the oldest record left is offset {oldest_offset}{}. \
         Replay what is left explicitly: --from {} (every partition) or --offsets {partition}:{oldest_offset}-",
        oldest_time.as_ref().map(|t| format!(", received {t}")).unwrap_or_default(),
        oldest_time.as_deref().unwrap_or("<that time>")
    )]
    Retention {
        topic: String,
        partition: i32,
        requested: String,
        oldest_offset: i64,
        oldest_time: Option<String>,
    },
    #[error("no replay of source `{0}` to resume (none started, or its progress expired)")]
    NothingToResume(String),
    #[error("another replay of source `{0}` started and took over; this one stopped (its last committed batch stands)")]
    Fenced(String),
    #[error("{0}")]
    Setup(String),
}
