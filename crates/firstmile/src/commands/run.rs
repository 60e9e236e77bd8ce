//! `firstmile run`: the receivers, every stage and every sink in one
//! process (one metrics endpoint for all). If a worker ends with an error,
//! the receivers stop taking input, everything stops, and the process exits
//! non-zero within [`super::SHUTDOWN_GRACE`], for its orchestrator to
//! restart it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use firstmile_config::{SinkName, StageName};

use super::ingest::Receivers;
use crate::settings::Settings;

pub async fn run(settings: &Settings) -> Result<()> {
    let receivers = Receivers::start(settings, &SinkName::ALL).await?;
    let metrics = Arc::clone(&receivers.metrics);
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for name in StageName::ALL {
        let worker = super::process::start(settings, name, &metrics, &stop)
            .await
            .with_context(|| format!("starting stage {name}"))?;
        workers.push((format!("stage {name}"), flatten(worker)));
    }
    for name in SinkName::ALL {
        let worker = super::sink::start(settings, name, &metrics, &stop)
            .with_context(|| format!("starting sink {name}"))?;
        workers.push((format!("sink {name}"), flatten(worker)));
    }
    // Until a signal, or until a worker ends (a fatal error): then
    // everything stops, and the orchestrator restarts the process.
    let ended = tokio::select! {
        _ = super::shutdown_signal() => None,
        (result, index, _) = futures::future::select_all(workers.iter_mut().map(|(_, w)| w)) => Some((index, result)),
    };
    tracing::info!("stopping: finishing requests and transactions, waiting for Kafka");
    stop.store(true, Ordering::SeqCst);
    let mut results = Vec::new();
    if let Some((index, result)) = ended {
        let (name, _) = workers.remove(index);
        tracing::error!(worker = %name, "a worker ended; stopping every role, taking no more input");
        results.push((name, result));
    }
    // Input stops first (and the requests in hand are answered), then the
    // workers finish their batches; all of it within the grace, so a process
    // with a role gone never lingers half-alive.
    let stopping = async {
        receivers.shutdown(settings).await;
        for (name, worker) in workers {
            results.push((name, worker.await));
        }
    };
    if tokio::time::timeout(super::SHUTDOWN_GRACE, stopping)
        .await
        .is_err()
    {
        anyhow::bail!(super::not_stopped("a worker"));
    }
    let mut failed = None;
    for (name, result) in results {
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failed = Some(e.context(format!("{name} failed"))),
            Err(e) => failed = Some(anyhow::anyhow!("{name}: {e}")),
        }
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
