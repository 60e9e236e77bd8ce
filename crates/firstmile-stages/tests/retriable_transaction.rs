//! A retriable transaction error is retried (issue 16, defect 5: with 2 of
//! 3 brokers down a stage ended on `Failed to add offsets to transaction …
//! Broker transport failure`). The broker that coordinates the stage's
//! transactions goes away while the partitions' leaders stay up, which only
//! librdkafka's mock cluster lets a test do to one broker: the stage's
//! transactional calls time out and are resumed, or fail and are aborted
//! with the batch read again, and the batch is written once the coordinator
//! is back. Every input record is in the output exactly once, and the stage
//! never ended. No stack needed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use firstmile_config::{Delivery, StageName};
use firstmile_kafka::RecordLimits;
use firstmile_metrics::{Kind, KnownLabels, Metrics};
use firstmile_stages::{Outcome, StageTopics, Step};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::mocking::{MockCluster, MockCoordinator};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const TRANSACTIONAL_ID: &str = "stage-w1";
const GROUP: &str = "stage";
const PARTITIONS: i32 = 3;

/// Writes each record as it came.
struct Identity;

impl Step for Identity {
    fn apply(&mut self, record: &OwnedMessage, _source: &str) -> Outcome {
        Outcome::Output(record.payload().unwrap_or_default().to_vec())
    }
    fn source_of(&self, _record: &OwnedMessage) -> String {
        "test".into()
    }
    fn known_labels(&self) -> KnownLabels {
        KnownLabels::default()
    }
}

fn produce(bootstrap: &str, range: std::ops::Range<u32>) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    for i in range {
        let key = i.to_string();
        let value = format!("record-{i:05}");
        producer
            .send(BaseRecord::to("in").key(&key).payload(&value))
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// Every committed record of `out`, read from the start until `want` have
/// come or `within` passed.
fn read_committed(bootstrap: &str, want: usize, within: Duration) -> Vec<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "reader")
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        assignment
            .add_partition_offset("out", p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let deadline = Instant::now() + within;
    let mut read = Vec::new();
    while read.len() < want && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            read.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
        }
    }
    // Anything more than `want` would be a duplicate: wait a little longer
    // for it only if everything came.
    if read.len() == want {
        let more_until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < more_until {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
                read.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
            }
        }
    }
    read
}

fn counter(metrics: &Metrics, family: &str, label: &str) -> f64 {
    metrics
        .encode()
        .lines()
        .find(|l| l.starts_with(family) && l.contains(label))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_stage_whose_transaction_coordinator_goes_away_writes_every_record_once() {
    // RUST_LOG=info shows what the stage does.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let mock = MockCluster::new(3).unwrap();
    for topic in ["in", "out"] {
        mock.create_topic(topic, PARTITIONS, 3).unwrap();
        for p in 0..PARTITIONS {
            mock.partition_leader(topic, p, Some(2 + p % 2)).unwrap();
        }
    }
    mock.create_topic("dlq", 1, 3).unwrap();
    mock.partition_leader("dlq", 0, Some(2)).unwrap();
    mock.coordinator(MockCoordinator::Transaction(TRANSACTIONAL_ID.into()), 1)
        .unwrap();
    mock.coordinator(MockCoordinator::Group(GROUP.into()), 2)
        .unwrap();
    let bootstrap = mock.bootstrap_servers();

    let config = firstmile_testkit::config(&format!(
        "[kafka]\nbrokers = \"{bootstrap}\"\n[kafka.properties]\n\"statistics.interval.ms\" = \"1000\"\n"
    ));
    let topics = StageTopics {
        name: StageName::Parse,
        inputs: vec!["in".into()],
        output: "out".into(),
        dlq: "dlq".into(),
        group: GROUP.into(),
        transactional_id: TRANSACTIONAL_ID.into(),
        delivery: Delivery::ExactlyOnce,
        batch_records: 50,
        batch: Duration::from_millis(100),
        batch_idle: Duration::ZERO,
    };
    let limits = RecordLimits::new(["out", "dlq"].map(|t| (t.to_string(), 1_000_000)));
    let metrics = Metrics::new();
    let component = metrics.component(Kind::Stage, "parse");
    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            firstmile_stages::run_with_limits(
                &config,
                &topics,
                &mut Identity,
                &component,
                limits,
                &stop,
            )
        })
    };

    produce(&bootstrap, 0..500);
    let committed = |m: &Metrics| {
        counter(
            m,
            "firstmile_component_transactions_total",
            "outcome=\"committed\"",
        )
    };
    let aborted = |m: &Metrics| {
        counter(
            m,
            "firstmile_component_errors_total",
            "error_type=\"transaction_aborted\"",
        )
    };
    wait_until(
        "the stage commits a transaction",
        Duration::from_secs(60),
        || committed(&metrics) >= 1.0,
    );

    // The coordinator goes away; more input arrives (its partitions' leaders
    // are up), so the stage opens transactions it cannot finish.
    mock.broker_down(1).unwrap();
    produce(&bootstrap, 500..1000);
    // A call that times out is resumed; one that fails otherwise aborts and
    // the batch is read again: either way the stage goes on.
    let resumed = |m: &Metrics| {
        counter(
            m,
            "firstmile_component_errors_total",
            "error_type=\"transaction_resumed\"",
        )
    };
    wait_until(
        "a transaction resumed or aborted while the coordinator is down",
        Duration::from_secs(120),
        || aborted(&metrics) + resumed(&metrics) >= 1.0,
    );
    assert!(
        !worker.is_finished(),
        "the stage ended on a retriable error"
    );
    mock.broker_up(1).unwrap();

    let read = read_committed(&bootstrap, 1000, Duration::from_secs(120));
    let mut copies: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &read {
        *copies.entry(r.as_str()).or_default() += 1;
    }
    let duplicated: Vec<_> = copies.iter().filter(|(_, &n)| n > 1).collect();
    assert!(
        duplicated.is_empty(),
        "written more than once: {duplicated:?}"
    );
    let missing: Vec<String> = (0..1000u32)
        .map(|i| format!("record-{i:05}"))
        .filter(|r| !copies.contains_key(r.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} never written, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    assert!(!worker.is_finished(), "the stage ended");

    stop.store(true, Ordering::SeqCst);
    worker.join().unwrap().unwrap();
}
