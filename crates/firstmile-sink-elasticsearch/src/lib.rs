//! The Elasticsearch sink: events indexed with `_bulk`, `_id = event_id`,
//! into daily indices named by `received_at` behind an alias, so a
//! redelivered or replayed event overwrites its document. Run by the sink
//! framework's driver (`firstmile_sink::run`), which commits the batch's
//! offsets only after every document is indexed or dead-lettered.
//!
//! What this crate decides: an event's document and index (`document`), the
//! template and ILM policy (`setup`), how a batch is cut into requests, and
//! what an answer means: per item, 429 and 5xx are "later" (retried by the
//! driver), other refusals (mapping, parsing) the content
//! (`rejected_by_elasticsearch`), a version conflict on our own id done; a
//! request that fails as a whole (connection refused, 401, 5xx) means the
//! cluster is unavailable: retried, never dead-lettered.

mod document;
mod setup;

use std::collections::HashSet;

use elasticsearch::auth::Credentials;
use elasticsearch::cert::CertificateValidation;
use elasticsearch::http::headers::{HeaderMap, HeaderValue, CONTENT_TYPE};
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use elasticsearch::http::Method;
use elasticsearch::Elasticsearch;
use firstmile_config::SinkName;
use firstmile_event::{DeadLetterKind, Event};
use firstmile_sink::{Freshness, ItemOutcome, Profile, Sink, StartError, Unavailable};
use serde_json::{json, Value};
use uuid::Uuid;

pub use document::{document, index_name, item_outcomes, push_index};
pub use firstmile_sink::SinkError;
pub use setup::{apply as apply_template, mappings, SetupError};

/// At most this many documents, or bytes, per `_bulk` request…
const BULK_DOCS: usize = 1000;
const BULK_BYTES: usize = 5 << 20;
/// …and this many requests in flight at once.
const CONCURRENT_REQUESTS: usize = 2;
/// Ids per search: Elasticsearch answers at most 10,000 hits by default.
const IDS_PER_SEARCH: usize = 10_000;

/// The client for `[elasticsearch]`: basic auth or an API key, TLS as
/// configured, gzip request bodies if `compression`.
pub fn client(config: &firstmile_config::Elasticsearch) -> Result<Elasticsearch, SinkError> {
    let setup = |e: &dyn std::fmt::Display| SinkError::Setup {
        sink: SinkName::Elasticsearch,
        message: e.to_string(),
    };
    let url = elasticsearch::http::Url::parse(&config.url).map_err(|e| setup(&e))?;
    let mut builder = TransportBuilder::new(SingleNodeConnectionPool::new(url))
        .request_body_compression(config.compression)
        .timeout(std::time::Duration::from_secs(60));
    if let Some(key) = &config.api_key {
        builder = builder.auth(Credentials::EncodedApiKey(key.clone()));
    } else if let Some(user) = &config.username {
        builder = builder.auth(Credentials::Basic(
            user.clone(),
            config.password.clone().unwrap_or_default(),
        ));
    }
    if config.tls.insecure_skip_verify {
        builder = builder.cert_validation(CertificateValidation::None);
    } else if let Some(ca) = &config.tls.ca_file {
        let pem = std::fs::read(ca).map_err(|e| setup(&format!("{}: {e}", ca.display())))?;
        let cert = elasticsearch::cert::Certificate::from_pem(&pem).map_err(|e| setup(&e))?;
        builder = builder.cert_validation(CertificateValidation::Full(cert));
    }
    Ok(Elasticsearch::new(builder.build().map_err(|e| setup(&e))?))
}

/// The daily indices of `[elasticsearch]`: written by the driver, read by
/// readiness, `status` and `audit`.
pub struct ElasticsearchSink {
    es: Elasticsearch,
    prefix: String,
}

/// One document on its way.
struct Doc {
    index: String,
    id: String,
    body: Vec<u8>,
}

impl ElasticsearchSink {
    pub fn new(config: &firstmile_config::Elasticsearch) -> Result<ElasticsearchSink, SinkError> {
        Ok(ElasticsearchSink {
            es: client(config)?,
            prefix: config.index_prefix.clone(),
        })
    }

    async fn search(&self, body: Value) -> Result<Value, String> {
        let pattern = format!("{}-*", self.prefix);
        let answer = self
            .es
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
}

#[async_trait::async_trait]
impl Sink for ElasticsearchSink {
    fn profile(&self) -> &'static Profile {
        &Profile {
            name: SinkName::Elasticsearch,
            unavailable_error: "elasticsearch_unavailable",
            rejection_kinds: &[DeadLetterKind::RejectedByElasticsearch],
        }
    }

    /// The template before the first document: a daily index is created by
    /// the first document that names it, and takes the template then.
    async fn start(&mut self) -> Result<(), StartError> {
        match setup::apply(&self.es, &self.prefix).await {
            Ok(ilm) => {
                tracing::info!(prefix = %self.prefix, ilm, "index template in place");
                Ok(())
            }
            Err(SetupError::Unavailable(why)) => Err(StartError::Unavailable(why)),
            Err(e) => Err(StartError::Refused(e.to_string())),
        }
    }

    async fn write(&mut self, events: &[&Event]) -> Result<Vec<ItemOutcome>, Unavailable> {
        let docs: Vec<Doc> = events
            .iter()
            .map(|event| Doc {
                index: index_name(&self.prefix, event),
                id: event.event_id.to_string(),
                // Serializing a json! value cannot fail.
                body: serde_json::to_vec(&document(event)).unwrap_or_default(),
            })
            .collect();
        let mut outcomes = vec![None; docs.len()];
        let chunks = chunk(&docs);
        let mut failed: Vec<String> = Vec::new();
        for group in chunks.chunks(CONCURRENT_REQUESTS) {
            let answers =
                futures::future::join_all(group.iter().map(|c| bulk(&self.es, &docs, c))).await;
            for (c, answer) in group.iter().zip(answers) {
                match answer {
                    Ok(items) => {
                        for (&i, item) in c.iter().zip(items) {
                            outcomes[i] = Some(item);
                        }
                    }
                    // A request that failed as a whole: these documents are
                    // written again later, with those of any other request
                    // that failed.
                    Err(why) => {
                        for &i in c {
                            outcomes[i] = Some(ItemOutcome::Retry(why.clone()));
                        }
                        failed.push(why);
                    }
                }
            }
        }
        // Every request failed as a whole: the cluster is away, not busy.
        if !chunks.is_empty() && failed.len() == chunks.len() {
            return Err(Unavailable(failed.swap_remove(0)));
        }
        Ok(outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| ItemOutcome::Retry("not sent".into())))
            .collect())
    }

    async fn check(&self) -> Result<(), String> {
        // Cluster health, not `/`: the integ-test distribution answers 405 there.
        let answer = self
            .es
            .cluster()
            .health(elasticsearch::cluster::ClusterHealthParts::None)
            .send()
            .await
            .map_err(|e| format!("elasticsearch: {e}"))?;
        if answer.status_code().is_success() {
            Ok(())
        } else {
            Err(format!("elasticsearch: answered {}", answer.status_code()))
        }
    }

    async fn freshness(&self, since: jiff::Timestamp) -> Result<Freshness, String> {
        let body = json!({
            "size": 0,
            "track_total_hits": false,
            "aggs": {
                "newest": {"max": {"field": "firstmile.received_at"}},
                "recent": {"filter": {"range": {"firstmile.received_at": {"gte": since.to_string()}}}},
            },
        });
        let answer = self.search(body).await?;
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

    /// By `event.id`, in any daily index.
    async fn holds(&self, ids: &[Uuid]) -> Result<HashSet<Uuid>, String> {
        let mut present = HashSet::new();
        for chunk in ids.chunks(IDS_PER_SEARCH) {
            let terms: Vec<String> = chunk.iter().map(Uuid::to_string).collect();
            let body = json!({
                "size": IDS_PER_SEARCH,
                "_source": false,
                "track_total_hits": false,
                "docvalue_fields": ["event.id"],
                "query": {"terms": {"event.id": terms}},
            });
            let answer = self.search(body).await?;
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
}

/// Positions grouped into requests of at most BULK_DOCS documents and about
/// BULK_BYTES bytes.
fn chunk(docs: &[Doc]) -> Vec<Vec<usize>> {
    let mut chunks: Vec<Vec<usize>> = Vec::new();
    let mut bytes = 0;
    for (i, doc) in docs.iter().enumerate() {
        let size = doc.body.len() + doc.index.len() + 80;
        match chunks.last_mut() {
            Some(c) if c.len() < BULK_DOCS && bytes + size <= BULK_BYTES => {
                c.push(i);
                bytes += size;
            }
            _ => {
                chunks.push(vec![i]);
                bytes = size;
            }
        }
    }
    chunks
}

/// One `_bulk` request; the outcome per document, or why the request as a
/// whole failed (an outage).
async fn bulk(
    es: &Elasticsearch,
    docs: &[Doc],
    positions: &[usize],
) -> Result<Vec<ItemOutcome>, String> {
    let mut body = Vec::new();
    for &i in positions {
        push_index(&mut body, &docs[i].index, &docs[i].id, &docs[i].body);
    }
    let mut headers = HeaderMap::new();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    let response = es
        .send(
            Method::Post,
            "/_bulk",
            headers,
            None::<&()>,
            Some(body),
            None,
        )
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status_code().as_u16();
    let answer: serde_json::Value = response.json().await.map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("HTTP {status}: {answer}"));
    }
    item_outcomes(&answer, positions.len()).ok_or_else(|| format!("not a _bulk answer: {answer}"))
}
