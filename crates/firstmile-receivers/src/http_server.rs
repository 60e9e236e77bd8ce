//! The HTTP receiver's connections, served by hand instead of `axum::serve`
//! for the limits a hostile client must not get around: at most
//! `max_connections` open (more are closed at once), headers within
//! `header_timeout_ms` (hyper closes the connection otherwise; the same
//! timeout closes an idle keep-alive connection, whose next request's
//! headers never come). Bodies have their own timeout, in the handler.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use firstmile_metrics::Component;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tower_service::Service;

pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
}

/// Serves `app` on `listener` until `stop` changes, then waits for the
/// requests in progress.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    metrics: Component,
    mut stop: watch::Receiver<bool>,
) {
    let connections = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.header_timeout)
        .keep_alive_timeout(limits.header_timeout);
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors, say: wait, do not spin.
                    metrics.error("accept");
                    tracing::warn!(error = %e, "http accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let Ok(slot) = Arc::clone(&connections).try_acquire_owned() else {
            metrics.rejected("too_many_connections");
            tracing::debug!(%peer, "http connection refused: too many open");
            continue;
        };
        let router = app.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            let mut router = router.clone();
            async move { router.call(request.map(axum::body::Body::new)).await }
        });
        let (builder, watcher) = (Arc::clone(&builder), graceful.watcher());
        let header_timeout = limits.header_timeout;
        tokio::spawn(async move {
            // The auto builder waits for the first bytes (to tell HTTP/1
            // from HTTP/2) with no timeout of its own: a connection that
            // never sends one would stay open for good.
            // `readable` may wake without data; `peek` waits for a byte.
            let first = tokio::time::timeout(header_timeout, stream.peek(&mut [0u8; 1])).await;
            if !matches!(first, Ok(Ok(n)) if n > 0) {
                tracing::debug!(%peer, "closing an http connection that sent nothing");
                return;
            }
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(connection).await {
                tracing::debug!(%peer, error = %e, "http connection ended");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
