//! PostgreSQL/TimescaleDB for firstmile: connections (with TLS) and the
//! migration runner that creates hypertables and continuous aggregates on
//! TimescaleDB, or partitioned tables and rollups on plain PostgreSQL.

mod connect;
pub mod migrate;

pub use connect::connect;
pub use migrate::{migrate, Flavour, Report};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("{message}")]
    Config { message: String },
    #[error("cannot connect to {target}: {source}")]
    Connect {
        target: String,
        source: tokio_postgres::Error,
    },
    #[error("migration {id}: {message}")]
    Migration { id: String, message: String },
    #[error("database: {0}")]
    Postgres(#[from] tokio_postgres::Error),
}
