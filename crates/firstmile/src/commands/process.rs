//! `firstmile process --stage NAME`: one member of a stage's consumer group.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, Result};
use clap::Args;
use firstmile_config::Config;
use firstmile_metrics::{Kind, Metrics};
use firstmile_stages::{EnrichStep, ParseStep, StageError, StageTopics, Step};
use tokio::task::JoinHandle;

use crate::settings::Settings;

/// The stages, in pipeline order.
pub const STAGES: [&str; 2] = ["parse", "enrich"];

#[derive(Args)]
pub struct ProcessArgs {
    /// The stage: `parse` (raw.* -> parsed) or `enrich` (parsed -> events).
    #[arg(long)]
    stage: String,
}

pub async fn run(settings: &Settings, args: ProcessArgs) -> Result<()> {
    if !STAGES.contains(&args.stage.as_str()) {
        bail!(
            "unknown stage `{}` (known: {})",
            args.stage,
            STAGES.join(", ")
        );
    }
    let config = &settings.config;
    let name = args.stage.as_str();
    super::run_worker(
        config,
        &format!("stage {name}"),
        None,
        |metrics, stop| async move { start(config, name, &metrics, &stop).await },
    )
    .await
}

/// Prepares the stage `name` (loads its configuration and data, registers
/// its output schema) and runs it on a thread of its own until `stop`.
pub async fn start(
    config: &Config,
    name: &str,
    metrics: &Arc<Metrics>,
    stop: &Arc<AtomicBool>,
) -> Result<JoinHandle<Result<(), StageError>>> {
    let (topics, step): (StageTopics, Box<dyn Step>) = match name {
        "parse" => {
            let (t, s) = ParseStep::prepare(config).await?;
            (t, Box::new(s))
        }
        "enrich" => {
            let (t, s) = EnrichStep::prepare(config).await?;
            (t, Box::new(s))
        }
        other => bail!("unknown stage `{other}` (known: {})", STAGES.join(", ")),
    };
    let component = metrics.component(Kind::Stage, name);
    let (config, stop) = (config.clone(), Arc::clone(stop));
    let mut step = step;
    Ok(tokio::task::spawn_blocking(move || {
        firstmile_stages::run(&config, &topics, step.as_mut(), &component, &stop)
    }))
}
