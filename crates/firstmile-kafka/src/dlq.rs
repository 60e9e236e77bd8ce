//! The dead-letter topic's record: the input's bytes and headers, plus what
//! went wrong where, so a person (or `replay`) can find and fix it.

use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};

/// Header names a dead letter carries besides the input's own headers.
pub mod names {
    pub const STAGE: &str = "firstmile.dlq.stage";
    pub const ERROR_KIND: &str = "firstmile.dlq.error_kind";
    pub const ERROR_MESSAGE: &str = "firstmile.dlq.error_message";
    pub const TOPIC: &str = "firstmile.dlq.topic";
    pub const PARTITION: &str = "firstmile.dlq.partition";
    pub const OFFSET: &str = "firstmile.dlq.offset";
}

/// The input's own headers plus `firstmile.dlq.*`: the stage (or sink) that
/// gave up, the error kind and message, and the input's coordinates.
pub fn headers(record: &OwnedMessage, stage: &str, kind: &str, message: &str) -> OwnedHeaders {
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
        (names::STAGE, stage),
        (names::ERROR_KIND, kind),
        (names::ERROR_MESSAGE, message),
        (names::TOPIC, record.topic()),
        (names::PARTITION, partition.as_str()),
        (names::OFFSET, offset.as_str()),
    ] {
        headers = headers.insert(Header {
            key,
            value: Some(value),
        });
    }
    headers
}
