//! The typed configuration: one struct per section of `firstmile.toml`.
//!
//! Every section has defaults that run against the local stack (`scripts/stack`),
//! so an empty file is a valid configuration. Unknown keys are errors.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub kafka: Kafka,
    pub schema_registry: SchemaRegistry,
    pub database: Database,
    pub elasticsearch: Elasticsearch,
    pub topics: Topics,
    /// Event sources by name; each lands in its raw topic (`raw.<name>` unless set).
    pub sources: BTreeMap<String, Source>,
}

/// Kafka connection. `properties` pass through to librdkafka for every client
/// (`security.protocol`, `sasl.*`, `ssl.*`, …); `producer`/`consumer`/`admin`
/// add properties for that kind of client only.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Kafka {
    pub brokers: String,
    pub client_id: String,
    /// Timeout of admin requests (topics plan/apply), in milliseconds.
    pub request_timeout_ms: u64,
    #[serde(deserialize_with = "property_map")]
    pub properties: BTreeMap<String, String>,
    #[serde(deserialize_with = "property_map")]
    pub producer: BTreeMap<String, String>,
    #[serde(deserialize_with = "property_map")]
    pub consumer: BTreeMap<String, String>,
    #[serde(deserialize_with = "property_map")]
    pub admin: BTreeMap<String, String>,
}

impl Default for Kafka {
    fn default() -> Self {
        Kafka {
            brokers: "127.0.0.1:9092".into(),
            client_id: "firstmile".into(),
            request_timeout_ms: 30_000,
            properties: BTreeMap::new(),
            producer: BTreeMap::new(),
            consumer: BTreeMap::new(),
            admin: BTreeMap::new(),
        }
    }
}

/// Librdkafka properties that firstmile sets itself; configuring them would
/// silently break a guarantee (exactly-once, consumer groups), so they are refused.
pub const MANAGED_KAFKA_PROPERTIES: &[(&str, &str)] = &[
    ("bootstrap.servers", "set kafka.brokers instead"),
    ("metadata.broker.list", "set kafka.brokers instead"),
    ("client.id", "set kafka.client_id instead"),
    ("group.id", "each role sets its own consumer group"),
    (
        "transactional.id",
        "each stage worker sets its own transactional id",
    ),
    (
        "enable.auto.commit",
        "offsets are committed by firstmile after processing",
    ),
    (
        "isolation.level",
        "firstmile reads read_committed where it matters",
    ),
    ("enable.idempotence", "the producer is always idempotent"),
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchemaRegistry {
    /// Base URL of a Confluent-compatible registry (Confluent, Apicurio's
    /// `/apis/ccompat/v7`, Karapace).
    pub url: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub tls: Tls,
}

impl Default for SchemaRegistry {
    fn default() -> Self {
        SchemaRegistry {
            url: "http://127.0.0.1:8081".into(),
            username: None,
            password: None,
            tls: Tls::default(),
        }
    }
}

/// The PostgreSQL/TimescaleDB database the sink writes to. TLS is negotiated
/// as the URL's `sslmode` says (`disable`, `prefer`, `require`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Database {
    pub url: String,
    /// Schema that holds firstmile's tables (created if missing).
    pub schema: String,
    pub tls: Tls,
}

impl Default for Database {
    fn default() -> Self {
        Database {
            url: "postgresql://postgres@127.0.0.1:55433/postgres".into(),
            schema: "public".into(),
            tls: Tls::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Elasticsearch {
    pub url: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub api_key: Option<String>,
    pub tls: Tls,
}

impl Default for Elasticsearch {
    fn default() -> Self {
        Elasticsearch {
            url: "http://127.0.0.1:9200".into(),
            username: None,
            password: None,
            api_key: None,
            tls: Tls::default(),
        }
    }
}

/// TLS options for an HTTP or PostgreSQL connection.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    /// PEM file of the CA certificates to trust, in addition to the system's.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key, for mutual TLS.
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    /// Skip certificate verification. Only for tests against self-signed servers.
    pub insecure_skip_verify: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Topics {
    /// Folder of the topic declarations (`topics/*.toml`), relative to the
    /// working directory.
    pub dir: PathBuf,
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            dir: PathBuf::from("topics"),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Source {
    /// What the source is, for people reading the config and `status`.
    pub description: Option<String>,
    /// Raw topic the source lands in; default `raw.<source name>`.
    pub topic: Option<String>,
}

impl Config {
    /// The raw topic a source lands in.
    pub fn raw_topic(&self, source: &str) -> Option<String> {
        let s = self.sources.get(source)?;
        Some(s.topic.clone().unwrap_or_else(|| format!("raw.{source}")))
    }
}

/// Librdkafka properties are strings; accept TOML integers and booleans too so
/// that `"linger.ms" = 5` works as users expect.
fn property_map<'de, D>(deserializer: D) -> Result<BTreeMap<String, String>, D::Error>
where
    D: Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        S(String),
        I(i64),
        F(f64),
        B(bool),
    }
    let raw = BTreeMap::<String, Scalar>::deserialize(deserializer)?;
    Ok(raw
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                Scalar::S(s) => s,
                Scalar::I(i) => i.to_string(),
                Scalar::F(f) => f.to_string(),
                Scalar::B(b) => b.to_string(),
            };
            (k, v)
        })
        .collect())
}
