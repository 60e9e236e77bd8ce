//! The writer against PostgreSQL 15 and the TimescaleDB server of
//! `scripts/stack`: new rows go in by a plain COPY; a batch that meets rows
//! already written falls back to the upsert and replaces them, and later
//! batches take the upsert for a while.

use firstmile_sink_timescale::{Row, Writer};
use firstmile_testkit::{migrated_schema, postgres_url, sample_events, timescaledb_url};

/// Writes the rows in one batch; how many were inserted or replaced.
async fn write(writer: &mut Writer, rows: &[Row]) -> u64 {
    writer
        .write(&rows.iter().collect::<Vec<_>>())
        .await
        .unwrap()
}

async fn new_rows_copied_existing_rows_replaced(url: String) {
    let (client, schema) = migrated_schema(&url, "writer").await;
    let db = firstmile_config::Database {
        url,
        schema: schema.clone(),
        ..Default::default()
    };
    let mut writer = Writer::connect(&db).await.unwrap();
    let rows = |first, version| -> Vec<Row> {
        sample_events(first, 100, version)
            .iter()
            .map(|e| Row::from_event(e).unwrap())
            .collect()
    };
    let sql =
        format!("SELECT pipeline_version, count(*) FROM {schema}.events GROUP BY 1 ORDER BY 1");
    let versions = async |client: &tokio_postgres::Client| -> Vec<(String, i64)> {
        client
            .query(&sql, &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    };

    let first = rows(0, "1");
    assert_eq!(write(&mut writer, &first).await, 100);
    assert!(!writer.upserting(), "new rows need no upsert");
    assert_eq!(versions(&client).await, [("1".to_string(), 100)]);

    // The same events again, corrected: the COPY meets the rows, rolls back
    // to its savepoint, and the upsert replaces them in the same transaction.
    let again = rows(0, "2");
    assert_eq!(write(&mut writer, &again).await, 100);
    assert!(writer.upserting());
    assert_eq!(versions(&client).await, [("2".to_string(), 100)]);

    // Meanwhile new rows take the upsert, and are written all the same.
    let more = rows(100, "2");
    assert_eq!(write(&mut writer, &more).await, 100);
    assert_eq!(versions(&client).await, [("2".to_string(), 200)]);

    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}

#[tokio::test]
#[ignore = "needs the local stack: scripts/stack up, then cargo test -- --include-ignored (scripts/test does both)"]
async fn postgres_new_rows_copied_existing_rows_replaced() {
    new_rows_copied_existing_rows_replaced(postgres_url()).await;
}

#[tokio::test]
#[ignore = "needs the local stack: scripts/stack up, then cargo test -- --include-ignored (scripts/test does both)"]
async fn timescaledb_new_rows_copied_existing_rows_replaced() {
    new_rows_copied_existing_rows_replaced(timescaledb_url()).await;
}

/// A NUL character (which PostgreSQL's text and jsonb refuse) in any text
/// of the event: the row is written, the NUL as U+FFFD.
#[tokio::test]
#[ignore = "needs the local stack: scripts/stack up, then cargo test -- --include-ignored (scripts/test does both)"]
async fn a_nul_character_anywhere_in_an_event_is_written() {
    let url = postgres_url();
    let (client, schema) = migrated_schema(&url, "nul").await;
    let db = firstmile_config::Database {
        url,
        schema: schema.clone(),
        ..Default::default()
    };
    let mut writer = Writer::connect(&db).await.unwrap();
    let mut event = sample_events(0, 1, "1").remove(0);
    event.message = Some("before\0after".into());
    event.host.name = Some("web\0".into());
    event.fields.insert("k\0ey".into(), "v\0".into());
    event.labels.insert("label".into(), "l\0".into());
    let row = Row::from_event(&event).unwrap();
    assert_eq!(write(&mut writer, &[row]).await, 1);
    let stored = client
        .query_one(
            &format!(
                "SELECT message, host_name, fields::text, labels->>'label' FROM {schema}.events"
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(stored.get::<_, String>(0), "before\u{FFFD}after");
    assert_eq!(stored.get::<_, String>(1), "web\u{FFFD}");
    assert!(stored
        .get::<_, String>(2)
        .contains("\"k\u{FFFD}ey\": \"v\u{FFFD}\""));
    assert_eq!(stored.get::<_, String>(3), "l\u{FFFD}");
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}
