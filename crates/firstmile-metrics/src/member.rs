//! Whether a consumer-group member (a stage or sink worker) is making
//! progress: its loop reports each poll and what it waits for, librdkafka's
//! statistics report its group state. `/health/ready` answers false while
//! one is stuck, naming why, and `firstmile_component_group_member_up` says
//! the same to alerts. A member that lost its group (a session timed out, a
//! broker restarted) and does not rejoin, or a loop that stopped polling,
//! is no longer silent. A member that stays out of its group while it polls
//! and the brokers answer is [`Membership::lost`]: its worker ends non-zero
//! so that its orchestrator starts it again with a new consumer.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntGauge};

/// Longer than any wait inside a worker's loop between two polls (a
/// transaction's timeout is 30 s).
pub const POLL_STALL: Duration = Duration::from_secs(60);
/// How long a member may be out of its group (joining, rebalancing) before
/// it counts as stuck: a session timeout (10 s) and a rebalance, with room.
pub const OUT_OF_GROUP: Duration = Duration::from_secs(45);
/// How long a member that polls may stay out of its group while the brokers
/// answer before its worker gives up on its consumer: longer than any
/// rebalance can take (a rebalance waits at most `max.poll.interval.ms`,
/// 300 s by default, for a slow member) plus a session timeout.
pub const GROUP_LOST: Duration = Duration::from_secs(360);
/// Longer than the gap between two statistics reports of a member that
/// polls (every 5 s; librdkafka serves them from the member's poll). A longer
/// gap means the loop did not poll: the out-of-group clock starts again.
const REPORT_GAP: Duration = Duration::from_secs(15);

pub struct Membership {
    /// `stage parse`, `sink timescale`: for what readiness says.
    worker: String,
    group: String,
    up: IntGauge,
    /// `errors_total{error_type="group_lost"}`.
    lost: IntCounter,
    /// Set by a report once the member is lost: the loop reads this on
    /// every poll, without the mutex.
    is_lost: AtomicBool,
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
    /// Since when the member has been out of its group while it polled and
    /// the brokers answered, in an unbroken run of reports.
    out_while_brokers_up: Option<Instant>,
    /// The last report.
    reported: Option<Instant>,
    /// What the loop waits for, if it waits (a dependency's outage).
    waiting_for: Option<String>,
}

impl Membership {
    pub(crate) fn new(worker: String, group: String, up: IntGauge, lost: IntCounter) -> Membership {
        let now = Instant::now();
        up.set(1);
        Membership {
            worker,
            group,
            up,
            lost,
            is_lost: AtomicBool::new(false),
            born: now,
            polled_ms: AtomicU64::new(0),
            state: Mutex::new(State {
                in_group: now,
                group_state: "starting".into(),
                out_while_brokers_up: None,
                reported: None,
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

    /// One statistics report of librdkafka: the group state (`cgrp.state`
    /// and `join_state`, shown by readiness), whether that means the member
    /// is in its group, and whether a broker of the cluster is up.
    pub fn group_state(&self, state: &str, in_group: bool, brokers_up: bool) {
        self.group_state_at(state, in_group, brokers_up, Instant::now());
    }

    fn group_state_at(&self, state: &str, in_group: bool, brokers_up: bool, now: Instant) {
        let mut s = self.state();
        if in_group {
            s.in_group = now;
        }
        let unbroken = s
            .reported
            .is_some_and(|last| now.saturating_duration_since(last) <= REPORT_GAP);
        s.out_while_brokers_up = match (in_group || !brokers_up, s.out_while_brokers_up) {
            (true, _) => None,
            (false, Some(since)) if unbroken => Some(since),
            (false, _) => Some(now),
        };
        s.reported = Some(now);
        s.group_state = state.to_string();
        let lost = s
            .out_while_brokers_up
            .is_some_and(|since| now.saturating_duration_since(since) >= GROUP_LOST);
        drop(s);
        self.is_lost.store(lost, Ordering::Relaxed);
        self.up.set(i64::from(self.stuck().is_none()));
    }

    /// Why the member's consumer should be given up, if it should: it has
    /// been out of its group for [`GROUP_LOST`] although it polled and the
    /// brokers answered all along (a session lost and never regained).
    /// Counted in `errors_total{error_type="group_lost"}`.
    pub fn lost(&self) -> Option<String> {
        if !self.is_lost.load(Ordering::Relaxed) {
            return None;
        }
        let s = self.state();
        let out = s
            .out_while_brokers_up
            .map(|since| Instant::now().saturating_duration_since(since))
            .unwrap_or_default();
        self.lost.inc();
        Some(format!(
            "{} has been out of group {} for {} s while polling and with the brokers up \
             (state: {}); it ends so that it starts again with a new consumer",
            self.worker,
            self.group,
            out.as_secs(),
            s.group_state
        ))
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
            IntCounter::new("lost", "lost").unwrap(),
        )
    }

    /// Reports every 5 s from `from` for `span`, each out of the group.
    fn reports_out(m: &Membership, from: Instant, span: Duration, brokers_up: bool) -> Instant {
        let mut at = from;
        while at < from + span {
            m.group_state_at("up/wait-join", false, brokers_up, at);
            at += Duration::from_secs(5);
        }
        at
    }

    #[test]
    fn a_polling_member_out_of_its_group_with_the_brokers_up_is_lost() {
        let m = membership();
        let start = Instant::now();
        let end = reports_out(&m, start, GROUP_LOST, true);
        assert_eq!(m.lost(), None, "355 s out");
        m.group_state_at("up/wait-join", false, true, end);
        let why = m.lost().unwrap();
        assert!(
            why.contains("stage parse has been out of group g") && why.contains("up/wait-join"),
            "{why}"
        );
        assert_eq!(m.lost.get(), 1);
    }

    #[test]
    fn a_kafka_outage_a_rejoin_or_a_loop_that_did_not_poll_restarts_the_clock() {
        let m = membership();
        let start = Instant::now();
        // Brokers down for most of the time: waited out, not lost.
        let at = reports_out(&m, start, GROUP_LOST, false);
        let at = reports_out(&m, at, Duration::from_secs(60), true);
        m.group_state_at("up/wait-join", false, true, at);
        assert_eq!(m.lost(), None);
        // Back in the group for one report.
        let at = reports_out(&m, at, GROUP_LOST - Duration::from_secs(30), true);
        m.group_state_at("up/steady", true, true, at);
        let at = reports_out(
            &m,
            at + Duration::from_secs(5),
            Duration::from_secs(60),
            true,
        );
        m.group_state_at("up/wait-join", false, true, at);
        assert_eq!(m.lost(), None);
        // A loop that did not poll for a minute (reports come in a burst).
        let at = reports_out(&m, at, GROUP_LOST - Duration::from_secs(30), true);
        let at = reports_out(
            &m,
            at + Duration::from_secs(60),
            Duration::from_secs(60),
            true,
        );
        m.group_state_at("up/wait-join", false, true, at);
        assert_eq!(m.lost(), None);
        assert_eq!(m.lost.get(), 0);
    }

    #[test]
    fn a_member_out_of_its_group_too_long_is_stuck_until_it_rejoins() {
        let m = membership();
        let start = Instant::now();
        assert_eq!(m.stuck_at(start), None);
        m.group_state_at("up/wait-join", false, true, start);
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
