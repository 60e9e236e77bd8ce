//! `firstmile sink timescale` against the real broker and PostgreSQL 15:
//! SIGKILL it mid-stream several times and restart it; the table ends with
//! exactly one row per event.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use firstmile_testkit::{
    brokers, create_topics, delete_topics, produce_events, registry_url, sample_events, unique,
};

const N: i64 = 30_000;

/// The sink process, killed (SIGKILL) when dropped.
struct Sink(Child);

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The sink with the configuration in `dir`; the database settings are
/// also given as variables, which win over any the test runs with.
fn spawn(dir: &Path, url: &str, schema: &str) -> Sink {
    let child = Command::new(env!("CARGO_BIN_EXE_firstmile"))
        .current_dir(dir)
        .args(["sink", "timescale"])
        .env("FIRSTMILE_DATABASE__URL", url)
        .env("FIRSTMILE_DATABASE__SCHEMA", schema)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    Sink(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_sink_ends_with_exactly_one_row_per_event() {
    let (events, dlq) = (unique("events"), unique("dlq"));
    create_topics(&[&events, &dlq], 3).await;
    let schema = unique("kill").replace(['.', '-'], "_");
    let url = std::env::var("FIRSTMILE_STACK_POSTGRES_URL")
        .unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:55432/postgres".into());
    let db = firstmile_config::Database {
        url: url.clone(),
        schema: schema.clone(),
        ..Default::default()
    };
    let mut client = firstmile_db::connect(&db).await.unwrap();
    firstmile_db::migrate(&mut client, &schema, None)
        .await
        .unwrap();
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
             [database]\nurl = \"{url}\"\nschema = \"{schema}\"\n\
             [sinks.timescale]\ninput = \"{events}\"\ndlq = \"{dlq}\"\ngroup = \"{}\"\n\
             batch_records = 1000\n[metrics]\nlisten = \"\"\n",
            brokers(),
            registry_url(),
            unique("group")
        ),
    )
    .unwrap();
    let rows = || async {
        client
            .query_one(&format!("SELECT count(*) FROM {schema}.events"), &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
    };

    // Kill the sink each time it has written another fifth of the events.
    for round in 1..=3 {
        let sink = spawn(dir.path(), &url, &schema);
        let deadline = Instant::now() + Duration::from_secs(120);
        while rows().await < round * N / 5 {
            assert!(Instant::now() < deadline, "the sink made no progress");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(sink); // SIGKILL, mid-stream
    }
    let after_kills = rows().await;
    eprintln!("after three SIGKILLs: {after_kills} of {N} rows");
    assert!(after_kills < N, "the kills came after the stream had ended");

    let _sink = spawn(dir.path(), &url, &schema);
    let deadline = Instant::now() + Duration::from_secs(180);
    while rows().await < N {
        assert!(
            Instant::now() < deadline,
            "only {} of {N} rows",
            rows().await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(rows().await, N, "exactly one row per event");
    let distinct: i64 = client
        .query_one(
            &format!("SELECT count(DISTINCT (raw_topic, raw_offset)) FROM {schema}.events"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(distinct, N);
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
    delete_topics(&[&events, &dlq]).await;
}
