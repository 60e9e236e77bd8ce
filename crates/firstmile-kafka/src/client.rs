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
    for (key, value) in kafka.properties.iter().chain(per_kind) {
        config.set(key, value);
    }
    config
}
