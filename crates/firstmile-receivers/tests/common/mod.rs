//! Helpers for the receiver tests against the broker of `scripts/stack`.
#![allow(dead_code)] // each test file uses its own subset

use std::path::PathBuf;
use std::sync::Arc;

use firstmile_config::{Config, Source, SyslogListener, SyslogProtocol};
use firstmile_metrics::Metrics;
use firstmile_receivers::Receivers;
use rdkafka::message::{Headers, Message, OwnedMessage};

#[allow(unused_imports)] // not every test file reads topics
pub use firstmile_testkit::{read_topic, unique};

pub fn base_config() -> Config {
    let mut c = Config {
        kafka: firstmile_testkit::kafka(),
        ..Default::default()
    };
    c.ingest.http.listen = "127.0.0.1:0".into();
    c
}

/// Adds a source with a fresh raw topic (created with `partitions`).
pub async fn add_source(config: &mut Config, name: &str, partitions: i32) -> String {
    let topic = unique(&format!("raw.{name}"));
    firstmile_testkit::create_topics(&[&topic], partitions).await;
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
    let topics: Vec<String> = config
        .sources
        .values()
        .filter_map(|s| s.topic.clone())
        .collect();
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    firstmile_testkit::delete_topics(&names).await;
}

pub fn add_syslog(config: &mut Config, name: &str, protocol: SyslogProtocol, source: &str) {
    config.ingest.syslog.insert(
        name.to_string(),
        SyslogListener::new(protocol, "127.0.0.1:0", source),
    );
}

pub async fn start(config: &Config) -> (Receivers, Arc<Metrics>) {
    let metrics = Metrics::new();
    let receivers = firstmile_receivers::start(config, &metrics).await.unwrap();
    (receivers, metrics)
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

/// `firstmile_component_rejected_total{reason}` in the Prometheus text.
pub fn rejected(text: &str, reason: &str) -> u64 {
    sample(
        text,
        "firstmile_component_rejected_total",
        &[("reason", reason)],
    )
}

/// A `/proc/self/status` field of this process (`VmRSS`, `VmHWM`), in bytes.
pub fn proc_status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}
