//! `firstmile sink timescale|elasticsearch`: one member of a sink's
//! consumer group.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Result;
use clap::Subcommand;
use firstmile_metrics::{Kind, Metrics};

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
    let config = &settings.config;
    let what = format!("sink {}", command.name());
    super::run_worker(config, &what, Some(command), |metrics, stop| async move {
        Ok(start(config, command, &metrics, &stop))
    })
    .await
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
