//! `/metrics`, `/health/live` and `/health/ready` on the role's metrics listener.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use futures::future::BoxFuture;

use crate::Metrics;

/// Answers whether the role can do its work now (connected to the broker and,
/// for sinks, to the target).
pub type Readiness = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    readiness: Readiness,
}

/// A running endpoint.
pub struct Endpoint {
    pub local_addr: SocketAddr,
    pub task: tokio::task::JoinHandle<()>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} for metrics: {source}")]
pub struct ServeError {
    addr: String,
    source: std::io::Error,
}

/// Binds `addr` and serves until the returned task is aborted.
pub async fn serve(
    addr: &str,
    metrics: Arc<Metrics>,
    readiness: Readiness,
) -> Result<Endpoint, ServeError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError {
            addr: addr.to_string(),
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| ServeError {
        addr: addr.to_string(),
        source,
    })?;
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/health/live", get(|| async { "live\n" }))
        .route("/health/ready", get(ready))
        .with_state(AppState { metrics, readiness });
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics endpoint stopped");
        }
    });
    Ok(Endpoint { local_addr, task })
}

async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.encode(),
    )
}

/// Ready when the role's own checks pass and no group member is stuck;
/// otherwise every reason.
async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let mut reasons = state.metrics.stuck_members();
    if let Err(why) = (state.readiness)().await {
        reasons.insert(0, why);
    }
    if reasons.is_empty() {
        (StatusCode::OK, "ready\n".to_string())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", reasons.join("; ")),
        )
    }
}
