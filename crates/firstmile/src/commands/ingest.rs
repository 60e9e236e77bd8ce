//! `firstmile ingest` (and, for now, `firstmile run`): the receivers, with
//! `/metrics` and `/health/*`, until SIGINT or SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use firstmile_metrics::{Metrics, Readiness};
use futures::FutureExt;

use crate::settings::Settings;

pub async fn run(settings: &Settings) -> Result<()> {
    let config = &settings.config;
    let metrics = Metrics::new();
    let receivers = firstmile_receivers::start(config, &metrics).await?;
    let shared = Arc::clone(&receivers.shared);
    let readiness: Readiness = Arc::new(move || {
        let shared = Arc::clone(&shared);
        async move {
            shared
                .acked
                .check_connected(Duration::from_secs(2))
                .await
                .map_err(|e| format!("kafka: {e}"))
        }
        .boxed()
    });
    let endpoint = if config.metrics.listen.is_empty() {
        None
    } else {
        Some(
            firstmile_metrics::serve(&config.metrics.listen, Arc::clone(&metrics), readiness)
                .await?,
        )
    };
    if let Some(addr) = receivers.http {
        tracing::info!(%addr, "http receiver listening: POST /v1/sources/{{source}}/events");
    }
    for (name, addr) in &receivers.syslog {
        tracing::info!(%addr, listener = %name, "syslog listening");
    }
    if let Some(e) = &endpoint {
        tracing::info!(addr = %e.local_addr, "metrics at /metrics, health at /health/live and /health/ready");
    }
    shutdown_signal().await;
    tracing::info!("stopping: finishing requests and waiting for Kafka");
    receivers
        .shutdown(Duration::from_millis(config.ingest.delivery_timeout_ms))
        .await;
    if let Some(e) = endpoint {
        e.task.abort();
    }
    Ok(())
}

/// SIGINT (Ctrl-C) or SIGTERM (docker stop).
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => futures::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
