//! The first mile: receivers that land events unmodified in raw topics.
//!
//! - HTTP `POST /v1/sources/{source}/events` ([`http`]),
//! - syslog over UDP and TCP ([`syslog`]),
//! - files and pipes ([`produce`]).
//!
//! Framing ([`framing`]) and multiline joining ([`multiline`]) are pure logic.
//! Everything is written through [`firstmile_kafka::raw::RawProducer`], whose
//! byte budget bounds memory across all receivers of the process.

pub mod framing;
mod http;
mod http_server;
pub mod multiline;
mod produce;
mod stream;
mod syslog;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use firstmile_config::{Config, SyslogProtocol};
use firstmile_metrics::{Kind, KnownLabels, Metrics};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use produce::{produce, ProduceReport};
pub use stream::Shared;

#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        what: String,
        addr: String,
        source: std::io::Error,
    },
    #[error("unknown source `{0}` (not in [sources])")]
    UnknownSource(String),
    #[error("cannot read input: {0}")]
    Read(std::io::Error),
    #[error("{0}")]
    Send(firstmile_kafka::raw::SendError),
}

/// The running receivers of a process.
pub struct Receivers {
    pub shared: Arc<Shared>,
    /// Bound address of the HTTP receiver, if it runs.
    pub http: Option<SocketAddr>,
    /// Bound address of each syslog listener, by name.
    pub syslog: BTreeMap<String, SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// A receiver's metrics, its sources' series exported at zero from the start.
fn declared(
    metrics: &Arc<Metrics>,
    id: &str,
    sources: Vec<String>,
) -> firstmile_metrics::Component {
    let component = metrics.component(Kind::Receiver, id);
    component.declare(&KnownLabels {
        sources,
        ..KnownLabels::default()
    });
    component
}

/// Binds every configured listener and starts serving.
pub async fn start(config: &Config, metrics: &Arc<Metrics>) -> Result<Receivers, ReceiverError> {
    let shared = Shared::new(config)?;
    let (stop, stopped) = watch::channel(false);
    let mut tasks = Vec::new();
    let bind_error = |what: &str, addr: &str| {
        let (what, addr) = (what.to_string(), addr.to_string());
        move |source| ReceiverError::Bind { what, addr, source }
    };

    let mut http_addr = None;
    let http = &config.ingest.http;
    if !http.listen.is_empty() {
        let listener = tokio::net::TcpListener::bind(&http.listen)
            .await
            .map_err(bind_error("http", &http.listen))?;
        http_addr = Some(
            listener
                .local_addr()
                .map_err(bind_error("http", &http.listen))?,
        );
        let component = declared(metrics, "http", config.sources.keys().cloned().collect());
        let slots_per_source = http.slots_per_source();
        let app = http::router(http::HttpState {
            shared: Arc::clone(&shared),
            metrics: component.clone(),
            max_body_bytes: http.max_body_bytes,
            max_decompressed_bytes: http.max_decompressed_bytes,
            decompressing: Arc::new(tokio::sync::Semaphore::new(http::budget_permits(
                http.max_decompressing_bytes,
            ))),
            body_timeout: Duration::from_millis(http.body_timeout_ms),
            requests: Arc::new(tokio::sync::Semaphore::new(http.max_concurrent_requests)),
            source_requests: Arc::new(
                config
                    .sources
                    .keys()
                    .map(|s| {
                        (
                            s.clone(),
                            Arc::new(tokio::sync::Semaphore::new(slots_per_source)),
                        )
                    })
                    .collect(),
            ),
        });
        let limits = http_server::Limits {
            max_connections: http.max_connections,
            header_timeout: Duration::from_millis(http.header_timeout_ms),
        };
        tasks.push(tokio::spawn(http_server::serve(
            listener,
            app,
            limits,
            component,
            stopped.clone(),
        )));
    }

    let mut syslog_addrs = BTreeMap::new();
    for (name, listener) in &config.ingest.syslog {
        let route = shared
            .routes
            .get(&listener.source)
            .cloned()
            .ok_or_else(|| ReceiverError::UnknownSource(listener.source.clone()))?;
        let what = format!("syslog {name}");
        let stopped = stopped.clone();
        let shared = Arc::clone(&shared);
        match listener.protocol {
            SyslogProtocol::Udp => {
                let socket = syslog::bind_udp(&listener.listen)
                    .map_err(bind_error(&what, &listener.listen))?;
                syslog_addrs.insert(
                    name.clone(),
                    socket
                        .local_addr()
                        .map_err(bind_error(&what, &listener.listen))?,
                );
                let m = declared(metrics, "syslog-udp", vec![listener.source.clone()]);
                tasks.push(tokio::spawn(syslog::serve_udp(
                    socket, shared, route, m, stopped,
                )));
            }
            SyslogProtocol::Tcp => {
                let tcp = tokio::net::TcpListener::bind(&listener.listen)
                    .await
                    .map_err(bind_error(&what, &listener.listen))?;
                syslog_addrs.insert(
                    name.clone(),
                    tcp.local_addr()
                        .map_err(bind_error(&what, &listener.listen))?,
                );
                let m = declared(metrics, "syslog-tcp", vec![listener.source.clone()]);
                let limits = syslog::TcpLimits {
                    max_connections: listener.max_connections,
                    idle_timeout: Duration::from_millis(listener.idle_timeout_ms),
                };
                tasks.push(tokio::spawn(syslog::serve_tcp(
                    tcp, shared, route, m, limits, stopped,
                )));
            }
        }
    }
    Ok(Receivers {
        shared,
        http: http_addr,
        syslog: syslog_addrs,
        stop,
        tasks,
    })
}

impl Receivers {
    /// Stops accepting, lets HTTP requests in progress finish, then waits up
    /// to `flush` for Kafka to acknowledge what is still in flight.
    pub async fn shutdown(self, flush: Duration) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        let shared = self.shared;
        let _ = tokio::task::spawn_blocking(move || {
            let _ = shared.acked.flush(flush);
            let _ = shared.unacked.flush(flush);
        })
        .await;
    }
}
