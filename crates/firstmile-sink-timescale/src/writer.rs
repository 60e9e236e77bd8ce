//! Writing a batch of rows in one transaction: a binary COPY straight into
//! `events`; if some row is there already (a replay, a redelivery), the COPY
//! is rolled back to its savepoint and the batch goes through a
//! transaction-scoped staging table and one set-based upsert keyed by
//! `(event_id, received_at)` instead: replayed or redelivered events replace
//! their row. The upsert writes every row twice, which halved the sink's
//! rate against `psql \copy` (BENCHMARKS.md), so it is kept for when it is
//! needed: after a conflict, for [`UPSERT_SPELL`].

use std::pin::pin;
use std::time::{Duration, Instant};

use firstmile_config::Database;
use firstmile_db::Flavour;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Transaction};

use crate::rows::{Row, COLUMNS};

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The database cannot be reached or is not taking writes: retry later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database refused the data itself (a value, a constraint): some row
    /// of the batch is bad; written one by one, the bad ones are found.
    #[error("database refused the data: {0}")]
    Rejected(String),
}

impl From<tokio_postgres::Error> for WriteError {
    fn from(e: tokio_postgres::Error) -> WriteError {
        let message = match e.as_db_error() {
            Some(db) => format!("{} ({})", db.message(), db.code().code()),
            None => e.to_string(),
        };
        match e.code() {
            // Class 22 (data exception), 23 (integrity constraint) and
            // 54000 (a value too large for an index entry): the content.
            // Everything else (connection, shutdown, resources,
            // serialization, permissions) is not the rows' fault.
            Some(code) if is_content(code) => WriteError::Rejected(message),
            _ => WriteError::Unavailable(message),
        }
    }
}

fn is_content(code: &SqlState) -> bool {
    let c = code.code();
    c.starts_with("22") || c.starts_with("23") || c == "54000"
}

/// The continuous aggregates over `events` (migrations 0002 and 0005).
pub const CONTINUOUS_AGGREGATES: [&str; 4] = [
    "events_per_minute",
    "bytes_per_source_hour",
    "failed_logins_per_minute",
    "http_status_per_minute",
];

/// After a batch met rows already written, later batches go straight to
/// the upsert for this long: a replay or a redelivery comes in runs.
pub const UPSERT_SPELL: Duration = Duration::from_secs(60);

/// One connection to the database and what is known about it.
pub struct Writer {
    client: Client,
    schema: String,
    table: String,
    flavour: Flavour,
    upsert: String,
    copy: String,
    copy_new: String,
    staging: String,
    upsert_until: Option<Instant>,
}

impl Writer {
    pub async fn connect(db: &Database) -> Result<Writer, WriteError> {
        let client = firstmile_db::connect(db)
            .await
            .map_err(|e| WriteError::Unavailable(e.to_string()))?;
        // A sink may start before `firstmile migrate` has run (compose
        // starts both at once): that is waited out like an outage.
        let flavour = firstmile_db::migrate::migrated_flavour(&client, &db.schema)
            .await
            .map_err(|e| WriteError::Unavailable(e.to_string()))?
            .ok_or_else(|| {
                WriteError::Unavailable(format!(
                    "schema `{}` is not migrated yet (firstmile migrate)",
                    db.schema
                ))
            })?;
        // A plain identifier: `migrated_flavour` checked it.
        let schema = db.schema.clone();
        let table = format!("{schema}.events");
        let names: Vec<&str> = COLUMNS.iter().map(|(n, _)| *n).collect();
        let list = names.join(", ");
        let updates: Vec<String> = names
            .iter()
            .filter(|n| !matches!(**n, "event_id" | "received_at"))
            .map(|n| format!("{n} = EXCLUDED.{n}"))
            .collect();
        let staging = "firstmile_sink_staging".to_string();
        Ok(Writer {
            upsert: format!(
                "INSERT INTO {table} ({list}) SELECT {list} FROM {staging} \
                 ON CONFLICT (event_id, received_at) DO UPDATE SET {}",
                updates.join(", ")
            ),
            copy: format!("COPY {staging} ({list}) FROM STDIN (FORMAT binary)"),
            copy_new: format!("COPY {table} ({list}) FROM STDIN (FORMAT binary)"),
            upsert_until: None,
            client,
            schema,
            table,
            flavour,
            staging,
        })
    }

    pub fn flavour(&self) -> Flavour {
        self.flavour
    }

    /// True once the connection has failed: make a new writer.
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Writes the rows in one transaction; returns how many rows were
    /// inserted or replaced.
    pub async fn write(&mut self, rows: &[&Row]) -> Result<u64, WriteError> {
        let mut tx = self.client.transaction().await?;
        if self
            .upsert_until
            .is_none_or(|until| Instant::now() >= until)
        {
            let new_rows = tx.savepoint("firstmile_new_rows").await?;
            match copy_rows(&new_rows, &self.copy_new, rows).await {
                Ok(written) => {
                    new_rows.commit().await?;
                    tx.commit().await?;
                    self.upsert_until = None;
                    return Ok(written);
                }
                Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                    new_rows.rollback().await?;
                    self.upsert_until = Some(Instant::now() + UPSERT_SPELL);
                }
                Err(e) => return Err(e.into()),
            }
        }
        // Dropped at commit: nothing is left behind in a session another
        // client may share (poolers, the PGlite server).
        tx.batch_execute(&format!(
            "CREATE TEMP TABLE {} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DROP",
            self.staging, self.table
        ))
        .await?;
        copy_rows(&tx, &self.copy, rows).await?;
        let touched = tx.execute(&self.upsert, &[]).await?;
        tx.commit().await?;
        Ok(touched)
    }

    /// Whether the next batch goes straight to the upsert.
    pub fn upserting(&self) -> bool {
        self.upsert_until
            .is_some_and(|until| Instant::now() < until)
    }

    /// Brings the rollups up to date for `[from, to)` (received_at): on
    /// PostgreSQL the sink maintains them; on TimescaleDB the continuous
    /// aggregates' policies do, except for rows older than their refresh
    /// window (a replay of old data), which are refreshed here.
    pub async fn refresh(
        &mut self,
        from: jiff::Timestamp,
        to: jiff::Timestamp,
        window: jiff::SignedDuration,
    ) -> Result<(), WriteError> {
        match self.flavour {
            Flavour::Postgres => {
                // The function's body names its tables unqualified.
                let tx = self.client.transaction().await?;
                tx.batch_execute(&format!("SET LOCAL search_path = {}", self.schema))
                    .await?;
                tx.execute("SELECT firstmile_refresh_rollups($1, $2)", &[&from, &to])
                    .await?;
                tx.commit().await?;
            }
            Flavour::TimescaleDb => {
                if from >= jiff::Timestamp::now() - window {
                    return Ok(());
                }
                // Buckets are whole minutes or hours: cover the first and the
                // last hour whole.
                let from = jiff::Timestamp::from_second(
                    from.as_second() - from.as_second().rem_euclid(3600),
                )
                .unwrap_or(from);
                let to = to + jiff::SignedDuration::from_secs(3600);
                // CALL must run outside a transaction; the bounds are our
                // own timestamps, printed in RFC 3339.
                for aggregate in CONTINUOUS_AGGREGATES {
                    self.client
                        .batch_execute(&format!(
                            "CALL refresh_continuous_aggregate('{}.{aggregate}', '{from}', '{to}')",
                            self.schema
                        ))
                        .await?;
                }
            }
        }
        Ok(())
    }
}

/// Binary COPY of the rows with `copy` (`COPY … FROM STDIN (FORMAT binary)`).
async fn copy_rows(
    tx: &Transaction<'_>,
    copy: &str,
    rows: &[&Row],
) -> Result<u64, tokio_postgres::Error> {
    let sink = tx.copy_in(copy).await?;
    let types: Vec<_> = COLUMNS.iter().map(|(_, t)| t.clone()).collect();
    let mut writer = pin!(BinaryCopyInWriter::new(sink, &types));
    for row in rows {
        writer.as_mut().write(&row.values()).await?;
    }
    writer.finish().await
}
