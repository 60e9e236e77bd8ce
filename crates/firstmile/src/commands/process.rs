//! `firstmile process --stage NAME`: one member of a stage's consumer group.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use firstmile_metrics::{Kind, Metrics, Readiness};
use firstmile_stages::ParseStep;
use futures::FutureExt;

use crate::settings::Settings;

#[derive(Args)]
pub struct ProcessArgs {
    /// The stage: `parse` (raw.* -> parsed). (`enrich` is not built yet.)
    #[arg(long)]
    stage: String,
}

pub async fn run(settings: &Settings, args: ProcessArgs) -> Result<()> {
    if args.stage != "parse" {
        bail!("unknown stage `{}` (parse)", args.stage);
    }
    let config = settings.config.clone();
    let metrics = Metrics::new();
    let component = metrics.component(Kind::Stage, &args.stage);
    let endpoint = if config.metrics.listen.is_empty() {
        None
    } else {
        let ready: Readiness = Arc::new(|| async { Ok(()) }.boxed());
        Some(firstmile_metrics::serve(&config.metrics.listen, Arc::clone(&metrics), ready).await?)
    };
    let (topics, mut step) = ParseStep::prepare(&config)
        .await
        .context("preparing the parse stage")?;
    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let stop = Arc::clone(&stop);
        tokio::task::spawn_blocking(move || {
            firstmile_stages::run(&config, &topics, &mut step, &component, &stop)
        })
    };
    let stopper = {
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            super::ingest::shutdown_signal().await;
            tracing::info!("stopping after the current transaction");
            stop.store(true, Ordering::SeqCst);
        })
    };
    let result = worker.await.context("stage worker panicked")?;
    stopper.abort();
    if let Some(e) = endpoint {
        e.task.abort();
    }
    result.context("stage failed")?;
    Ok(())
}
