//! Connections to PostgreSQL/TimescaleDB, with TLS as `[database]` says.

use std::str::FromStr;

use firstmile_config::Database;
use native_tls::{Certificate, Identity, TlsConnector};
use postgres_native_tls::MakeTlsConnector;
use tokio_postgres::Client;

use crate::DbError;

/// Opens one connection and drives it on a background task.
pub async fn connect(db: &Database) -> Result<Client, DbError> {
    let pg = tokio_postgres::Config::from_str(&verified_as_required(&db.url)).map_err(|e| {
        DbError::Config {
            message: firstmile_config::redact(&format!("database.url: {e}")),
        }
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

/// libpq's `sslmode=verify-ca` and `verify-full` as tokio-postgres knows
/// them: `require`, with the TLS connector verifying the certificate chain
/// and the host name, which it always does (unless
/// `database.tls.insecure_skip_verify`), so both get at least what they ask.
fn verified_as_required(url: &str) -> std::borrow::Cow<'_, str> {
    if url.contains("sslmode=verify-") {
        url.replace("sslmode=verify-full", "sslmode=require")
            .replace("sslmode=verify-ca", "sslmode=require")
            .into()
    } else {
        url.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_modes_are_accepted_as_require_with_verification() {
        for (url, expected) in [
            (
                "postgresql://h/db?sslmode=verify-full",
                "postgresql://h/db?sslmode=require",
            ),
            (
                "postgresql://h/db?sslmode=verify-ca&connect_timeout=5",
                "postgresql://h/db?sslmode=require&connect_timeout=5",
            ),
            ("host=h sslmode=verify-full", "host=h sslmode=require"),
            (
                "postgresql://h/db?sslmode=disable",
                "postgresql://h/db?sslmode=disable",
            ),
        ] {
            let normalized = verified_as_required(url);
            assert_eq!(normalized, expected);
            assert!(
                tokio_postgres::Config::from_str(&normalized).is_ok(),
                "{normalized}"
            );
        }
        assert!(
            tokio_postgres::Config::from_str("postgresql://h/db?sslmode=verify-full").is_err(),
            "tokio-postgres alone refuses it (why this exists)"
        );
    }
}
