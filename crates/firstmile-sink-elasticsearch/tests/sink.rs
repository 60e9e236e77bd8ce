//! The sink against the real Elasticsearch, broker and registry of
//! `scripts/stack`: N events → exactly N documents with the expected fields
//! and types; a date_histogram matches the events; 10,000 distinct extra keys
//! do not grow the mapping; planted mapping conflicts go to `dlq` while the
//! rest is indexed; redelivery keeps the count; an outage mid-run (every
//! connection cut, the port refused) loses and doubles nothing.

use std::time::{Duration, Instant};

use firstmile_config::Config;
use firstmile_event::Event;
use firstmile_testkit::{
    brokers, create_topics, dead_letters, delete_topics, produce_events, registry_url,
    sample_events, unique, Background, TcpProxy,
};
use serde_json::{json, Value};

use firstmile_testkit::elasticsearch_url as es_url;

struct Fixture {
    events: String,
    dlq: String,
    prefix: String,
    schema_id: u32,
    http: reqwest::Client,
}

impl Fixture {
    async fn new() -> Fixture {
        let (events, dlq) = (unique("events"), unique("dlq"));
        create_topics(&[&events, &dlq], 3).await;
        let schema_id = firstmile_testkit::register_event_schema(&events).await;
        // Index names are lower case, without dots at the start.
        let prefix = unique("es").replace('.', "-").to_lowercase();
        Fixture {
            events,
            dlq,
            prefix,
            schema_id,
            http: reqwest::Client::new(),
        }
    }

    fn config(&self, url: &str, group: &str) -> Config {
        let text = format!(
            r#"
[kafka]
brokers = "{}"
[schema_registry]
url = "{}"
[elasticsearch]
url = "{url}"
index_prefix = "{}"
[sinks.elasticsearch]
input = "{}"
dlq = "{}"
group = "{group}"
batch_records = 2000
batch_ms = 300
"#,
            brokers(),
            registry_url(),
            self.prefix,
            self.events,
            self.dlq,
        );
        firstmile_testkit::config(&text)
    }

    async fn es(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", es_url()));
        if let Some(b) = body {
            request = request.json(&b);
        }
        request.send().await.unwrap().json().await.unwrap()
    }

    /// Documents in the alias, after a refresh.
    async fn count(&self) -> u64 {
        self.es(
            reqwest::Method::POST,
            &format!("/{}/_refresh", self.prefix),
            None,
        )
        .await;
        let answer = self
            .es(
                reqwest::Method::GET,
                &format!("/{}/_count", self.prefix),
                None,
            )
            .await;
        answer["count"].as_u64().unwrap_or(0)
    }

    async fn wait_count(&self, n: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let got = self.count().await;
            if got >= n || Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn cleanup(self) {
        self.es(
            reqwest::Method::DELETE,
            &format!("/{}-*", self.prefix),
            None,
        )
        .await;
        self.es(
            reqwest::Method::DELETE,
            &format!("/_index_template/firstmile-{}", self.prefix),
            None,
        )
        .await;
        delete_topics(&[&self.events, &self.dlq]).await;
    }
}

fn start(config: Config) -> Background {
    let sink = firstmile_sink_elasticsearch::ElasticsearchSink::new(&config.elasticsearch).unwrap();
    Background::sink(config, sink)
}

const N: i64 = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/stack up, then cargo test -- --include-ignored (scripts/test does both)"]
async fn documents_fields_histogram_bounded_mapping_conflicts_and_redelivery() {
    let f = Fixture::new().await;
    // Each event carries a key no other has: 10,000 distinct parsed fields.
    let mut events: Vec<Event> = sample_events(0, N, "1");
    for e in &mut events {
        e.fields
            .insert(format!("extra_{}", e.origin.offset), "x".into());
    }
    // A planted conflict: the day index of events received on 2026-11-19
    // exists with `message` as a number (and malformed values refused), so
    // those documents cannot be indexed.
    f.es(
        reqwest::Method::PUT,
        &format!("/{}-2026.11.19", f.prefix),
        Some(json!({
            "settings": {"index.mapping.ignore_malformed": false},
            "mappings": {"properties": {"message": {"type": "long"}}},
        })),
    )
    .await;
    let conflicting: Vec<Event> = sample_events(N, 5, "1")
        .into_iter()
        .map(|mut e| {
            e.received_at = "2026-11-19T12:00:00Z".parse().unwrap();
            e
        })
        .collect();
    produce_events(&f.events, f.schema_id, &events).await;
    produce_events(&f.events, f.schema_id, &conflicting).await;
    let sink = start(f.config(&es_url(), &unique("group")));

    assert_eq!(f.wait_count(N as u64).await, N as u64);
    let deadline = Instant::now() + Duration::from_secs(30);
    while dead_letters(&f.dlq).len() < 5 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let dead = dead_letters(&f.dlq);
    assert_eq!(dead.len(), 5, "{dead:?}");
    for (kind, message) in &dead {
        assert_eq!(kind, "rejected_by_elasticsearch");
        assert!(
            message.contains("message"),
            "the reason names the field: {message}"
        );
    }

    // Fields and types: one document by its id.
    let e = &events[3];
    let doc = f
        .es(
            reqwest::Method::GET,
            &format!("/{}/_doc/{}", index_of(&f, e), e.event_id),
            None,
        )
        .await;
    let source = &doc["_source"];
    assert_eq!(source["message"], "event 3");
    assert_eq!(source["log"]["level"], "error");
    assert_eq!(source["source"]["ip"], "81.2.69.142");
    assert_eq!(source["firstmile"]["origin"]["offset"], 3);
    assert_eq!(source["firstmile"]["fields"]["extra_3"], "x");
    let mapping = f
        .es(
            reqwest::Method::GET,
            &format!("/{}/_mapping", index_of(&f, e)),
            None,
        )
        .await;
    let props = &mapping[index_of(&f, e)]["mappings"]["properties"];
    assert_eq!(props["@timestamp"]["type"], "date");
    assert_eq!(props["source"]["properties"]["ip"]["type"], "ip");
    assert_eq!(props["log"]["properties"]["level"]["type"], "keyword");
    assert_eq!(
        props["firstmile"]["properties"]["fields"]["type"],
        "flattened"
    );
    let mapping_text = mapping.to_string();
    assert!(
        !mapping_text.contains("extra_"),
        "10,000 distinct keys add no fields to the mapping"
    );

    // A date_histogram over @timestamp matches the events' own counts.
    let answer = f
        .es(
            reqwest::Method::POST,
            &format!("/{}/_search", f.prefix),
            Some(json!({"size": 0, "aggs": {"per_minute": {
                "date_histogram": {"field": "@timestamp", "fixed_interval": "1m"}}}})),
        )
        .await;
    let mut expected = std::collections::BTreeMap::<i64, u64>::new();
    for e in &events {
        *expected
            .entry(e.timestamp.as_second() / 60 * 60_000)
            .or_default() += 1;
    }
    let got: std::collections::BTreeMap<i64, u64> = answer["aggregations"]["per_minute"]["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["doc_count"].as_u64() != Some(0))
        .map(|b| (b["key"].as_i64().unwrap(), b["doc_count"].as_u64().unwrap()))
        .collect();
    assert_eq!(got, expected);
    sink.stop().await;

    // Redelivery, corrected: same documents, new values.
    let again: Vec<Event> = sample_events(0, N, "2");
    produce_events(&f.events, f.schema_id, &again).await;
    let sink = start(f.config(&es_url(), &unique("group")));
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        f.count().await; // refreshes
        let answer = f
            .es(
                reqwest::Method::POST,
                &format!("/{}/_count", f.prefix),
                Some(json!({"query": {"term": {"firstmile.pipeline_version": "2"}}})),
            )
            .await;
        if answer["count"].as_u64() == Some(N as u64) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "redelivered values not indexed: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(f.count().await, N as u64, "redelivery adds no documents");
    sink.stop().await;
    f.cleanup().await;
}

fn index_of(f: &Fixture, e: &Event) -> String {
    firstmile_sink_elasticsearch::index_name(&f.prefix, e)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/stack up, then cargo test -- --include-ignored (scripts/test does both)"]
async fn an_outage_mid_run_loses_and_doubles_nothing() {
    let f = Fixture::new().await;
    let target = es_url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let proxy = TcpProxy::start(&target).await;
    let sink = start(f.config(
        &format!("http://127.0.0.1:{}", proxy.port),
        &unique("group"),
    ));
    produce_events(&f.events, f.schema_id, &sample_events(0, N / 2, "1")).await;
    assert_eq!(f.wait_count(N as u64 / 2).await, N as u64 / 2);

    let port = proxy.stop().await;
    produce_events(&f.events, f.schema_id, &sample_events(N / 2, N / 2, "1")).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        f.count().await,
        N as u64 / 2,
        "nothing is indexed while it is away"
    );
    let _back = TcpProxy::start_on(port, &target).await;
    assert_eq!(f.wait_count(N as u64).await, N as u64);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(f.count().await, N as u64, "exactly N documents");
    assert!(dead_letters(&f.dlq).is_empty(), "an outage is not bad data");
    sink.stop().await;
    f.cleanup().await;
}

/// A write block on the index (`index.blocks.write`, answered 403
/// `cluster_block_exception`) is the cluster's doing: the documents wait and
/// are all indexed once the block lifts, nothing goes to `dlq`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/stack up, then cargo test -- --include-ignored (scripts/test does both)"]
async fn a_write_blocked_index_gets_every_event_once_the_block_lifts() {
    let f = Fixture::new().await;
    let events = sample_events(0, N, "1");
    let indices: std::collections::BTreeSet<String> =
        events.iter().map(|e| index_of(&f, e)).collect();
    let metrics = firstmile_metrics::Metrics::new();
    let config = f.config(&es_url(), &unique("group"));
    let sink = firstmile_sink_elasticsearch::ElasticsearchSink::new(&config.elasticsearch).unwrap();
    let sink = Background::metered_sink(config, sink, std::sync::Arc::clone(&metrics));
    // The sink puts its template first; the blocked indices take it.
    let template = format!("/_index_template/firstmile-{}", f.prefix);
    let deadline = Instant::now() + Duration::from_secs(60);
    while f.es(reqwest::Method::GET, &template, None).await["index_templates"].is_null() {
        assert!(Instant::now() < deadline, "no template");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for index in &indices {
        f.es(reqwest::Method::PUT, &format!("/{index}"), None).await;
        let blocked = f
            .es(
                reqwest::Method::PUT,
                &format!("/{index}/_settings"),
                Some(json!({"index.blocks.write": true})),
            )
            .await;
        assert_eq!(blocked["acknowledged"], true, "{blocked}");
    }
    produce_events(&f.events, f.schema_id, &events).await;
    // Refused more than once while blocked.
    let retries = || {
        let text = metrics.encode();
        text.lines()
            .filter(|l| {
                l.starts_with("firstmile_component_errors_total") && l.contains("item_retry")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while retries() < 2.0 {
        assert!(
            Instant::now() < deadline,
            "no blocked item was retried; dead letters: {}",
            dead_letters(&f.dlq).len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(f.count().await, 0, "nothing indexed while blocked");
    for index in &indices {
        f.es(
            reqwest::Method::PUT,
            &format!("/{index}/_settings"),
            Some(json!({"index.blocks.write": false})),
        )
        .await;
    }
    assert_eq!(f.wait_count(N as u64).await, N as u64);
    assert!(
        dead_letters(&f.dlq).is_empty(),
        "a write block is not bad data"
    );
    sink.stop().await;
    f.cleanup().await;
}
