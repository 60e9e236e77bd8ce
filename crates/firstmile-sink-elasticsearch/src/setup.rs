//! The cluster side, set up at start: the composable index template for
//! the daily indices (mappings chosen field by field, an alias over them) and,
//! where the cluster has ILM, a lifecycle policy that deletes old indices.

use elasticsearch::http::headers::HeaderMap;
use elasticsearch::http::request::JsonBody;
use elasticsearch::http::Method;
use elasticsearch::Elasticsearch;
use serde_json::{json, Value};

/// Days an index is kept where ILM can delete it (the database keeps 90).
const RETENTION_DAYS: u32 = 90;

fn keyword() -> Value {
    json!({"type": "keyword", "ignore_above": 1024})
}

fn endpoint() -> Value {
    json!({"properties": {
        "ip": {"type": "ip"},
        "port": {"type": "long"},
        "geo": {"properties": {
            "city_name": keyword(),
            "country_iso_code": keyword(),
            "location": {"type": "geo_point"},
        }},
        "as": {"properties": {
            "number": {"type": "long"},
            "organization": {"properties": {"name": keyword()}},
        }},
        "asset": {"properties": {"owner": keyword(), "zone": keyword()}},
    }})
}

/// The template's mappings. `dynamic: false`: a field not listed here stays
/// in `_source` but adds nothing to the mapping; `labels` and the remaining
/// parsed fields are `flattened` (one field each, whatever their keys), so no
/// source can grow the mapping without bound. `ignore_malformed`: a value
/// that does not fit its field's type is kept in `_source` (and named in
/// `_ignored`) instead of failing the whole document.
pub fn mappings() -> Value {
    json!({
        "dynamic": false,
        "properties": {
            "@timestamp": {"type": "date"},
            "message": {"type": "text"},
            "event": {"properties": {
                "id": keyword(), "dataset": keyword(), "action": keyword(),
                "outcome": keyword(), "code": keyword(), "severity": {"type": "long"},
            }},
            "log": {"properties": {"level": keyword(), "logger": keyword()}},
            "host": {"properties": {"name": keyword()}},
            "process": {"properties": {"name": keyword(), "pid": {"type": "long"}}},
            "user": {"properties": {"name": keyword()}},
            "source": endpoint(),
            "destination": endpoint(),
            "http": {"properties": {
                "request": {"properties": {"method": keyword()}},
                "response": {"properties": {"status_code": {"type": "long"}}},
            }},
            "url": {"properties": {"original": {"type": "keyword", "ignore_above": 8191}}},
            "user_agent": {"properties": {"original": keyword()}},
            "threat": {"properties": {"indicator": {"properties": {
                "type": keyword(), "matched": keyword(), "matched_field": keyword(),
            }}}},
            "labels": {"type": "flattened"},
            "firstmile": {"properties": {
                "received_at": {"type": "date"},
                "pipeline_version": keyword(),
                "raw_bytes": {"type": "long"},
                "origin": {"properties": {
                    "source": keyword(), "topic": keyword(),
                    "partition": {"type": "long"}, "offset": {"type": "long"},
                }},
                "fields": {"type": "flattened", "ignore_above": 8191},
            }},
        },
    })
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("elasticsearch unavailable: {0}")]
    Unavailable(String),
    #[error("elasticsearch refused the {what}: {status} {body}")]
    Refused {
        what: &'static str,
        status: u16,
        body: String,
    },
}

async fn call(
    client: &Elasticsearch,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Result<(u16, String), SetupError> {
    let response = client
        .send(
            method,
            path,
            HeaderMap::new(),
            None::<&()>,
            body.map(JsonBody::new),
            None,
        )
        .await
        .map_err(|e| SetupError::Unavailable(e.to_string()))?;
    let status = response.status_code().as_u16();
    let text = response.text().await.unwrap_or_default();
    if status >= 500 || status == 401 || status == 403 {
        return Err(SetupError::Unavailable(format!("{status} {text}")));
    }
    Ok((status, text))
}

/// Whether the cluster has index lifecycle management (a full
/// Elasticsearch); the test distribution does not, and that is not an error.
pub async fn has_ilm(client: &Elasticsearch) -> Result<bool, SetupError> {
    let (status, _) = call(client, Method::Get, "/_ilm/status", None).await?;
    Ok(status == 200)
}

/// Puts the lifecycle policy (where there is ILM) and the index template
/// for `<prefix>-*` with the alias `<prefix>`. Idempotent.
pub async fn apply(client: &Elasticsearch, prefix: &str) -> Result<bool, SetupError> {
    let ilm = has_ilm(client).await?;
    let policy = format!("firstmile-{prefix}");
    let mut settings = json!({
        "index.mapping.ignore_malformed": true,
        "index.refresh_interval": "5s",
    });
    if ilm {
        let body = json!({"policy": {"phases": {
            "hot": {"actions": {}},
            "delete": {"min_age": format!("{RETENTION_DAYS}d"), "actions": {"delete": {}}},
        }}});
        let (status, text) = call(
            client,
            Method::Put,
            &format!("/_ilm/policy/{policy}"),
            Some(body),
        )
        .await?;
        if status >= 300 {
            return Err(SetupError::Refused {
                what: "lifecycle policy",
                status,
                body: text,
            });
        }
        settings["index.lifecycle.name"] = json!(policy);
    } else {
        tracing::info!(
            "no index lifecycle management in this cluster: indices are kept until deleted"
        );
    }
    let template = json!({
        "index_patterns": [format!("{prefix}-*")],
        "priority": 200,
        "template": {
            "settings": settings,
            "aliases": {prefix: {}},
            "mappings": mappings(),
        },
        "_meta": {"managed_by": "firstmile"},
    });
    let (status, text) = call(
        client,
        Method::Put,
        &format!("/_index_template/firstmile-{prefix}"),
        Some(template),
    )
    .await?;
    if status >= 300 {
        return Err(SetupError::Refused {
            what: "index template",
            status,
            body: text,
        });
    }
    Ok(ilm)
}
