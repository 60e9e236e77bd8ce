//! The normalized event every source becomes: Elastic Common Schema names
//! (`@timestamp`, `event.dataset`, `log.level`, `host.name`, `process.*`,
//! `user.name`, `source.ip/port`, `destination.ip/port`, `http.*`, `url.*`,
//! `user_agent.original`, `message`, `labels`), a map of the remaining parsed
//! fields, and where the event came from (`origin`: source, raw topic,
//! partition, offset), when it was received, and which pipeline made it.
//!
//! [`event_id`] is a UUIDv5 of the raw record's coordinates, so reprocessing
//! the same raw record (a redelivery, a replay) yields the same id, and sinks
//! upsert instead of duplicating. Pure logic.

mod avro;
mod datum;
mod dead_letter;
mod mapping;

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::Serialize;
use uuid::Uuid;

pub use avro::{event_schema, FromAvroError, EVENT_SCHEMA};
pub use dead_letter::DeadLetterKind;
pub use mapping::{from_fields, MappingError};

/// Namespace of firstmile's event ids (a fixed, random UUID).
const EVENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6b1f_3c2e_9a4d_4e0b_8f51_2c7d_0e93_a4b6);

/// The stable id of the event made from the raw record at these coordinates.
pub fn event_id(topic: &str, partition: i32, offset: i64) -> Uuid {
    Uuid::new_v5(
        &EVENT_ID_NAMESPACE,
        format!("{topic}/{partition}/{offset}").as_bytes(),
    )
}

/// Where an event came from: the raw record it was made of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Origin {
    pub source: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EventInfo {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Log {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logger: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Host {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Process {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct User {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `source` or `destination` of a network event, with what enrichment found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Endpoint {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<std::net::IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub geo: Option<Geo>,
    /// ECS `as`: the autonomous system.
    #[serde(rename = "as", skip_serializing_if = "Option::is_none")]
    pub autonomous_system: Option<AutonomousSystem>,
    /// The owner and zone of the address from the asset table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asset: Option<Asset>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Geo {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub city_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country_iso_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<GeoPoint>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct GeoPoint {
    pub lat: f64,
    pub lon: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AutonomousSystem {
    pub number: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization_name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Asset {
    pub owner: String,
    pub zone: String,
}

/// ECS `threat.indicator`: the event touched a listed indicator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Threat {
    pub indicator: ThreatIndicator,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ThreatIndicator {
    /// `ipv4-addr`, `ipv6-addr` or `domain-name` (ECS/STIX names).
    #[serde(rename = "type")]
    pub kind: String,
    /// The listed value that matched.
    pub matched: String,
    /// The event field it was found in, e.g. `source.ip`.
    pub matched_field: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Http {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_status_code: Option<u16>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Url {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UserAgent {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original: Option<String>,
}

/// The normalized event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub event_id: Uuid,
    /// ECS `@timestamp`: when the event happened (the parsed time, else when it
    /// was received).
    #[serde(rename = "@timestamp")]
    pub timestamp: Timestamp,
    /// When the raw record reached Kafka; never changes on reprocessing.
    pub received_at: Timestamp,
    pub pipeline_version: String,
    pub origin: Origin,
    pub event: EventInfo,
    pub log: Log,
    pub host: Host,
    pub process: Process,
    pub user: User,
    pub source: Endpoint,
    pub destination: Endpoint,
    pub http: Http,
    pub url: Url,
    pub user_agent: UserAgent,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threat: Option<Threat>,
    pub labels: BTreeMap<String, String>,
    /// Parsed fields without a place above, by their parsed names.
    pub fields: BTreeMap<String, String>,
    /// Size of the raw record's value: what the source costs to carry and keep.
    pub raw_bytes: u64,
}

impl Event {
    /// An event with nothing parsed yet.
    pub fn new(origin: Origin, received_at: Timestamp, pipeline_version: &str) -> Event {
        Event {
            event_id: event_id(&origin.topic, origin.partition, origin.offset),
            timestamp: received_at,
            received_at,
            pipeline_version: pipeline_version.to_string(),
            origin,
            event: EventInfo::default(),
            log: Log::default(),
            host: Host::default(),
            process: Process::default(),
            user: User::default(),
            source: Endpoint::default(),
            destination: Endpoint::default(),
            http: Http::default(),
            url: Url::default(),
            user_agent: UserAgent::default(),
            message: None,
            threat: None,
            labels: BTreeMap::new(),
            fields: BTreeMap::new(),
            raw_bytes: 0,
        }
    }

    /// The value at an event path (`log.level`, `source.ip`, a parsed field's
    /// name, `labels.team`), as text; for rules written in the configuration.
    pub fn get(&self, path: &str) -> Option<String> {
        let s = |v: &Option<String>| v.clone();
        match path {
            "message" => s(&self.message),
            "event.dataset" => s(&self.event.dataset),
            "event.action" => s(&self.event.action),
            "event.outcome" => s(&self.event.outcome),
            "log.level" => s(&self.log.level),
            "log.logger" => s(&self.log.logger),
            "host.name" => s(&self.host.name),
            "process.name" => s(&self.process.name),
            "process.pid" => self.process.pid.map(|p| p.to_string()),
            "user.name" => s(&self.user.name),
            "source.ip" => self.source.ip.map(|ip| ip.to_string()),
            "destination.ip" => self.destination.ip.map(|ip| ip.to_string()),
            "http.request.method" => s(&self.http.request_method),
            "http.response.status_code" => self.http.response_status_code.map(|c| c.to_string()),
            "url.original" => s(&self.url.original),
            "origin.source" => Some(self.origin.source.clone()),
            other => match other.strip_prefix("labels.") {
                Some(label) => self.labels.get(label).cloned(),
                None => self.fields.get(other).cloned(),
            },
        }
    }
}
