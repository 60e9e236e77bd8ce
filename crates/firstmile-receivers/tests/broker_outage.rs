//! The broker stops while a client sends: the client sees errors, not
//! successes, for what was not stored; once the broker is back, every
//! acknowledged event is in the topic exactly once.
//!
//! This test stops the stack's real Kafka (`scripts/stack down kafka`), so it is
//! the only test in this binary: cargo runs test binaries one after another.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

fn stack(action: &str) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/stack");
    let status = Command::new(script)
        .args([action, "kafka"])
        .status()
        .unwrap();
    assert!(status.success(), "scripts/stack {action} kafka failed");
}

/// Brings Kafka back however the test ends, so later tests find it up.
struct KafkaBackUp;

impl Drop for KafkaBackUp {
    fn drop(&mut self) {
        stack("up");
    }
}

#[derive(Default)]
struct Outcomes {
    /// Request number → (HTTP status, Retry-After header).
    by_request: BTreeMap<u64, (u16, Option<String>)>,
}

impl Outcomes {
    fn count(&self, from: u64, ok: bool) -> usize {
        self.by_request
            .range(from..)
            .filter(|(_, (s, _))| (*s == 200) == ok)
            .count()
    }
}

const LINES_PER_REQUEST: u64 = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack: scripts/stack up, then cargo test -- --include-ignored (scripts/test does both)"]
async fn acknowledged_events_survive_a_broker_outage_exactly_once() {
    let mut config = base_config();
    let topic = add_source(&mut config, "outage", 1).await;
    config.ingest.delivery_timeout_ms = 4000;
    config.ingest.retry_after_seconds = 1;
    let (receivers, _metrics) = start(&config).await;
    let url = format!(
        "http://{}/v1/sources/outage/events",
        receivers.http.unwrap()
    );

    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let next_request = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let client = {
        let (outcomes, stop, next_request) = (outcomes.clone(), stop.clone(), next_request.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let n = next_request.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let body: String = (0..LINES_PER_REQUEST)
                    .map(|j| format!("req-{n}-line-{j}\n"))
                    .collect();
                let outcome = match http.post(&url).body(body).send().await {
                    Ok(r) => (
                        r.status().as_u16(),
                        r.headers()
                            .get("retry-after")
                            .map(|v| v.to_str().unwrap_or("").to_string()),
                    ),
                    Err(_) => (0, None),
                };
                let ok = outcome.0 == 200;
                outcomes.lock().unwrap().by_request.insert(n, outcome);
                if !ok {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        })
    };
    let wait_for = |what: &str, limit: Duration, cond: &dyn Fn(&Outcomes) -> bool| {
        let deadline = Instant::now() + limit;
        loop {
            if cond(&outcomes.lock().unwrap()) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };

    wait_for("10 stored requests", Duration::from_secs(30), &|o| {
        o.count(0, true) >= 10
    });
    let guard = KafkaBackUp;
    tokio::task::spawn_blocking(|| stack("down")).await.unwrap();
    let stopped_at = next_request.load(std::sync::atomic::Ordering::SeqCst);
    wait_for(
        "3 refused requests while Kafka is down",
        Duration::from_secs(60),
        &|o| o.count(stopped_at, false) >= 3,
    );
    tokio::task::spawn_blocking(|| stack("up")).await.unwrap();
    let restarted_at = next_request.load(std::sync::atomic::Ordering::SeqCst);
    wait_for(
        "10 stored requests after the restart",
        Duration::from_secs(120),
        &|o| o.count(restarted_at, true) >= 10,
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    client.await.unwrap();
    drop(guard);
    receivers.shutdown(Duration::from_secs(10)).await;

    let outcomes = std::mem::take(&mut *outcomes.lock().unwrap());
    let refused: Vec<_> = outcomes
        .by_request
        .values()
        .filter(|(s, _)| *s != 200)
        .collect();
    assert!(refused.len() >= 3);
    for (status, retry_after) in &refused {
        // Refused by us (503 + Retry-After), or the connection failed (0).
        assert!(*status == 503 || *status == 0, "unexpected status {status}");
        if *status == 503 {
            assert_eq!(retry_after.as_deref(), Some("1"));
        }
    }

    let stored = values(&read_topic(&topic));
    let mut seen = BTreeSet::new();
    for v in &stored {
        assert!(
            seen.insert(v.clone()),
            "duplicate record {}",
            String::from_utf8_lossy(v)
        );
    }
    let mut acknowledged = 0;
    for (n, (status, _)) in outcomes.by_request.iter() {
        if *status != 200 {
            continue;
        }
        for j in 0..LINES_PER_REQUEST {
            let line = format!("req-{n}-line-{j}").into_bytes();
            assert!(
                seen.contains(&line),
                "acknowledged req-{n}-line-{j} is missing"
            );
            acknowledged += 1;
        }
    }
    assert!(acknowledged >= 20 * LINES_PER_REQUEST as usize);
    delete_topics(&config).await;
}
