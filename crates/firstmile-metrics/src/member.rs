//! Whether a consumer-group member (a stage or sink worker) is making
//! progress: its loop reports each poll and what it waits for, librdkafka's
//! statistics report its group state. `/health/ready` answers false while
//! one is stuck, naming why, and `firstmile_component_group_member_up` says
//! the same to alerts. A member that lost its group (a session timed out, a
//! broker restarted) and does not rejoin, or a loop that stopped polling,
//! is no longer silent.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus::IntGauge;

/// Longer than any wait inside a worker's loop between two polls (a
/// transaction's timeout is 30 s).
pub const POLL_STALL: Duration = Duration::from_secs(60);
/// How long a member may be out of its group (joining, rebalancing) before
/// it counts as stuck: a session timeout (10 s) and a rebalance, with room.
pub const OUT_OF_GROUP: Duration = Duration::from_secs(45);

pub struct Membership {
    /// `stage parse`, `sink timescale`: for what readiness says.
    worker: String,
    group: String,
    up: IntGauge,
    /// When the member was made: `polled_ms` counts from it.
    born: Instant,
    /// Milliseconds from `born` to the last poll. An atomic, not part of
    /// `state`: a stage reports a poll for every record.
    polled_ms: AtomicU64,
    state: Mutex<State>,
}

struct State {
    /// Last time librdkafka said the member was in its group (or the start).
    in_group: Instant,
    /// librdkafka's group state when it was last reported.
    group_state: String,
    /// What the loop waits for, if it waits (a dependency's outage).
    waiting_for: Option<String>,
}

impl Membership {
    pub(crate) fn new(worker: String, group: String, up: IntGauge) -> Membership {
        let now = Instant::now();
        up.set(1);
        Membership {
            worker,
            group,
            up,
            born: now,
            polled_ms: AtomicU64::new(0),
            state: Mutex::new(State {
                in_group: now,
                group_state: "starting".into(),
                waiting_for: None,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The loop polled its consumer.
    pub fn polled(&self) {
        self.polled_at(Instant::now());
    }

    fn polled_at(&self, at: Instant) {
        let ms = at.saturating_duration_since(self.born).as_millis();
        self.polled_ms
            .store(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// librdkafka's group state (`cgrp.state`): `up` is a member.
    pub fn group_state(&self, state: &str) {
        let mut s = self.state();
        if state == "up" {
            s.in_group = Instant::now();
        }
        s.group_state = state.to_string();
        drop(s);
        self.up.set(i64::from(self.stuck().is_none()));
    }

    /// The loop waits for a dependency (`None`: it no longer does).
    pub fn waiting_for(&self, what: Option<String>) {
        self.state().waiting_for = what;
        self.up.set(i64::from(self.stuck().is_none()));
    }

    /// Why the member makes no progress, if it makes none.
    pub fn stuck(&self) -> Option<String> {
        self.stuck_at(Instant::now())
    }

    fn stuck_at(&self, now: Instant) -> Option<String> {
        let s = self.state();
        let (worker, group) = (&self.worker, &self.group);
        if let Some(what) = &s.waiting_for {
            return Some(format!("{worker} is waiting for {what}"));
        }
        let polled = self.born + Duration::from_millis(self.polled_ms.load(Ordering::Relaxed));
        let since_poll = now.saturating_duration_since(polled);
        if since_poll > POLL_STALL {
            return Some(format!(
                "{worker} has not polled Kafka for {} s",
                since_poll.as_secs()
            ));
        }
        let out = now.saturating_duration_since(s.in_group);
        if out > OUT_OF_GROUP {
            return Some(format!(
                "{worker} has not been a member of group {group} for {} s (state: {})",
                out.as_secs(),
                s.group_state
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn membership() -> Membership {
        Membership::new(
            "stage parse".into(),
            "g".into(),
            IntGauge::new("up", "up").unwrap(),
        )
    }

    #[test]
    fn a_member_out_of_its_group_too_long_is_stuck_until_it_rejoins() {
        let m = membership();
        let start = Instant::now();
        assert_eq!(m.stuck_at(start), None);
        m.group_state("wait-join");
        // Polling, but never back in the group.
        let later = start + OUT_OF_GROUP + Duration::from_secs(1);
        m.polled_at(later);
        let why = m.stuck_at(later).unwrap();
        assert!(
            why.contains("has not been a member of group g") && why.contains("wait-join"),
            "{why}"
        );
        m.state().in_group = later;
        assert_eq!(m.stuck_at(later), None);
    }

    #[test]
    fn a_loop_that_stops_polling_or_waits_is_stuck() {
        let m = membership();
        let late = Instant::now() + POLL_STALL + Duration::from_secs(1);
        m.state().in_group = late;
        assert!(m.stuck_at(late).unwrap().contains("has not polled Kafka"));
        m.polled_at(late);
        assert_eq!(m.stuck_at(late), None);
        m.waiting_for(Some("the schema registry: refused".into()));
        assert_eq!(
            m.stuck_at(late).as_deref(),
            Some("stage parse is waiting for the schema registry: refused")
        );
        assert_eq!(m.up.get(), 0);
        m.waiting_for(None);
        assert_eq!(m.up.get(), 1);
    }
}
