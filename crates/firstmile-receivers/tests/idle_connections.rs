//! Idle connections cost the receivers little memory and are closed after
//! their timeout, and connections over a listener's cap are closed at once.
//! A test binary of its own: it measures this process's RSS.

mod common;

use std::time::Duration;

use common::*;
use firstmile_config::SyslogProtocol;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// This process's resident set, in bytes.
fn rss() -> u64 {
    proc_status_bytes("VmRSS")
}

async fn open(addr: std::net::SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(TcpStream::connect(addr).await.unwrap());
    }
    out
}

/// Reads each connection to its end: the receiver closed it.
async fn all_closed(connections: Vec<TcpStream>, within: Duration) {
    for (i, mut c) in connections.into_iter().enumerate() {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(within, c.read_to_end(&mut rest)).await;
        assert!(
            read.is_ok(),
            "connection {i} is still open after {within:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/stack up, then cargo test -- --include-ignored (scripts/test does both)"]
async fn three_thousand_idle_connections_each_on_syslog_and_http_stay_small_and_are_closed() {
    const IDLE: usize = 3_000;
    let mut config = base_config();
    add_source(&mut config, "syslog", 1).await;
    add_syslog(&mut config, "tcp", SyslogProtocol::Tcp, "syslog");
    let listener = config.ingest.syslog.get_mut("tcp").unwrap();
    listener.max_connections = 4_000;
    listener.idle_timeout_ms = 10_000;
    config.ingest.http.max_connections = 4_000;
    config.ingest.http.header_timeout_ms = 10_000;
    let (receivers, _metrics) = start(&config).await;
    let (syslog, http) = (receivers.syslog["tcp"], receivers.http.unwrap());

    let before = rss();
    let mut idle = open(syslog, IDLE).await;
    idle.extend(open(http, IDLE).await);
    // Every connection accepted and its task started: one more of each
    // answers (a syslog line would be read, an HTTP request served).
    let probe = reqwest::Client::new()
        .get(format!("http://{http}/nothing"))
        .send()
        .await
        .unwrap();
    assert_eq!(probe.status(), 404);
    let grown = rss().saturating_sub(before);
    // Before idle connections held no read buffer, 3,000 syslog ones alone
    // took 200 MB.
    assert!(
        grown < 48 << 20,
        "{IDLE} idle connections on each listener took {} MB",
        grown >> 20
    );
    all_closed(idle, Duration::from_secs(30)).await;
    receivers.shutdown(Duration::from_secs(5)).await;
    delete_topics(&config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/stack up, then cargo test -- --include-ignored (scripts/test does both)"]
async fn connections_over_a_listeners_cap_are_closed_at_once() {
    let mut config = base_config();
    add_source(&mut config, "syslog", 1).await;
    add_syslog(&mut config, "tcp", SyslogProtocol::Tcp, "syslog");
    config.ingest.syslog.get_mut("tcp").unwrap().max_connections = 10;
    config.ingest.http.max_connections = 10;
    let (receivers, metrics) = start(&config).await;
    for addr in [receivers.syslog["tcp"], receivers.http.unwrap()] {
        let kept = open(addr, 10).await;
        let over = open(addr, 5).await;
        all_closed(over, Duration::from_secs(10)).await;
        drop(kept);
    }
    assert_eq!(
        sample(
            &metrics.encode(),
            "firstmile_component_rejected_total",
            &[("reason", "too_many_connections")]
        ),
        10
    );
    receivers.shutdown(Duration::from_secs(5)).await;
    delete_topics(&config).await;
}
