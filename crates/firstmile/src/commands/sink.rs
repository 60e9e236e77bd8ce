//! `firstmile sink timescale|elasticsearch`: one member of a sink's
//! consumer group.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Result;
use clap::Subcommand;
use firstmile_config::{Config, SinkName};
use firstmile_metrics::{Kind, Metrics};
use firstmile_sink::Sink;
use firstmile_sink_elasticsearch::ElasticsearchSink;
use firstmile_sink_timescale::TimescaleSink;

use crate::settings::Settings;

#[derive(Subcommand, Clone, Copy)]
pub enum SinkCommand {
    /// events -> PostgreSQL/TimescaleDB ([database]), upserted by event_id.
    Timescale,
    /// events -> Elasticsearch ([elasticsearch]), _id = event_id.
    Elasticsearch,
}

impl SinkCommand {
    pub fn name(self) -> SinkName {
        match self {
            SinkCommand::Timescale => SinkName::Timescale,
            SinkCommand::Elasticsearch => SinkName::Elasticsearch,
        }
    }
}

pub async fn run(settings: &Settings, command: SinkCommand) -> Result<()> {
    let name = command.name();
    let what = format!("sink {name}");
    super::run_worker(settings, &what, &[name], |metrics, stop| async move {
        start(settings, name, &metrics, &stop)
    })
    .await
}

/// The sink `name`'s target as configured. The one place that knows which
/// crate implements which sink.
pub fn target(config: &Config, name: SinkName) -> Result<Box<dyn Sink>> {
    Ok(match name {
        SinkName::Timescale => Box::new(TimescaleSink::new(&config.database)),
        SinkName::Elasticsearch => Box::new(ElasticsearchSink::new(&config.elasticsearch)?),
    })
}

/// The targets of `names`: for readiness, and (`SinkName::ALL`) for
/// `status` and `audit`.
pub fn targets(config: &Config, names: &[SinkName]) -> Result<Vec<Box<dyn Sink>>> {
    names.iter().map(|&n| target(config, n)).collect()
}

/// Runs a sink on a task of its own until `stop`.
pub fn start(
    settings: &Settings,
    name: SinkName,
    metrics: &Arc<Metrics>,
    stop: &Arc<AtomicBool>,
) -> Result<tokio::task::JoinHandle<Result<(), firstmile_sink::SinkError>>> {
    let component = metrics.component(Kind::Sink, name.as_str());
    let mut sink = target(&settings.config, name)?;
    let (config, topology, stop) = (
        settings.config.clone(),
        settings.topology.clone(),
        Arc::clone(stop),
    );
    Ok(tokio::spawn(async move {
        firstmile_sink::run(&config, &topology, sink.as_mut(), &component, &stop).await
    }))
}
