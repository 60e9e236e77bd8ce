//! Every Kafka mechanic of firstmile, so roles only say what they do with
//! their clients: client settings from `[kafka]` (`client`: group members,
//! assigned readers), ranges of offsets and reading them (`range`), batches
//! written transactionally (`writer`), batch windows, backoff, consumer lag,
//! dead letters that fit their topic (`limits`, `dlq`), topics as code (`topics/*.toml` planned against and
//! applied to the broker), and the raw producer every receiver writes
//! through.

pub mod backoff;
pub mod batch;
pub mod client;
pub mod dlq;
pub mod lag;
pub mod limits;
pub mod range;
pub mod raw;
pub mod topics;
pub mod writer;

pub use backoff::Backoff;
pub use batch::BatchWindow;
pub use client::{
    assigned_reader_config, client_config, fatal_consumer_error, group_member_config, BrokerProbe,
    ClientKind, CONSUMER_DEFAULTS,
};
pub use limits::RecordLimits;
pub use writer::BatchWriter;

use rdkafka::message::{Headers, Message, OwnedMessage};

/// A record's header value as text, if present and UTF-8.
pub fn header_str<'a>(record: &'a OwnedMessage, name: &str) -> Option<&'a str> {
    record
        .headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}
