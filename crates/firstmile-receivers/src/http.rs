//! `POST /v1/sources/{source}/events`: newline-delimited events (raw lines or
//! JSON objects), optionally gzip or zstd. Answers 200 only when Kafka has
//! acknowledged every event of the request.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use firstmile_kafka::raw::SendError;
use firstmile_metrics::Component;
use serde::Deserialize;
use serde_json::json;

use crate::framing::LineSplitter;
use crate::stream::{received_now, stream_key, Assembler, Piece, Shared, StreamContext};

#[derive(Clone)]
pub struct HttpState {
    pub shared: Arc<Shared>,
    pub metrics: Component,
    pub max_body_bytes: usize,
    pub max_decompressed_bytes: usize,
    /// Decompressed bytes of all requests in progress, in KiB permits
    /// ([`budget_permits`]), taken as a body inflates and held until the
    /// request is answered.
    pub decompressing: Arc<tokio::sync::Semaphore>,
    /// How long a client may take to send a whole body.
    pub body_timeout: Duration,
    /// Requests in progress; taken before a body is read.
    pub requests: Arc<tokio::sync::Semaphore>,
    /// Of those, what each source may hold (taken first): one source's
    /// slow clients cannot take every slot.
    pub source_requests: Arc<BTreeMap<String, Arc<tokio::sync::Semaphore>>>,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/v1/sources/{source}/events", post(post_events))
        .with_state(state)
}

#[derive(Deserialize)]
struct EventsQuery {
    /// The sending host, for the record key (default: the peer's address).
    host: Option<String>,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

async fn post_events(
    State(app): State<HttpState>,
    Path(source): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<EventsQuery>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let m = &app.metrics;
    let Some(route) = app.shared.routes.get(&source) else {
        m.rejected("unknown_source");
        return error(StatusCode::NOT_FOUND, format!("unknown source `{source}`"));
    };
    if let Some(token) = &route.token {
        if !bearer_matches(&headers, token) {
            m.rejected("unauthorized");
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                Json(json!({ "error": "missing or wrong bearer token" })),
            )
                .into_response();
        }
    }
    let slots = async {
        let source_slot = match app.source_requests.get(&source) {
            Some(s) => Some(Arc::clone(s).acquire_owned().await.ok()?),
            None => None,
        };
        let slot = Arc::clone(&app.requests).acquire_owned().await.ok()?;
        Some((source_slot, slot))
    };
    let Ok(Some(_slots)) = tokio::time::timeout(app.shared.delivery_timeout, slots).await else {
        m.rejected("busy");
        return service_unavailable(&app, "too many requests in progress".into(), 0, 0);
    };
    let reading = tokio::time::timeout(
        app.body_timeout,
        axum::body::to_bytes(body, app.max_body_bytes),
    );
    let raw = match reading.await {
        Err(_) => {
            m.rejected("body_timeout");
            return error(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the body did not arrive within {} s",
                    app.body_timeout.as_secs_f64()
                ),
            );
        }
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            // to_bytes fails for a body over the limit, or a broken connection.
            let too_large = is_length_limit(&e);
            if too_large {
                m.rejected("too_large");
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("body larger than {} bytes", app.max_body_bytes),
                );
            }
            m.rejected("bad_body");
            return error(StatusCode::BAD_REQUEST, format!("cannot read body: {e}"));
        }
    };
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    let limit = app.max_decompressed_bytes;
    let budget = Arc::clone(&app.decompressing);
    let decoded = tokio::task::spawn_blocking(move || decode(&encoding, raw, limit, &budget)).await;
    // Held until the request is answered: the events are slices of the body.
    let (body, _decompressed) = match decoded {
        Ok(Ok(b)) => b,
        Ok(Err((StatusCode::SERVICE_UNAVAILABLE, reason, message))) => {
            m.rejected(reason);
            return service_unavailable(&app, message, 0, 0);
        }
        Ok(Err((status, reason, message))) => {
            m.rejected(reason);
            return error(status, message);
        }
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };

    let max_event = app.shared.max_event_bytes;
    let mut splitter = LineSplitter::new(max_event);
    let mut assembler = Assembler::new(route, max_event);
    let now = Instant::now();
    let mut pieces = Vec::new();
    assembler.feed(splitter.push(&body), now, &mut pieces);
    assembler.feed(splitter.finish().into_iter().collect(), now, &mut pieces);
    pieces.extend(assembler.finish());

    let mut events = Vec::with_capacity(pieces.len());
    let mut empty = 0;
    for (i, piece) in pieces.into_iter().enumerate() {
        match piece {
            Piece::Event(b) => events.push(b),
            Piece::Empty => empty += 1,
            Piece::TooLarge(len) => {
                m.rejected("event_too_large");
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("event {} is {len} bytes; the limit is {max_event}", i + 1),
                );
            }
        }
    }
    if empty > 0 {
        m.discarded(&route.source, "empty_line", empty);
    }
    let bytes: usize = events.iter().map(Bytes::len).sum();
    m.received(&route.source, events.len() as u64, bytes as u64);

    let host = query
        .host
        .or_else(|| header_text(&headers, "x-firstmile-host"))
        .unwrap_or_else(|| peer.ip().to_string());
    let ctx = StreamContext {
        key: stream_key(&route.source, &host),
        route: route.clone(),
        receiver: "http",
        remote_addr: Some(peer.to_string()),
        content_type: header_text(&headers, header::CONTENT_TYPE.as_str()),
        metrics: m.clone(),
    };
    let at = received_now();
    let producer = &app.shared.acked;
    let deadline = Instant::now() + app.shared.delivery_timeout;
    let mut deliveries = Vec::with_capacity(events.len());
    let mut refused = None;
    let mut stored = 0;
    for event in &events {
        // This request's own deliveries hold budget until they are settled:
        // when the budget is full, settle the older half first, so a request
        // larger than the budget is not refused while Kafka keeps up.
        let sent = loop {
            match ctx.send(producer, event, &at, Some(Duration::ZERO)).await {
                Err(SendError::Busy { .. }) if !deliveries.is_empty() => {
                    let older: Vec<_> = deliveries.drain(..deliveries.len().div_ceil(2)).collect();
                    stored += ctx.settle_all(older).await;
                }
                Err(SendError::Busy { .. }) => {
                    let wait = deadline.saturating_duration_since(Instant::now());
                    break ctx.send(producer, event, &at, Some(wait)).await;
                }
                other => break other,
            }
        };
        match sent {
            Ok(d) => deliveries.push((d, event.len())),
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    stored += ctx.settle_all(deliveries).await;
    if refused.is_none() && stored == events.len() {
        return (StatusCode::OK, Json(json!({ "accepted": stored }))).into_response();
    }
    let reason = match &refused {
        Some(SendError::Busy { .. }) => "busy",
        _ => "kafka_unavailable",
    };
    m.rejected(reason);
    let why = match refused {
        Some(e) => e.to_string(),
        None => "kafka did not acknowledge every event in time".into(),
    };
    service_unavailable(&app, why, stored, events.len())
}

/// 503 with `Retry-After`: nothing (or not everything) was stored.
fn service_unavailable(app: &HttpState, why: String, stored: usize, events: usize) -> Response {
    let mut response = (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({
            "error": format!("not stored: {why}; send the request again later"),
            "stored": stored,
            "events": events,
        })),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&app.shared.retry_after_seconds.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}

/// Whether reading the body failed because it is over the limit.
fn is_length_limit(e: &axum::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cause = c.source();
    }
    false
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Compares the bearer token in constant time. The scheme is
/// case-insensitive (RFC 9110: `bearer x` is `Bearer x`).
fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, given)| given)
    else {
        return false;
    };
    let (a, b) = (given.trim().as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

type DecodeError = (StatusCode, &'static str, String);

/// What a decoded body holds of the decompression budget.
type Held = Option<tokio::sync::OwnedSemaphorePermit>;

/// Budget permits are KiB: a semaphore holds at most `u32::MAX` of them.
pub fn budget_permits(bytes: usize) -> usize {
    bytes.div_ceil(1024).max(1)
}

/// Bytes inflated at a time, each taken from the budget first.
const INFLATE_CHUNK: usize = 64 << 10;

/// Decompresses the body, refusing more than `limit` bytes of output, and
/// taking the budget as it inflates: when the budget is spent (other
/// requests are decompressing), 503 at once rather than waiting while
/// holding a part of it.
fn decode(
    encoding: &str,
    raw: Bytes,
    limit: usize,
    budget: &Arc<tokio::sync::Semaphore>,
) -> Result<(Bytes, Held), DecodeError> {
    let read_limited = |reader: &mut dyn Read| -> Result<(Bytes, Held), DecodeError> {
        // Chunks of their own, joined at the end: a growing buffer is
        // copied as it grows, holding twice what the budget counts.
        let mut chunks: Vec<Vec<u8>> = Vec::new();
        let mut total = 0;
        let mut held: Held = None;
        loop {
            let taken = Arc::clone(budget)
                .try_acquire_many_owned(budget_permits(INFLATE_CHUNK) as u32)
                .map_err(|_| {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "busy",
                        "too much is being decompressed at once".to_string(),
                    )
                })?;
            match &mut held {
                Some(h) => h.merge(taken),
                None => held = Some(taken),
            }
            let mut chunk = vec![0u8; INFLATE_CHUNK];
            let n = read_full(reader, &mut chunk).map_err(|e| {
                (
                    StatusCode::BAD_REQUEST,
                    "bad_encoding",
                    format!("cannot decode {encoding} body: {e}"),
                )
            })?;
            chunk.truncate(n);
            total += n;
            if total > limit {
                return Err((
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!("body decompresses to more than {limit} bytes"),
                ));
            }
            chunks.push(chunk);
            if n < INFLATE_CHUNK {
                return Ok((Bytes::from(chunks.concat()), held));
            }
        }
    };
    match encoding {
        "" | "identity" => Ok((raw, None)),
        "gzip" | "x-gzip" => read_limited(&mut flate2::read::MultiGzDecoder::new(&raw[..])),
        "zstd" => {
            let mut decoder = zstd::stream::read::Decoder::new(&raw[..]).map_err(|e| {
                (
                    StatusCode::BAD_REQUEST,
                    "bad_encoding",
                    format!("cannot decode zstd body: {e}"),
                )
            })?;
            read_limited(&mut decoder)
        }
        other => Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
            format!("Content-Encoding `{other}` is not supported (gzip, zstd, identity)"),
        )),
    }
}

/// Reads until `buf` is full or the input ends; how much it read.
fn read_full(reader: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_authorization(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, value.parse().unwrap());
        headers
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_the_token_exact() {
        for ok in ["Bearer s3cret", "bearer s3cret", "BEARER  s3cret "] {
            assert!(bearer_matches(&with_authorization(ok), "s3cret"), "{ok}");
        }
        for refused in ["Bearer s3cre", "Basic s3cret", "Bearers3cret", "s3cret"] {
            assert!(
                !bearer_matches(&with_authorization(refused), "s3cret"),
                "{refused}"
            );
        }
        assert!(!bearer_matches(&HeaderMap::new(), "s3cret"));
    }
}
