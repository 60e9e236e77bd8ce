//! How large a record each topic takes, so a writer never sends one the
//! broker refuses. A refused record fails its whole transaction, the batch
//! is read again and fails again: one oversized event would stop a stage for
//! good. Writers check each record against its topic's limit first and turn
//! what does not fit into a dead letter that does ([`crate::dlq`]).
//!
//! The limits are the broker's own (`max.message.bytes` of each topic, as
//! described by the broker at start): that is what it enforces, whatever
//! `topics/*.toml` declares.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::FromClientConfig;
use rdkafka::message::{Headers, OwnedHeaders};
use rdkafka::ClientConfig;

use crate::client::{client_config, ClientKind};
use crate::topics::TopicsError;
use crate::Backoff;

/// How long one attempt to describe the topics may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Kafka's default `max.message.bytes` (1 MB plus framing), assumed for a
/// topic the broker does not describe.
pub const BROKER_DEFAULT: usize = 1_048_588;

/// librdkafka's default `batch.size`.
const DEFAULT_BATCH_SIZE: usize = 1_000_000;

/// Bytes of the record batch framing and one record's own fields, beyond its
/// key, value and headers (record batch v2: a 61-byte batch header, then per
/// record at most 36 bytes of varints and attributes), rounded up.
const RECORD_OVERHEAD: usize = 128;
/// Per header: its two length varints.
const HEADER_OVERHEAD: usize = 10;

/// The size a record takes in a batch of its own, at most.
pub fn record_size(key: &[u8], value: &[u8], headers: Option<&OwnedHeaders>) -> usize {
    RECORD_OVERHEAD + key.len() + value.len() + headers.map_or(0, headers_size)
}

/// The bytes `headers` add to a record.
pub fn headers_size(headers: &OwnedHeaders) -> usize {
    headers
        .iter()
        .map(|h| HEADER_OVERHEAD + h.key.len() + h.value.map_or(0, <[u8]>::len))
        .sum()
}

/// The largest record each topic a writer writes takes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordLimits {
    topics: BTreeMap<String, usize>,
}

impl RecordLimits {
    /// Limits given outright (tests; a writer of no particular topic).
    pub fn new(topics: impl IntoIterator<Item = (String, usize)>) -> RecordLimits {
        RecordLimits {
            topics: topics.into_iter().collect(),
        }
    }

    /// Asks the broker for each topic's `max.message.bytes`, waiting out a
    /// Kafka outage (WARN at every attempt) until `stop` is set. A topic the
    /// broker does not know yet (created later by `topics apply`) gets
    /// Kafka's default.
    pub async fn describe(
        kafka: &firstmile_config::Kafka,
        topics: &[&str],
        stop: &AtomicBool,
    ) -> Result<RecordLimits, TopicsError> {
        let admin: AdminClient<DefaultClientContext> =
            AdminClient::from_config(&client_config(kafka, ClientKind::Admin))?;
        let request = Duration::from_millis(kafka.request_timeout_ms).min(ATTEMPT_TIMEOUT);
        let options = AdminOptions::new()
            .request_timeout(Some(request))
            .operation_timeout(Some(request));
        let specifiers: Vec<ResourceSpecifier<'_>> =
            topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
        let mut backoff = Backoff::default();
        loop {
            match admin.describe_configs(&specifiers, &options).await {
                Ok(described) => {
                    let mut limits = BTreeMap::new();
                    for (topic, result) in topics.iter().zip(described) {
                        let limit = result
                            .ok()
                            .and_then(|r| {
                                r.entries
                                    .into_iter()
                                    .find(|e| e.name == "max.message.bytes")
                            })
                            .and_then(|e| e.value?.parse::<usize>().ok())
                            .unwrap_or(BROKER_DEFAULT);
                        limits.insert(topic.to_string(), limit);
                    }
                    return Ok(RecordLimits { topics: limits });
                }
                Err(e) => {
                    tracing::warn!(error = %e, topics = ?topics, retry_in = ?backoff.current(), "cannot ask Kafka how large a record its topics take; waiting for it");
                    if !backoff.wait(stop).await {
                        return Err(e.into());
                    }
                }
            }
        }
    }

    /// [`RecordLimits::describe`] from a thread that may block.
    pub fn describe_blocking(
        kafka: &firstmile_config::Kafka,
        topics: &[&str],
        stop: &AtomicBool,
    ) -> Result<RecordLimits, TopicsError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| TopicsError::NotVisible(format!("the topics' limits ({e})")))?;
        runtime.block_on(RecordLimits::describe(kafka, topics, stop))
    }

    /// The largest record `topic` takes.
    pub fn of(&self, topic: &str) -> usize {
        self.topics.get(topic).copied().unwrap_or(BROKER_DEFAULT)
    }

    /// Lowers every limit to the producer's own `message.max.bytes` if
    /// `[kafka.producer]` set one, and otherwise sets it to the largest
    /// limit (librdkafka's default, 1 MB, would refuse larger records the
    /// topics take); keeps `batch.size` within the smallest limit, so a batch
    /// of small records is never refused as a whole.
    pub fn configure(&mut self, producer: &mut ClientConfig) {
        match producer
            .get("message.max.bytes")
            .and_then(|v| v.parse::<usize>().ok())
        {
            Some(own) => self.topics.values_mut().for_each(|l| *l = (*l).min(own)),
            None => {
                let largest = self
                    .topics
                    .values()
                    .copied()
                    .max()
                    .unwrap_or(BROKER_DEFAULT);
                producer.set("message.max.bytes", largest.to_string());
            }
        }
        if producer.get("batch.size").is_none() {
            let smallest = self
                .topics
                .values()
                .copied()
                .min()
                .unwrap_or(BROKER_DEFAULT);
            let batch = DEFAULT_BATCH_SIZE.min(smallest.saturating_sub(RECORD_OVERHEAD).max(1));
            producer.set("batch.size", batch.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::message::Header;

    use super::*;

    #[test]
    fn a_record_is_counted_with_its_key_headers_and_framing() {
        let headers = OwnedHeaders::new().insert(Header {
            key: "k",
            value: Some("vv"),
        });
        assert_eq!(
            record_size(b"key", b"value", Some(&headers)),
            RECORD_OVERHEAD + 3 + 5 + HEADER_OVERHEAD + 1 + 2
        );
        assert_eq!(record_size(b"", b"", None), RECORD_OVERHEAD);
    }

    #[test]
    fn the_producer_takes_the_largest_topic_and_batches_within_the_smallest() {
        let mut limits =
            RecordLimits::new([("a".to_string(), 4 << 20), ("b".to_string(), 600_000)]);
        let mut producer = ClientConfig::new();
        limits.configure(&mut producer);
        assert_eq!(producer.get("message.max.bytes"), Some("4194304"));
        assert_eq!(producer.get("batch.size"), Some("599872"));
        assert_eq!(limits.of("a"), 4 << 20);
        assert_eq!(limits.of("unknown"), BROKER_DEFAULT);
    }

    #[test]
    fn a_producer_limit_set_in_the_configuration_lowers_every_topic() {
        let mut limits = RecordLimits::new([("a".to_string(), 4 << 20)]);
        let mut producer = ClientConfig::new();
        producer.set("message.max.bytes", "2000000");
        limits.configure(&mut producer);
        assert_eq!(producer.get("message.max.bytes"), Some("2000000"));
        assert_eq!(limits.of("a"), 2_000_000);
    }
}
