//! Librdkafka client settings built from `[kafka]`.

use firstmile_config::Kafka;
use rdkafka::ClientConfig;

/// The kind of client, for the per-kind property maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    Producer,
    Consumer,
    Admin,
}

/// Settings for one client: brokers and client id, then `kafka.properties`,
/// then the kind's own map (`kafka.producer`, …), later keys winning.
pub fn client_config(kafka: &Kafka, kind: ClientKind) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &kafka.brokers)
        .set("client.id", &kafka.client_id);
    let per_kind = match kind {
        ClientKind::Producer => &kafka.producer,
        ClientKind::Consumer => &kafka.consumer,
        ClientKind::Admin => &kafka.admin,
    };
    if kind == ClientKind::Consumer {
        // librdkafka prefetches up to 64 MB per consumer by default; a
        // process holds several consumers and batches of its own, so keep
        // the prefetch at what a few batches need (fetch.max.bytes follows).
        config.set("queued.max.messages.kbytes", CONSUMER_PREFETCH_KB);
    }
    for (key, value) in kafka.properties.iter().chain(per_kind) {
        config.set(key, value);
    }
    config
}

/// The consumers' default prefetch bound, in kilobytes.
pub const CONSUMER_PREFETCH_KB: &str = "16384";

/// Answers whether the brokers can be reached, for `/health/ready`: one
/// metadata request on a client of its own (the workers' clients are busy
/// in their loops).
#[derive(Clone)]
pub struct BrokerProbe(std::sync::Arc<rdkafka::consumer::BaseConsumer>);

impl BrokerProbe {
    pub fn new(kafka: &Kafka) -> Result<BrokerProbe, rdkafka::error::KafkaError> {
        let client = client_config(kafka, ClientKind::Admin).create()?;
        Ok(BrokerProbe(std::sync::Arc::new(client)))
    }

    pub async fn check(&self, timeout: std::time::Duration) -> Result<(), String> {
        let client = std::sync::Arc::clone(&self.0);
        tokio::task::spawn_blocking(move || {
            rdkafka::consumer::Consumer::fetch_metadata(&*client, None, timeout).map(|_| ())
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("kafka: {e}"))
    }
}
