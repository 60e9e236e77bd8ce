//! Concurrent zip bombs take no more memory than the decompression budget:
//! each is refused (413 once it inflates past `max_decompressed_bytes`, or
//! 503 while others hold the budget), and the process's peak RSS grows by
//! the budget, not by every bomb at once. A test binary of its own: it
//! measures this process's peak RSS.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;

/// This process's peak resident set so far, in bytes.
fn peak_rss() -> u64 {
    proc_status_bytes("VmHWM")
}

/// 256 MiB of newlines, gzipped (about 250 KB), written a MiB at a time.
fn bomb() -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let chunk = vec![b'\n'; 1 << 20];
    for _ in 0..256 {
        gz.write_all(&chunk).unwrap();
    }
    gz.finish().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/stack up, then cargo test -- --include-ignored (scripts/test does both)"]
async fn sixty_four_concurrent_zip_bombs_stay_within_the_decompression_budget() {
    let mut config = base_config();
    add_source(&mut config, "bombs", 1).await;
    let budget = config.ingest.http.max_decompressing_bytes as u64;
    let (receivers, metrics) = start(&config).await;
    let url = format!("http://{}/v1/sources/bombs/events", receivers.http.unwrap());
    let body = bomb();
    let before = peak_rss();
    let http = reqwest::Client::new();
    let answers = futures::future::join_all((0..64).map(|_| {
        http.post(&url)
            .header("content-encoding", "gzip")
            .body(body.clone())
            .timeout(Duration::from_secs(120))
            .send()
    }))
    .await;
    for answer in answers {
        let status = answer.unwrap().status().as_u16();
        assert!(status == 413 || status == 503, "a bomb answered {status}");
    }
    let grown = peak_rss().saturating_sub(before);
    // Without the budget this test measured 584 MB (16 requests inflating up
    // to 64 MiB each at once; 2.2 GB before bodies were inflated in chunks);
    // with it, 233 MB: the budget, the allocator's arenas, the bombs' bodies.
    assert!(
        grown < 2 * budget + (64 << 20),
        "peak RSS grew by {} MB; the budget is {} MB",
        grown >> 20,
        budget >> 20
    );
    let text = metrics.encode();
    let rejected = |reason| rejected(&text, reason);
    assert_eq!(rejected("too_large") + rejected("busy"), 64, "{text}");
    assert!(rejected("too_large") >= 1, "{text}");
    receivers.shutdown(Duration::from_secs(5)).await;
    delete_topics(&config).await;
}
