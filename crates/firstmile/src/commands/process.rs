//! `firstmile process --stage NAME`: one member of a stage's consumer group.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Result;
use clap::Args;
use firstmile_config::StageName;
use firstmile_metrics::{Kind, Metrics};
use firstmile_stages::{EnrichStep, ParseStep, StageError, StageTopics, Step};
use tokio::task::JoinHandle;

use crate::settings::Settings;

#[derive(Args)]
pub struct ProcessArgs {
    /// The stage: `parse` (raw.* -> parsed) or `enrich` (parsed -> events).
    #[arg(long)]
    stage: StageName,
}

pub async fn run(settings: &Settings, args: ProcessArgs) -> Result<()> {
    let name = args.stage;
    super::run_worker(
        settings,
        &format!("stage {name}"),
        &[],
        |metrics, stop| async move { start(settings, name, &metrics, &stop).await },
    )
    .await
}

/// Prepares the stage `name` (loads its configuration and data, registers
/// its output schema) and runs it on a thread of its own until `stop`.
pub async fn start(
    settings: &Settings,
    name: StageName,
    metrics: &Arc<Metrics>,
    stop: &Arc<AtomicBool>,
) -> Result<JoinHandle<Result<(), StageError>>> {
    let (config, topology) = (&settings.config, &settings.topology);
    let (topics, step): (StageTopics, Box<dyn Step>) = match name {
        StageName::Parse => {
            let (t, s) = ParseStep::new(config, topology).await?;
            (t, Box::new(s))
        }
        StageName::Enrich => {
            let (t, s) = EnrichStep::new(config, topology).await?;
            (t, Box::new(s))
        }
    };
    let component = metrics.component(Kind::Stage, name.as_str());
    let (config, stop) = (config.clone(), Arc::clone(stop));
    let mut step = step;
    Ok(tokio::task::spawn_blocking(move || {
        firstmile_stages::run(&config, &topics, step.as_mut(), &component, &stop)
    }))
}
