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

use firstmile_config::Config;
use firstmile_metrics::Component;
use firstmile_sink::{
    observe_committed, source_of, Backoff, DeadLetter, EventDecoder, SinkConsumer, SinkTopics,
};
use rdkafka::message::OwnedMessage;

pub use firstmile_sink::SinkError;
pub use rows::{Row, RowError, COLUMNS};
pub use writer::{WriteError, Writer, CONTINUOUS_AGGREGATES};

/// How far back TimescaleDB's refresh policies look (migrations 0002, 0005);
/// rows older than this are refreshed by the sink itself.
const POLICY_WINDOW: jiff::SignedDuration = jiff::SignedDuration::from_hours(3 * 24);

/// A row and where it came from: the record (for a dead letter) and its source.
type Pending<'a> = (Row, &'a OwnedMessage, String);

/// Runs the sink until `stop` is set (checked between batches).
pub async fn run(config: &Config, metrics: &Component, stop: &AtomicBool) -> Result<(), SinkError> {
    let default_input = config.stages.enrich.output.as_deref().unwrap_or("events");
    let topics = SinkTopics::new("timescale", &config.sinks.timescale, default_input);
    let consumer = SinkConsumer::new(&config.kafka, topics, metrics)?;
    let mut decoder = EventDecoder::new(&config.schema_registry)?;
    let mut writer: Option<Writer> = None;
    let mut rollups = Rollups::default();

    while !stop.load(Ordering::SeqCst) {
        let batch = consumer.poll_batch().await;
        if batch.is_empty() || !decoder.prepare(&batch, stop).await {
            continue;
        }
        let mut dead: Vec<DeadLetter> = Vec::new();
        // Last one wins: a batch can hold an event twice (at-least-once
        // upstream, a replay); one upsert cannot touch a row twice.
        let mut rows: HashMap<(uuid::Uuid, jiff::Timestamp), Pending> = HashMap::new();
        for record in &batch {
            let row = decoder.decode(record).and_then(|event| {
                Row::from_event(&event)
                    .map(|row| (row, event.origin.source))
                    .map_err(|e| ("invalid_row", e.to_string()))
            });
            match row {
                Ok((row, source)) => {
                    rows.insert((row.event_id, row.received_at), (row, record, source));
                }
                Err((kind, message)) => dead.push((record, kind, message)),
            }
        }
        let rows: Vec<Pending> = rows.into_values().collect();
        let writing = std::time::Instant::now();
        let Some(rejected) = write_with_retry(config, &mut writer, &rows, stop, metrics).await
        else {
            break; // stopped while the database was away: nothing committed
        };
        let write_seconds = writing.elapsed().as_secs_f64();
        let rejected_ids: std::collections::HashSet<uuid::Uuid> =
            rejected.iter().map(|(row, _, _)| row.event_id).collect();
        for (_, record, message) in rejected {
            dead.push((record, "rejected_by_database", message));
        }
        if !dead.is_empty() {
            consumer.dead_letter(&dead).await?;
        }
        rollups.touched(&rows);
        rollups.refresh_if_due(&mut writer, false).await;
        consumer.commit(&batch);
        report(metrics, &batch, &rows, &dead);
        let written: Vec<jiff::Timestamp> = rows
            .iter()
            .filter(|(row, _, _)| !rejected_ids.contains(&row.event_id))
            .map(|(row, _, _)| row.received_at)
            .collect();
        observe_committed(metrics, write_seconds, &written);
    }
    rollups.refresh_if_due(&mut writer, true).await;
    tracing::info!("timescale sink stopped");
    Ok(())
}

fn report(metrics: &Component, batch: &[OwnedMessage], rows: &[Pending], dead: &[DeadLetter]) {
    let mut received: BTreeMap<&str, u64> = BTreeMap::new();
    for record in batch {
        *received.entry(source_of(record)).or_default() += 1;
    }
    for (source, n) in received {
        metrics.received(source, n, 0);
    }
    let mut written: BTreeMap<&str, u64> = BTreeMap::new();
    for (_, _, source) in rows {
        *written.entry(source).or_default() += 1;
    }
    for (record, kind, _) in dead {
        let source = source_of(record);
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

/// Writes the rows, retrying while the database is unavailable. Returns the
/// rows the database refused for their content, with its reason; `None` if
/// the sink was stopped before the rows were written.
async fn write_with_retry<'a>(
    config: &Config,
    writer: &mut Option<Writer>,
    rows: &'a [Pending<'a>],
    stop: &AtomicBool,
    metrics: &Component,
) -> Option<Vec<(&'a Row, &'a OwnedMessage, String)>> {
    let all: Vec<&Row> = rows.iter().map(|(r, _, _)| r).collect();
    let mut backoff = Backoff::default();
    loop {
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
        let failure = match result {
            Ok(rejected) => return Some(rejected),
            Err(WriteError::Rejected(why)) => {
                tracing::warn!(error = %why, rows = rows.len(), "the database refused a row; writing the batch row by row");
                let w = writer.as_mut()?;
                match write_one_by_one(w, rows).await {
                    Ok(rejected) => return Some(rejected),
                    Err(e) => e,
                }
            }
            Err(e) => {
                *writer = None;
                e
            }
        };
        metrics.error("database_unavailable");
        tracing::warn!(error = %failure, retry_in = ?backoff.current(), "database unavailable; the batch waits");
        if !backoff.wait(stop).await {
            return None;
        }
    }
}

async fn write_one_by_one<'a>(
    writer: &mut Writer,
    rows: &'a [Pending<'a>],
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

/// The received_at range of rows written since the rollups were last
/// refreshed. Refreshing recomputes whole buckets, which costs a scan of
/// every row in them: done after each batch it cost more than the writes
/// (3,000 rows/s at 1M rows in the benchmark), so it is done at most every
/// `REFRESH_EVERY` for everything touched meanwhile, and when the sink stops.
#[derive(Default)]
struct Rollups {
    dirty: Option<(jiff::Timestamp, jiff::Timestamp)>,
    refreshed: Option<std::time::Instant>,
}

const REFRESH_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

impl Rollups {
    fn touched(&mut self, rows: &[Pending<'_>]) {
        for (row, _, _) in rows {
            let t = row.received_at;
            self.dirty = Some(match self.dirty {
                None => (t, t),
                Some((from, to)) => (from.min(t), to.max(t)),
            });
        }
    }

    async fn refresh_if_due(&mut self, writer: &mut Option<Writer>, now: bool) {
        let due = now
            || self
                .refreshed
                .is_none_or(|at| at.elapsed() >= REFRESH_EVERY);
        let (Some((from, to)), true, Some(w)) = (self.dirty, due, writer.as_mut()) else {
            return;
        };
        // The rows are durable; a refresh that fails stays due and is tried
        // again with the next batch.
        match w.refresh(from, to, POLICY_WINDOW).await {
            Ok(()) => {
                self.dirty = None;
                self.refreshed = Some(std::time::Instant::now());
            }
            Err(e) => tracing::warn!(error = %e, "rollup refresh failed; tried again later"),
        }
    }
}

/// Whether the database answers, for `/health/ready`.
pub async fn check_target(db: &firstmile_config::Database) -> Result<(), String> {
    let client = firstmile_db::connect(db)
        .await
        .map_err(|e| format!("database: {e}"))?;
    client
        .simple_query("SELECT 1")
        .await
        .map(|_| ())
        .map_err(|e| format!("database: {e}"))
}
