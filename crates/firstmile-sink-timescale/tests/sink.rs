//! The sink against the real broker, registry, PostgreSQL 15 and the
//! TimescaleDB server of `scripts/stack`: N events in, exactly N rows with the
//! right values; bad rows in `dlq` with the reason; redelivery replaces
//! values without adding rows; the rollup matches a GROUP BY over the rows; a
//! database outage mid-run is waited out with nothing lost or doubled.

use std::path::Path;
use std::time::{Duration, Instant};

use firstmile_config::Config;
use firstmile_event::Event;
use firstmile_testkit::{
    brokers, create_topics, dead_letters, delete_topics, migrated_schema, postgres_url,
    produce_events, registry_url, sample_events, timescaledb_url, unique, Background, TcpProxy,
};
use tokio_postgres::Client;

const POSTGRES: fn() -> String = postgres_url;
const TIMESCALEDB: fn() -> String = timescaledb_url;

/// host:port of a postgresql:// URL.
fn address(url: &str) -> String {
    let rest = url.split('@').next_back().unwrap();
    rest.split('/').next().unwrap().to_string()
}

struct Fixture {
    events: String,
    dlq: String,
    schema: String,
    db_url: String,
    client: Client,
    schema_id: u32,
}

impl Fixture {
    async fn new(target: fn() -> String) -> Fixture {
        let (events, dlq) = (unique("events"), unique("dlq"));
        create_topics(&[&events, &dlq], 3).await;
        let db_url = target();
        let (client, schema) = migrated_schema(&db_url, "sink").await;
        let schema_id = firstmile_testkit::register_event_schema(&events).await;
        Fixture {
            events,
            dlq,
            schema,
            db_url,
            client,
            schema_id,
        }
    }

    fn config(&self, db_url: &str, group: &str) -> Config {
        let text = format!(
            r#"
[kafka]
brokers = "{}"
[schema_registry]
url = "{}"
[database]
url = "{db_url}"
schema = "{}"
[sinks.timescale]
input = "{}"
dlq = "{}"
group = "{group}"
batch_records = 200
batch_ms = 200
"#,
            brokers(),
            registry_url(),
            self.schema,
            self.events,
            self.dlq,
        );
        firstmile_testkit::config(&text)
    }

    /// Events for raw offsets `range` (testkit's sample), changed by `tweak`.
    async fn produce(
        &self,
        range: std::ops::Range<i64>,
        version: &str,
        tweak: impl Fn(&mut Event),
    ) {
        let mut events = sample_events(range.start, range.end - range.start, version);
        events.iter_mut().for_each(tweak);
        produce_events(&self.events, self.schema_id, &events).await;
    }

    async fn count(&self, filter: &str) -> i64 {
        self.client
            .query_one(
                &format!("SELECT count(*) FROM {}.events WHERE {filter}", self.schema),
                &[],
            )
            .await
            .unwrap()
            .get(0)
    }

    /// Polls until the table holds `n` rows matching `filter` (or 60 s).
    async fn wait_rows(&self, filter: &str, n: i64) -> i64 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = self.count(filter).await;
            if got >= n || Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    async fn cleanup(self) {
        let _ = self
            .client
            .batch_execute(&format!("DROP SCHEMA {} CASCADE", self.schema))
            .await;
        delete_topics(&[&self.events, &self.dlq]).await;
    }
}

fn start(config: Config) -> Background {
    let sink = firstmile_sink_timescale::TimescaleSink::new(&config.database);
    Background::sink(config, sink)
}

fn dlq_kinds(topic: &str) -> Vec<String> {
    dead_letters(topic)
        .into_iter()
        .map(|(kind, _)| kind)
        .collect()
}

const N: i64 = 600;

/// A query's rows as text, sorted: rollups and GROUP BYs compare as text.
async fn text_rows(client: &Client, sql: &str) -> Vec<Vec<String>> {
    let mut rows: Vec<Vec<String>> = client
        .simple_query(sql)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("").to_string())
                    .collect(),
            ),
            _ => None,
        })
        .collect();
    rows.sort();
    rows
}

/// Some failed logins and some HTTP responses among the sample events.
fn vary(e: &mut Event) {
    let n = e.origin.offset;
    if n % 5 == 0 {
        e.event.action = Some("Failed password".into());
        e.user.name = Some(if n % 10 == 0 { "root" } else { "admin" }.into());
    }
    if n % 7 == 0 {
        e.host.name = Some(format!("web-{}", n % 2));
        e.http.response_status_code = Some(if n % 3 == 0 { 404 } else { 200 });
    }
    if n % 11 == 0 {
        e.source.geo = Some(firstmile_event::Geo {
            city_name: Some("London".into()),
            country_iso_code: Some("GB".into()),
            location: None,
        });
        e.threat = Some(firstmile_event::Threat {
            indicator: firstmile_event::ThreatIndicator {
                kind: "ipv4-addr".into(),
                matched: "81.2.69.142".into(),
                matched_field: "source.ip".into(),
            },
        });
    }
}

/// Every panel query of the shipped Grafana dashboards, with Grafana's time
/// filter macro spelled out for a range that holds the sample data.
fn panel_queries() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../grafana/dashboards");
    let mut queries = Vec::new();
    let re = regex::Regex::new(r"\$__timeFilter\(([a-z_]+)\)").unwrap();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let dashboard: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                // PromQL panels (pipeline-health) are run against Prometheus
                // by crates/firstmile/tests/observe.rs.
                if target["datasource"]["type"] == "prometheus" {
                    continue;
                }
                let sql = target["rawSql"].as_str().unwrap();
                let sql = re.replace_all(sql, "$1 BETWEEN '2000-01-01' AND '2100-01-01'");
                assert!(
                    !sql.contains("$__"),
                    "a macro the test does not expand: {sql}"
                );
                let title = format!("{}: {}", dashboard["title"], panel["title"]);
                queries.push((title, sql.into_owned()));
            }
        }
    }
    assert!(queries.len() >= 10, "the dashboards have their panels");
    queries
}

async fn rows_values_redelivery_and_rollup(target: fn() -> String) {
    let f = Fixture::new(target).await;
    f.produce(0..N, "1", vary).await;
    // Two bad ones: a pid too big for its column (caught before the
    // database), a source name too large for an index entry (refused by
    // the database: SQLSTATE 54000; 20 KB that compress badly).
    f.produce(N..N + 1, "1", |e| e.process.pid = Some(1 << 40))
        .await;
    f.produce(N + 1..N + 2, "1", |e| {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        e.origin.source = (0..20_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                char::from(b'!' + (x % 90) as u8)
            })
            .collect();
    })
    .await;
    let sink = start(f.config(&f.db_url, &unique("group")));
    assert_eq!(f.wait_rows("true", N).await, N);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(f.count("true").await, N, "exactly N rows");
    let row = f
        .client
        .query_one(
            &format!(
                "SELECT source, message, log_level, bytes, host(source_ip), raw_offset, pipeline_version \
                 FROM {}.events WHERE raw_offset = 3",
                f.schema
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "linux");
    assert_eq!(row.get::<_, String>(1), "event 3");
    assert_eq!(row.get::<_, String>(2), "error");
    assert_eq!(row.get::<_, i32>(3), 100);
    assert_eq!(row.get::<_, String>(4), "81.2.69.142");
    assert_eq!(row.get::<_, i64>(5), 3);
    assert_eq!(row.get::<_, String>(6), "1");
    let deadline = Instant::now() + Duration::from_secs(30);
    while dlq_kinds(&f.dlq).len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(dlq_kinds(&f.dlq), ["invalid_row", "rejected_by_database"]);
    sink.stop().await;

    // The same events again, corrected (pipeline version 2), read by a new
    // group: the same rows, new values.
    f.produce(0..N, "2", vary).await;
    let sink = start(f.config(&f.db_url, &unique("group")));
    assert_eq!(f.wait_rows("pipeline_version = '2'", N).await, N);
    assert_eq!(f.count("true").await, N, "redelivery adds no rows");
    sink.stop().await;

    // Every rollup matches a GROUP BY over the rows. The sample events were
    // received days ago, before the continuous aggregates' policy window: on
    // TimescaleDB, too, it is the sink that refreshed them (late data).
    let failed = "(event_outcome = 'failure' OR event_action ILIKE 'failed%' \
                  OR event_action ILIKE '%authentication failure%')";
    for (aggregate, grouped) in [
        (
            "events_per_minute",
            "SELECT date_trunc('minute', received_at), source, coalesce(dataset, ''), \
             coalesce(log_level, ''), count(*), sum(bytes)::bigint FROM {s}.events GROUP BY 1, 2, 3, 4"
                .to_string(),
        ),
        (
            "bytes_per_source_hour",
            "SELECT date_trunc('hour', received_at), source, count(*), sum(bytes)::bigint \
             FROM {s}.events GROUP BY 1, 2"
                .to_string(),
        ),
        (
            "failed_logins_per_minute",
            format!(
                "SELECT date_trunc('minute', received_at), source, coalesce(user_name, ''), \
                 coalesce(host(source_ip), ''), count(*) FROM {{s}}.events WHERE {failed} \
                 GROUP BY 1, 2, 3, 4"
            ),
        ),
        (
            "http_status_per_minute",
            "SELECT date_trunc('minute', received_at), coalesce(host_name, ''), \
             (http_status / 100)::int * 100, count(*) FROM {s}.events \
             WHERE http_status IS NOT NULL GROUP BY 1, 2, 3"
                .to_string(),
        ),
    ] {
        let grouped = grouped.replace("{s}", &f.schema);
        let expected = text_rows(&f.client, &grouped).await;
        let got = text_rows(&f.client, &format!("SELECT * FROM {}.{aggregate}", f.schema)).await;
        assert!(!expected.is_empty(), "{aggregate}: the sample has rows for it");
        assert_eq!(got, expected, "{aggregate} against a GROUP BY over the rows");
    }

    // Every dashboard panel's query runs on this database and returns rows.
    for (title, sql) in panel_queries() {
        let rows = text_rows(
            &f.client,
            &format!(
                "BEGIN; SET LOCAL search_path TO {}; {sql}; COMMIT",
                f.schema
            ),
        )
        .await;
        assert!(!rows.is_empty(), "panel {title} returned no rows:\n{sql}");
    }
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/stack up, then cargo test -- --include-ignored (scripts/test does both)"]
async fn postgres_rows_values_redelivery_and_rollup() {
    rows_values_redelivery_and_rollup(POSTGRES).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/stack up, then cargo test -- --include-ignored (scripts/test does both)"]
async fn timescaledb_rows_values_redelivery_and_rollup() {
    rows_values_redelivery_and_rollup(TIMESCALEDB).await;
}

/// The database goes away mid-run (connections cut, port refused) and comes
/// back: every event lands exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/stack up, then cargo test -- --include-ignored (scripts/test does both)"]
async fn a_database_outage_mid_run_loses_and_doubles_nothing() {
    let f = Fixture::new(POSTGRES).await;
    let target = address(&f.db_url);
    let proxy = TcpProxy::start(&target).await;
    let through_proxy = f
        .db_url
        .replace(&target, &format!("127.0.0.1:{}", proxy.port));
    let sink = start(f.config(&through_proxy, &unique("group")));
    f.produce(0..N / 2, "1", |_| {}).await;
    assert_eq!(f.wait_rows("true", N / 2).await, N / 2);

    let port = proxy.stop().await;
    f.produce(N / 2..N, "1", |_| {}).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        f.count("true").await,
        N / 2,
        "nothing is written while the database is away"
    );
    let _back = TcpProxy::start_on(port, &target).await;
    assert_eq!(f.wait_rows("true", N).await, N);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(f.count("true").await, N, "exactly N rows");
    assert!(dlq_kinds(&f.dlq).is_empty(), "an outage is not bad data");
    sink.stop().await;
    f.cleanup().await;
}
