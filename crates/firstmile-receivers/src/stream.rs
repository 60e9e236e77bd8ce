//! What every receiver shares: the routes to raw topics, the producers, and
//! turning one stream's bytes into raw records.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use firstmile_config::Config;
use firstmile_kafka::raw::{Delivery, RawProducer, RawProducerOptions, RawRecord, SendError};
use firstmile_metrics::Component;

use crate::framing::Frame;
use crate::multiline::Multiline;
use crate::ReceiverError;

/// Where a source's events go, and how they are cut.
#[derive(Debug, Clone)]
pub struct Route {
    pub source: String,
    pub topic: String,
    pub token: Option<String>,
    pub multiline: Option<firstmile_config::Multiline>,
}

/// State shared by all receivers of a process.
pub struct Shared {
    pub routes: BTreeMap<String, Route>,
    /// For senders that wait for the answer (HTTP, produce): gives up after
    /// `ingest.delivery_timeout_ms` so the sender can be told.
    pub acked: RawProducer,
    /// For syslog, which cannot tell its senders: retries as long as it lives.
    pub unacked: RawProducer,
    pub max_event_bytes: usize,
    pub delivery_timeout: Duration,
    pub retry_after_seconds: u32,
}

impl Shared {
    pub fn new(config: &Config) -> Result<Arc<Shared>, ReceiverError> {
        let routes = config
            .sources
            .iter()
            .map(|(name, s)| {
                let route = Route {
                    source: name.clone(),
                    topic: config
                        .raw_topic(name)
                        .unwrap_or_else(|| format!("raw.{name}")),
                    token: s.token.clone(),
                    multiline: s.multiline.clone(),
                };
                (name.clone(), route)
            })
            .collect();
        let ingest = &config.ingest;
        let delivery_timeout = Duration::from_millis(ingest.delivery_timeout_ms);
        let options = |timeout| RawProducerOptions {
            delivery_timeout: timeout,
            max_in_flight_bytes: ingest.max_in_flight_bytes,
            max_event_bytes: ingest.max_event_bytes,
        };
        Ok(Arc::new(Shared {
            routes,
            acked: RawProducer::new(&config.kafka, &options(Some(delivery_timeout)))?,
            unacked: RawProducer::new(&config.kafka, &options(None))?,
            max_event_bytes: ingest.max_event_bytes,
            delivery_timeout,
            retry_after_seconds: ingest.retry_after_seconds,
        }))
    }
}

/// The context of one stream: an HTTP request, a TCP connection, a UDP
/// sender, a file. Events of one stream share a key, so they stay in order.
pub struct StreamContext {
    pub route: Route,
    pub key: Vec<u8>,
    pub receiver: &'static str,
    pub remote_addr: Option<String>,
    pub content_type: Option<String>,
    pub metrics: Component,
}

/// `source/host`: one host's events of a source land in one partition, in order.
pub fn stream_key(source: &str, host: &str) -> Vec<u8> {
    format!("{source}/{host}").into_bytes()
}

/// A moment as the record timestamp (ms) and the `received_at` header.
pub struct ReceivedAt {
    pub ms: i64,
    pub text: String,
}

pub fn received_now() -> ReceivedAt {
    let now = SystemTime::now();
    let ms = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    ReceivedAt {
        ms,
        text: humantime::format_rfc3339_micros(now).to_string(),
    }
}

impl StreamContext {
    /// Enqueues one event (metrics are recorded when it is settled).
    pub async fn send(
        &self,
        producer: &RawProducer,
        event: &[u8],
        at: &ReceivedAt,
        wait: Option<Duration>,
    ) -> Result<Delivery, SendError> {
        let record = RawRecord {
            topic: &self.route.topic,
            key: &self.key,
            value: event,
            source: &self.route.source,
            received_at_ms: at.ms,
            received_at: &at.text,
            remote_addr: self.remote_addr.as_deref(),
            receiver: self.receiver,
            content_type: self.content_type.as_deref(),
        };
        producer.send(record, wait).await
    }

    /// Awaits the deliveries of a request and records them in one go (label
    /// lookups per event cost more than the rest of the bookkeeping); returns
    /// how many Kafka stored.
    pub async fn settle_all(&self, deliveries: Vec<(Delivery, usize)>) -> usize {
        let in_flight: usize = deliveries.iter().map(|(_, len)| len).sum();
        self.metrics.add_in_flight_bytes(in_flight as i64);
        let latency = self.metrics.delivery_latency_histogram();
        let outcomes = futures::future::join_all(
            deliveries
                .into_iter()
                .map(|(d, len)| async move { (d.await, len) }),
        )
        .await;
        let (mut stored, mut bytes, mut first_error) = (0usize, 0usize, None);
        for (outcome, len) in outcomes {
            match outcome {
                Ok(d) => {
                    stored += 1;
                    bytes += len;
                    latency.observe(d.latency.as_secs_f64());
                }
                Err(e) => {
                    self.metrics.error("delivery_failed");
                    first_error.get_or_insert(e);
                }
            }
        }
        self.metrics.add_in_flight_bytes(-(in_flight as i64));
        self.metrics
            .sent(&self.route.source, stored as u64, bytes as u64);
        if let Some(e) = first_error {
            tracing::warn!(source = %self.route.source, error = %e, "events not stored");
        }
        stored
    }

    /// Awaits one delivery and records its outcome; true if Kafka stored it.
    pub async fn settle(&self, delivery: Delivery, len: usize) -> bool {
        self.metrics.add_in_flight_bytes(len as i64);
        let outcome = delivery.await;
        self.metrics.add_in_flight_bytes(-(len as i64));
        match outcome {
            Ok(d) => {
                self.metrics.sent(&self.route.source, 1, len as u64);
                self.metrics.delivery_latency(d.latency.as_secs_f64());
                true
            }
            Err(e) => {
                self.metrics.error("delivery_failed");
                tracing::warn!(source = %self.route.source, error = %e, "event not stored");
                false
            }
        }
    }
}

/// What the assembler makes of frames.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece {
    Event(Bytes),
    Empty,
    TooLarge(usize),
}

/// Frames → events, through the source's multiline rule if it has one.
pub struct Assembler {
    multiline: Option<Multiline>,
}

impl Assembler {
    pub fn new(route: &Route, max_event_bytes: usize) -> Self {
        let multiline = route
            .multiline
            .as_ref()
            .and_then(|m| Multiline::new(m, max_event_bytes).ok());
        Assembler { multiline }
    }

    pub fn feed(&mut self, frames: Vec<Frame>, now: Instant, out: &mut Vec<Piece>) {
        for frame in frames {
            match (frame, &mut self.multiline) {
                (Frame::Event { bytes, terminator }, Some(m)) => {
                    out.extend(m.push(&bytes, terminator, now).map(Piece::Event))
                }
                (Frame::Empty, Some(m)) => out.extend(m.push(b"", b"\n", now).map(Piece::Event)),
                (Frame::Event { bytes, .. }, None) => out.push(Piece::Event(bytes)),
                (Frame::Empty, None) => out.push(Piece::Empty),
                (Frame::TooLarge { len }, _) => out.push(Piece::TooLarge(len)),
            }
        }
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.multiline.as_ref().and_then(Multiline::deadline)
    }

    pub fn flush_stale(&mut self, now: Instant) -> Option<Piece> {
        self.multiline.as_mut()?.flush_stale(now).map(Piece::Event)
    }

    pub fn finish(&mut self) -> Option<Piece> {
        self.multiline.as_mut()?.finish().map(Piece::Event)
    }
}
