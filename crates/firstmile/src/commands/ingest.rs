//! `firstmile ingest`: the receivers, with `/metrics` and `/health/*`, until
//! SIGINT or SIGTERM. `firstmile run` starts the same receivers with every
//! stage and sink beside them ([`Receivers`]).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use firstmile_config::SinkName;
use firstmile_metrics::{Endpoint, Metrics, Readiness};
use futures::FutureExt;

use crate::settings::Settings;

pub async fn run(settings: &Settings) -> Result<()> {
    let receivers = Receivers::start(settings, &[]).await?;
    super::shutdown_signal().await;
    tracing::info!("stopping: finishing requests, waiting for Kafka");
    if tokio::time::timeout(super::SHUTDOWN_GRACE, receivers.shutdown(settings))
        .await
        .is_err()
    {
        anyhow::bail!(
            "Kafka did not acknowledge every accepted event within {} s; exiting (HTTP senders were not answered 200 for them and send again; syslog events still waiting are lost)",
            super::SHUTDOWN_GRACE.as_secs()
        );
    }
    Ok(())
}

/// The receivers of `[ingest]` and the process's metrics endpoint.
pub struct Receivers {
    pub metrics: Arc<Metrics>,
    running: firstmile_receivers::Receivers,
    endpoint: Option<Endpoint>,
}

impl Receivers {
    /// Binds the listeners and the endpoint; ready while Kafka acknowledges
    /// and each of `targets` answers (`run` holds the sinks too).
    pub async fn start(settings: &Settings, targets: &[SinkName]) -> Result<Receivers> {
        let config = &settings.config;
        let metrics = Metrics::new();
        let running = firstmile_receivers::start(config, &metrics).await?;
        let shared = Arc::clone(&running.shared);
        let targets = Arc::new(super::sink::targets(config, targets)?);
        let readiness: Readiness = Arc::new(move || {
            let (shared, targets) = (Arc::clone(&shared), Arc::clone(&targets));
            async move {
                let brokers = async {
                    shared
                        .acked
                        .check_connected(Duration::from_secs(2))
                        .await
                        .map_err(|e| format!("kafka: {e}"))
                };
                super::all_ready(brokers.boxed(), &targets).await
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
        if let Some(addr) = running.http {
            tracing::info!(%addr, "http receiver listening: POST /v1/sources/{{source}}/events");
        }
        for (name, addr) in &running.syslog {
            tracing::info!(%addr, listener = %name, "syslog listening");
        }
        if let Some(e) = &endpoint {
            tracing::info!(addr = %e.local_addr, "metrics at /metrics, health at /health/live and /health/ready");
        }
        Ok(Receivers {
            metrics,
            running,
            endpoint,
        })
    }

    /// Finishes the requests in hand and waits for Kafka's answers (at most
    /// `ingest.delivery_timeout_ms`), then closes the endpoint.
    pub async fn shutdown(self, settings: &Settings) {
        self.running
            .shutdown(Duration::from_millis(
                settings.config.ingest.delivery_timeout_ms,
            ))
            .await;
        if let Some(e) = self.endpoint {
            e.task.abort();
        }
    }
}
