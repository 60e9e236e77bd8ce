//! `migrate` against the real PostgreSQL 15 and TimescaleDB servers of
//! `scripts/stack`. Each test works in a schema of its own.

use std::time::{SystemTime, UNIX_EPOCH};

use firstmile_db::migrate::{group, run};
use firstmile_db::{connect, migrate, DbError, Flavour};
use tokio_postgres::Client;

fn url(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_string())
}

async fn client(url: String) -> Client {
    let db = firstmile_config::Database {
        url,
        ..Default::default()
    };
    connect(&db).await.unwrap()
}

async fn postgres() -> Client {
    client(url(
        "FIRSTMILE_STACK_POSTGRES_URL",
        "postgresql://postgres@127.0.0.1:55432/postgres",
    ))
    .await
}

async fn timescaledb() -> Client {
    client(url(
        "FIRSTMILE_STACK_TIMESCALEDB_URL",
        "postgresql://postgres@127.0.0.1:55433/postgres",
    ))
    .await
}

/// Distinct per call: tests run in parallel threads and the clock is coarse.
static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn schema(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "test_{prefix}_{}_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000,
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// Inserts events over two minutes and two sources into `schema.events`.
async fn insert_events(c: &Client, schema: &str) {
    c.batch_execute(&format!(
        "INSERT INTO {schema}.events
            (event_id, received_at, ts, source, dataset, log_level, bytes,
             raw_topic, raw_partition, raw_offset, pipeline_version)
         SELECT md5(i::text)::uuid,
                timestamptz '2026-01-01 10:00:00+00' + (i % 120) * interval '1 second',
                timestamptz '2026-01-01 09:00:00+00',
                CASE WHEN i % 3 = 0 THEN 'nginx' ELSE 'syslog' END,
                CASE WHEN i % 2 = 0 THEN 'auth' END,
                'info', 100 + i, 'raw.x', 0, i, 'test'
         FROM generate_series(1, 600) AS i"
    ))
    .await
    .unwrap();
}

const GROUP_BY: &str = "SELECT date_trunc('minute', received_at), source, coalesce(dataset, ''),
        coalesce(log_level, ''), count(*), sum(bytes)::bigint FROM {s}.events GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4";
const AGGREGATE: &str = "SELECT bucket, source, dataset, log_level, events, bytes
        FROM {s}.events_per_minute ORDER BY 1, 2, 3, 4";

type Rollup = Vec<(std::time::SystemTime, String, String, String, i64, i64)>;

async fn rollup(c: &Client, sql: &str, schema: &str) -> Rollup {
    c.query(&sql.replace("{s}", schema), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
        .collect()
}

async fn applied_ids(c: &Client, schema: &str) -> Vec<String> {
    c.query(
        &format!("SELECT id FROM {schema}.firstmile_migrations ORDER BY id"),
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// The ids of the shipped migrations, in order; the first two make the
/// tables these tests look at.
fn shipped() -> Vec<String> {
    let ids: Vec<String> = firstmile_db::migrate::embedded()
        .unwrap()
        .iter()
        .map(|m| m.id.clone())
        .collect();
    assert_eq!(ids[..2], ["0001_events", "0002_events_per_minute"]);
    ids
}

#[tokio::test]
#[ignore = "needs the local stack: scripts/stack up, then cargo test -- --include-ignored (scripts/test does both)"]
async fn migrate_on_postgres_15_creates_partitioned_tables_and_a_rollup() {
    let mut c = postgres().await;
    let s = schema("pg");
    let first = migrate(&mut c, &s, None).await.unwrap();
    assert_eq!(first.flavour, Flavour::Postgres);
    assert_eq!(first.applied, shipped());
    assert_eq!(applied_ids(&c, &s).await, first.applied);

    // events is range-partitioned on received_at, with a default partition.
    let partitioned: String = c
        .query_one(
            "SELECT pg_get_partkeydef(($1 || '.events')::regclass)",
            &[&s],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(partitioned, "RANGE (received_at)");

    // Re-running is a no-op.
    let second = migrate(&mut c, &s, None).await.unwrap();
    assert!(second.applied.is_empty());
    assert_eq!(second.already_applied.len(), shipped().len());

    // The rollup, refreshed for the range, equals a GROUP BY over the rows.
    insert_events(&c, &s).await;
    c.batch_execute(&format!(
        "SET search_path TO {s}; SELECT firstmile_refresh_events_per_minute('2026-01-01', '2026-01-02'); RESET search_path"
    ))
    .await
    .unwrap();
    let expected = rollup(&c, GROUP_BY, &s).await;
    assert_eq!(
        expected.len(),
        2 * 2 * 2,
        "two minutes x two sources x two datasets"
    );
    assert_eq!(rollup(&c, AGGREGATE, &s).await, expected);

    c.batch_execute(&format!("DROP SCHEMA {s} CASCADE"))
        .await
        .unwrap();
}

#[tokio::test]
#[ignore = "needs the local stack: scripts/stack up, then cargo test -- --include-ignored (scripts/test does both)"]
async fn migrate_on_timescaledb_creates_a_hypertable_and_a_continuous_aggregate() {
    let mut c = timescaledb().await;
    let s = schema("ts");
    let first = migrate(&mut c, &s, None).await.unwrap();
    assert_eq!(first.flavour, Flavour::TimescaleDb);
    assert_eq!(first.applied, shipped());

    let dimension: String = c
        .query_one(
            "SELECT column_name FROM timescaledb_information.dimensions
             WHERE hypertable_schema = $1 AND hypertable_name = 'events'",
            &[&s],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(dimension, "received_at");
    let job: i32 = c
        .query_one(
            "SELECT job_id FROM timescaledb_information.jobs
             WHERE hypertable_schema = $1 AND hypertable_name = 'events_per_minute'
               AND proc_name = 'policy_refresh_continuous_aggregate'",
            &[&s],
        )
        .await
        .unwrap()
        .get(0);

    let second = migrate(&mut c, &s, None).await.unwrap();
    assert!(second.applied.is_empty());
    assert_eq!(second.already_applied.len(), shipped().len());

    // No background workers in the WASM build: run the refresh policy's job by
    // hand. Its window is the last 3 days, so refresh the older test range
    // explicitly too; both must agree with a GROUP BY over the rows.
    insert_events(&c, &s).await;
    c.batch_execute(&format!("CALL run_job({job})"))
        .await
        .unwrap();
    c.batch_execute(&format!(
        "CALL refresh_continuous_aggregate('{s}.events_per_minute', '2026-01-01', '2026-01-02')"
    ))
    .await
    .unwrap();
    let expected = rollup(&c, GROUP_BY, &s).await;
    assert_eq!(expected.len(), 8);
    assert_eq!(rollup(&c, AGGREGATE, &s).await, expected);

    c.batch_execute(&format!("DROP SCHEMA {s} CASCADE"))
        .await
        .unwrap();
}

#[tokio::test]
#[ignore = "needs the local stack: scripts/stack up, then cargo test -- --include-ignored (scripts/test does both)"]
async fn a_schema_keeps_its_flavour_and_applied_migrations_cannot_change() {
    let mut c = timescaledb().await;
    let s = schema("flavour");
    // The server has TimescaleDB (another test, or none yet, may have created it).
    c.batch_execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        .await
        .unwrap();
    // Plain tables on a TimescaleDB server, when asked for.
    let first = migrate(&mut c, &s, Some(Flavour::Postgres)).await.unwrap();
    assert_eq!(first.flavour, Flavour::Postgres);
    let hypertables: i64 = c
        .query_one(
            "SELECT count(*) FROM timescaledb_information.hypertables WHERE hypertable_schema = $1",
            &[&s],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(hypertables, 0);
    // Auto-detection now keeps the recorded flavour; forcing another is refused.
    assert_eq!(
        migrate(&mut c, &s, None).await.unwrap().flavour,
        Flavour::Postgres
    );
    let err = migrate(&mut c, &s, Some(Flavour::TimescaleDb))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("migrated as `postgres`"), "{err}");

    // An applied migration whose SQL changed is an error, not a silent re-run.
    let edited = group(&[
        ("0001_events.postgres.sql", "SELECT 1"),
        ("0001_events.timescaledb.sql", "SELECT 1"),
    ])
    .unwrap();
    let err = run(&mut c, &s, &edited, None).await.unwrap_err();
    assert!(
        matches!(err, DbError::Migration { ref id, .. } if id == "0001_events"),
        "{err}"
    );
    assert!(err.to_string().contains("changed after it was applied"));

    // A failing migration rolls back whole and is not recorded.
    let broken = group(&[(
        "0009_broken.sql",
        "CREATE TABLE half (a int); SELECT * FROM no_such_table",
    )])
    .unwrap();
    let err = run(&mut c, &s, &broken, None).await.unwrap_err();
    assert!(err.to_string().contains("no_such_table"), "{err}");
    let half: Option<String> = c
        .query_one("SELECT to_regclass($1 || '.half')::text", &[&s])
        .await
        .unwrap()
        .get(0);
    assert_eq!(half, None);
    assert!(!applied_ids(&c, &s)
        .await
        .contains(&"0009_broken".to_string()));

    c.batch_execute(&format!("DROP SCHEMA {s} CASCADE"))
        .await
        .unwrap();
}

#[test]
#[ignore = "needs the local stack: scripts/stack up, then cargo test -- --include-ignored (scripts/test does both)"]
fn flavour_files_must_come_in_pairs() {
    let err = group(&[("0003_x.timescaledb.sql", "SELECT 1")]).unwrap_err();
    assert!(err.to_string().contains("one flavour only"), "{err}");
    let err = group(&[("0003_x.mysql.sql", "SELECT 1")]).unwrap_err();
    assert!(err.to_string().contains("unknown flavour"), "{err}");
    let ok = group(&[
        ("0002_b.sql", "B"),
        ("0001_a.postgres.sql", "AP"),
        ("0001_a.sql", "A"),
        ("0001_a.timescaledb.sql", "AT"),
    ])
    .unwrap();
    assert_eq!(
        ok.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
        ["0001_a", "0002_b"]
    );
    assert_eq!(ok[0].sql(Flavour::TimescaleDb), ["A", "AT"]);
    assert_eq!(ok[0].sql(Flavour::Postgres), ["A", "AP"]);
    assert_eq!(ok[1].sql(Flavour::Postgres), ["B"]);
}
