//! Connections to PostgreSQL/TimescaleDB, with TLS as `[database]` says.

use std::str::FromStr;

use firstmile_config::Database;
use native_tls::{Certificate, Identity, TlsConnector};
use postgres_native_tls::MakeTlsConnector;
use tokio_postgres::Client;

use crate::DbError;

/// Opens one connection and drives it on a background task.
pub async fn connect(db: &Database) -> Result<Client, DbError> {
    let pg = tokio_postgres::Config::from_str(&db.url).map_err(|e| DbError::Config {
        message: firstmile_config::redact(&format!("database.url: {e}")),
    })?;
    let tls = tls_connector(db)?;
    let (client, connection) = pg.connect(tls).await.map_err(|e| DbError::Connect {
        target: firstmile_config::redact(&db.url),
        source: e,
    })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "database connection closed with an error");
        }
    });
    Ok(client)
}

fn tls_connector(db: &Database) -> Result<MakeTlsConnector, DbError> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| DbError::Config {
            message: format!("cannot read {}: {e}", path.display()),
        })
    };
    let tls_error = |e: native_tls::Error| DbError::Config {
        message: format!("database.tls: {e}"),
    };
    let mut builder = TlsConnector::builder();
    if let Some(ca) = &db.tls.ca_file {
        builder.add_root_certificate(Certificate::from_pem(&read(ca)?).map_err(tls_error)?);
    }
    match (&db.tls.client_cert_file, &db.tls.client_key_file) {
        (Some(cert), Some(key)) => {
            let identity = Identity::from_pkcs8(&read(cert)?, &read(key)?).map_err(tls_error)?;
            builder.identity(identity);
        }
        (None, None) => {}
        _ => {
            return Err(DbError::Config {
                message: "database.tls: client_cert_file and client_key_file go together".into(),
            })
        }
    }
    if db.tls.insecure_skip_verify {
        builder.danger_accept_invalid_certs(true);
    }
    Ok(MakeTlsConnector::new(builder.build().map_err(tls_error)?))
}
