//! Helpers for the receiver tests against the broker of `scripts/stack`.
#![allow(dead_code)] // each test file uses its own subset

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use firstmile_config::{Config, Source, SyslogListener, SyslogProtocol};
use firstmile_kafka::{client_config, ClientKind};
use firstmile_metrics::Metrics;
use firstmile_receivers::Receivers;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};

/// Distinct per call: tests run in parallel threads and the clock is coarse.
static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn next_id() -> u64 {
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("test.{prefix}.{}.{nanos}.{}", std::process::id(), next_id())
}

pub fn base_config() -> Config {
    let mut c = Config::default();
    if let Ok(b) = std::env::var("FIRSTMILE_KAFKA__BROKERS") {
        c.kafka.brokers = b;
    }
    c.ingest.http.listen = "127.0.0.1:0".into();
    c
}

/// Adds a source with a fresh raw topic (created with `partitions`).
pub async fn add_source(config: &mut Config, name: &str, partitions: i32) -> String {
    let topic = unique(&format!("raw.{name}"));
    let admin: AdminClient<DefaultClientContext> = client_config(&config.kafka, ClientKind::Admin)
        .create()
        .unwrap();
    let results = admin
        .create_topics(
            [
                &NewTopic::new(&topic, partitions, TopicReplication::Fixed(1))
                    .set("max.message.bytes", "4194304"),
            ],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .unwrap();
    for r in results {
        r.unwrap();
    }
    config.sources.insert(
        name.to_string(),
        Source {
            topic: Some(topic.clone()),
            ..Default::default()
        },
    );
    topic
}

/// Deletes the test's topics from the shared local broker.
pub async fn delete_topics(config: &Config) {
    let admin: AdminClient<DefaultClientContext> = client_config(&config.kafka, ClientKind::Admin)
        .create()
        .unwrap();
    let topics: Vec<String> = config
        .sources
        .values()
        .filter_map(|s| s.topic.clone())
        .collect();
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let _ = admin.delete_topics(&names, &AdminOptions::new()).await;
}

pub fn add_syslog(config: &mut Config, name: &str, protocol: SyslogProtocol, source: &str) {
    config.ingest.syslog.insert(
        name.to_string(),
        SyslogListener {
            protocol,
            listen: "127.0.0.1:0".into(),
            source: source.to_string(),
        },
    );
}

pub async fn start(config: &Config) -> (Receivers, Arc<Metrics>) {
    let metrics = Metrics::new();
    let receivers = firstmile_receivers::start(config, &metrics).await.unwrap();
    (receivers, metrics)
}

/// Every record of `topic`, partition by partition, in offset order.
pub fn read_topic(config: &Config, topic: &str) -> Vec<OwnedMessage> {
    let consumer: BaseConsumer = client_config(&config.kafka, ClientKind::Consumer)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let partitions = metadata.topics()[0].partitions().len() as i32;
    let mut out = Vec::new();
    for p in 0..partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .unwrap();
        if high <= low {
            continue;
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, p, Offset::Offset(low))
            .unwrap();
        consumer.assign(&tpl).unwrap();
        let mut next = low;
        while next < high {
            match consumer.poll(Duration::from_secs(10)) {
                Some(Ok(m)) => {
                    next = m.offset() + 1;
                    out.push(m.detach());
                }
                Some(Err(e)) => panic!("reading {topic}: {e}"),
                None => panic!("reading {topic}: nothing within 10 s at offset {next} of {high}"),
            }
        }
    }
    out
}

pub fn header<'a>(m: &'a OwnedMessage, name: &str) -> Option<&'a [u8]> {
    m.headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
}

pub fn loghub(system: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data/loghub")
        .join(system)
        .join(format!("{system}_2k.log"))
}

/// The events a file holds under line framing: lines without their LF or
/// CRLF terminator, empty lines left out, a last unterminated line included.
pub fn expected_lines(bytes: &[u8]) -> Vec<Vec<u8>> {
    bytes
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l).to_vec())
        .filter(|l| !l.is_empty())
        .collect()
}

pub fn values(messages: &[OwnedMessage]) -> Vec<Vec<u8>> {
    messages
        .iter()
        .map(|m| m.payload().unwrap_or_default().to_vec())
        .collect()
}

/// Value of one sample in the Prometheus text, 0 if absent.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}
