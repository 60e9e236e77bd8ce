pub mod check;
pub mod ingest;
pub mod migrate;
pub mod parse;
pub mod process;
pub mod produce;
pub mod replay;
pub mod schemas;
pub mod sink;
pub mod topics;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use firstmile_metrics::{Metrics, Readiness};
use futures::FutureExt;
use tokio::task::JoinHandle;

/// Runs one consumer-group worker (a stage or a sink) with the metrics
/// endpoint, until SIGINT/SIGTERM (then it finishes its batch) or until it
/// ends by itself (an error: the process exits for its orchestrator).
pub async fn run_worker<E, F, Fut>(
    config: &firstmile_config::Config,
    what: &str,
    target: Option<sink::SinkCommand>,
    start: F,
) -> Result<()>
where
    E: std::error::Error + Send + Sync + 'static,
    F: FnOnce(Arc<Metrics>, Arc<AtomicBool>) -> Fut,
    Fut: std::future::Future<Output = Result<JoinHandle<Result<(), E>>>>,
{
    let metrics = Metrics::new();
    let endpoint = if config.metrics.listen.is_empty() {
        None
    } else {
        let ready = worker_readiness(config, target)?;
        Some(firstmile_metrics::serve(&config.metrics.listen, Arc::clone(&metrics), ready).await?)
    };
    let stop = Arc::new(AtomicBool::new(false));
    let worker = start(Arc::clone(&metrics), Arc::clone(&stop)).await?;
    let stopper = {
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            ingest::shutdown_signal().await;
            tracing::info!("stopping after the current batch");
            stop.store(true, Ordering::SeqCst);
        })
    };
    let result = worker.await.with_context(|| format!("{what} panicked"));
    stopper.abort();
    if let Some(e) = endpoint {
        e.task.abort();
    }
    result?.with_context(|| format!("{what} failed"))
}

/// A worker is ready while the brokers answer and, for a sink, its target.
fn worker_readiness(
    config: &firstmile_config::Config,
    target: Option<sink::SinkCommand>,
) -> Result<Readiness> {
    let probe = firstmile_kafka::BrokerProbe::new(&config.kafka)?;
    let (database, elasticsearch) = (
        Arc::new(config.database.clone()),
        Arc::new(config.elasticsearch.clone()),
    );
    Ok(Arc::new(move || {
        let (probe, database, elasticsearch) = (
            probe.clone(),
            Arc::clone(&database),
            Arc::clone(&elasticsearch),
        );
        async move {
            probe.check(std::time::Duration::from_secs(2)).await?;
            match target {
                None => Ok(()),
                Some(sink::SinkCommand::Timescale) => {
                    firstmile_sink_timescale::check_target(&database).await
                }
                Some(sink::SinkCommand::Elasticsearch) => {
                    firstmile_sink_elasticsearch::check_target(&elasticsearch).await
                }
            }
        }
        .boxed()
    }))
}
