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
    pub ingest: Ingest,
    pub metrics: Metrics,
    pub enrich: Enrich,
    pub stages: Stages,
    pub sinks: Sinks,
}

/// The sink workers (`firstmile sink NAME`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sinks {
    /// events -> PostgreSQL/TimescaleDB (`[database]`)
    pub timescale: SinkSettings,
    /// events -> Elasticsearch (`[elasticsearch]`)
    pub elasticsearch: SinkSettings,
}

/// A sink's consumer group and batching. Offsets are committed only after
/// a batch is durable in the target, so a batch may be written twice after a
/// crash: sinks upsert by `event_id`, which makes that harmless.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinkSettings {
    /// Input topic; default: the enrich stage's output (`events`).
    pub input: Option<String>,
    /// Consumer group; default `firstmile-sink-<name>`.
    pub group: Option<String>,
    /// This worker's static membership id in the group (a restarted worker
    /// takes its partitions back at once). Default: `<host name>-<pid>`.
    pub instance_id: Option<String>,
    /// Where rows the target refuses for their content go.
    pub dlq: String,
    /// A batch is written after this many records…
    pub batch_records: usize,
    /// …or this long after its first record…
    pub batch_ms: u64,
    /// …or once no record came for this long (the input is drained: waiting
    /// out `batch_ms` would only add latency); 0: never.
    pub batch_idle_ms: u64,
}

impl Default for SinkSettings {
    fn default() -> Self {
        SinkSettings {
            input: None,
            group: None,
            instance_id: None,
            dlq: crate::DEFAULT_DLQ_TOPIC.into(),
            batch_records: 5000,
            batch_ms: 1000,
            batch_idle_ms: 50,
        }
    }
}

/// The processing stages (`firstmile process --stage NAME`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Stages {
    /// Stamped on every event the stages make (`pipeline_version`): change it
    /// when a fix changes the output, so replays can be told apart.
    pub pipeline_version: String,
    /// raw.* -> parsed
    pub parse: Stage,
    /// parsed -> events
    pub enrich: Stage,
}

impl Default for Stages {
    fn default() -> Self {
        Stages {
            pipeline_version: "1".into(),
            parse: Stage::default(),
            enrich: Stage::default(),
        }
    }
}

/// How a stage makes its writes and its progress durable together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Outputs and consumed offsets in one Kafka transaction: each input
    /// appears downstream once, for `read_committed` readers.
    #[default]
    ExactlyOnce,
    /// For brokers without transactions: outputs are flushed, then offsets
    /// committed; a crash in between writes the batch again (duplicates,
    /// never loss). Sinks are idempotent on `event_id`, so the tables and
    /// indices still converge.
    AtLeastOnce,
}

/// One stage's topics and transaction settings; unset topics take the
/// stage's defaults (`parse`: the sources' raw topics -> `parsed`, group
/// `firstmile-parse`; `enrich`: `parsed` -> `events`, group `firstmile-enrich`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Stage {
    /// Input topic, or a list of them (`enrich` only; `parse` reads its
    /// sources' raw topics).
    #[serde(deserialize_with = "one_or_many")]
    pub input: Vec<String>,
    pub output: Option<String>,
    pub dlq: String,
    /// Consumer group; all workers of the stage share it.
    pub group: Option<String>,
    /// This worker's name in the group; with the group it forms the
    /// transactional id, so a restarted worker fences its earlier self.
    /// Default: `<host name>-<pid>` (stable for process 1 of a container).
    pub instance_id: Option<String>,
    pub delivery: Delivery,
    /// A transaction ends after this many records…
    pub batch_records: usize,
    /// …or this long after its first record…
    pub batch_ms: u64,
    /// …or once no record came for this long (the input is drained); 0: never.
    pub batch_idle_ms: u64,
}

impl Default for Stage {
    fn default() -> Self {
        Stage {
            input: Vec::new(),
            output: None,
            dlq: crate::DEFAULT_DLQ_TOPIC.into(),
            group: None,
            instance_id: None,
            delivery: Delivery::default(),
            batch_records: 2000,
            batch_ms: 200,
            batch_idle_ms: 50,
        }
    }
}

/// Enrichment data shared by every source (paths relative to the working
/// directory). Each is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Enrich {
    /// MaxMind GeoIP2/GeoLite2 City database: `source.geo`, `destination.geo`.
    pub geoip_city: Option<PathBuf>,
    /// MaxMind ASN database: `source.as`, `destination.as`.
    pub geoip_asn: Option<PathBuf>,
    /// CSV `cidr,owner,zone`: the asset an address belongs to (longest prefix wins).
    pub assets: Option<PathBuf>,
    /// Threat indicators, one IP or domain per line (`#` comments); reloaded
    /// when the file changes, without a restart.
    pub indicators: Option<PathBuf>,
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
/// as the URL's `sslmode` says (`disable`, `prefer`, `require`; `verify-ca`
/// and `verify-full` are taken as `require`, the certificate chain and host
/// name always verified unless `tls.insecure_skip_verify`).
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
    /// Daily indices are `<index_prefix>-YYYY.MM.DD` behind the alias
    /// `<index_prefix>`; the template is `firstmile-<index_prefix>`.
    pub index_prefix: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub api_key: Option<String>,
    pub tls: Tls,
    /// gzip `_bulk` bodies. Off by default: compressing took a quarter of
    /// the sink's CPU (BENCHMARKS.md) and only pays where the network is the
    /// bottleneck (a remote cluster, traffic billed).
    pub compression: bool,
}

impl Default for Elasticsearch {
    fn default() -> Self {
        Elasticsearch {
            url: "http://127.0.0.1:9200".into(),
            index_prefix: "events".into(),
            username: None,
            password: None,
            api_key: None,
            tls: Tls::default(),
            compression: false,
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
    /// Bearer token the HTTP receiver requires for this source. Without one the
    /// source accepts any sender that reaches the listener.
    pub token: Option<String>,
    /// Join physical lines into one event before Kafka (stack traces, tracebacks).
    pub multiline: Option<Multiline>,
    /// How the parse stage reads this source's raw records.
    pub parse: Parse,
    /// What the enrich stage adds to, or drops from, this source's events.
    pub enrich: SourceEnrich,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceEnrich {
    /// Static `labels` put on every event of the source.
    pub labels: BTreeMap<String, String>,
    /// Events matching a rule are dropped (and counted per rule).
    pub drop: Vec<DropRule>,
}

/// Drops events whose `field` (an event path like `log.level`) matches `pattern`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropRule {
    pub name: String,
    pub field: String,
    pub pattern: String,
}

/// The parser of a source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Parse {
    pub format: ParseFormat,
    /// `grok`: patterns tried in order, the first match wins.
    pub patterns: Vec<String>,
    /// `grok`: named patterns the patterns may use (`%{NAME}`).
    pub pattern_definitions: BTreeMap<String, String>,
    /// Grok patterns tried on the parsed `message` (any format); the first that
    /// matches adds its fields (e.g. `source.ip` out of an sshd message).
    pub message_patterns: Vec<String>,
    /// IANA time zone of timestamps written without one (default UTC).
    pub timezone: Option<String>,
    /// `event.dataset` of the source's events, e.g. `linux.auth`.
    pub dataset: Option<String>,
    /// Parsed field name → event field name (e.g. JSON `msg` → `message`).
    pub rename: BTreeMap<String, String>,
    /// Records longer than this go to `dlq` as `too_large` without being parsed.
    pub max_bytes: usize,
}

impl Default for Parse {
    fn default() -> Self {
        Parse {
            format: ParseFormat::Raw,
            patterns: Vec::new(),
            pattern_definitions: BTreeMap::new(),
            message_patterns: Vec::new(),
            timezone: None,
            dataset: None,
            rename: BTreeMap::new(),
            max_bytes: 256 << 10,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParseFormat {
    /// The whole record is the message.
    #[default]
    Raw,
    /// BSD syslog, RFC 3164.
    Syslog,
    Rfc5424,
    /// Apache/nginx access log, common or combined.
    Access,
    ApacheError,
    Json,
    /// logfmt / key=value.
    Kv,
    Cef,
    Grok,
}

/// A multiline rule. Exactly one of `start` and `continuation` is set: either a
/// line matching `start` begins a new event (others continue it), or a line
/// matching `continuation` continues the previous event (others begin one).
/// Patterns use the `regex` crate's syntax (linear time, no backtracking).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Multiline {
    pub start: Option<String>,
    pub continuation: Option<String>,
    /// An event is cut after this many lines…
    pub max_lines: usize,
    /// …or this many bytes.
    pub max_bytes: usize,
    /// A pending event is emitted after this long without a new line (streams only;
    /// a request or file ends its events when it ends).
    pub flush_timeout_ms: u64,
}

impl Default for Multiline {
    fn default() -> Self {
        Multiline {
            start: None,
            continuation: None,
            max_lines: 500,
            max_bytes: 1 << 20,
            flush_timeout_ms: 1000,
        }
    }
}

/// The receivers (`firstmile ingest`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Ingest {
    pub http: HttpReceiver,
    /// Syslog listeners by name, each mapped to a source. None by default; the
    /// example configuration declares UDP and TCP on 127.0.0.1:5514.
    pub syslog: BTreeMap<String, SyslogListener>,
    /// How long an event may wait for Kafka's acknowledgment before the sender
    /// is told that it was not stored (HTTP 503).
    pub delivery_timeout_ms: u64,
    /// Bytes of events received but not yet acknowledged by Kafka, across all
    /// receivers. When full, receivers push back (HTTP waits, then 503; TCP
    /// stops reading; UDP drops and counts).
    pub max_in_flight_bytes: u64,
    /// Largest single event; larger ones are refused (HTTP 413) or dropped and
    /// counted (syslog). Raw topics must accept records this large.
    pub max_event_bytes: usize,
    /// `Retry-After` of a 503 answer.
    pub retry_after_seconds: u32,
}

impl Default for Ingest {
    fn default() -> Self {
        Ingest {
            http: HttpReceiver::default(),
            syslog: BTreeMap::new(),
            delivery_timeout_ms: 30_000,
            max_in_flight_bytes: 64 << 20,
            max_event_bytes: 2 << 20,
            retry_after_seconds: 5,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpReceiver {
    /// `host:port`; empty turns the HTTP receiver off.
    pub listen: String,
    /// Largest request body as sent (compressed or not).
    pub max_body_bytes: usize,
    /// Largest request body after decompression (guards against zip bombs).
    pub max_decompressed_bytes: usize,
    /// Decompressed bytes all requests in progress may hold together; a
    /// request that would go over is answered 503 at once (so 64
    /// concurrent zip bombs take this much, not 16 × max_decompressed_bytes).
    pub max_decompressing_bytes: usize,
    /// Requests handled at once; more wait (at most `ingest.delivery_timeout_ms`,
    /// then 503) before their bodies are read. With the body limits this bounds
    /// the memory requests can hold.
    pub max_concurrent_requests: usize,
    /// Of those, how many one source may hold at once, so slow clients of
    /// one source cannot take every slot from the others. 0: half of
    /// `max_concurrent_requests` (at least 1).
    pub max_concurrent_requests_per_source: usize,
    /// Open connections at most; more are closed at once (counted as
    /// `rejected_total{reason="too_many_connections"}`).
    pub max_connections: usize,
    /// How long a client may take to send a request's headers, and how long
    /// an idle keep-alive connection stays open.
    pub header_timeout_ms: u64,
    /// How long a client may take to send a request's whole body (then 408).
    pub body_timeout_ms: u64,
}

impl Default for HttpReceiver {
    fn default() -> Self {
        HttpReceiver {
            listen: "127.0.0.1:8088".into(),
            max_body_bytes: 10 << 20,
            max_decompressed_bytes: 64 << 20,
            max_decompressing_bytes: 128 << 20,
            max_concurrent_requests: 16,
            max_concurrent_requests_per_source: 0,
            max_connections: 1024,
            header_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
        }
    }
}

impl HttpReceiver {
    /// Request slots one source may hold at once.
    pub fn slots_per_source(&self) -> usize {
        match self.max_concurrent_requests_per_source {
            0 => (self.max_concurrent_requests / 2).max(1),
            n => n.min(self.max_concurrent_requests),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogListener {
    pub protocol: SyslogProtocol,
    #[serde(default = "default_syslog_listen")]
    pub listen: String,
    /// The source whose raw topic this listener's events land in.
    #[serde(default = "default_syslog_source")]
    pub source: String,
    /// TCP: open connections at most; more are closed at once (counted as
    /// `rejected_total{reason="too_many_connections"}`).
    #[serde(default = "default_syslog_max_connections")]
    pub max_connections: usize,
    /// TCP: a connection that sends nothing for this long is closed
    /// (senders such as rsyslog reconnect with their next message).
    #[serde(default = "default_syslog_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
}

impl SyslogListener {
    /// A listener with the default limits.
    pub fn new(protocol: SyslogProtocol, listen: &str, source: &str) -> SyslogListener {
        SyslogListener {
            protocol,
            listen: listen.to_string(),
            source: source.to_string(),
            max_connections: default_syslog_max_connections(),
            idle_timeout_ms: default_syslog_idle_timeout_ms(),
        }
    }
}

fn default_syslog_max_connections() -> usize {
    1024
}

fn default_syslog_idle_timeout_ms() -> u64 {
    600_000
}

fn default_syslog_listen() -> String {
    "127.0.0.1:5514".into()
}

fn default_syslog_source() -> String {
    "syslog".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyslogProtocol {
    Udp,
    Tcp,
}

/// Where every role serves `/metrics`, `/health/live` and `/health/ready`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Metrics {
    /// `host:port`; empty turns the endpoint off.
    pub listen: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            listen: "127.0.0.1:9464".into(),
        }
    }
}

impl Config {
    /// The raw topic a source lands in (as [`crate::Topology`] resolves it).
    pub fn raw_topic(&self, source: &str) -> Option<String> {
        let s = self.sources.get(source)?;
        Some(crate::topology::raw_topic(source, s))
    }
}

/// A topic or a list of topics: `input = "t"` (and
/// `FIRSTMILE_STAGES__ENRICH__INPUT=t`) as well as `input = ["t", "u"]`.
fn one_or_many<'de, D>(deserializer: D) -> Result<Vec<String>, D::Error>
where
    D: Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(topic) => vec![topic],
        OneOrMany::Many(topics) => topics,
    })
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
