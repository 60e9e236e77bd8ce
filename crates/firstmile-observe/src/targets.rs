//! The sinks' targets, read: the newest row or document and how many
//! arrived lately (for status), and the event ids of a time range (for
//! audit).

use std::collections::HashSet;

use firstmile_config::Config;
use jiff::Timestamp;
use serde_json::{json, Value};
use uuid::Uuid;

/// The newest `received_at` in the target and how many rows or documents
/// were received after `since`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Freshness {
    pub newest: Option<Timestamp>,
    pub recent: u64,
}

pub(crate) async fn timescale_freshness(
    config: &Config,
    since: Timestamp,
) -> Result<Freshness, String> {
    let client = connect(config).await?;
    let table = table(config);
    let row = client
        .query_one(
            &format!(
                "SELECT max(received_at), count(*) FILTER (WHERE received_at >= $1) FROM {table}"
            ),
            &[&since],
        )
        .await
        .map_err(|e| format!("database: {e}"))?;
    let recent: i64 = row.get(1);
    Ok(Freshness {
        newest: row.get(0),
        recent: recent.max(0) as u64,
    })
}

pub(crate) async fn elasticsearch_freshness(
    config: &Config,
    since: Timestamp,
) -> Result<Freshness, String> {
    let body = json!({
        "size": 0,
        "track_total_hits": false,
        "aggs": {
            "newest": {"max": {"field": "firstmile.received_at"}},
            "recent": {"filter": {"range": {"firstmile.received_at": {"gte": since.to_string()}}}},
        },
    });
    let answer = es_search(config, body).await?;
    let newest = answer["aggregations"]["newest"]["value_as_string"]
        .as_str()
        .and_then(|s| s.parse().ok());
    Ok(Freshness {
        newest,
        recent: answer["aggregations"]["recent"]["doc_count"]
            .as_u64()
            .unwrap_or(0),
    })
}

/// Which of `ids` the database holds.
pub(crate) async fn timescale_present(
    config: &Config,
    ids: &[Uuid],
) -> Result<HashSet<Uuid>, String> {
    let client = connect(config).await?;
    let query = format!(
        "SELECT event_id FROM {} WHERE event_id = ANY($1)",
        table(config)
    );
    let mut present = HashSet::new();
    for chunk in ids.chunks(CHUNK) {
        let rows = client
            .query(&query, &[&chunk])
            .await
            .map_err(|e| format!("database: {e}"))?;
        present.extend(rows.iter().map(|r| r.get::<_, Uuid>(0)));
    }
    Ok(present)
}

/// Which of `ids` Elasticsearch holds (as `event.id`, in any daily index).
pub(crate) async fn elasticsearch_present(
    config: &Config,
    ids: &[Uuid],
) -> Result<HashSet<Uuid>, String> {
    let mut present = HashSet::new();
    for chunk in ids.chunks(CHUNK) {
        let terms: Vec<String> = chunk.iter().map(Uuid::to_string).collect();
        let body = json!({
            "size": CHUNK,
            "_source": false,
            "track_total_hits": false,
            "docvalue_fields": ["event.id"],
            "query": {"terms": {"event.id": terms}},
        });
        let answer = es_search(config, body).await?;
        for hit in answer["hits"]["hits"].as_array().into_iter().flatten() {
            if let Some(id) = hit["fields"]["event.id"][0]
                .as_str()
                .and_then(|s| s.parse().ok())
            {
                present.insert(id);
            }
        }
    }
    Ok(present)
}

/// Ids per query: Elasticsearch answers at most 10,000 hits by default.
const CHUNK: usize = 10_000;

async fn connect(config: &Config) -> Result<tokio_postgres::Client, String> {
    firstmile_db::connect(&config.database)
        .await
        .map_err(|e| format!("database: {e}"))
}

/// The events table, schema-qualified.
fn table(config: &Config) -> String {
    format!("\"{}\".events", config.database.schema.replace('"', "\"\""))
}

async fn es_search(config: &Config, body: Value) -> Result<Value, String> {
    let es =
        firstmile_sink_elasticsearch::client(&config.elasticsearch).map_err(|e| e.to_string())?;
    let pattern = format!("{}-*", config.elasticsearch.index_prefix);
    let answer = es
        .search(elasticsearch::SearchParts::Index(&[&pattern]))
        .ignore_unavailable(true)
        .allow_no_indices(true)
        .body(body)
        .send()
        .await
        .map_err(|e| format!("elasticsearch: {e}"))?;
    let status = answer.status_code();
    let answer: Value = answer
        .json()
        .await
        .map_err(|e| format!("elasticsearch: {e}"))?;
    if !status.is_success() {
        return Err(format!("elasticsearch: answered {status}: {answer}"));
    }
    Ok(answer)
}
