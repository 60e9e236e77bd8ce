//! The enrich stage against the real broker and registry: events decoded
//! from `parsed`, enriched with exact values from the GeoIP test databases,
//! the asset table and the indicator list (reloaded while running), dropped
//! by rule, and bad input dead-lettered by kind. A registry outage mid-run is
//! waited out: nothing lost, nothing dead-lettered.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::Schema;
use firstmile_config::Config;
use firstmile_event::{event_schema, Event, Origin, EVENT_SCHEMA};
use firstmile_metrics::{Kind, Metrics};
use firstmile_schema::{confluent_frame, value_subject, Decoder, Registry};
use firstmile_stages::{dlq_headers, EnrichStep};
use firstmile_testkit::{
    brokers, create_topics, delete_topics, read_committed, registry_url, unique, TcpProxy,
};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

fn data(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data")
        .join(path)
}

struct Topics {
    parsed: String,
    events: String,
    dlq: String,
}

impl Topics {
    async fn create() -> Topics {
        let t = Topics {
            parsed: unique("parsed"),
            events: unique("events"),
            dlq: unique("dlq"),
        };
        create_topics(&[&t.parsed, &t.events, &t.dlq], 2).await;
        t
    }

    async fn delete(&self) {
        delete_topics(&[&self.parsed, &self.events, &self.dlq]).await;
    }
}

fn config(topics: &Topics, registry: &str, indicators: &Path) -> Config {
    let text = format!(
        r#"
[kafka]
brokers = "{brokers}"
[schema_registry]
url = "{registry}"
[enrich]
geoip_city = "{city}"
geoip_asn = "{asn}"
assets = "{assets}"
indicators = "{indicators}"
[stages.enrich]
input = ["{parsed}"]
output = "{events}"
dlq = "{dlq}"
group = "{group}"
instance_id = "w1"
batch_ms = 100
[sources.ssh.enrich]
labels = {{ service = "ssh" }}
drop = [{{ name = "debug", field = "log.level", pattern = "(?i)^debug$" }}]
"#,
        brokers = brokers(),
        city = data("geoip/GeoLite2-City-Test.mmdb").display(),
        asn = data("geoip/GeoLite2-ASN-Test.mmdb").display(),
        assets = data("enrich/assets.csv").display(),
        indicators = indicators.display(),
        parsed = topics.parsed,
        events = topics.events,
        dlq = topics.dlq,
        group = unique("enrich"),
    );
    firstmile_testkit::config(&text)
}

/// The stage on a thread of its own, stopped (and joined) when dropped.
struct Running {
    stop: Arc<AtomicBool>,
    worker: Option<tokio::task::JoinHandle<()>>,
    metrics: Arc<Metrics>,
}

impl Running {
    async fn start(config: Config) -> Running {
        let topology = firstmile_config::Topology::resolve(&config, "test");
        let (topics, mut step) = EnrichStep::new(&config, &topology).await.unwrap();
        let metrics = Metrics::new();
        let component = metrics.component(Kind::Stage, "enrich");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let worker = tokio::task::spawn_blocking(move || {
            firstmile_stages::run(&config, &topics, &mut step, &component, &flag).unwrap()
        });
        Running {
            stop,
            worker: Some(worker),
            metrics,
        }
    }

    async fn stop(mut self) -> Arc<Metrics> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(w) = self.worker.take() {
            w.await.unwrap();
        }
        Arc::clone(&self.metrics)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn event(offset: i64, source: &str, ip: &str, level: &str) -> Event {
    let origin = Origin {
        source: source.into(),
        topic: "raw.test".into(),
        partition: 0,
        offset,
    };
    let mut e = Event::new(origin, "2026-11-23T10:00:00Z".parse().unwrap(), "0");
    e.source.ip = Some(ip.parse().unwrap());
    e.log.level = Some(level.into());
    e.message = Some(format!("line {offset}"));
    e
}

/// An event framed under `schema_id`, written with `schema`.
fn framed(schema: &Schema, schema_id: u32, event: &Event) -> Vec<u8> {
    let datum = GenericDatumWriter::builder(schema)
        .build()
        .unwrap()
        .write_value_to_vec(event.to_avro())
        .unwrap();
    confluent_frame(schema_id, &datum)
}

async fn send(producer: &FutureProducer, topic: &str, source: &str, value: &[u8]) {
    let headers = OwnedHeaders::new().insert(Header {
        key: "firstmile.source",
        value: Some(source),
    });
    producer
        .send(
            FutureRecord::<[u8], [u8]>::to(topic)
                .payload(value)
                .headers(headers),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
}

fn producer() -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap()
}

fn registry() -> Registry {
    Registry::new(&firstmile_config::SchemaRegistry {
        url: registry_url(),
        ..Default::default()
    })
    .unwrap()
}

async fn decode_all(records: &[OwnedMessage]) -> Vec<Event> {
    let mut decoder = Decoder::new(registry(), event_schema());
    let payloads: Vec<&[u8]> = records.iter().map(|r| r.payload().unwrap()).collect();
    for id in decoder.missing(payloads.iter().copied()) {
        decoder.fetch(id).await.unwrap();
    }
    payloads
        .iter()
        .map(|p| Event::from_avro(&decoder.decode(p).unwrap()).unwrap())
        .collect()
}

fn header(record: &OwnedMessage, name: &str) -> String {
    let h = record.headers().unwrap();
    let v = h.iter().find(|h| h.key == name).unwrap().value.unwrap();
    String::from_utf8(v.to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/stack up, then cargo test -- --include-ignored (scripts/test does both)"]
async fn enriches_with_exact_values_drops_by_rule_and_dead_letters_bad_input() {
    let topics = Topics::create().await;
    let dir = tempfile::tempdir().unwrap();
    let indicators = dir.path().join("indicators.txt");
    std::fs::write(&indicators, "# none listed yet\nevil.example\n").unwrap();
    let running = Running::start(config(&topics, &registry_url(), &indicators)).await;

    let schema = event_schema();
    let id = registry()
        .register(&value_subject(&topics.parsed), EVENT_SCHEMA)
        .await
        .unwrap();
    let p = producer();
    send(
        &p,
        &topics.parsed,
        "ssh",
        &framed(&schema, id, &event(1, "ssh", "81.2.69.142", "info")),
    )
    .await;
    send(
        &p,
        &topics.parsed,
        "ssh",
        &framed(&schema, id, &event(2, "ssh", "10.1.2.3", "DEBUG")),
    )
    .await;
    send(
        &p,
        &topics.parsed,
        "ssh",
        &framed(&schema, id, &event(3, "ssh", "10.1.2.3", "warn")),
    )
    .await;
    // Bad input: an id the registry does not have, bytes without a frame,
    // and a registered schema that is not an event.
    send(
        &p,
        &topics.parsed,
        "ssh",
        &framed(
            &schema,
            id + 1_000_000,
            &event(4, "ssh", "10.1.2.3", "info"),
        ),
    )
    .await;
    send(&p, &topics.parsed, "ssh", b"not avro at all").await;
    let other = r#"{"type":"record","name":"Beat","fields":[{"name":"n","type":"long"}]}"#;
    let other_id = registry()
        .register(&value_subject(&unique("other")), other)
        .await
        .unwrap();
    send(&p, &topics.parsed, "ssh", &confluent_frame(other_id, &[14])).await;

    let events = decode_all(&firstmile_testkit::committed_records(&topics.events, 2)).await;
    assert_eq!(events.len(), 2, "the debug line is dropped: {events:?}");
    let london = events.iter().find(|e| e.origin.offset == 1).unwrap();
    let geo = london.source.geo.as_ref().unwrap();
    assert_eq!(geo.city_name.as_deref(), Some("London"));
    assert_eq!(geo.country_iso_code.as_deref(), Some("GB"));
    assert_eq!(
        london.labels.get("service").map(String::as_str),
        Some("ssh")
    );
    assert_eq!(london.threat, None);
    let internal = events.iter().find(|e| e.origin.offset == 3).unwrap();
    let asset = internal.source.asset.as_ref().unwrap();
    assert_eq!(
        (asset.owner.as_str(), asset.zone.as_str()),
        ("infrastructure", "internal")
    );

    let dlq = firstmile_testkit::committed_records(&topics.dlq, 3);
    let mut kinds: Vec<String> = dlq
        .iter()
        .map(|r| header(r, dlq_headers::ERROR_KIND))
        .collect();
    kinds.sort();
    assert_eq!(kinds, ["avro_decode", "not_avro", "unknown_schema"]);
    for r in &dlq {
        assert_eq!(header(r, dlq_headers::STAGE), "enrich");
        assert_eq!(header(r, dlq_headers::TOPIC), topics.parsed);
    }
    let not_avro = dlq
        .iter()
        .find(|r| header(r, dlq_headers::ERROR_KIND) == "not_avro")
        .unwrap();
    assert_eq!(
        not_avro.payload().unwrap(),
        b"not avro at all",
        "original bytes kept"
    );

    // The list changes while the stage runs: the next event from that
    // address is marked, without a restart.
    std::fs::write(&indicators, "evil.example\n81.2.69.142\n").unwrap();
    let later =
        std::fs::metadata(&indicators).unwrap().modified().unwrap() + Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(&indicators)
        .unwrap()
        .set_modified(later)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut offset = 10;
    let marked = loop {
        send(
            &p,
            &topics.parsed,
            "ssh",
            &framed(&schema, id, &event(offset, "ssh", "81.2.69.142", "info")),
        )
        .await;
        let events = decode_all(&read_committed(&topics.events)).await;
        if let Some(e) = events.iter().find(|e| e.threat.is_some()) {
            break e.clone();
        }
        assert!(
            Instant::now() < deadline,
            "the reloaded list was never applied"
        );
        offset += 1;
    };
    let indicator = marked.threat.unwrap().indicator;
    assert_eq!(
        (
            indicator.matched.as_str(),
            indicator.matched_field.as_str(),
            indicator.kind.as_str()
        ),
        ("81.2.69.142", "source.ip", "ipv4-addr")
    );

    let metrics = running.stop().await.encode();
    assert!(
        metrics.contains(r#"reason="drop_rule_debug""#),
        "drops are counted per rule:\n{metrics}"
    );
    topics.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/stack up, then cargo test -- --include-ignored (scripts/test does both)"]
async fn a_registry_outage_mid_run_is_waited_out_and_nothing_is_dead_lettered() {
    let topics = Topics::create().await;
    let registry_addr = registry_url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let proxy = TcpProxy::start(&registry_addr).await;
    let through_proxy = format!("http://127.0.0.1:{}", proxy.port);
    let dir = tempfile::tempdir().unwrap();
    let indicators = dir.path().join("indicators.txt");
    std::fs::write(&indicators, "").unwrap();
    let running = Running::start(config(&topics, &through_proxy, &indicators)).await;

    let schema = event_schema();
    let id = registry()
        .register(&value_subject(&topics.parsed), EVENT_SCHEMA)
        .await
        .unwrap();
    let p = producer();
    send(
        &p,
        &topics.parsed,
        "ssh",
        &framed(&schema, id, &event(1, "ssh", "10.0.0.1", "info")),
    )
    .await;
    assert_eq!(
        firstmile_testkit::committed_records(&topics.events, 1).len(),
        1
    );

    // The registry goes away; then events written with a schema the stage
    // has not seen yet (a newer version, one more optional field) arrive.
    let port = proxy.stop().await;
    let mut newer: serde_json::Value = serde_json::from_str(EVENT_SCHEMA).unwrap();
    newer["fields"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!(
            {"name": "tenant", "type": ["null", "string"], "default": null}
        ));
    let newer_text = newer.to_string();
    let newer_id = registry()
        .register(&value_subject(&topics.parsed), &newer_text)
        .await
        .unwrap();
    assert_ne!(newer_id, id);
    let newer_schema = Schema::parse_str(&newer_text).unwrap();
    const N: i64 = 20;
    for offset in 0..N {
        let mut value = event(100 + offset, "ssh", "10.0.0.1", "info").to_avro();
        if let apache_avro::types::Value::Record(fields) = &mut value {
            fields.push((
                "tenant".into(),
                apache_avro::types::Value::Union(0, Box::new(apache_avro::types::Value::Null)),
            ));
        }
        let datum = GenericDatumWriter::builder(&newer_schema)
            .build()
            .unwrap()
            .write_value_to_vec(value)
            .unwrap();
        send(
            &p,
            &topics.parsed,
            "ssh",
            &confluent_frame(newer_id, &datum),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        read_committed(&topics.events).len(),
        1,
        "nothing passes while the registry is down"
    );
    assert_eq!(
        read_committed(&topics.dlq).len(),
        0,
        "an outage is not bad data"
    );

    let _back = TcpProxy::start_on(port, &registry_addr).await;
    let events = decode_all(&firstmile_testkit::committed_records(
        &topics.events,
        1 + N as usize,
    ))
    .await;
    assert_eq!(events.len(), 1 + N as usize);
    let mut offsets: Vec<i64> = events.iter().map(|e| e.origin.offset).collect();
    offsets.sort();
    offsets.dedup();
    assert_eq!(offsets.len(), 1 + N as usize, "each exactly once");
    assert_eq!(read_committed(&topics.dlq).len(), 0);
    let metrics = running.stop().await.encode();
    assert!(
        metrics.contains(r#"error_type="dependency_unavailable""#),
        "the wait is visible in metrics:\n{metrics}"
    );
    topics.delete().await;
}
