//! The TimescaleDB/PostgreSQL sink: a consumer group on `events`
//! (`read_committed`) that writes batches into `events` (binary COPY into a
//! staging table, one upsert keyed by `event_id`) and commits the batch's
//! offsets only after the database committed. A crash between the two writes
//! the batch again, which the upsert makes harmless: the table holds each
//! event once, with its latest values.
//!
//! The database down or slow: the batch is retried with backoff (250 ms →
//! 30 s) and nothing more is read meanwhile (memory stays at one batch plus
//! librdkafka's bounded prefetch). A row the database refuses for its content
//! goes to `dlq` with the reason; the rest of its batch is written.

mod rows;
mod writer;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use firstmile_config::Config;
use firstmile_event::Event;
use firstmile_kafka::{client_config, dlq, ClientKind};
use firstmile_metrics::Component;
use firstmile_schema::{Decoder, Registry};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

pub use rows::{Row, RowError, COLUMNS};
pub use writer::{WriteError, Writer, CONTINUOUS_AGGREGATES};

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("{0}")]
    Setup(String),
}

/// How far back TimescaleDB's refresh policy looks (migration 0002); rows
/// older than this are refreshed by the sink itself.
const POLICY_WINDOW: jiff::SignedDuration = jiff::SignedDuration::from_hours(3 * 24);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The sink's settings with defaults filled in.
pub struct SinkTopics {
    pub input: String,
    pub group: String,
    pub instance_id: String,
    pub dlq: String,
    pub batch_records: usize,
    pub batch: Duration,
}

impl SinkTopics {
    pub fn from_config(config: &Config) -> SinkTopics {
        let s = &config.sinks.timescale;
        SinkTopics {
            input: s.input.clone().unwrap_or_else(|| {
                config
                    .stages
                    .enrich
                    .output
                    .clone()
                    .unwrap_or_else(|| "events".into())
            }),
            group: s
                .group
                .clone()
                .unwrap_or_else(|| "firstmile-sink-timescale".into()),
            instance_id: s
                .instance_id
                .clone()
                .unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned()),
            dlq: s.dlq.clone(),
            batch_records: s.batch_records.max(1),
            batch: Duration::from_millis(s.batch_ms.max(1)),
        }
    }
}

/// Runs the sink until `stop` is set (checked between batches).
pub async fn run(config: &Config, metrics: &Component, stop: &AtomicBool) -> Result<(), SinkError> {
    let topics = SinkTopics::from_config(config);
    let mut consumer_config = client_config(&config.kafka, ClientKind::Consumer);
    // Static membership, as the stages: a restarted sink takes its
    // partitions back without waiting out its old session.
    consumer_config
        .set("group.id", &topics.group)
        .set(
            "group.instance.id",
            format!("{}-{}", topics.group, topics.instance_id),
        )
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest");
    if consumer_config.get("session.timeout.ms").is_none() {
        consumer_config.set("session.timeout.ms", "10000");
    }
    let consumer: StreamConsumer = consumer_config.create()?;
    consumer.subscribe(&[topics.input.as_str()])?;
    let dlq_producer: FutureProducer = client_config(&config.kafka, ClientKind::Producer)
        .set("enable.idempotence", "true")
        .create()?;
    let registry =
        Registry::new(&config.schema_registry).map_err(|e| SinkError::Setup(e.to_string()))?;
    let mut decoder = Decoder::new(registry, firstmile_event::event_schema());
    let mut writer: Option<Writer> = None;
    tracing::info!(input = %topics.input, group = %topics.group, "timescale sink running");

    while !stop.load(Ordering::SeqCst) {
        let batch = poll_batch(&consumer, &topics).await;
        if batch.is_empty() {
            continue;
        }
        fetch_schemas(&mut decoder, &batch, stop).await;
        let mut dead: Vec<(&OwnedMessage, &'static str, String)> = Vec::new();
        // Last one wins: a batch can hold an event twice (at-least-once
        // upstream, a replay); one upsert cannot touch a row twice.
        let mut rows: HashMap<(uuid::Uuid, jiff::Timestamp), (Row, &OwnedMessage, String)> =
            HashMap::new();
        for record in &batch {
            match decode(&decoder, record) {
                Ok((row, source)) => {
                    rows.insert((row.event_id, row.received_at), (row, record, source));
                }
                Err((kind, message)) => dead.push((record, kind, message)),
            }
        }
        let rows: Vec<(Row, &OwnedMessage, String)> = rows.into_values().collect();
        let Some(rejected) = write_with_retry(config, &mut writer, &rows, stop, metrics).await
        else {
            break; // stopped while the database was away: nothing committed
        };
        for (_, record, message) in rejected {
            dead.push((record, "rejected_by_database", message));
        }
        if !dead.is_empty() {
            send_dead_letters(&dlq_producer, &topics.dlq, &dead).await?;
        }
        refresh_rollups(&mut writer, &rows).await;
        commit(&consumer, &batch);
        let mut received: BTreeMap<&str, u64> = BTreeMap::new();
        for record in &batch {
            *received.entry(source_header(record)).or_default() += 1;
        }
        for (source, n) in received {
            metrics.received(source, n, 0);
        }
        let mut written: BTreeMap<&str, u64> = BTreeMap::new();
        for (_, _, source) in &rows {
            *written.entry(source).or_default() += 1;
        }
        for (record, kind, _) in &dead {
            let source = source_header(record);
            metrics.discarded(source, &format!("dlq_{kind}"), 1);
            if *kind == "rejected_by_database" {
                if let Some(n) = written.get_mut(source) {
                    *n = n.saturating_sub(1);
                }
            }
        }
        for (source, n) in written {
            metrics.sent(source, n, 0);
        }
    }
    tracing::info!("timescale sink stopped");
    Ok(())
}

async fn poll_batch(consumer: &StreamConsumer, topics: &SinkTopics) -> Vec<OwnedMessage> {
    let mut batch = Vec::new();
    let started = Instant::now();
    while batch.len() < topics.batch_records {
        let left = topics.batch.saturating_sub(started.elapsed());
        if left.is_zero() {
            break;
        }
        match tokio::time::timeout(left, consumer.recv()).await {
            Ok(Ok(m)) => batch.push(m.detach()),
            Ok(Err(e)) => tracing::debug!(error = %e, "consumer"),
            Err(_) => break,
        }
    }
    batch
}

fn source_header(record: &OwnedMessage) -> &str {
    use rdkafka::message::Headers;
    record
        .headers()
        .and_then(|h| {
            h.iter()
                .find(|h| h.key == firstmile_kafka::raw::headers::SOURCE)
        })
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
        .unwrap_or("unknown")
}

/// Fetches the writer schemas the batch needs, waiting out a registry outage.
async fn fetch_schemas(decoder: &mut Decoder, batch: &[OwnedMessage], stop: &AtomicBool) {
    let mut wait = Duration::from_millis(250);
    for id in decoder.missing(batch.iter().map(|r| r.payload().unwrap_or_default())) {
        while let Err(e) = decoder.fetch(id).await {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            tracing::warn!(schema_id = id, error = %e, retry_in = ?wait, "schema registry unavailable");
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(MAX_BACKOFF);
        }
    }
}

fn decode(
    decoder: &Decoder,
    record: &OwnedMessage,
) -> Result<(Row, String), (&'static str, String)> {
    let value = decoder
        .decode(record.payload().unwrap_or_default())
        .map_err(|e| (e.kind, e.message))?;
    let event = Event::from_avro(&value).map_err(|e| ("invalid_event", e.to_string()))?;
    let row = Row::from_event(&event).map_err(|e| ("invalid_row", e.to_string()))?;
    Ok((row, event.origin.source))
}

/// Writes the rows, retrying while the database is unavailable. Returns the
/// rows the database refused for their content, with its reason; `None` if
/// the sink was stopped before the rows were written.
async fn write_with_retry<'a>(
    config: &Config,
    writer: &mut Option<Writer>,
    rows: &'a [(Row, &'a OwnedMessage, String)],
    stop: &AtomicBool,
    metrics: &Component,
) -> Option<Vec<(&'a Row, &'a OwnedMessage, String)>> {
    let all: Vec<&Row> = rows.iter().map(|(r, _, _)| r).collect();
    let mut wait = Duration::from_millis(250);
    loop {
        if stop.load(Ordering::SeqCst) {
            return None;
        }
        let result = match writer.as_mut().filter(|w| !w.is_closed()) {
            Some(w) => w.write(&all).await.map(|_| Vec::new()),
            None => match Writer::connect(&config.database).await {
                Ok(w) => {
                    tracing::info!(flavour = %w.flavour().as_str(), "connected to the database");
                    *writer = Some(w);
                    continue;
                }
                Err(e) => Err(e),
            },
        };
        match result {
            Ok(rejected) => return Some(rejected),
            Err(WriteError::Rejected(why)) => {
                tracing::warn!(error = %why, rows = rows.len(), "the database refused a row; writing the batch row by row");
                let w = writer.as_mut()?;
                match write_one_by_one(w, rows).await {
                    Ok(rejected) => return Some(rejected),
                    Err(e) => {
                        metrics.error("database_unavailable");
                        tracing::warn!(error = %e, retry_in = ?wait, "database unavailable");
                    }
                }
            }
            Err(WriteError::Unavailable(why)) => {
                metrics.error("database_unavailable");
                tracing::warn!(error = %why, retry_in = ?wait, "database unavailable; the batch waits");
                *writer = None;
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(MAX_BACKOFF);
    }
}

async fn write_one_by_one<'a>(
    writer: &mut Writer,
    rows: &'a [(Row, &'a OwnedMessage, String)],
) -> Result<Vec<(&'a Row, &'a OwnedMessage, String)>, WriteError> {
    let mut rejected = Vec::new();
    for (row, record, _) in rows {
        match writer.write(&[row]).await {
            Ok(_) => {}
            Err(WriteError::Rejected(why)) => rejected.push((row, *record, why)),
            Err(e) => return Err(e),
        }
    }
    Ok(rejected)
}

async fn send_dead_letters(
    producer: &FutureProducer,
    topic: &str,
    dead: &[(&OwnedMessage, &'static str, String)],
) -> Result<(), KafkaError> {
    let sends = dead.iter().map(|(record, kind, message)| {
        let headers = dlq::headers(record, "sink:timescale", kind, message);
        let mut out = FutureRecord::<[u8], [u8]>::to(topic)
            .payload(record.payload().unwrap_or_default())
            .headers(headers);
        if let Some(key) = record.key() {
            out = out.key(key);
        }
        // Waits while librdkafka retries (message.timeout.ms): a broker
        // outage delays the batch, it does not lose its dead letters.
        producer.send(out, rdkafka::util::Timeout::Never)
    });
    for result in futures::future::join_all(sends).await {
        result.map_err(|(e, _)| e)?;
    }
    Ok(())
}

async fn refresh_rollups(writer: &mut Option<Writer>, rows: &[(Row, &OwnedMessage, String)]) {
    let (Some(from), Some(to)) = (
        rows.iter().map(|(r, _, _)| r.received_at).min(),
        rows.iter().map(|(r, _, _)| r.received_at).max(),
    ) else {
        return;
    };
    if let Some(w) = writer.as_mut() {
        // The rows are durable; a rollup that failed to refresh is caught up
        // by the next batch over the same minutes or by the policy.
        if let Err(e) = w.refresh(from, to, POLICY_WINDOW).await {
            tracing::warn!(error = %e, "rollup refresh failed");
        }
    }
}

/// Commits the batch's offsets. A failure (a rebalance took the partitions)
/// means the new owner writes the batch again: harmless, rows are upserted.
fn commit(consumer: &StreamConsumer, batch: &[OwnedMessage]) {
    let mut next: BTreeMap<(&str, i32), i64> = BTreeMap::new();
    for r in batch {
        let e = next.entry((r.topic(), r.partition())).or_insert(0);
        *e = (*e).max(r.offset() + 1);
    }
    let mut offsets = TopicPartitionList::new();
    for ((topic, partition), offset) in next {
        if let Err(e) = offsets.add_partition_offset(topic, partition, Offset::Offset(offset)) {
            tracing::warn!(error = %e, "offset not committed");
        }
    }
    if let Err(e) = consumer.commit(&offsets, CommitMode::Sync) {
        tracing::warn!(error = %e, "committing offsets failed; the batch will be written again");
    }
}
