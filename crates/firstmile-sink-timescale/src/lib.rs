//! The TimescaleDB/PostgreSQL sink: events into the `events` table (binary
//! COPY, or a staging table and one upsert keyed by `event_id` where rows
//! exist), run by the sink framework's driver (`firstmile_sink::run`), which
//! commits the batch's offsets only after the database committed. A crash
//! between the two writes the batch again, which the upsert makes harmless:
//! the table holds each event once, with its latest values.
//!
//! What this crate decides: an event's row (`rows`), how a batch is written
//! (`writer`), which database errors are the content's (SQLSTATE classes 22
//! and 23: the batch is written row by row and the refused rows are
//! rejected) and which the database's (everything else: unavailable, the
//! batch waits), and when rollups are refreshed.

mod rows;
mod writer;

use std::collections::HashSet;

use firstmile_config::{Database, SinkName};
use firstmile_event::{DeadLetterKind, Event};
use firstmile_sink::{Freshness, ItemOutcome, Profile, Sink, Unavailable};
use uuid::Uuid;

pub use firstmile_sink::SinkError;
pub use rows::{Row, RowError, COLUMNS};
pub use writer::{WriteError, Writer, CONTINUOUS_AGGREGATES};

/// How far back TimescaleDB's refresh policies look (migrations 0002, 0005);
/// rows older than this are refreshed by the sink itself.
const POLICY_WINDOW: jiff::SignedDuration = jiff::SignedDuration::from_hours(3 * 24);

/// The `events` table of `[database]`: written by the driver, read by
/// readiness, `status` and `audit`.
pub struct TimescaleSink {
    database: Database,
    /// Connected on the first write and again after an outage.
    writer: Option<Writer>,
    rollups: Rollups,
}

impl TimescaleSink {
    pub fn new(database: &Database) -> TimescaleSink {
        TimescaleSink {
            database: database.clone(),
            writer: None,
            rollups: Rollups::default(),
        }
    }

    async fn connected(&mut self) -> Result<&mut Writer, Unavailable> {
        if self.writer.as_ref().is_none_or(Writer::is_closed) {
            let w = Writer::connect(&self.database).await.map_err(unavailable)?;
            tracing::info!(flavour = %w.flavour().as_str(), "connected to the database");
            self.writer = Some(w);
        }
        self.writer
            .as_mut()
            .ok_or_else(|| Unavailable("not connected".into()))
    }

    async fn client(&self) -> Result<tokio_postgres::Client, String> {
        firstmile_db::connect(&self.database)
            .await
            .map_err(|e| format!("database: {e}"))
    }

    /// The events table, schema-qualified.
    fn table(&self) -> String {
        format!("\"{}\".events", self.database.schema.replace('"', "\"\""))
    }
}

fn unavailable(e: WriteError) -> Unavailable {
    Unavailable(e.to_string())
}

#[async_trait::async_trait]
impl Sink for TimescaleSink {
    fn profile(&self) -> &'static Profile {
        &Profile {
            name: SinkName::Timescale,
            unavailable_error: "database_unavailable",
            rejection_kinds: &[
                DeadLetterKind::InvalidRow,
                DeadLetterKind::RejectedByDatabase,
            ],
        }
    }

    async fn write(&mut self, events: &[&Event]) -> Result<Vec<ItemOutcome>, Unavailable> {
        let mut outcomes = Vec::with_capacity(events.len());
        let mut rows = Vec::with_capacity(events.len());
        let mut positions = Vec::with_capacity(events.len());
        for (i, event) in events.iter().enumerate() {
            match Row::from_event(event) {
                Ok(row) => {
                    rows.push(row);
                    positions.push(i);
                    outcomes.push(ItemOutcome::Written);
                }
                Err(e) => outcomes.push(ItemOutcome::Rejected {
                    kind: DeadLetterKind::InvalidRow,
                    message: e.to_string(),
                }),
            }
        }
        let all: Vec<&Row> = rows.iter().collect();
        let writer = self.connected().await?;
        match writer.write(&all).await {
            Ok(_) => {}
            Err(WriteError::Rejected(why)) => {
                // Some row's content: written one by one, the refused ones
                // are found and the rest written.
                tracing::warn!(error = %why, rows = all.len(), "the database refused a row; writing the batch row by row");
                for (row, &i) in all.iter().zip(&positions) {
                    match writer.write(&[row]).await {
                        Ok(_) => {}
                        Err(WriteError::Rejected(why)) => {
                            outcomes[i] = ItemOutcome::Rejected {
                                kind: DeadLetterKind::RejectedByDatabase,
                                message: why,
                            }
                        }
                        Err(e) => return Err(self.lost(e)),
                    }
                }
            }
            Err(e) => return Err(self.lost(e)),
        }
        Ok(outcomes)
    }

    async fn written(&mut self, events: &[&Event], stopping: bool) {
        self.rollups.touched(events);
        if let Some(w) = self.writer.as_mut() {
            self.rollups.refresh_if_due(w, stopping).await;
        }
    }

    async fn check(&self) -> Result<(), String> {
        self.client()
            .await?
            .simple_query("SELECT 1")
            .await
            .map(|_| ())
            .map_err(|e| format!("database: {e}"))
    }

    async fn freshness(&self, since: jiff::Timestamp) -> Result<Freshness, String> {
        let query = format!(
            "SELECT max(received_at), count(*) FILTER (WHERE received_at >= $1) FROM {}",
            self.table()
        );
        let row = self
            .client()
            .await?
            .query_one(&query, &[&since])
            .await
            .map_err(|e| format!("database: {e}"))?;
        let recent: i64 = row.get(1);
        Ok(Freshness {
            newest: row.get(0),
            recent: recent.max(0) as u64,
        })
    }

    async fn holds(&self, ids: &[Uuid]) -> Result<HashSet<Uuid>, String> {
        let client = self.client().await?;
        let query = format!(
            "SELECT event_id FROM {} WHERE event_id = ANY($1)",
            self.table()
        );
        let mut present = HashSet::new();
        for chunk in ids.chunks(10_000) {
            let rows = client
                .query(&query, &[&chunk])
                .await
                .map_err(|e| format!("database: {e}"))?;
            present.extend(rows.iter().map(|r| r.get::<_, Uuid>(0)));
        }
        Ok(present)
    }
}

impl TimescaleSink {
    /// The connection is not trusted after an outage: connected again on
    /// the next write.
    fn lost(&mut self, e: WriteError) -> Unavailable {
        self.writer = None;
        unavailable(e)
    }
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
    fn touched(&mut self, events: &[&Event]) {
        for event in events {
            let t = event.received_at;
            self.dirty = Some(match self.dirty {
                None => (t, t),
                Some((from, to)) => (from.min(t), to.max(t)),
            });
        }
    }

    async fn refresh_if_due(&mut self, writer: &mut Writer, now: bool) {
        let due = now
            || self
                .refreshed
                .is_none_or(|at| at.elapsed() >= REFRESH_EVERY);
        let (Some((from, to)), true) = (self.dirty, due) else {
            return;
        };
        // The rows are durable; a refresh that fails stays due and is tried
        // again with the next batch.
        match writer.refresh(from, to, POLICY_WINDOW).await {
            Ok(()) => {
                self.dirty = None;
                self.refreshed = Some(std::time::Instant::now());
            }
            Err(e) => tracing::warn!(error = %e, "rollup refresh failed; tried again later"),
        }
    }
}
