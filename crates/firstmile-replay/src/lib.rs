//! `firstmile replay`: reprocess a retained range of a raw topic through the
//! current parse and enrich chain into the events and dead-letter topics.
//!
//! - [`range`] fixes the range when the replay starts: per partition, a
//!   start (by time with `offsetsForTimes`, or given offsets) and an end (so
//!   a replay always terminates). Records retention already deleted are an
//!   error naming the oldest one left, never a silent partial replay.
//! - [`run`] reads the range outside any live consumer group and writes each
//!   batch's events and dead letters with its progress in one transaction:
//!   the committed offsets of its own group `firstmile-replay-<source>`
//!   (never a live stage's), each carrying the range's end in its metadata,
//!   so stopped anywhere, `--resume` goes on exactly after the last batch
//!   written and stops where the original run would have.
//! - [`dry_run`] writes nothing and reports what a replay would change
//!   ([`diff`]).
//!
//! Events keep their `event_id` (from the raw record's coordinates) and
//! `received_at`, which is what the sinks key and partition on: a replayed
//! event replaces its earlier version in TimescaleDB and Elasticsearch, also
//! when the fix changed its `@timestamp`.

pub mod diff;
mod dry_run;
pub mod range;
mod run;

pub use dry_run::{dry_run, Phase};
pub use run::{consumer, run, Options, Summary};

use firstmile_config::{Config, Topology};
use rdkafka::consumer::BaseConsumer;
use rdkafka::error::KafkaError;

/// What a replay (or its dry run) runs with: the configuration, the
/// topology it writes and reads by, and the consumer that planned its range
/// ([`consumer`]).
pub struct Setup<'a> {
    pub config: &'a Config,
    pub topology: &'a Topology,
    pub consumer: &'a BaseConsumer,
}

impl Setup<'_> {
    /// The replay group of `source`: its progress and transactional id.
    fn replay_group(&self, source: &str) -> Result<&str, ReplayError> {
        self.topology
            .sources
            .get(source)
            .map(|s| s.replay_group.as_str())
            .ok_or_else(|| ReplayError::UnknownSource(source.to_string()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("{0}")]
    Stage(#[from] firstmile_stages::StageError),
    #[error(transparent)]
    Range(#[from] firstmile_kafka::range::RangeError),
    #[error("no source `{0}` is configured")]
    UnknownSource(String),
    #[error("--offsets {0}")]
    BadOffsets(String),
    #[error("no replay of source `{0}` to resume (none started, or its progress expired)")]
    NothingToResume(String),
    #[error("another replay of source `{0}` started and took over; this one stopped (its last committed batch stands)")]
    Fenced(String),
    #[error("schema registry: {0}")]
    Registry(#[from] firstmile_schema::RegistryError),
    #[error("the output topics' record limits: {0}")]
    Limits(#[from] firstmile_kafka::topics::TopicsError),
    #[error("the replay's consumer has no group metadata (it needs its group to commit progress)")]
    NoGroup,
}
