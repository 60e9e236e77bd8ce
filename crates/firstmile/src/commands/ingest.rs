//! `firstmile ingest`: the receivers, with `/metrics` and `/health/*`, until
//! SIGINT or SIGTERM. `firstmile run`: the same, plus every stage, in one
//! process (one metrics endpoint for all).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use firstmile_metrics::{Metrics, Readiness};
use futures::FutureExt;

use crate::settings::Settings;

pub async fn run(settings: &Settings, with_stages: bool) -> Result<()> {
    let config = &settings.config;
    let metrics = Metrics::new();
    let receivers = firstmile_receivers::start(config, &metrics).await?;
    let shared = Arc::clone(&receivers.shared);
    // `run` holds the sinks too: ready only while their targets answer.
    let targets = with_stages.then(|| Arc::new(config.clone()));
    let readiness: Readiness = Arc::new(move || {
        let (shared, targets) = (Arc::clone(&shared), targets.clone());
        async move {
            shared
                .acked
                .check_connected(Duration::from_secs(2))
                .await
                .map_err(|e| format!("kafka: {e}"))?;
            if let Some(config) = targets {
                firstmile_sink_timescale::check_target(&config.database).await?;
                firstmile_sink_elasticsearch::check_target(&config.elasticsearch).await?;
            }
            Ok(())
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
    let stop = Arc::new(AtomicBool::new(false));
    let mut stages = Vec::new();
    if with_stages {
        for name in super::process::STAGES {
            let worker = super::process::start(config, name, &metrics, &stop)
                .await
                .with_context(|| format!("starting stage {name}"))?;
            stages.push((name, flatten(worker)));
        }
        for sink in [
            super::sink::SinkCommand::Timescale,
            super::sink::SinkCommand::Elasticsearch,
        ] {
            let worker = super::sink::start(config, sink, &metrics, &stop);
            stages.push((sink.name(), flatten(worker)));
        }
    }
    // Until a signal, or until a stage ends (a fatal error): then everything
    // stops, and the orchestrator restarts the process.
    let ended = if stages.is_empty() {
        shutdown_signal().await;
        None
    } else {
        let workers = stages.iter_mut().map(|(_, w)| w);
        tokio::select! {
            _ = shutdown_signal() => None,
            (result, index, _) = futures::future::select_all(workers) => Some((index, result)),
        }
    };
    tracing::info!("stopping: finishing requests and transactions, waiting for Kafka");
    stop.store(true, Ordering::SeqCst);
    let mut results = Vec::new();
    if let Some((index, result)) = ended {
        let (name, _) = stages.remove(index);
        tracing::error!(worker = name, "a worker ended; stopping");
        results.push((name, result));
    }
    for (name, worker) in stages {
        results.push((name, worker.await));
    }
    let mut failed = None;
    for (name, result) in results {
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failed = Some(e.context(format!("{name} failed"))),
            Err(e) => failed = Some(anyhow::anyhow!("{name}: {e}")),
        }
    }
    receivers
        .shutdown(Duration::from_millis(config.ingest.delivery_timeout_ms))
        .await;
    if let Some(e) = endpoint {
        e.task.abort();
    }
    failed.map_or(Ok(()), Err)
}

/// A worker's task with its error as `anyhow`, so stages and sinks line up.
fn flatten<E>(worker: tokio::task::JoinHandle<Result<(), E>>) -> tokio::task::JoinHandle<Result<()>>
where
    E: std::error::Error + Send + Sync + 'static,
{
    tokio::spawn(async move {
        match worker.await {
            Ok(result) => result.map_err(anyhow::Error::from),
            Err(e) => Err(anyhow::anyhow!("panicked: {e}")),
        }
    })
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
