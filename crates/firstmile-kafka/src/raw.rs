//! Writing raw records: the event's bytes exactly as received, a key that keeps
//! one host's events in order, and headers with the context later stages need.
//!
//! Every send first takes the event's size from a byte budget shared by all
//! receivers of the process and gives it back when Kafka has answered, so memory
//! stays bounded however slow the broker is: callers wait (or are refused) for
//! budget instead of queueing without limit.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::client::{client_config, ClientKind};

/// Header names on every raw record firstmile writes.
pub mod headers {
    pub const SOURCE: &str = "firstmile.source";
    /// RFC 3339 UTC with microseconds; also the record's timestamp (milliseconds).
    pub const RECEIVED_AT: &str = "firstmile.received_at";
    pub const REMOTE_ADDR: &str = "firstmile.remote_addr";
    /// `http`, `syslog-udp`, `syslog-tcp` or `file`.
    pub const RECEIVER: &str = "firstmile.receiver";
    pub const CONTENT_TYPE: &str = "firstmile.content_type";
}

/// One event on its way to its raw topic.
#[derive(Debug, Clone, Copy)]
pub struct RawRecord<'a> {
    pub topic: &'a str,
    pub key: &'a [u8],
    pub value: &'a [u8],
    pub source: &'a str,
    /// Milliseconds since the epoch, and the same instant as RFC 3339 text.
    pub received_at_ms: i64,
    pub received_at: &'a str,
    pub remote_addr: Option<&'a str>,
    pub receiver: &'a str,
    pub content_type: Option<&'a str>,
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No budget within the wait: the broker is not keeping up or is down.
    #[error("busy: {in_flight} bytes already wait for Kafka")]
    Busy { in_flight: u64 },
    #[error("event of {size} bytes is larger than the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("kafka: {0}")]
    Kafka(KafkaError),
}

#[derive(Debug, thiserror::Error)]
#[error("kafka did not store the event: {0}")]
pub struct DeliveryError(pub KafkaError);

/// Settings of a [`RawProducer`].
#[derive(Debug, Clone)]
pub struct RawProducerOptions {
    /// How long librdkafka retries a record before reporting it failed;
    /// `None` retries as long as the process lives (syslog, which has no way
    /// to tell the sender).
    pub delivery_timeout: Option<Duration>,
    pub max_in_flight_bytes: u64,
    pub max_event_bytes: usize,
}

/// An idempotent, `acks=all` producer for raw topics with a byte budget.
#[derive(Clone)]
pub struct RawProducer {
    producer: FutureProducer,
    budget: Arc<Semaphore>,
    budget_bytes: u64,
    max_event_bytes: usize,
}

/// Budget permits are counted in KiB: a semaphore holds at most `u32::MAX`
/// permits, and a KiB is fine enough for memory accounting.
fn permits(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(1024).max(1)).unwrap_or(u32::MAX)
}

impl RawProducer {
    pub fn new(
        kafka: &firstmile_config::Kafka,
        options: &RawProducerOptions,
    ) -> Result<Self, KafkaError> {
        let timeout_ms = options
            .delivery_timeout
            .map_or(0, |t| t.as_millis().max(1) as u64);
        let producer: FutureProducer = client_config(kafka, ClientKind::Producer)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", timeout_ms.to_string())
            // Room for the largest event plus its headers and batch framing.
            .set(
                "message.max.bytes",
                (options.max_event_bytes + (64 << 10)).to_string(),
            )
            .create()?;
        let budget_permits = permits(options.max_in_flight_bytes as usize);
        Ok(RawProducer {
            producer,
            budget: Arc::new(Semaphore::new(budget_permits as usize)),
            budget_bytes: options.max_in_flight_bytes,
            max_event_bytes: options.max_event_bytes,
        })
    }

    /// Bytes taken from the budget right now.
    pub fn in_flight_bytes(&self) -> u64 {
        let free = self.budget.available_permits() as u64 * 1024;
        self.budget_bytes.saturating_sub(free)
    }

    /// Enqueues the record once its size fits the budget, waiting at most
    /// `wait` for it (`None`: as long as it takes; `Some(ZERO)`: not at all).
    /// The returned [`Delivery`] resolves when Kafka has answered.
    pub async fn send(
        &self,
        record: RawRecord<'_>,
        wait: Option<Duration>,
    ) -> Result<Delivery, SendError> {
        if record.value.len() > self.max_event_bytes {
            return Err(SendError::TooLarge {
                size: record.value.len(),
                limit: self.max_event_bytes,
            });
        }
        let n = permits(record.value.len() + record.key.len());
        let acquire = Arc::clone(&self.budget).acquire_many_owned(n);
        let permit = match wait {
            None => acquire.await.ok(),
            Some(w) if w.is_zero() => Arc::clone(&self.budget).try_acquire_many_owned(n).ok(),
            Some(w) => tokio::time::timeout(w, acquire)
                .await
                .ok()
                .and_then(Result::ok),
        };
        let Some(permit) = permit else {
            return Err(SendError::Busy {
                in_flight: self.in_flight_bytes(),
            });
        };
        let started = Instant::now();
        let mut heads = OwnedHeaders::new_with_capacity(5)
            .insert(Header {
                key: headers::SOURCE,
                value: Some(record.source),
            })
            .insert(Header {
                key: headers::RECEIVED_AT,
                value: Some(record.received_at),
            })
            .insert(Header {
                key: headers::RECEIVER,
                value: Some(record.receiver),
            });
        if let Some(addr) = record.remote_addr {
            heads = heads.insert(Header {
                key: headers::REMOTE_ADDR,
                value: Some(addr),
            });
        }
        if let Some(ct) = record.content_type {
            heads = heads.insert(Header {
                key: headers::CONTENT_TYPE,
                value: Some(ct),
            });
        }
        let mut future_record = FutureRecord::to(record.topic)
            .key(record.key)
            .payload(record.value)
            .timestamp(record.received_at_ms)
            .headers(heads);
        // librdkafka's own queue is larger than our budget, but its message
        // count limit can still be hit by many small events: wait it out.
        let inner = loop {
            match self.producer.send_result(future_record) {
                Ok(f) => break f,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    future_record = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => return Err(SendError::Kafka(e)),
            }
        };
        Ok(Delivery {
            inner,
            _permit: permit,
            started,
        })
    }

    /// Whether the brokers answer a metadata request within `timeout`.
    pub async fn check_connected(&self, timeout: Duration) -> Result<(), KafkaError> {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || {
            producer.client().fetch_metadata(None, timeout).map(|_| ())
        })
        .await
        .unwrap_or(Err(KafkaError::Canceled))
    }

    /// Waits until everything enqueued has been answered, at most `timeout`.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(Timeout::After(timeout))
    }
}

/// Kafka's answer for one record. Holds the record's budget until then.
pub struct Delivery {
    inner: DeliveryFuture,
    _permit: OwnedSemaphorePermit,
    started: Instant,
}

/// What a successful delivery reports.
#[derive(Debug, Clone, Copy)]
pub struct Delivered {
    pub partition: i32,
    pub offset: i64,
    pub latency: Duration,
}

impl Future for Delivery {
    type Output = Result<Delivered, DeliveryError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let started = self.started;
        Pin::new(&mut self.inner)
            .poll(cx)
            .map(|outcome| match outcome {
                Ok(Ok(d)) => Ok(Delivered {
                    partition: d.partition,
                    offset: d.offset,
                    latency: started.elapsed(),
                }),
                Ok(Err((e, _))) => Err(DeliveryError(e)),
                // The producer was dropped before answering.
                Err(_) => Err(DeliveryError(KafkaError::Canceled)),
            })
    }
}
