//! When a batch being filled from a consumer ends; the same rule for the
//! stages' transactions and the sinks' writes.

use std::time::{Duration, Instant};

/// A batch ends `max` after it began, or once its input has been idle for
/// `idle` after at least one record: a drained input would otherwise only
/// add latency (zero: no idle cut). The record count is the caller's.
#[derive(Debug, Clone, Copy)]
pub struct BatchWindow {
    started: Instant,
    last_record: Instant,
    max: Duration,
    idle: Duration,
}

impl BatchWindow {
    pub fn start(max: Duration, idle: Duration) -> BatchWindow {
        let now = Instant::now();
        BatchWindow {
            started: now,
            last_record: now,
            max,
            idle,
        }
    }

    /// A record came.
    pub fn record(&mut self) {
        self.last_record = Instant::now();
    }

    /// How long to wait for the next record; zero: the batch ends now.
    /// `filled`: the batch holds records (an empty one is never idle).
    pub fn left(&self, filled: bool) -> Duration {
        let left = self.max.saturating_sub(self.started.elapsed());
        if filled && !self.idle.is_zero() {
            left.min(self.idle.saturating_sub(self.last_record.elapsed()))
        } else {
            left
        }
    }

    /// Whether `max` has passed since the batch began.
    pub fn expired(&self) -> bool {
        self.started.elapsed() > self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_idle_cut_applies_only_to_a_filled_batch_and_only_if_set() {
        let (max, idle) = (Duration::from_secs(600), Duration::from_millis(50));
        let mut window = BatchWindow::start(max, idle);
        assert!(window.left(false) > idle, "an empty batch waits up to max");
        window.record();
        assert!(window.left(true) <= idle);
        let no_idle_cut = BatchWindow::start(max, Duration::ZERO);
        assert!(no_idle_cut.left(true) > idle);
        assert!(!no_idle_cut.expired());
        assert_eq!(
            BatchWindow::start(Duration::ZERO, idle).left(true),
            Duration::ZERO
        );
    }
}
