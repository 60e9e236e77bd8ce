//! The Elasticsearch sink: a consumer group on `events` (`read_committed`)
//! that indexes each batch with `_bulk`, `_id = event_id`, into daily indices
//! named by `received_at` behind an alias, so a redelivered or replayed event
//! overwrites its document. Offsets are committed only after every document
//! of the batch is indexed or dead-lettered.
//!
//! Per item: 429 and 5xx are sent again (only those documents, with backoff
//! and jitter); other refusals (mapping, parsing) go to `dlq` with the error
//! type and reason; a version conflict on our own id counts as done. A
//! request that fails as a whole (connection refused, 401, 5xx) is an outage:
//! retried, never dead-lettered, nothing committed meanwhile.

mod document;
mod setup;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use elasticsearch::auth::Credentials;
use elasticsearch::cert::CertificateValidation;
use elasticsearch::http::headers::{HeaderMap, HeaderValue, CONTENT_TYPE};
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use elasticsearch::http::Method;
use elasticsearch::Elasticsearch;
use firstmile_config::Config;
use firstmile_metrics::Component;
use firstmile_sink::{
    observe_committed, source_of, Backoff, DeadLetter, EventDecoder, SinkConsumer, SinkTopics,
};
use rdkafka::message::OwnedMessage;

pub use document::{document, index_name, item_outcomes, push_index, ItemOutcome};
pub use firstmile_sink::SinkError;
pub use setup::{apply as apply_template, mappings, SetupError};

/// At most this many documents, or bytes, per `_bulk` request…
const BULK_DOCS: usize = 1000;
const BULK_BYTES: usize = 5 << 20;
/// …and this many requests in flight at once.
const CONCURRENT_REQUESTS: usize = 2;

/// The client for `[elasticsearch]`: basic auth or an API key, TLS as
/// configured, gzip request bodies if `compression`.
pub fn client(config: &firstmile_config::Elasticsearch) -> Result<Elasticsearch, SinkError> {
    let setup = |e: &dyn std::fmt::Display| SinkError::Setup(format!("elasticsearch: {e}"));
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

/// One document on its way: where it goes and where it came from.
struct Doc<'a> {
    index: String,
    id: String,
    body: Vec<u8>,
    record: &'a OwnedMessage,
    source: String,
    received_at: jiff::Timestamp,
}

/// Runs the sink until `stop` is set (checked between batches and attempts).
pub async fn run(config: &Config, metrics: &Component, stop: &AtomicBool) -> Result<(), SinkError> {
    let es = client(&config.elasticsearch)?;
    let prefix = config.elasticsearch.index_prefix.clone();
    // The template before the first document: a daily index is created by
    // the first document that names it, and takes the template then.
    let mut backoff = Backoff::default();
    loop {
        match setup::apply(&es, &prefix).await {
            Ok(ilm) => {
                tracing::info!(%prefix, ilm, "index template in place");
                break;
            }
            Err(SetupError::Unavailable(why)) => {
                tracing::warn!(error = %why, retry_in = ?backoff.current(), "elasticsearch unavailable");
                if !backoff.wait(stop).await {
                    return Ok(());
                }
            }
            Err(e) => return Err(SinkError::Setup(e.to_string())),
        }
    }
    let default_input = config.stages.enrich.output.as_deref().unwrap_or("events");
    let topics = SinkTopics::new("elasticsearch", &config.sinks.elasticsearch, default_input);
    let consumer = SinkConsumer::new(&config.kafka, topics, metrics)?;
    let mut decoder = EventDecoder::new(&config.schema_registry)?;

    while !stop.load(Ordering::SeqCst) {
        let batch = consumer.poll_batch().await;
        if batch.is_empty() || !decoder.prepare(&batch, stop).await {
            continue;
        }
        let mut dead: Vec<DeadLetter> = Vec::new();
        let mut docs = Vec::with_capacity(batch.len());
        for record in &batch {
            match decoder.decode(record) {
                Ok(event) => docs.push(Doc {
                    index: index_name(&prefix, &event),
                    id: event.event_id.to_string(),
                    // Serializing a json! value cannot fail.
                    body: serde_json::to_vec(&document(&event)).unwrap_or_default(),
                    record,
                    source: event.origin.source,
                    received_at: event.received_at,
                }),
                Err((kind, message)) => dead.push((record, kind, message)),
            }
        }
        // Last one wins: a batch can hold an event twice (at-least-once
        // upstream, a replay), and its requests run concurrently, so the
        // older copy must not be sent at all.
        let mut latest = std::collections::HashMap::new();
        for (i, d) in docs.iter().enumerate() {
            latest.insert((d.index.as_str(), d.id.as_str()), i);
        }
        let mut keep: Vec<usize> = latest.into_values().collect();
        keep.sort_unstable();
        let writing = std::time::Instant::now();
        let Some(rejected) = index_all(&es, &docs, keep.clone(), stop, metrics).await else {
            break; // stopped before everything was indexed: nothing committed
        };
        let write_seconds = writing.elapsed().as_secs_f64();
        let refused: std::collections::HashSet<usize> =
            rejected.iter().map(|(i, _, _)| *i).collect();
        for (i, error_type, reason) in rejected {
            let message = format!("{error_type}: {reason}");
            dead.push((docs[i].record, "rejected_by_elasticsearch", message));
        }
        if !dead.is_empty() {
            consumer.dead_letter(&dead).await?;
        }
        consumer.commit(&batch);
        report(metrics, &batch, &docs, &dead);
        let indexed: Vec<jiff::Timestamp> = keep
            .iter()
            .filter(|i| !refused.contains(i))
            .map(|&i| docs[i].received_at)
            .collect();
        observe_committed(metrics, write_seconds, &indexed);
    }
    tracing::info!("elasticsearch sink stopped");
    Ok(())
}

fn report(metrics: &Component, batch: &[OwnedMessage], docs: &[Doc], dead: &[DeadLetter]) {
    let mut received: BTreeMap<&str, u64> = BTreeMap::new();
    for record in batch {
        *received.entry(source_of(record)).or_default() += 1;
    }
    for (source, n) in received {
        metrics.received(source, n, 0);
    }
    let mut sent: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for d in docs {
        let s = sent.entry(d.source.as_str()).or_default();
        s.0 += 1;
        s.1 += d.body.len() as u64;
    }
    for (record, kind, _) in dead {
        let source = source_of(record);
        metrics.discarded(source, &format!("dlq_{kind}"), 1);
        if *kind == "rejected_by_elasticsearch" {
            if let Some(s) = sent.get_mut(source) {
                s.0 = s.0.saturating_sub(1);
            }
        }
    }
    for (source, (n, bytes)) in sent {
        metrics.sent(source, n, bytes);
    }
}

/// Indexes the documents at `pending`: retries items answered 429/5xx and whole
/// requests that failed, until each is indexed or refused. Returns the
/// refused ones (position, error type, reason); `None` if stopped first.
async fn index_all(
    es: &Elasticsearch,
    docs: &[Doc<'_>],
    mut pending: Vec<usize>,
    stop: &AtomicBool,
    metrics: &Component,
) -> Option<Vec<(usize, String, String)>> {
    let mut rejected = Vec::new();
    let mut backoff = Backoff::default();
    while !pending.is_empty() {
        let chunks = chunk(docs, &pending);
        let mut retry = Vec::new();
        for group in chunks.chunks(CONCURRENT_REQUESTS) {
            let answers = futures::future::join_all(group.iter().map(|c| bulk(es, docs, c))).await;
            for (c, answer) in group.iter().zip(answers) {
                match answer {
                    Ok(outcomes) => {
                        for (&i, outcome) in c.iter().zip(outcomes) {
                            match outcome {
                                ItemOutcome::Done => {}
                                ItemOutcome::Retry(why) => {
                                    tracing::debug!(%why, "document sent again later");
                                    retry.push(i);
                                }
                                ItemOutcome::Rejected { error_type, reason } => {
                                    rejected.push((i, error_type, reason))
                                }
                            }
                        }
                    }
                    Err(why) => {
                        metrics.error("elasticsearch_unavailable");
                        tracing::warn!(error = %why, retry_in = ?backoff.current(), "bulk request failed; the batch waits");
                        retry.extend(c.iter().copied());
                    }
                }
            }
        }
        pending = retry;
        if !pending.is_empty() {
            metrics.error("bulk_item_retry");
            if !backoff.wait(stop).await {
                return None;
            }
        }
    }
    Some(rejected)
}

/// Positions grouped into requests of at most BULK_DOCS documents and about
/// BULK_BYTES bytes.
fn chunk(docs: &[Doc<'_>], pending: &[usize]) -> Vec<Vec<usize>> {
    let mut chunks: Vec<Vec<usize>> = Vec::new();
    let mut bytes = 0;
    for &i in pending {
        let size = docs[i].body.len() + docs[i].index.len() + 80;
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
    docs: &[Doc<'_>],
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

/// Whether Elasticsearch answers, for `/health/ready`.
pub async fn check_target(config: &firstmile_config::Elasticsearch) -> Result<(), String> {
    let es = client(config).map_err(|e| e.to_string())?;
    // Cluster health, not `/`: the integ-test distribution answers 405 there.
    let answer = es
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
