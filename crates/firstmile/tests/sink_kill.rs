//! `firstmile sink timescale|elasticsearch` against the real broker,
//! PostgreSQL 15 and Elasticsearch: SIGKILL the sink mid-stream several
//! times and restart it; the target ends with exactly one row or document
//! per event.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

// The sink process, killed (SIGKILL) when dropped.
use firstmile_testkit::KillOnDrop as Sink;
use firstmile_testkit::{
    brokers, create_topics, delete_topics, elasticsearch_url, migrated_schema, postgres_url,
    produce_events, registry_url, sample_events, unique,
};

const N: i64 = 30_000;

/// `firstmile sink NAME` with the configuration in `dir`; `env` wins over
/// variables the test itself runs with.
fn spawn(dir: &Path, name: &str, env: &[(String, String)]) -> Sink {
    let child = Command::new(env!("CARGO_BIN_EXE_firstmile"))
        .current_dir(dir)
        .args(["sink", name])
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    Sink(child)
}

type Count<'a> = Box<dyn Fn() -> Pin<Box<dyn Future<Output = i64> + 'a>> + 'a>;

/// Produces N events, kills the sink each time another fifth has landed
/// (three times), restarts it, and checks the target ends with exactly N.
async fn kill_three_times(name: &str, env: &[(String, String)], count: Count<'_>) {
    let (events, dlq) = (unique("events"), unique("dlq"));
    create_topics(&[&events, &dlq], 3).await;
    let registry = firstmile_schema::Registry::new(&firstmile_config::SchemaRegistry {
        url: registry_url(),
        ..Default::default()
    })
    .unwrap();
    let schema_id = registry
        .register(
            &firstmile_schema::value_subject(&events),
            firstmile_event::EVENT_SCHEMA,
        )
        .await
        .unwrap();
    produce_events(&events, schema_id, &sample_events(0, N, "1")).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("firstmile.toml"),
        format!(
            "[kafka]\nbrokers = \"{}\"\n[schema_registry]\nurl = \"{}\"\n\
             [sinks.{name}]\ninput = \"{events}\"\ndlq = \"{dlq}\"\ngroup = \"{}\"\n\
             batch_records = 1000\n[metrics]\nlisten = \"\"\n",
            brokers(),
            registry_url(),
            unique("group")
        ),
    )
    .unwrap();
    for round in 1..=3 {
        let sink = spawn(dir.path(), name, env);
        let deadline = Instant::now() + Duration::from_secs(120);
        while count().await < round * N / 5 {
            assert!(Instant::now() < deadline, "the sink made no progress");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(sink); // SIGKILL, mid-stream
    }
    let after_kills = count().await;
    eprintln!("{name}: after three SIGKILLs: {after_kills} of {N}");
    assert!(after_kills < N, "the kills came after the stream had ended");

    let _sink = spawn(dir.path(), name, env);
    let deadline = Instant::now() + Duration::from_secs(180);
    while count().await < N {
        assert!(Instant::now() < deadline, "only {} of {N}", count().await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(count().await, N, "exactly one per event");
    delete_topics(&[&events, &dlq]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/stack up, then cargo test -- --include-ignored (scripts/test does both)"]
async fn a_sigkilled_timescale_sink_ends_with_exactly_one_row_per_event() {
    let url = postgres_url();
    let (client, schema) = migrated_schema(&url, "kill").await;
    let env = [
        ("FIRSTMILE_DATABASE__URL".to_string(), url),
        ("FIRSTMILE_DATABASE__SCHEMA".to_string(), schema.clone()),
    ];
    let sql =
        format!("SELECT count(DISTINCT (raw_topic, raw_offset)), count(*) FROM {schema}.events");
    let count: Count = Box::new(|| {
        Box::pin(async {
            let row = client.query_one(&sql, &[]).await.unwrap();
            let (distinct, all): (i64, i64) = (row.get(0), row.get(1));
            assert_eq!(distinct, all, "a duplicate row");
            all
        })
    });
    kill_three_times("timescale", &env, count).await;
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/stack up, then cargo test -- --include-ignored (scripts/test does both)"]
async fn a_sigkilled_elasticsearch_sink_ends_with_exactly_one_document_per_event() {
    let url = elasticsearch_url();
    let prefix = unique("kill").replace('.', "-").to_lowercase();
    let env = [
        ("FIRSTMILE_ELASTICSEARCH__URL".to_string(), url.clone()),
        (
            "FIRSTMILE_ELASTICSEARCH__INDEX_PREFIX".to_string(),
            prefix.clone(),
        ),
    ];
    let http = reqwest::Client::new();
    let count: Count = Box::new(|| {
        Box::pin(async {
            let _ = http.post(format!("{url}/{prefix}/_refresh")).send().await;
            let answer: serde_json::Value =
                match http.get(format!("{url}/{prefix}/_count")).send().await {
                    Ok(r) => r.json().await.unwrap_or_default(),
                    Err(_) => serde_json::Value::Null,
                };
            answer["count"].as_i64().unwrap_or(0)
        })
    });
    kill_three_times("elasticsearch", &env, count).await;
    let _ = http.delete(format!("{url}/{prefix}-*")).send().await;
    let _ = http
        .delete(format!("{url}/_index_template/firstmile-{prefix}"))
        .send()
        .await;
}
