//! Waiting out an outage (the brokers, the registry, a sink's target):
//! exponential backoff from 250 ms to [`MAX_BACKOFF`], with jitter so that
//! workers that failed together do not retry together. The one backoff of
//! every role.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The first wait.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// The longest wait between two attempts, before jitter.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Backoff(FIRST_BACKOFF)
    }
}

impl Backoff {
    /// The wait before the next attempt: the current one plus up to a
    /// quarter more; the one after doubles, up to [`MAX_BACKOFF`].
    pub fn next_wait(&mut self) -> Duration {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let jitter = self.0.mul_f64(f64::from(nanos % 1000) / 4000.0);
        let wait = self.0 + jitter;
        self.0 = (self.0 * 2).min(MAX_BACKOFF);
        wait
    }

    /// The wait the next attempt will take, before jitter (for logs).
    pub fn current(&self) -> Duration {
        self.0
    }

    /// Sleeps for [`Backoff::next_wait`]; false if `stop` was set meanwhile.
    pub async fn wait(&mut self, stop: &AtomicBool) -> bool {
        tokio::time::sleep(self.next_wait()).await;
        !stop.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_from_250_ms_to_30_s_with_at_most_a_quarter_more() {
        let mut b = Backoff::default();
        let mut base = FIRST_BACKOFF;
        for _ in 0..12 {
            let wait = b.next_wait();
            assert!(
                wait >= base && wait <= base + base / 4,
                "{wait:?} for {base:?}"
            );
            base = (base * 2).min(MAX_BACKOFF);
            assert_eq!(b.current(), base);
        }
        assert_eq!(b.current(), MAX_BACKOFF);
    }
}
