//! The event as an Avro value of `topics/events.avsc` (the value schema of the
//! `parsed` and `events` topics). Written out by hand so that the schema, not
//! serde's defaults, decides the shape; a test validates it against the schema.

use std::collections::{BTreeMap, HashMap};

use apache_avro::types::Value;
use apache_avro::Schema;

use crate::{
    Asset, AutonomousSystem, Endpoint, Event, EventInfo, Geo, GeoPoint, Host, Http, Log, Origin,
    Process, Threat, ThreatIndicator, Url, User, UserAgent,
};

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
            (
                "raw_bytes",
                Value::Long(i64::try_from(self.raw_bytes).unwrap_or(i64::MAX)),
            ),
        ])
    }
}

/// An Avro value that is not an event of [`EVENT_SCHEMA`]'s shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an event: {0}")]
pub struct FromAvroError(pub(crate) String);

type Fields<'a> = &'a [(String, Value)];

fn fields<'a>(v: &'a Value, what: &str) -> Result<Fields<'a>, FromAvroError> {
    match v {
        Value::Record(f) => Ok(f),
        other => Err(FromAvroError(format!("{what} is not a record: {other:?}"))),
    }
}

fn get<'a>(f: Fields<'a>, name: &str) -> Result<&'a Value, FromAvroError> {
    f.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
        .ok_or_else(|| FromAvroError(format!("no field `{name}`")))
}

/// The value inside a `["null", T]` union; `None` for null or a missing field
/// (a writer older than the field).
fn present<'a>(f: Fields<'a>, name: &str) -> Option<&'a Value> {
    match f.iter().find(|(n, _)| n == name).map(|(_, v)| v)? {
        Value::Union(_, inner) => match inner.as_ref() {
            Value::Null => None,
            v => Some(v),
        },
        Value::Null => None,
        v => Some(v),
    }
}

fn as_str<'a>(v: &'a Value, name: &str) -> Result<&'a str, FromAvroError> {
    match v {
        Value::String(s) => Ok(s),
        other => Err(FromAvroError(format!(
            "`{name}` is not a string: {other:?}"
        ))),
    }
}

fn as_long(v: &Value, name: &str) -> Result<i64, FromAvroError> {
    match v {
        Value::Long(n) => Ok(*n),
        Value::Int(n) => Ok(i64::from(*n)),
        other => Err(FromAvroError(format!(
            "`{name}` is not a number: {other:?}"
        ))),
    }
}

fn opt_text(f: Fields<'_>, name: &str) -> Result<Option<String>, FromAvroError> {
    present(f, name)
        .map(|v| as_str(v, name).map(str::to_string))
        .transpose()
}

fn opt_long(f: Fields<'_>, name: &str) -> Result<Option<i64>, FromAvroError> {
    present(f, name).map(|v| as_long(v, name)).transpose()
}

fn text_field(f: Fields<'_>, name: &str) -> Result<String, FromAvroError> {
    as_str(get(f, name)?, name).map(str::to_string)
}

fn sub<'a>(f: Fields<'a>, name: &str) -> Result<Fields<'a>, FromAvroError> {
    fields(get(f, name)?, name)
}

fn timestamp(v: &Value, name: &str) -> Result<jiff::Timestamp, FromAvroError> {
    let micros = match v {
        Value::TimestampMicros(m) | Value::Long(m) => *m,
        Value::TimestampMillis(m) => m.saturating_mul(1000),
        other => return Err(FromAvroError(format!("`{name}` is not a time: {other:?}"))),
    };
    jiff::Timestamp::from_microsecond(micros).map_err(|e| FromAvroError(format!("`{name}`: {e}")))
}

fn string_map_of(v: Option<&Value>, name: &str) -> Result<BTreeMap<String, String>, FromAvroError> {
    match v {
        None => Ok(BTreeMap::new()),
        Some(Value::Map(m)) => m
            .iter()
            .map(|(k, v)| Ok((k.clone(), as_str(v, name)?.to_string())))
            .collect(),
        Some(other) => Err(FromAvroError(format!("`{name}` is not a map: {other:?}"))),
    }
}

fn opt_u16(f: Fields<'_>, name: &str) -> Result<Option<u16>, FromAvroError> {
    opt_long(f, name)?
        .map(|n| u16::try_from(n).map_err(|_| FromAvroError(format!("`{name}` {n} out of range"))))
        .transpose()
}

fn endpoint_of(f: Fields<'_>) -> Result<Endpoint, FromAvroError> {
    let ip = opt_text(f, "ip")?
        .map(|s| {
            s.parse()
                .map_err(|_| FromAvroError(format!("`ip` {s:?} is not an IP address")))
        })
        .transpose()?;
    let geo = present(f, "geo")
        .map(|g| -> Result<Geo, FromAvroError> {
            let g = fields(g, "geo")?;
            let location = present(g, "location")
                .map(|l| -> Result<GeoPoint, FromAvroError> {
                    let l = fields(l, "location")?;
                    let coordinate = |name| match get(l, name)? {
                        Value::Double(x) => Ok(*x),
                        other => Err(FromAvroError(format!(
                            "`{name}` is not a double: {other:?}"
                        ))),
                    };
                    Ok(GeoPoint {
                        lat: coordinate("lat")?,
                        lon: coordinate("lon")?,
                    })
                })
                .transpose()?;
            Ok(Geo {
                city_name: opt_text(g, "city_name")?,
                country_iso_code: opt_text(g, "country_iso_code")?,
                location,
            })
        })
        .transpose()?;
    let autonomous_system = present(f, "as")
        .map(|a| -> Result<AutonomousSystem, FromAvroError> {
            let a = fields(a, "as")?;
            let number = as_long(get(a, "number")?, "number")?;
            Ok(AutonomousSystem {
                number: u32::try_from(number)
                    .map_err(|_| FromAvroError(format!("AS number {number} out of range")))?,
                organization_name: opt_text(a, "organization_name")?,
            })
        })
        .transpose()?;
    let asset = present(f, "asset")
        .map(|a| -> Result<Asset, FromAvroError> {
            let a = fields(a, "asset")?;
            Ok(Asset {
                owner: text_field(a, "owner")?,
                zone: text_field(a, "zone")?,
            })
        })
        .transpose()?;
    Ok(Endpoint {
        ip,
        port: opt_u16(f, "port")?,
        geo,
        autonomous_system,
        asset,
    })
}

impl Event {
    /// The event in an Avro value of [`EVENT_SCHEMA`] (as decoded with it as
    /// the reader schema).
    pub fn from_avro(value: &Value) -> Result<Event, FromAvroError> {
        let f = fields(value, "event")?;
        let event_id = match get(f, "event_id")? {
            Value::Uuid(u) => *u,
            Value::String(s) => s
                .parse()
                .map_err(|_| FromAvroError(format!("`event_id` {s:?} is not a UUID")))?,
            other => return Err(FromAvroError(format!("`event_id`: {other:?}"))),
        };
        let origin = sub(f, "origin")?;
        let partition = as_long(get(origin, "partition")?, "partition")?;
        let info = sub(f, "event")?;
        let log = sub(f, "log")?;
        let process = sub(f, "process")?;
        let http = sub(f, "http")?;
        let threat = present(f, "threat")
            .map(|t| -> Result<Threat, FromAvroError> {
                let i = sub(fields(t, "threat")?, "indicator")?;
                Ok(Threat {
                    indicator: ThreatIndicator {
                        kind: text_field(i, "type")?,
                        matched: text_field(i, "matched")?,
                        matched_field: text_field(i, "matched_field")?,
                    },
                })
            })
            .transpose()?;
        Ok(Event {
            event_id,
            timestamp: timestamp(get(f, "timestamp")?, "timestamp")?,
            received_at: timestamp(get(f, "received_at")?, "received_at")?,
            pipeline_version: text_field(f, "pipeline_version")?,
            origin: Origin {
                source: text_field(origin, "source")?,
                topic: text_field(origin, "topic")?,
                partition: i32::try_from(partition)
                    .map_err(|_| FromAvroError(format!("partition {partition} out of range")))?,
                offset: as_long(get(origin, "offset")?, "offset")?,
            },
            event: EventInfo {
                dataset: opt_text(info, "dataset")?,
                action: opt_text(info, "action")?,
                outcome: opt_text(info, "outcome")?,
                code: opt_text(info, "code")?,
                severity: opt_long(info, "severity")?,
            },
            log: Log {
                level: opt_text(log, "level")?,
                logger: opt_text(log, "logger")?,
            },
            host: Host {
                name: opt_text(sub(f, "host")?, "name")?,
            },
            process: Process {
                name: opt_text(process, "name")?,
                pid: opt_long(process, "pid")?,
            },
            user: User {
                name: opt_text(sub(f, "user")?, "name")?,
            },
            source: endpoint_of(sub(f, "source")?)?,
            destination: endpoint_of(sub(f, "destination")?)?,
            http: Http {
                request_method: opt_text(http, "request_method")?,
                response_status_code: opt_u16(http, "response_status_code")?,
            },
            url: Url {
                original: opt_text(sub(f, "url")?, "original")?,
            },
            user_agent: UserAgent {
                original: opt_text(sub(f, "user_agent")?, "original")?,
            },
            message: opt_text(f, "message")?,
            threat,
            labels: string_map_of(
                f.iter().find(|(n, _)| n == "labels").map(|(_, v)| v),
                "labels",
            )?,
            fields: string_map_of(
                f.iter().find(|(n, _)| n == "fields").map(|(_, v)| v),
                "fields",
            )?,
            // Absent from events written before the field existed.
            raw_bytes: match f.iter().find(|(n, _)| n == "raw_bytes") {
                Some((_, v)) => u64::try_from(as_long(v, "raw_bytes")?).unwrap_or(0),
                None => 0,
            },
        })
    }
}
