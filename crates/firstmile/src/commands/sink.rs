//! `firstmile sink timescale`: one member of the sink's consumer group.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Subcommand;
use firstmile_metrics::{Kind, Metrics, Readiness};
use futures::FutureExt;

use crate::settings::Settings;

#[derive(Subcommand)]
pub enum SinkCommand {
    /// events -> PostgreSQL/TimescaleDB ([database]), upserted by event_id.
    Timescale,
}

pub async fn run(settings: &Settings, command: SinkCommand) -> Result<()> {
    let SinkCommand::Timescale = command;
    let config = settings.config.clone();
    let metrics = Metrics::new();
    let endpoint = if config.metrics.listen.is_empty() {
        None
    } else {
        let ready: Readiness = Arc::new(|| async { Ok(()) }.boxed());
        Some(firstmile_metrics::serve(&config.metrics.listen, Arc::clone(&metrics), ready).await?)
    };
    let stop = Arc::new(AtomicBool::new(false));
    let worker = start(&config, &metrics, &stop);
    super::ingest::shutdown_signal().await;
    tracing::info!("stopping after the current batch");
    stop.store(true, Ordering::SeqCst);
    let result = worker.await.context("sink panicked")?;
    if let Some(e) = endpoint {
        e.task.abort();
    }
    result.context("sink timescale failed")?;
    Ok(())
}

/// Runs the timescale sink on a task of its own until `stop`.
pub fn start(
    config: &firstmile_config::Config,
    metrics: &Arc<Metrics>,
    stop: &Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Result<(), firstmile_sink_timescale::SinkError>> {
    let component = metrics.component(Kind::Sink, "timescale");
    let (config, stop) = (config.clone(), Arc::clone(stop));
    tokio::spawn(async move { firstmile_sink_timescale::run(&config, &component, &stop).await })
}
