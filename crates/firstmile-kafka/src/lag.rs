//! Consumer lag per assigned partition, from librdkafka's statistics (every
//! `statistics.interval.ms`, 5 s unless configured), as
//! `firstmile_component_consumer_lag_records`.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use firstmile_metrics::{Component, Membership};
use rdkafka::client::ClientContext;
use rdkafka::consumer::ConsumerContext;
use rdkafka::{ClientConfig, Statistics};

/// How often librdkafka reports, unless `[kafka]` properties say otherwise.
const STATISTICS_INTERVAL_MS: &str = "5000";

/// Turns on the statistics the lag is read from.
pub fn enable_statistics(config: &mut ClientConfig) {
    if config.get("statistics.interval.ms").is_none() {
        config.set("statistics.interval.ms", STATISTICS_INTERVAL_MS);
    }
}

/// Records the lag of a consumer group member's partitions, and its group
/// state for readiness ([`Membership`]). Also a consumer context of its own,
/// for consumers that need nothing else.
pub struct ConsumerLag {
    component: Option<Component>,
    membership: Option<Arc<Membership>>,
    group: String,
    /// Partitions with a lag reported, to forget those no longer assigned.
    reported: Mutex<BTreeSet<(String, i32)>>,
}

impl ConsumerLag {
    pub fn new(component: Option<Component>, group: &str) -> ConsumerLag {
        ConsumerLag {
            membership: component.as_ref().map(|c| c.membership(group)),
            component,
            group: group.to_string(),
            reported: Mutex::new(BTreeSet::new()),
        }
    }

    /// The member's loop polled its consumer (readiness: it is not stuck).
    /// `Err`: the member has been out of its group too long although it
    /// polls and the brokers answer ([`Membership::lost`]); its worker ends,
    /// and its orchestrator starts it again with a new consumer.
    pub fn polled(&self) -> Result<(), String> {
        match &self.membership {
            Some(m) => {
                m.polled();
                m.lost().map_or(Ok(()), Err)
            }
            None => Ok(()),
        }
    }

    /// Where the member's loop says what it waits for.
    pub fn membership(&self) -> Option<&Arc<Membership>> {
        self.membership.as_ref()
    }

    /// Updates the gauges from one statistics report.
    pub fn record(&self, statistics: &Statistics) {
        let Some(component) = &self.component else {
            return;
        };
        if let (Some(m), Some(group)) = (&self.membership, &statistics.cgrp) {
            // Joining, or waiting for the group's assignment: out of it.
            let rejoining = matches!(
                group.join_state.as_str(),
                "init" | "wait-join" | "wait-metadata" | "wait-sync"
            );
            let in_group = group.state == "up" && !rejoining;
            // Brokers learned from the cluster (not bootstrap or internal
            // entries, nodeid -1) that are connected.
            let brokers_up = statistics
                .brokers
                .values()
                .any(|b| b.nodeid >= 0 && b.state == "UP");
            let state = format!("{}/{}", group.state, group.join_state);
            m.group_state(&state, in_group, brokers_up);
        }
        let mut now = BTreeSet::new();
        for (topic, t) in &statistics.topics {
            for (&partition, p) in &t.partitions {
                // -1 is librdkafka's internal "unassigned" partition; a lag
                // of -1 means unknown (not assigned, or no offsets yet).
                // The lag after the stored offset (the position the member
                // has read to): stages commit inside transactions, through
                // the producer, so the consumer's own committed offset never
                // moves; the sinks commit right after reading anyway.
                let lag = if p.consumer_lag_stored >= 0 {
                    p.consumer_lag_stored
                } else if p.consumer_lag >= 0 {
                    p.consumer_lag
                } else if p.hi_offset >= 0 && p.hi_offset == p.lo_offset {
                    // Nothing read because there is nothing to read.
                    0
                } else {
                    -1
                };
                if partition < 0 || lag < 0 || p.fetch_state == "none" {
                    continue;
                }
                component.consumer_lag(&self.group, topic, partition, lag);
                now.insert((topic.clone(), partition));
            }
        }
        let mut reported = self.reported.lock().unwrap_or_else(|e| e.into_inner());
        for (topic, partition) in reported.difference(&now) {
            component.forget_consumer_lag(&self.group, topic, *partition);
        }
        *reported = now;
    }
}

impl ClientContext for ConsumerLag {
    fn stats(&self, statistics: Statistics) {
        self.record(&statistics);
    }
}

impl ConsumerContext for ConsumerLag {}
