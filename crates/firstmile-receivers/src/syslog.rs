//! Syslog listeners. UDP: one datagram is one event, exactly as received; when
//! the in-flight budget is full the datagram is dropped and counted (UDP has no
//! way to push back). TCP: per connection, octet counting (RFC 6587) when the
//! first byte is a digit, newline framing otherwise; reading stops while the
//! budget is full, so a slow broker slows the sender instead of filling memory.
//! Syslog senders get no acknowledgment, so events are retried as long as the
//! process runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;

use crate::framing::{starts_octet_counted, FramingError, LineSplitter, OctetCounting};
use crate::stream::{received_now, stream_key, Assembler, Piece, Route, Shared, StreamContext};
use firstmile_metrics::Component;

/// Receive buffer asked of the kernel for UDP listeners (it caps the request
/// at net.core.rmem_max): bursts wait there instead of being dropped.
const UDP_RECEIVE_BUFFER: usize = 8 << 20;

/// Binds a UDP listener with a large receive buffer.
pub fn bind_udp(addr: &str) -> std::io::Result<UdpSocket> {
    let addr: std::net::SocketAddr = addr
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    // Best effort: a smaller buffer than asked for still works.
    let _ = socket.set_recv_buffer_size(UDP_RECEIVE_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// Datagrams the kernel dropped for this socket because its receive buffer was
/// full (the `drops` column of /proc/net/udp{,6}); None where unavailable.
fn kernel_drops(socket: &UdpSocket) -> Option<u64> {
    use std::os::fd::AsRawFd;
    let link = std::fs::read_link(format!("/proc/self/fd/{}", socket.as_raw_fd())).ok()?;
    let inode = link
        .to_str()?
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .to_string();
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.get(9) == Some(&inode.as_str()) {
                return fields.last()?.parse().ok();
            }
        }
    }
    None
}

pub async fn serve_udp(
    socket: UdpSocket,
    shared: Arc<Shared>,
    route: Route,
    metrics: Component,
    mut stop: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 65_536];
    let mut dropped_by_kernel = kernel_drops(&socket).unwrap_or(0);
    let mut count_drops = tokio::time::interval(Duration::from_secs(1));
    let mut record_drops = |socket: &UdpSocket| {
        if let Some(now) = kernel_drops(socket) {
            if now > dropped_by_kernel {
                metrics.discarded(&route.source, "kernel_buffer", now - dropped_by_kernel);
            }
            dropped_by_kernel = now;
        }
    };
    loop {
        let (n, peer) = tokio::select! {
            _ = count_drops.tick() => {
                record_drops(&socket);
                continue;
            }
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    metrics.error("socket_read");
                    tracing::warn!(error = %e, "syslog udp receive failed");
                    continue;
                }
            },
            _ = stop.changed() => {
                record_drops(&socket);
                return;
            }
        };
        let event = &buf[..n];
        if event.is_empty() {
            metrics.discarded(&route.source, "empty_line", 1);
            continue;
        }
        if n > shared.max_event_bytes {
            metrics.discarded(&route.source, "too_large", 1);
            continue;
        }
        metrics.received(&route.source, 1, n as u64);
        let ctx = StreamContext {
            key: stream_key(&route.source, &peer.ip().to_string()),
            route: route.clone(),
            receiver: "syslog-udp",
            remote_addr: Some(peer.to_string()),
            content_type: None,
            metrics: metrics.clone(),
        };
        let at = received_now();
        match ctx
            .send(&shared.unacked, event, &at, Some(Duration::ZERO))
            .await
        {
            Ok(delivery) => {
                tokio::spawn(async move {
                    ctx.settle(delivery, n).await;
                });
            }
            Err(e) => {
                metrics.discarded(&route.source, "backpressure", 1);
                tracing::debug!(error = %e, "syslog udp datagram dropped");
            }
        }
    }
}

/// Limits of a TCP listener against clients that open connections and
/// send nothing, or never end a line.
pub struct TcpLimits {
    pub max_connections: usize,
    pub idle_timeout: Duration,
}

pub async fn serve_tcp(
    listener: TcpListener,
    shared: Arc<Shared>,
    route: Route,
    metrics: Component,
    limits: TcpLimits,
    mut stop: watch::Receiver<bool>,
) {
    let connections = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    metrics.error("accept");
                    tracing::warn!(error = %e, "syslog tcp accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let Ok(slot) = Arc::clone(&connections).try_acquire_owned() else {
            metrics.rejected("too_many_connections");
            tracing::debug!(%peer, "syslog tcp connection refused: too many open");
            continue;
        };
        let ctx = StreamContext {
            key: stream_key(&route.source, &peer.ip().to_string()),
            route: route.clone(),
            receiver: "syslog-tcp",
            remote_addr: Some(peer.to_string()),
            content_type: None,
            metrics: metrics.clone(),
        };
        let shared = Arc::clone(&shared);
        let stop = stop.clone();
        let idle_timeout = limits.idle_timeout;
        tokio::spawn(async move {
            connection(stream, shared, Arc::new(ctx), idle_timeout, stop).await;
            drop(slot);
        });
    }
}

enum Decoder {
    Undecided,
    Lines(LineSplitter),
    Octets(OctetCounting),
}

/// Bytes read at once. Allocated only while the connection has something
/// to read: an idle connection holds no read buffer (3,000 idle connections
/// held 200 MB of them).
const READ_BUFFER: usize = 64 << 10;

async fn connection(
    stream: TcpStream,
    shared: Arc<Shared>,
    ctx: Arc<StreamContext>,
    idle_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let max = shared.max_event_bytes;
    let mut decoder = Decoder::Undecided;
    let mut assembler = Assembler::new(&ctx.route, max);
    let mut pieces = Vec::new();
    let mut idle_since = Instant::now();
    loop {
        let deadline = assembler.deadline();
        let idle_deadline = idle_since + idle_timeout;
        let readable = tokio::select! {
            r = stream.readable() => r,
            _ = sleep_until(deadline) => {
                pieces.extend(assembler.flush_stale(Instant::now()));
                emit(&shared, &ctx, &mut pieces).await;
                continue;
            }
            _ = tokio::time::sleep_until(idle_deadline.into()) => {
                tracing::debug!(peer = ?ctx.remote_addr, "closing an idle syslog tcp connection");
                break;
            }
            _ = stop.changed() => break,
        };
        let mut buf = vec![0u8; READ_BUFFER];
        let read = readable.and_then(|()| stream.try_read(&mut buf));
        let n = match read {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                tracing::debug!(error = %e, "syslog tcp connection read failed");
                break;
            }
        };
        idle_since = Instant::now();
        let data = &buf[..n];
        if let Decoder::Undecided = decoder {
            decoder = if starts_octet_counted(data[0]) {
                Decoder::Octets(OctetCounting::new(max))
            } else {
                Decoder::Lines(LineSplitter::new(max))
            };
        }
        let mut frames = Vec::new();
        let framing: Result<(), FramingError> = match &mut decoder {
            Decoder::Lines(s) => {
                frames = s.push(data);
                Ok(())
            }
            Decoder::Octets(o) => o.push(data, &mut frames),
            Decoder::Undecided => Ok(()),
        };
        // What was framed before any error is sent either way.
        assembler.feed(frames, Instant::now(), &mut pieces);
        emit(&shared, &ctx, &mut pieces).await;
        if let Err(e) = framing {
            ctx.metrics.rejected("framing");
            tracing::warn!(peer = ?ctx.remote_addr, error = %e, "closing syslog tcp connection");
            pieces.extend(assembler.finish());
            emit(&shared, &ctx, &mut pieces).await;
            return;
        }
    }
    match &mut decoder {
        Decoder::Lines(s) => {
            let rest = s.finish().into_iter().collect();
            assembler.feed(rest, Instant::now(), &mut pieces);
        }
        Decoder::Octets(o) if o.is_mid_frame() => {
            ctx.metrics.discarded(&ctx.route.source, "truncated", 1);
        }
        _ => {}
    }
    pieces.extend(assembler.finish());
    emit(&shared, &ctx, &mut pieces).await;
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => futures::future::pending().await,
    }
}

/// Sends the pieces, waiting for budget as long as it takes (backpressure).
async fn emit(shared: &Arc<Shared>, ctx: &Arc<StreamContext>, pieces: &mut Vec<Piece>) {
    if pieces.is_empty() {
        return;
    }
    let at = received_now();
    for piece in pieces.drain(..) {
        let event = match piece {
            Piece::Event(b) => b,
            Piece::Empty => {
                ctx.metrics.discarded(&ctx.route.source, "empty_line", 1);
                continue;
            }
            Piece::TooLarge(_) => {
                ctx.metrics.discarded(&ctx.route.source, "too_large", 1);
                continue;
            }
        };
        ctx.metrics
            .received(&ctx.route.source, 1, event.len() as u64);
        match ctx.send(&shared.unacked, &event, &at, None).await {
            Ok(delivery) => {
                let ctx = Arc::clone(ctx);
                let len = event.len();
                tokio::spawn(async move {
                    ctx.settle(delivery, len).await;
                });
            }
            Err(e) => {
                ctx.metrics.error("enqueue");
                tracing::warn!(error = %e, "syslog event not enqueued");
            }
        }
    }
}
