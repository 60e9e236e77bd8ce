//! The event as an Avro value of `topics/events.avsc` (the value schema of the
//! `parsed` and `events` topics). Written out by hand so that the schema, not
//! serde's defaults, decides the shape; a test validates it against the schema.

use std::collections::{BTreeMap, HashMap};

use apache_avro::types::Value;
use apache_avro::Schema;

use crate::{Endpoint, Event};

/// The Avro schema of events, as shipped in `topics/events.avsc`.
pub const EVENT_SCHEMA: &str = include_str!("../../../topics/events.avsc");

/// The parsed schema (panics only if the shipped file is broken, which a test catches).
pub fn event_schema() -> Schema {
    Schema::parse_str(EVENT_SCHEMA).expect("topics/events.avsc is a valid Avro schema")
}

fn record(fields: Vec<(&str, Value)>) -> Value {
    Value::Record(
        fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

/// `["null", T]`: branch 0 for None, 1 for Some.
fn optional<T>(v: Option<T>, f: impl FnOnce(T) -> Value) -> Value {
    match v {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(x) => Value::Union(1, Box::new(f(x))),
    }
}

fn text(v: &Option<String>) -> Value {
    optional(v.clone(), Value::String)
}

fn string_map(m: &BTreeMap<String, String>) -> Value {
    Value::Map(
        m.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect::<HashMap<_, _>>(),
    )
}

fn endpoint(e: &Endpoint) -> Value {
    record(vec![
        ("ip", optional(e.ip, |ip| Value::String(ip.to_string()))),
        ("port", optional(e.port, |p| Value::Int(i32::from(p)))),
        (
            "geo",
            optional(e.geo.as_ref(), |g| {
                record(vec![
                    ("city_name", text(&g.city_name)),
                    ("country_iso_code", text(&g.country_iso_code)),
                    (
                        "location",
                        optional(g.location, |l| {
                            record(vec![
                                ("lat", Value::Double(l.lat)),
                                ("lon", Value::Double(l.lon)),
                            ])
                        }),
                    ),
                ])
            }),
        ),
        (
            "as",
            optional(e.autonomous_system.as_ref(), |a| {
                record(vec![
                    ("number", Value::Long(i64::from(a.number))),
                    ("organization_name", text(&a.organization_name)),
                ])
            }),
        ),
        (
            "asset",
            optional(e.asset.as_ref(), |a| {
                record(vec![
                    ("owner", Value::String(a.owner.clone())),
                    ("zone", Value::String(a.zone.clone())),
                ])
            }),
        ),
    ])
}

fn micros(t: jiff::Timestamp) -> Value {
    Value::TimestampMicros(t.as_microsecond())
}

impl Event {
    /// The event as a value of [`EVENT_SCHEMA`].
    pub fn to_avro(&self) -> Value {
        record(vec![
            ("event_id", Value::Uuid(self.event_id)),
            ("timestamp", micros(self.timestamp)),
            ("received_at", micros(self.received_at)),
            (
                "pipeline_version",
                Value::String(self.pipeline_version.clone()),
            ),
            (
                "origin",
                record(vec![
                    ("source", Value::String(self.origin.source.clone())),
                    ("topic", Value::String(self.origin.topic.clone())),
                    ("partition", Value::Int(self.origin.partition)),
                    ("offset", Value::Long(self.origin.offset)),
                ]),
            ),
            (
                "event",
                record(vec![
                    ("dataset", text(&self.event.dataset)),
                    ("action", text(&self.event.action)),
                    ("outcome", text(&self.event.outcome)),
                    ("code", text(&self.event.code)),
                    ("severity", optional(self.event.severity, Value::Long)),
                ]),
            ),
            (
                "log",
                record(vec![
                    ("level", text(&self.log.level)),
                    ("logger", text(&self.log.logger)),
                ]),
            ),
            ("host", record(vec![("name", text(&self.host.name))])),
            (
                "process",
                record(vec![
                    ("name", text(&self.process.name)),
                    ("pid", optional(self.process.pid, Value::Long)),
                ]),
            ),
            ("user", record(vec![("name", text(&self.user.name))])),
            ("source", endpoint(&self.source)),
            ("destination", endpoint(&self.destination)),
            (
                "http",
                record(vec![
                    ("request_method", text(&self.http.request_method)),
                    (
                        "response_status_code",
                        optional(self.http.response_status_code, |c| Value::Int(i32::from(c))),
                    ),
                ]),
            ),
            ("url", record(vec![("original", text(&self.url.original))])),
            (
                "user_agent",
                record(vec![("original", text(&self.user_agent.original))]),
            ),
            ("message", text(&self.message)),
            (
                "threat",
                optional(self.threat.as_ref(), |t| {
                    record(vec![(
                        "indicator",
                        record(vec![
                            ("type", Value::String(t.indicator.kind.clone())),
                            ("matched", Value::String(t.indicator.matched.clone())),
                            (
                                "matched_field",
                                Value::String(t.indicator.matched_field.clone()),
                            ),
                        ]),
                    )])
                }),
            ),
            ("labels", string_map(&self.labels)),
            ("fields", string_map(&self.fields)),
        ])
    }
}
