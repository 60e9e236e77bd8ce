pub mod audit;
pub mod check;
pub mod ingest;
pub mod migrate;
pub mod parse;
pub mod process;
pub mod produce;
pub mod replay;
pub mod run;
pub mod schemas;
pub mod sink;
pub mod status;
pub mod topics;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use firstmile_config::SinkName;
use firstmile_metrics::{Metrics, Readiness};
use futures::FutureExt;
use tokio::task::JoinHandle;

use crate::settings::Settings;

/// Runs one consumer-group worker (a stage or a sink) with the metrics
/// endpoint, until SIGINT/SIGTERM (then it finishes its batch) or until it
/// ends by itself (an error: the process exits for its orchestrator).
/// `targets`: the sinks whose targets must answer for the worker to be ready.
pub async fn run_worker<E, F, Fut>(
    settings: &Settings,
    what: &str,
    targets: &[SinkName],
    start: F,
) -> Result<()>
where
    E: std::error::Error + Send + Sync + 'static,
    F: FnOnce(Arc<Metrics>, Arc<AtomicBool>) -> Fut,
    Fut: std::future::Future<Output = Result<JoinHandle<Result<(), E>>>>,
{
    let config = &settings.config;
    let metrics = Metrics::new();
    // Not ready while starting: a stage registering its schema waits for the
    // registry there, a sink for its target's setup.
    let started = Arc::new(AtomicBool::new(false));
    let endpoint = if config.metrics.listen.is_empty() {
        None
    } else {
        let ready = readiness(config, targets, what, Arc::clone(&started))?;
        Some(firstmile_metrics::serve(&config.metrics.listen, Arc::clone(&metrics), ready).await?)
    };
    let stop = Arc::new(AtomicBool::new(false));
    // Starting may wait for a dependency (a stage registers its schema while
    // the registry is down): a signal ends that wait too.
    let mut worker = tokio::select! {
        worker = start(Arc::clone(&metrics), Arc::clone(&stop)) => worker?,
        _ = shutdown_signal() => {
            tracing::info!("stopped while starting");
            return Ok(());
        }
    };
    started.store(true, Ordering::SeqCst);
    let result = tokio::select! {
        ended = &mut worker => ended,
        _ = shutdown_signal() => {
            tracing::info!("stopping after the current batch");
            stop.store(true, Ordering::SeqCst);
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut worker).await {
                Ok(ended) => ended,
                Err(_) => anyhow::bail!(not_stopped(what)),
            }
        }
    };
    if let Some(e) = endpoint {
        e.task.abort();
    }
    result
        .with_context(|| format!("{what} panicked"))?
        .with_context(|| format!("{what} failed"))
}

/// How long a stopping process waits for its workers: within the 10 s an
/// orchestrator (docker stop, Kubernetes' default 30 s) gives before SIGKILL.
/// A worker still in a batch then (its target or Kafka unreachable) is left
/// behind: the batch was not committed, so it is read again.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(8);

/// What a process says when a worker did not stop within the grace.
pub fn not_stopped(what: &str) -> String {
    format!(
        "{what} did not stop within {} s (Kafka or its target unreachable?); exiting: its uncommitted batch is read again",
        SHUTDOWN_GRACE.as_secs()
    )
}

/// A worker is ready once started, while the brokers answer and each of
/// `targets` answers (and, checked by the endpoint itself, while its group
/// membership makes progress: [`firstmile_metrics::Membership`]).
fn readiness(
    config: &firstmile_config::Config,
    targets: &[SinkName],
    what: &str,
    started: Arc<AtomicBool>,
) -> Result<Readiness> {
    let probe = firstmile_kafka::BrokerProbe::new(&config.kafka)?;
    let targets = Arc::new(sink::targets(config, targets)?);
    let starting = format!("{what} is starting");
    Ok(Arc::new(move || {
        let (probe, targets) = (probe.clone(), Arc::clone(&targets));
        let starting = (!started.load(Ordering::SeqCst)).then(|| starting.clone());
        async move {
            let brokers = probe.check(std::time::Duration::from_secs(2)).boxed();
            let checks = all_ready(brokers, &targets).await;
            match (starting, checks) {
                (None, checks) => checks,
                (Some(starting), Ok(())) => Err(starting),
                (Some(starting), Err(why)) => Err(format!("{starting}; {why}")),
            }
        }
        .boxed()
    }))
}

/// Ready when the brokers and every target answer; otherwise every failure
/// (not just the first), secrets redacted: the answer of `/health/ready`.
pub async fn all_ready(
    brokers: futures::future::BoxFuture<'_, Result<(), String>>,
    targets: &[Box<dyn firstmile_sink::Sink>],
) -> Result<(), String> {
    let checks = std::iter::once(brokers).chain(targets.iter().map(|t| t.check()));
    let failures: Vec<String> = futures::future::join_all(checks)
        .await
        .into_iter()
        .filter_map(Result::err)
        .collect();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(firstmile_config::redact(&failures.join("; ")))
    }
}

/// SIGINT (Ctrl-C) or SIGTERM (docker stop).
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => futures::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// RFC 3339, `now`, or a span ago (`90m`, `6h`, `2d`; a day is 24 hours).
pub fn parse_time(text: &str) -> Result<jiff::Timestamp, String> {
    use jiff::Timestamp;
    if text == "now" {
        return Ok(Timestamp::now());
    }
    if let Ok(t) = text.parse::<Timestamp>() {
        return Ok(t);
    }
    let span: jiff::Span = text.parse().map_err(|_| {
        format!("`{text}` is neither an RFC 3339 time (2026-11-23T08:00:00Z) nor a time ago (90m, 6h, 2d)")
    })?;
    let ago = span
        .to_duration(jiff::SpanRelativeTo::days_are_24_hours())
        .map_err(|e| format!("`{text}`: {e}"))?;
    Timestamp::now()
        .checked_sub(ago)
        .map_err(|e| format!("`{text}`: {e}"))
}

/// A length of time: `30s`, `5m`, `2h` (a day is 24 hours).
pub fn parse_span(text: &str) -> Result<std::time::Duration, String> {
    let span: jiff::Span = text
        .parse()
        .map_err(|_| format!("`{text}` is not a length of time (30s, 5m, 2h)"))?;
    let d = span
        .to_duration(jiff::SpanRelativeTo::days_are_24_hours())
        .map_err(|e| format!("`{text}`: {e}"))?;
    std::time::Duration::try_from(d).map_err(|_| format!("`{text}` is negative"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::Timestamp;

    #[test]
    fn times_are_rfc3339_or_a_span_ago() {
        assert_eq!(
            parse_time("2026-11-23T08:00:00Z").unwrap(),
            "2026-11-23T08:00:00Z".parse::<Timestamp>().unwrap()
        );
        for (text, seconds) in [("90m", 5400), ("6h", 21_600), ("2d", 172_800)] {
            let ago = Timestamp::now().as_second() - parse_time(text).unwrap().as_second();
            assert!((ago - seconds).abs() <= 1, "{text}: {ago}");
        }
        let e = parse_time("yesterday").unwrap_err();
        assert!(e.contains("neither an RFC 3339 time"), "{e}");
    }

    #[test]
    fn spans_are_lengths_of_time() {
        assert_eq!(parse_span("90s").unwrap().as_secs(), 90);
        assert_eq!(parse_span("5m").unwrap().as_secs(), 300);
        assert_eq!(parse_span("1d").unwrap().as_secs(), 86_400);
        assert!(parse_span("-5m").unwrap_err().contains("negative"));
        assert!(parse_span("soon")
            .unwrap_err()
            .contains("not a length of time"));
    }
}
