//! The migration runner.
//!
//! `migrations/NNNN_name.sql` runs on every database; a pair
//! `NNNN_name.timescaledb.sql` / `NNNN_name.postgres.sql` runs the file of the
//! database's flavour (after the common file of the same id, if there is one).
//! Applied migrations are recorded in `firstmile_migrations` with a checksum; a
//! migration whose file changed after it was applied is an error, not a re-run.
//! Each migration runs in its own transaction under an advisory lock, unless its
//! first line is `-- firstmile:no-transaction`.

use std::collections::BTreeMap;
use std::fmt;

use tokio_postgres::Client;

use crate::DbError;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/migrations.rs"));
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// TimescaleDB: hypertables, continuous aggregates, policies.
    TimescaleDb,
    /// Plain PostgreSQL: declarative partitioning, rollup tables.
    Postgres,
}

impl Flavour {
    pub fn as_str(self) -> &'static str {
        match self {
            Flavour::TimescaleDb => "timescaledb",
            Flavour::Postgres => "postgres",
        }
    }
}

impl fmt::Display for Flavour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Flavour {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "timescaledb" => Ok(Flavour::TimescaleDb),
            "postgres" => Ok(Flavour::Postgres),
            other => Err(format!(
                "unknown flavour `{other}` (timescaledb or postgres)"
            )),
        }
    }
}

/// One migration id with its files.
#[derive(Debug, Clone, Default)]
pub struct Migration {
    pub id: String,
    common: Option<&'static str>,
    timescaledb: Option<&'static str>,
    postgres: Option<&'static str>,
}

impl Migration {
    /// The SQL to run on a database of `flavour`: the common part, then the flavour's.
    pub fn sql(&self, flavour: Flavour) -> Vec<&'static str> {
        let specific = match flavour {
            Flavour::TimescaleDb => self.timescaledb,
            Flavour::Postgres => self.postgres,
        };
        self.common.into_iter().chain(specific).collect()
    }

    fn checksum(&self, flavour: Flavour) -> String {
        // FNV-1a 64: stable across Rust versions, unlike std's hasher.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for part in self.sql(flavour) {
            for byte in part.bytes() {
                hash ^= u64::from(byte);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
        }
        format!("{hash:016x}")
    }

    fn transactional(&self, flavour: Flavour) -> bool {
        !self.sql(flavour).iter().any(|s| {
            s.lines()
                .next()
                .is_some_and(|l| l.trim() == "-- firstmile:no-transaction")
        })
    }
}

/// The migrations built into this binary, in order.
pub fn embedded() -> Result<Vec<Migration>, DbError> {
    group(embedded::EMBEDDED)
}

/// Groups files by id and checks that flavour files come in pairs.
pub fn group(files: &[(&str, &'static str)]) -> Result<Vec<Migration>, DbError> {
    let mut by_id: BTreeMap<String, Migration> = BTreeMap::new();
    for (name, sql) in files {
        let stem = name
            .strip_suffix(".sql")
            .ok_or_else(|| DbError::Migration {
                id: name.to_string(),
                message: "a migration file must end in .sql".into(),
            })?;
        let (id, flavour) = match stem.split_once('.') {
            Some((id, f)) => (id, Some(f)),
            None => (stem, None),
        };
        let m = by_id.entry(id.to_string()).or_insert_with(|| Migration {
            id: id.to_string(),
            ..Migration::default()
        });
        let slot = match flavour {
            None => &mut m.common,
            Some("timescaledb") => &mut m.timescaledb,
            Some("postgres") => &mut m.postgres,
            Some(other) => {
                return Err(DbError::Migration {
                    id: id.to_string(),
                    message: format!("unknown flavour `{other}` in {name}"),
                })
            }
        };
        *slot = Some(sql);
    }
    for m in by_id.values() {
        if m.timescaledb.is_some() != m.postgres.is_some() {
            return Err(DbError::Migration {
                id: m.id.clone(),
                message: "has a file for one flavour only; add both \
                          <id>.timescaledb.sql and <id>.postgres.sql"
                    .into(),
            });
        }
    }
    Ok(by_id.into_values().collect())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub flavour: Flavour,
    /// Ids applied by this run.
    pub applied: Vec<String>,
    /// Ids that were already applied.
    pub already_applied: Vec<String>,
}

/// What the database is: TimescaleDB where the extension is installed or can
/// be created, plain PostgreSQL otherwise. With `create`, creates the extension.
pub async fn detect_flavour(client: &Client, create: bool) -> Result<Flavour, DbError> {
    let installed = client
        .query_opt(
            "SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'",
            &[],
        )
        .await?
        .is_some();
    if installed {
        return Ok(Flavour::TimescaleDb);
    }
    let available = client
        .query_opt(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'",
            &[],
        )
        .await?
        .is_some();
    if !available {
        return Ok(Flavour::Postgres);
    }
    if create {
        client
            .batch_execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            .await?;
    }
    Ok(Flavour::TimescaleDb)
}

const LOCK_KEY: i64 = 0x6669_7273_746d_696c; // "firstmil"

/// Applies every embedded migration not yet applied, in `schema` (created if
/// missing). `force` picks the flavour instead of detecting it (e.g. plain
/// tables on a TimescaleDB server).
pub async fn migrate(
    client: &mut Client,
    schema: &str,
    force: Option<Flavour>,
) -> Result<Report, DbError> {
    run(client, schema, &embedded()?, force).await
}

/// The flavour `schema` was migrated with; `None` if it has not been migrated.
pub async fn migrated_flavour(client: &Client, schema: &str) -> Result<Option<Flavour>, DbError> {
    if !firstmile_config::is_sql_identifier(schema) {
        return Err(DbError::Config {
            message: format!("database.schema `{schema}` is not a plain SQL identifier"),
        });
    }
    let exists = client
        .query_opt(
            "SELECT 1 FROM information_schema.tables \
             WHERE table_schema = $1 AND table_name = 'firstmile_migrations'",
            &[&schema],
        )
        .await?
        .is_some();
    if !exists {
        return Ok(None);
    }
    let recorded = client
        .query_opt(
            &format!("SELECT flavour FROM {schema}.firstmile_migrations LIMIT 1"),
            &[],
        )
        .await?
        .map(|row| row.get::<_, String>(0));
    recorded
        .map(|r| {
            r.parse().map_err(|m| DbError::Migration {
                id: format!("{schema}.firstmile_migrations"),
                message: m,
            })
        })
        .transpose()
}

/// Applies `migrations` (for tests of the runner itself; `migrate` uses the embedded ones).
pub async fn run(
    client: &mut Client,
    schema: &str,
    migrations: &[Migration],
    force: Option<Flavour>,
) -> Result<Report, DbError> {
    if !firstmile_config::is_sql_identifier(schema) {
        return Err(DbError::Config {
            message: format!("database.schema `{schema}` is not a plain SQL identifier"),
        });
    }
    // Every statement below names the schema, or runs after SET LOCAL
    // search_path inside its transaction: a session-wide SET would leak to other
    // users of a shared backend (connection poolers, the PGlite server).
    let table = format!("{schema}.firstmile_migrations");
    client
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema};
             CREATE TABLE IF NOT EXISTS {table} (
                id         text PRIMARY KEY,
                flavour    text NOT NULL,
                checksum   text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )"
        ))
        .await?;
    let recorded = client
        .query_opt(&format!("SELECT flavour FROM {table} LIMIT 1"), &[])
        .await?
        .map(|row| row.get::<_, String>(0));
    let flavour = match (force, &recorded) {
        (Some(f), _) => f,
        (None, Some(r)) => r.parse().map_err(|m| DbError::Migration {
            id: table.clone(),
            message: m,
        })?,
        (None, None) => detect_flavour(client, false).await?,
    };
    if let Some(r) = &recorded {
        if r != flavour.as_str() {
            return Err(DbError::Migration {
                id: table.clone(),
                message: format!(
                    "this schema was migrated as `{r}`, not `{flavour}`; a schema keeps \
                     its flavour"
                ),
            });
        }
    }
    if flavour == Flavour::TimescaleDb {
        detect_flavour(client, true).await?;
    }

    let mut report = Report {
        flavour,
        applied: Vec::new(),
        already_applied: Vec::new(),
    };
    for m in migrations {
        let checksum = m.checksum(flavour);
        let sql = m.sql(flavour);
        if m.transactional(flavour) {
            let tx = client.transaction().await?;
            tx.batch_execute(&format!("SET LOCAL search_path TO {schema}, public"))
                .await?;
            // Two `migrate` runs at once: the second waits here, then sees the
            // migration as applied.
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
                .await?;
            if already(&tx, &table, &m.id, &checksum).await? {
                report.already_applied.push(m.id.clone());
                continue; // dropping the transaction rolls it back
            }
            for part in &sql {
                tx.batch_execute(part).await.map_err(|e| failed(&m.id, e))?;
            }
            record(&tx, &table, &m.id, flavour, &checksum).await?;
            tx.commit().await?;
        } else {
            if already(client, &table, &m.id, &checksum).await? {
                report.already_applied.push(m.id.clone());
                continue;
            }
            client
                .batch_execute(&format!("SET search_path TO {schema}, public"))
                .await?;
            let mut outcome = Ok(());
            for part in &sql {
                outcome = client
                    .batch_execute(part)
                    .await
                    .map_err(|e| failed(&m.id, e));
                if outcome.is_err() {
                    break;
                }
            }
            client.batch_execute("RESET search_path").await?;
            outcome?;
            record(client, &table, &m.id, flavour, &checksum).await?;
        }
        tracing::info!(migration = %m.id, %flavour, "applied");
        report.applied.push(m.id.clone());
    }
    Ok(report)
}

async fn already<C: tokio_postgres::GenericClient>(
    client: &C,
    table: &str,
    id: &str,
    checksum: &str,
) -> Result<bool, DbError> {
    let row = client
        .query_opt(
            &format!("SELECT checksum FROM {table} WHERE id = $1"),
            &[&id],
        )
        .await?;
    match row {
        None => Ok(false),
        Some(row) if row.get::<_, String>(0) == checksum => Ok(true),
        Some(_) => Err(DbError::Migration {
            id: id.to_string(),
            message: "its SQL changed after it was applied; add a new migration instead of \
                      editing an applied one"
                .into(),
        }),
    }
}

async fn record<C: tokio_postgres::GenericClient>(
    client: &C,
    table: &str,
    id: &str,
    flavour: Flavour,
    checksum: &str,
) -> Result<(), DbError> {
    client
        .execute(
            &format!("INSERT INTO {table} (id, flavour, checksum) VALUES ($1, $2, $3)"),
            &[&id, &flavour.as_str(), &checksum],
        )
        .await?;
    Ok(())
}

fn failed(id: &str, e: tokio_postgres::Error) -> DbError {
    let message = match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    };
    DbError::Migration {
        id: id.to_string(),
        message,
    }
}
