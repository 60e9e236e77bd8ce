//! Test support (a dev-dependency only) for the suites that run against the
//! local stack of `scripts/stack`: names no other test or run uses, the
//! stack's addresses from `scripts/stack env`, and topics to create, read and
//! delete. Panics are the point here: a broken stack fails the test.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// Distinct per call: tests run in parallel threads and the clock is coarse.
static NEXT: AtomicU64 = AtomicU64::new(0);

/// A topic, group or subject name no other test or run uses.
pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("test.{prefix}.{}.{nanos}.{n}", std::process::id())
}

/// The stack's brokers (`FIRSTMILE_KAFKA__BROKERS`, else the default port).
pub fn brokers() -> String {
    std::env::var("FIRSTMILE_KAFKA__BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// The stack's schema registry (`FIRSTMILE_SCHEMA_REGISTRY__URL`, else the default).
pub fn registry_url() -> String {
    std::env::var("FIRSTMILE_SCHEMA_REGISTRY__URL")
        .unwrap_or_else(|_| "http://127.0.0.1:8081".into())
}

/// The stack's PostgreSQL 15 (`FIRSTMILE_STACK_POSTGRES_URL`, else the default).
pub fn postgres_url() -> String {
    std::env::var("FIRSTMILE_STACK_POSTGRES_URL")
        .unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:55432/postgres".into())
}

/// The stack's TimescaleDB (`FIRSTMILE_STACK_TIMESCALEDB_URL`, else the default).
pub fn timescaledb_url() -> String {
    std::env::var("FIRSTMILE_STACK_TIMESCALEDB_URL")
        .unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:55433/postgres".into())
}

/// The stack's Elasticsearch (`FIRSTMILE_ELASTICSEARCH__URL`, else the default).
pub fn elasticsearch_url() -> String {
    std::env::var("FIRSTMILE_ELASTICSEARCH__URL").unwrap_or_else(|_| "http://127.0.0.1:9200".into())
}

/// A new schema named after `prefix` in the database at `url`, migrated;
/// with a connection to it.
pub async fn migrated_schema(url: &str, prefix: &str) -> (tokio_postgres::Client, String) {
    let schema = unique(prefix).replace(['.', '-'], "_");
    let db = firstmile_config::Database {
        url: url.to_string(),
        schema: schema.clone(),
        ..Default::default()
    };
    let mut client = firstmile_db::connect(&db).await.unwrap();
    firstmile_db::migrate(&mut client, &schema, None)
        .await
        .unwrap();
    (client, schema)
}

/// Registers the shipped event schema for `topic`'s values on the stack's
/// registry; its id.
pub async fn register_event_schema(topic: &str) -> u32 {
    let registry = firstmile_schema::Registry::new(&firstmile_config::SchemaRegistry {
        url: registry_url(),
        ..Default::default()
    })
    .expect("a registry client");
    registry
        .register(
            &firstmile_schema::value_subject(topic),
            firstmile_event::EVENT_SCHEMA,
        )
        .await
        .expect("the event schema registered")
}

/// A child process, SIGKILLed when dropped so a failing test leaves none
/// behind.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `[kafka]` for the stack.
pub fn kafka() -> firstmile_config::Kafka {
    firstmile_config::Kafka {
        brokers: brokers(),
        ..Default::default()
    }
}

fn client() -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers());
    c
}

/// Creates topics with `partitions` each; raw-topic sized records allowed.
pub async fn create_topics(names: &[&str], partitions: i32) {
    create_topics_taking(names, partitions, 4 << 20).await;
}

/// Creates topics with `partitions` each, taking records of at most
/// `max_message_bytes`.
pub async fn create_topics_taking(names: &[&str], partitions: i32, max_message_bytes: usize) {
    let admin: AdminClient<DefaultClientContext> = client().create().unwrap();
    let limit = max_message_bytes.to_string();
    let topics: Vec<NewTopic> = names
        .iter()
        .map(|n| {
            NewTopic::new(n, partitions, TopicReplication::Fixed(1))
                .set("max.message.bytes", &limit)
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for r in admin.create_topics(&topics, &options).await.unwrap() {
        r.unwrap();
    }
}

/// Deletes a partition's records below `before`, as retention would.
pub async fn delete_records(topic: &str, partition: i32, before: i64) {
    let admin: AdminClient<DefaultClientContext> = client().create().unwrap();
    let mut offsets = TopicPartitionList::new();
    offsets
        .add_partition_offset(topic, partition, Offset::Offset(before))
        .unwrap();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let result = admin.delete_records(&offsets, &options).await.unwrap();
    for e in result.elements() {
        e.error().unwrap();
    }
}

/// Deletes topics from the shared local broker (best effort).
pub async fn delete_topics(names: &[&str]) {
    let admin: AdminClient<DefaultClientContext> = client().create().unwrap();
    let _ = admin.delete_topics(names, &AdminOptions::new()).await;
}

/// Every record of a topic written without transactions, partition by
/// partition, in offset order, up to the high watermarks.
pub fn read_topic(topic: &str) -> Vec<OwnedMessage> {
    let consumer: BaseConsumer = client()
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

/// Every committed record of a transactionally written topic, up to its
/// end when the call starts (records written meanwhile are left out, so a
/// topic that keeps growing is read in bounded time). Stops early after 3 s
/// without a record: an open transaction holds read_committed readers back.
pub fn read_committed(topic: &str) -> Vec<OwnedMessage> {
    let consumer: BaseConsumer = client()
        .set("group.id", unique("reader"))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut ends = std::collections::BTreeMap::new();
    for p in md.topics()[0].partitions() {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
            .unwrap();
        let (_, high) = consumer
            .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
            .unwrap();
        ends.insert(p.id(), high);
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let passed_ends = |consumer: &BaseConsumer| {
        let positions = consumer.position().unwrap();
        ends.iter().all(|(p, end)| {
            *end == 0
                || matches!(
                    positions.find_partition(topic, *p).map(|e| e.offset()),
                    Some(Offset::Offset(o)) if o >= *end
                )
        })
    };
    while !passed_ends(&consumer) {
        match consumer.poll(Duration::from_secs(3)) {
            Some(m) => {
                let m = m.unwrap();
                if m.offset() < ends[&m.partition()] {
                    out.push(m.detach());
                }
            }
            None => break,
        }
    }
    out
}

/// Committed records of `topic`, read again until there are `n` (or 120 s
/// have passed: the caller's assertion on what came says what is missing).
pub fn committed_records(topic: &str, n: usize) -> Vec<OwnedMessage> {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let got = read_committed(topic);
        if got.len() >= n || std::time::Instant::now() > deadline {
            return got;
        }
    }
}

/// A port nothing listens on right now, for a process the test starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Records written to a topic so far, committed or not, transaction markers
/// included: quick, and never less than what is committed.
pub fn written(topic: &str) -> i64 {
    watermarks(topic)
        .values()
        .map(|(low, high)| high - low)
        .sum()
}

/// Per partition: the low and high watermarks (oldest offset kept, next
/// offset to be written).
pub fn watermarks(topic: &str) -> std::collections::BTreeMap<i32, (i64, i64)> {
    let consumer: BaseConsumer = client().create().unwrap();
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    md.topics()[0]
        .partitions()
        .iter()
        .map(|p| {
            let marks = consumer
                .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                .unwrap();
            (p.id(), marks)
        })
        .collect()
}

/// A consumer group's state (`Stable`, `PreparingRebalance`, …) and its
/// number of members, as the group coordinator reports them. Every caller
/// waits for a state, so a coordinator that cannot answer yet (loading its
/// partition of `__consumer_offsets` after a broker start: CI saw
/// `CoordinatorLoadInProgress`) is a state not reached yet, named with the
/// error so that a wait that times out says why.
pub fn group_state(group: &str) -> (String, usize) {
    let consumer: BaseConsumer = client().create().unwrap();
    match consumer.fetch_group_list(Some(group), Duration::from_secs(10)) {
        Ok(groups) => match groups.groups().first() {
            Some(g) => (g.state().to_string(), g.members().len()),
            None => (String::new(), 0),
        },
        Err(e) => (format!("not known: {e}"), 0),
    }
}

/// A TCP forwarder to stand between a client and a stack service, so a test
/// can take the service away (`stop`: connections cut, port refused) and
/// bring it back on the same port (`start_on`), without touching the shared
/// service other tests use.
pub struct TcpProxy {
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// A proxy to `target` (`host:port`) on a free port.
    pub async fn start(target: &str) -> TcpProxy {
        TcpProxy::start_on(0, target).await
    }

    /// A proxy to `target` on `port` (0: any free port).
    pub async fn start_on(port: u16, target: &str) -> TcpProxy {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let target = target.to_string();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                let target = target.clone();
                connections.spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        TcpProxy { port, task }
    }

    /// Closes the port and every connection through it (the JoinSet of
    /// connections is dropped with the task, which aborts them).
    pub async fn stop(mut self) -> u16 {
        self.task.abort();
        let _ = (&mut self.task).await;
        self.port
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Writes events to `topic` as the enrich stage does: Avro of the shipped
/// schema in Confluent framing under `schema_id`, key = event id, header
/// `firstmile.source`.
pub async fn produce_events(topic: &str, schema_id: u32, events: &[firstmile_event::Event]) {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = client().set("linger.ms", "20").create().unwrap();
    let schema = firstmile_event::event_schema();
    let writer = apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
        .build()
        .unwrap();
    let records: Vec<(String, Vec<u8>, &str)> = events
        .iter()
        .map(|e| {
            let datum = writer.write_value_to_vec(e.to_avro()).unwrap();
            (
                e.event_id.to_string(),
                firstmile_schema::confluent_frame(schema_id, &datum),
                e.origin.source.as_str(),
            )
        })
        .collect();
    let sends = records.iter().map(|(key, value, source)| {
        let headers = OwnedHeaders::new().insert(Header {
            key: "firstmile.source",
            value: Some(*source),
        });
        producer.send(
            FutureRecord::to(topic)
                .key(key)
                .payload(value)
                .headers(headers),
            Duration::from_secs(30),
        )
    });
    for sent in futures::future::join_all(sends).await {
        sent.map_err(|(e, _)| e).unwrap();
    }
}

/// `n` events of two sources over three minutes (100 bytes raw each), with
/// raw offsets `first..first + n`; what the sink tests write.
pub fn sample_events(first: i64, n: i64, version: &str) -> Vec<firstmile_event::Event> {
    (first..first + n)
        .map(|offset| {
            let source = if offset % 2 == 0 { "openssh" } else { "linux" };
            let origin = firstmile_event::Origin {
                source: source.into(),
                topic: format!("raw.{source}"),
                partition: 0,
                offset,
            };
            let received =
                jiff::Timestamp::from_second(1_795_000_000 + offset % 180).expect("valid time");
            let mut e = firstmile_event::Event::new(origin, received, version);
            e.raw_bytes = 100;
            e.log.level = Some(if offset % 3 == 0 { "error" } else { "info" }.into());
            e.message = Some(format!("event {offset}"));
            e.source.ip = "81.2.69.142".parse().ok();
            e
        })
        .collect()
}

/// A configuration from TOML text, as `firstmile.toml` would give it.
pub fn config(text: &str) -> firstmile_config::Config {
    firstmile_config::load(
        Some(firstmile_config::ConfigFile {
            path: std::path::Path::new("test.toml"),
            text,
        }),
        Vec::new(),
    )
    .unwrap()
}

/// Every dead letter of `topic`: its error kind and message headers.
pub fn dead_letters(topic: &str) -> Vec<(String, String)> {
    use rdkafka::message::Headers;
    let mut out: Vec<(String, String)> = read_topic(topic)
        .iter()
        .map(|m| {
            let headers = m.headers().expect("a dead letter has headers");
            let get = |name: &str| {
                let h = headers.iter().find(|h| h.key == name).expect(name);
                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned()
            };
            (
                get("firstmile.dlq.error_kind"),
                get("firstmile.dlq.error_message"),
            )
        })
        .collect();
    out.sort();
    out
}

/// A worker (sink, stage) on a task of its own, told to stop by a flag and
/// joined by [`Background::stop`]; a failing worker fails the test there.
pub struct Background {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Background {
    pub fn spawn<F, Fut>(worker: F) -> Background
    where
        F: FnOnce(std::sync::Arc<std::sync::atomic::AtomicBool>) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let task = tokio::spawn(worker(std::sync::Arc::clone(&stop)));
        Background { stop, task }
    }

    pub async fn stop(self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.task.await.expect("the worker ran to its end");
    }

    /// `sink` run by the sink driver as configured (instance id `test`).
    pub fn sink<S: firstmile_sink::Sink + 'static>(
        config: firstmile_config::Config,
        sink: S,
    ) -> Background {
        Background::metered_sink(config, sink, firstmile_metrics::Metrics::new())
    }

    /// [`Background::sink`], its metrics recorded in `metrics`.
    pub fn metered_sink<S: firstmile_sink::Sink + 'static>(
        config: firstmile_config::Config,
        mut sink: S,
        metrics: std::sync::Arc<firstmile_metrics::Metrics>,
    ) -> Background {
        Background::spawn(|stop| async move {
            let component = metrics.component(firstmile_metrics::Kind::Sink, sink.name().as_str());
            let topology = firstmile_config::Topology::resolve(&config, "test");
            firstmile_sink::run(&config, &topology, &mut sink, &component, &stop)
                .await
                .expect("the sink ran without error");
        })
    }
}
