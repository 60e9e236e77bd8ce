//! Helpers shared by the tests that talk to the broker of `scripts/stack`.

use std::time::{SystemTime, UNIX_EPOCH};

/// `[kafka]` for the local stack, brokers from `scripts/stack env` when set.
pub fn kafka() -> firstmile_config::Kafka {
    let mut k = firstmile_config::Kafka::default();
    if let Ok(b) = std::env::var("FIRSTMILE_KAFKA__BROKERS") {
        k.brokers = b;
    }
    k
}

/// Distinct per call: tests run in parallel threads and the clock is coarse.
static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn next_id() -> u64 {
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// A topic or group name no other test run uses.
pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    format!("test.{prefix}.{}.{nanos}.{}", std::process::id(), next_id())
}
