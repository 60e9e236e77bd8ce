//! Metrics for every firstmile role under one naming scheme (see ARCHITECTURE.md,
//! "Observability conventions"): `firstmile_component_*` families labelled by
//! `component_kind`, `component_id` and, where an event has one, `source`.
//!
//! A role creates one [`Metrics`], hands a [`Component`] to each of its parts,
//! and serves [`serve`] on `[metrics] listen`.

mod member;
mod server;

use std::sync::{Arc, Mutex};

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub use member::{Membership, OUT_OF_GROUP, POLL_STALL};
pub use server::{serve, Endpoint, Readiness};

/// What a component is, for the `component_kind` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Receiver,
    Stage,
    Sink,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Receiver => "receiver",
            Kind::Stage => "stage",
            Kind::Sink => "sink",
        }
    }
}

/// The registry of one process and its metric families.
pub struct Metrics {
    registry: Registry,
    received_events: IntCounterVec,
    received_bytes: IntCounterVec,
    sent_events: IntCounterVec,
    sent_bytes: IntCounterVec,
    errors: IntCounterVec,
    discarded_events: IntCounterVec,
    rejected: IntCounterVec,
    in_flight_bytes: IntGaugeVec,
    delivery_latency: HistogramVec,
    transactions: IntCounterVec,
    batch_events: HistogramVec,
    write_duration: HistogramVec,
    end_to_end_latency: HistogramVec,
    consumer_lag: IntGaugeVec,
    group_member_up: IntGaugeVec,
    /// The process's group members, for `/health/ready`.
    members: Mutex<Vec<Arc<Membership>>>,
}

/// Latency buckets: a millisecond to a minute.
const SECONDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

const COMPONENT: &[&str] = &["component_kind", "component_id"];

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let registry = Registry::new();
        let with = |extra: &[&'static str]| -> Vec<&'static str> {
            COMPONENT.iter().chain(extra).copied().collect()
        };
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let received_events = counter(
            "firstmile_component_received_events_total",
            "Events a component received.",
            &with(&["source"]),
        );
        let received_bytes = counter(
            "firstmile_component_received_bytes_total",
            "Bytes of the events a component received.",
            &with(&["source"]),
        );
        let sent_events = counter(
            "firstmile_component_sent_events_total",
            "Events a component handed on and had acknowledged (Kafka, a database).",
            &with(&["source"]),
        );
        let sent_bytes = counter(
            "firstmile_component_sent_bytes_total",
            "Bytes of the events a component handed on and had acknowledged.",
            &with(&["source"]),
        );
        let errors = counter(
            "firstmile_component_errors_total",
            "Errors a component met, by type.",
            &with(&["error_type"]),
        );
        let discarded_events = counter(
            "firstmile_component_discarded_events_total",
            "Events a component dropped on purpose, by reason.",
            &with(&["source", "reason"]),
        );
        let rejected = counter(
            "firstmile_component_rejected_total",
            "Requests, connections or datagrams a component refused, by reason.",
            &with(&["reason"]),
        );
        let in_flight_bytes = IntGaugeVec::new(
            Opts::new(
                "firstmile_component_in_flight_bytes",
                "Bytes received and not yet acknowledged downstream.",
            ),
            COMPONENT,
        )
        .expect("valid metric");
        registry
            .register(Box::new(in_flight_bytes.clone()))
            .expect("unique metric");
        let delivery_latency = HistogramVec::new(
            HistogramOpts::new(
                "firstmile_component_delivery_latency_seconds",
                "Time from handing an event downstream to its acknowledgment.",
            )
            .buckets(SECONDS.to_vec()),
            COMPONENT,
        )
        .expect("valid metric");
        registry
            .register(Box::new(delivery_latency.clone()))
            .expect("unique metric");
        let transactions = counter(
            "firstmile_component_transactions_total",
            "Kafka transactions a stage ended, by outcome (committed, aborted).",
            &with(&["outcome"]),
        );
        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                COMPONENT,
            )
            .expect("valid metric");
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric");
            h
        };
        let batch_events = histogram(
            "firstmile_component_batch_events",
            "Events per batch a stage or sink wrote.",
            &[
                1.0, 10.0, 100.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 50000.0,
            ],
        );
        let write_duration = histogram(
            "firstmile_component_write_duration_seconds",
            "Time to write one batch: a stage's transaction, a sink's write to its target.",
            SECONDS,
        );
        let end_to_end_latency = histogram(
            "firstmile_component_end_to_end_latency_seconds",
            "Time from an event's received_at (its raw record reaching Kafka) to the sink's commit.",
            SECONDS,
        );
        let consumer_lag = IntGaugeVec::new(
            Opts::new(
                "firstmile_component_consumer_lag_records",
                "Records in an assigned partition after the group's position (librdkafka statistics).",
            ),
            &with(&["group", "topic", "partition"]),
        )
        .expect("valid metric");
        registry
            .register(Box::new(consumer_lag.clone()))
            .expect("unique metric");
        let group_member_up = IntGaugeVec::new(
            Opts::new(
                "firstmile_component_group_member_up",
                "1 while a consumer-group member makes progress: in its group, polling, \
                 waiting for no dependency (else /health/ready says why).",
            ),
            &with(&["group"]),
        )
        .expect("valid metric");
        registry
            .register(Box::new(group_member_up.clone()))
            .expect("unique metric");
        Arc::new(Metrics {
            registry,
            received_events,
            received_bytes,
            sent_events,
            sent_bytes,
            errors,
            discarded_events,
            rejected,
            in_flight_bytes,
            delivery_latency,
            transactions,
            batch_events,
            write_duration,
            end_to_end_latency,
            consumer_lag,
            group_member_up,
            members: Mutex::new(Vec::new()),
        })
    }

    /// Why a group member of this process makes no progress, for each that
    /// makes none.
    pub fn stuck_members(&self) -> Vec<String> {
        let members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        members.iter().filter_map(|m| m.stuck()).collect()
    }

    /// The handle a component records its metrics through.
    pub fn component(self: &Arc<Self>, kind: Kind, id: &str) -> Component {
        Component {
            metrics: Arc::clone(self),
            kind,
            id: id.to_string(),
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = Vec::new();
        // Encoding our own well-formed families into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

/// The label sets a component knows at its start. [`Component::declare`]
/// exports them at zero, so an alert (`rate(…discarded…[5m]) > 0`) or a
/// dashboard panel has a series to read before the first event arrives.
#[derive(Debug, Clone, Default)]
pub struct KnownLabels {
    /// Sources the component receives and sends for.
    pub sources: Vec<String>,
    /// `errors_total{error_type}`.
    pub errors: Vec<String>,
    /// `discarded_events_total{source, reason}`.
    pub discarded: Vec<(String, String)>,
    /// `rejected_total{reason}`.
    pub rejected: Vec<String>,
}

/// One component's view of the metrics: the kind and id labels filled in.
#[derive(Clone)]
pub struct Component {
    metrics: Arc<Metrics>,
    kind: Kind,
    id: String,
}

impl Component {
    fn labels<'a>(&'a self, extra: &[&'a str]) -> Vec<&'a str> {
        let mut l = vec![self.kind.as_str(), self.id.as_str()];
        l.extend_from_slice(extra);
        l
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The component's membership of consumer group `group`, watched by
    /// `/health/ready` from now on.
    pub fn membership(&self, group: &str) -> Arc<Membership> {
        let m = &self.metrics;
        let up = m.group_member_up.with_label_values(&self.labels(&[group]));
        let lost = m.errors.with_label_values(&self.labels(&["group_lost"]));
        let worker = format!("{} {}", self.kind.as_str(), self.id);
        let membership = Arc::new(Membership::new(worker, group.to_string(), up, lost));
        m.members
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::clone(&membership));
        membership
    }

    /// Creates the component's series at zero: the label sets it knows,
    /// and the families of its kind that have no label of their own
    /// (transactions of a stage, batch and latency histograms, in-flight
    /// bytes of a receiver).
    pub fn declare(&self, known: &KnownLabels) {
        let m = &self.metrics;
        for source in &known.sources {
            let l = self.labels(&[source]);
            for family in [
                &m.received_events,
                &m.received_bytes,
                &m.sent_events,
                &m.sent_bytes,
            ] {
                family.with_label_values(&l);
            }
        }
        for error_type in &known.errors {
            m.errors.with_label_values(&self.labels(&[error_type]));
        }
        for (source, reason) in &known.discarded {
            m.discarded_events
                .with_label_values(&self.labels(&[source, reason]));
        }
        for reason in &known.rejected {
            m.rejected.with_label_values(&self.labels(&[reason]));
        }
        let l = self.labels(&[]);
        match self.kind {
            Kind::Receiver => {
                m.in_flight_bytes.with_label_values(&l);
                m.delivery_latency.with_label_values(&l);
            }
            Kind::Stage => {
                for outcome in ["committed", "aborted"] {
                    m.transactions.with_label_values(&self.labels(&[outcome]));
                }
                m.batch_events.with_label_values(&l);
                m.write_duration.with_label_values(&l);
            }
            Kind::Sink => {
                m.batch_events.with_label_values(&l);
                m.write_duration.with_label_values(&l);
                m.end_to_end_latency.with_label_values(&l);
            }
        }
    }

    pub fn received(&self, source: &str, events: u64, bytes: u64) {
        let l = self.labels(&[source]);
        self.metrics
            .received_events
            .with_label_values(&l)
            .inc_by(events);
        self.metrics
            .received_bytes
            .with_label_values(&l)
            .inc_by(bytes);
    }

    pub fn sent(&self, source: &str, events: u64, bytes: u64) {
        let l = self.labels(&[source]);
        self.metrics
            .sent_events
            .with_label_values(&l)
            .inc_by(events);
        self.metrics.sent_bytes.with_label_values(&l).inc_by(bytes);
    }

    pub fn error(&self, error_type: &str) {
        self.metrics
            .errors
            .with_label_values(&self.labels(&[error_type]))
            .inc();
    }

    pub fn discarded(&self, source: &str, reason: &str, events: u64) {
        self.metrics
            .discarded_events
            .with_label_values(&self.labels(&[source, reason]))
            .inc_by(events);
    }

    pub fn rejected(&self, reason: &str) {
        self.metrics
            .rejected
            .with_label_values(&self.labels(&[reason]))
            .inc();
    }

    pub fn add_in_flight_bytes(&self, delta: i64) {
        self.metrics
            .in_flight_bytes
            .with_label_values(&self.labels(&[]))
            .add(delta);
    }

    /// The delivery-latency histogram itself, for recording many events
    /// without a label lookup each.
    pub fn delivery_latency_histogram(&self) -> prometheus::Histogram {
        self.metrics
            .delivery_latency
            .with_label_values(&self.labels(&[]))
    }

    pub fn delivery_latency(&self, seconds: f64) {
        self.metrics
            .delivery_latency
            .with_label_values(&self.labels(&[]))
            .observe(seconds);
    }

    /// A stage's transaction ended: committed or aborted.
    pub fn transaction(&self, committed: bool) {
        let outcome = if committed { "committed" } else { "aborted" };
        self.metrics
            .transactions
            .with_label_values(&self.labels(&[outcome]))
            .inc();
    }

    /// A batch of `events` was written in `seconds`.
    pub fn batch_written(&self, events: usize, seconds: f64) {
        let l = self.labels(&[]);
        self.metrics
            .batch_events
            .with_label_values(&l)
            .observe(events as f64);
        self.metrics
            .write_duration
            .with_label_values(&l)
            .observe(seconds);
    }

    /// The end-to-end latency histogram, for recording a batch's events
    /// without a label lookup each.
    pub fn end_to_end_latency_histogram(&self) -> prometheus::Histogram {
        self.metrics
            .end_to_end_latency
            .with_label_values(&self.labels(&[]))
    }

    /// The consumer lag of one assigned partition.
    pub fn consumer_lag(&self, group: &str, topic: &str, partition: i32, lag: i64) {
        let partition = partition.to_string();
        self.metrics
            .consumer_lag
            .with_label_values(&self.labels(&[group, topic, &partition]))
            .set(lag);
    }

    /// Stops reporting the lag of a partition no longer assigned here.
    pub fn forget_consumer_lag(&self, group: &str, topic: &str, partition: i32) {
        let partition = partition.to_string();
        let _ = self
            .metrics
            .consumer_lag
            .remove_label_values(&self.labels(&[group, topic, &partition]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_declared_component_exports_its_known_series_at_zero() {
        let metrics = Metrics::new();
        let c = metrics.component(Kind::Stage, "parse");
        assert!(!metrics.encode().contains("component_id=\"parse\""));
        c.declare(&KnownLabels {
            sources: vec!["linux".into()],
            errors: vec!["dependency_unavailable".into()],
            discarded: vec![("linux".into(), "dlq_no_match".into())],
            rejected: Vec::new(),
        });
        let text = metrics.encode();
        for series in [
            "firstmile_component_received_events_total{component_id=\"parse\",component_kind=\"stage\",source=\"linux\"} 0",
            "firstmile_component_sent_bytes_total{component_id=\"parse\",component_kind=\"stage\",source=\"linux\"} 0",
            "firstmile_component_errors_total{component_id=\"parse\",component_kind=\"stage\",error_type=\"dependency_unavailable\"} 0",
            "firstmile_component_discarded_events_total{component_id=\"parse\",component_kind=\"stage\",reason=\"dlq_no_match\",source=\"linux\"} 0",
            "firstmile_component_transactions_total{component_id=\"parse\",component_kind=\"stage\",outcome=\"aborted\"} 0",
            "firstmile_component_write_duration_seconds_count{component_id=\"parse\",component_kind=\"stage\"} 0",
        ] {
            assert!(text.contains(series), "{series} missing from:\n{text}");
        }
        assert!(
            !text.contains("firstmile_component_end_to_end_latency_seconds_count"),
            "a stage has no end-to-end latency"
        );
    }
}
