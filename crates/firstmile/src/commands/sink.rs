//! `firstmile sink timescale|elasticsearch`: one member of a sink's
//! consumer group.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Subcommand;
use firstmile_metrics::{Kind, Metrics, Readiness};
use futures::FutureExt;

use crate::settings::Settings;

#[derive(Subcommand, Clone, Copy)]
pub enum SinkCommand {
    /// events -> PostgreSQL/TimescaleDB ([database]), upserted by event_id.
    Timescale,
    /// events -> Elasticsearch ([elasticsearch]), _id = event_id.
    Elasticsearch,
}

impl SinkCommand {
    pub fn name(self) -> &'static str {
        match self {
            SinkCommand::Timescale => "timescale",
            SinkCommand::Elasticsearch => "elasticsearch",
        }
    }
}

pub async fn run(settings: &Settings, command: SinkCommand) -> Result<()> {
    let config = settings.config.clone();
    let metrics = Metrics::new();
    let endpoint = if config.metrics.listen.is_empty() {
        None
    } else {
        let ready: Readiness = Arc::new(|| async { Ok(()) }.boxed());
        Some(firstmile_metrics::serve(&config.metrics.listen, Arc::clone(&metrics), ready).await?)
    };
    let stop = Arc::new(AtomicBool::new(false));
    let worker = start(&config, command, &metrics, &stop);
    super::ingest::shutdown_signal().await;
    tracing::info!("stopping after the current batch");
    stop.store(true, Ordering::SeqCst);
    let result = worker.await.context("sink panicked")?;
    if let Some(e) = endpoint {
        e.task.abort();
    }
    result.with_context(|| format!("sink {} failed", command.name()))?;
    Ok(())
}

/// Runs a sink on a task of its own until `stop`.
pub fn start(
    config: &firstmile_config::Config,
    sink: SinkCommand,
    metrics: &Arc<Metrics>,
    stop: &Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Result<(), firstmile_sink::SinkError>> {
    let component = metrics.component(Kind::Sink, sink.name());
    let (config, stop) = (config.clone(), Arc::clone(stop));
    tokio::spawn(async move {
        match sink {
            SinkCommand::Timescale => {
                firstmile_sink_timescale::run(&config, &component, &stop).await
            }
            SinkCommand::Elasticsearch => {
                firstmile_sink_elasticsearch::run(&config, &component, &stop).await
            }
        }
    })
}
