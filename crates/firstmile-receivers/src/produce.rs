//! `firstmile produce`: a file or pipe into a source's raw topic, with the same
//! framing and multiline rules as the receivers, waiting for every acknowledgment.

use std::sync::Arc;
use std::time::{Duration, Instant};

use firstmile_kafka::raw::SendError;
use firstmile_metrics::Component;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::framing::LineSplitter;
use crate::stream::{received_now, stream_key, Assembler, Piece, Shared, StreamContext};
use crate::ReceiverError;

/// What a produce run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProduceReport {
    pub read_bytes: u64,
    pub events: u64,
    pub stored: u64,
    pub empty_lines: u64,
    pub too_large: u64,
}

impl ProduceReport {
    pub fn failed(&self) -> u64 {
        self.events - self.stored
    }
}

/// Reads `input` to its end and produces every event. `progress` is called with
/// the bytes read so far. A `source` unknown to the configuration is an error.
pub async fn produce<R, P>(
    shared: Arc<Shared>,
    metrics: Component,
    source: &str,
    host: &str,
    label: &str,
    mut input: R,
    progress: P,
) -> Result<ProduceReport, ReceiverError>
where
    R: AsyncRead + Unpin,
    P: Fn(u64),
{
    let route = shared
        .routes
        .get(source)
        .ok_or_else(|| ReceiverError::UnknownSource(source.to_string()))?;
    let ctx = Arc::new(StreamContext {
        key: stream_key(source, host),
        route: route.clone(),
        receiver: "file",
        remote_addr: Some(label.to_string()),
        content_type: None,
        metrics,
    });
    let max = shared.max_event_bytes;
    let mut splitter = LineSplitter::new(max);
    let mut assembler = Assembler::new(route, max);
    let mut report = ProduceReport::default();
    let mut buf = vec![0u8; 256 << 10];
    let mut pieces = Vec::new();
    let mut pending = futures::stream::FuturesUnordered::new();
    loop {
        let n = input.read(&mut buf).await.map_err(ReceiverError::Read)?;
        if n == 0 {
            assembler.feed(
                splitter.finish().into_iter().collect(),
                Instant::now(),
                &mut pieces,
            );
            pieces.extend(assembler.finish());
        } else {
            report.read_bytes += n as u64;
            assembler.feed(splitter.push(&buf[..n]), Instant::now(), &mut pieces);
        }
        let at = received_now();
        for piece in pieces.drain(..) {
            let event = match piece {
                Piece::Event(b) => b,
                Piece::Empty => {
                    report.empty_lines += 1;
                    ctx.metrics.discarded(source, "empty_line", 1);
                    continue;
                }
                Piece::TooLarge(_) => {
                    report.too_large += 1;
                    ctx.metrics.discarded(source, "too_large", 1);
                    continue;
                }
            };
            report.events += 1;
            ctx.metrics.received(source, 1, event.len() as u64);
            // Wait for budget as long as it takes (a file can always wait),
            // settling deliveries meanwhile: they hold the budget until they
            // are polled to completion, so waiting without polling them
            // deadlocked once the budget was full (found by the benchmark).
            let delivery = loop {
                match ctx
                    .send(&shared.acked, &event, &at, Some(Duration::ZERO))
                    .await
                {
                    Ok(d) => break d,
                    Err(SendError::Busy { .. }) if !pending.is_empty() => {
                        if let Some(ok) = futures::StreamExt::next(&mut pending).await {
                            report.stored += u64::from(ok);
                        }
                    }
                    // Nothing in flight holds budget: waiting frees it.
                    Err(SendError::Busy { .. }) => {
                        break ctx
                            .send(&shared.acked, &event, &at, None)
                            .await
                            .map_err(ReceiverError::Send)?
                    }
                    Err(e) => return Err(ReceiverError::Send(e)),
                }
            };
            let ctx = Arc::clone(&ctx);
            let len = event.len();
            pending.push(async move { ctx.settle(delivery, len).await });
            // Collect finished deliveries as we go so memory stays bounded.
            while let Some(Some(ok)) =
                futures::FutureExt::now_or_never(futures::StreamExt::next(&mut pending))
            {
                report.stored += u64::from(ok);
            }
        }
        progress(report.read_bytes);
        if n == 0 {
            break;
        }
    }
    while let Some(ok) = futures::StreamExt::next(&mut pending).await {
        report.stored += u64::from(ok);
    }
    Ok(report)
}
