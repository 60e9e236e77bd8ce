//! Writing a batch of rows: binary COPY into a transaction-scoped staging
//! table, then one set-based upsert into `events` keyed by
//! `(event_id, received_at)`, in one transaction. Replayed or redelivered
//! events replace their row.

use std::pin::pin;

use firstmile_config::Database;
use firstmile_db::Flavour;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

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
            // Class 22 (data exception) and 23 (integrity constraint): the
            // content. Everything else (connection, shutdown, resources,
            // serialization, permissions) is not the rows' fault.
            Some(code) if is_content(code) => WriteError::Rejected(message),
            _ => WriteError::Unavailable(message),
        }
    }
}

fn is_content(code: &SqlState) -> bool {
    let c = code.code();
    c.starts_with("22") || c.starts_with("23")
}

/// The continuous aggregates over `events` (migrations 0002 and 0005).
pub const CONTINUOUS_AGGREGATES: [&str; 4] = [
    "events_per_minute",
    "bytes_per_source_hour",
    "failed_logins_per_minute",
    "http_status_per_minute",
];

/// One connection to the database and what is known about it.
pub struct Writer {
    client: Client,
    schema: String,
    table: String,
    flavour: Flavour,
    upsert: String,
    copy: String,
    staging: String,
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

    /// Writes the rows in one transaction; returns how many rows the upsert
    /// touched (inserted or replaced).
    pub async fn write(&mut self, rows: &[&Row]) -> Result<u64, WriteError> {
        let tx = self.client.transaction().await?;
        // Dropped at commit: nothing is left behind in a session another
        // client may share (poolers, the PGlite server).
        tx.batch_execute(&format!(
            "CREATE TEMP TABLE {} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DROP",
            self.staging, self.table
        ))
        .await?;
        let sink = tx.copy_in(&self.copy).await?;
        let types: Vec<_> = COLUMNS.iter().map(|(_, t)| t.clone()).collect();
        let mut writer = pin!(BinaryCopyInWriter::new(sink, &types));
        for row in rows {
            writer.as_mut().write(&row.values()).await?;
        }
        writer.finish().await?;
        let touched = tx.execute(&self.upsert, &[]).await?;
        tx.commit().await?;
        Ok(touched)
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
