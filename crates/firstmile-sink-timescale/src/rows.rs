//! An event as a row of `events` (pure): typed columns for what dashboards
//! filter and group by, jsonb for the rest.

use std::net::IpAddr;

use firstmile_event::Event;
use serde_json::{json, Map, Value};
use tokio_postgres::types::{ToSql, Type};
use uuid::Uuid;

/// The columns written, in COPY order, with their types.
pub const COLUMNS: &[(&str, Type)] = &[
    ("event_id", Type::UUID),
    ("received_at", Type::TIMESTAMPTZ),
    ("ts", Type::TIMESTAMPTZ),
    ("source", Type::TEXT),
    ("dataset", Type::TEXT),
    ("log_level", Type::TEXT),
    ("host_name", Type::TEXT),
    ("process_name", Type::TEXT),
    ("process_pid", Type::INT4),
    ("user_name", Type::TEXT),
    ("event_action", Type::TEXT),
    ("event_outcome", Type::TEXT),
    ("source_ip", Type::INET),
    ("source_port", Type::INT4),
    ("destination_ip", Type::INET),
    ("destination_port", Type::INT4),
    ("http_method", Type::TEXT),
    ("http_status", Type::INT2),
    ("url_original", Type::TEXT),
    ("user_agent", Type::TEXT),
    ("message", Type::TEXT),
    ("labels", Type::JSONB),
    ("fields", Type::JSONB),
    ("bytes", Type::INT4),
    ("raw_topic", Type::TEXT),
    ("raw_partition", Type::INT4),
    ("raw_offset", Type::INT8),
    ("pipeline_version", Type::TEXT),
    ("source_country", Type::TEXT),
    ("source_city", Type::TEXT),
    ("source_asn", Type::INT8),
    ("source_asset_owner", Type::TEXT),
    ("threat_indicator", Type::TEXT),
    ("enrichment", Type::JSONB),
];

/// One row of `events`, field for field in [`COLUMNS`] order.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub event_id: Uuid,
    pub received_at: jiff::Timestamp,
    pub ts: jiff::Timestamp,
    pub source: String,
    pub dataset: Option<String>,
    pub log_level: Option<String>,
    pub host_name: Option<String>,
    pub process_name: Option<String>,
    pub process_pid: Option<i32>,
    pub user_name: Option<String>,
    pub event_action: Option<String>,
    pub event_outcome: Option<String>,
    pub source_ip: Option<IpAddr>,
    pub source_port: Option<i32>,
    pub destination_ip: Option<IpAddr>,
    pub destination_port: Option<i32>,
    pub http_method: Option<String>,
    pub http_status: Option<i16>,
    pub url_original: Option<String>,
    pub user_agent: Option<String>,
    pub message: Option<String>,
    pub labels: Value,
    pub fields: Value,
    pub bytes: i32,
    pub raw_topic: String,
    pub raw_partition: i32,
    pub raw_offset: i64,
    pub pipeline_version: String,
    pub source_country: Option<String>,
    pub source_city: Option<String>,
    pub source_asn: Option<i64>,
    pub source_asset_owner: Option<String>,
    pub threat_indicator: Option<String>,
    pub enrichment: Option<Value>,
}

/// An event that does not fit the table's types: bad data for `dlq`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RowError(String);

// PostgreSQL's text and jsonb cannot hold U+0000 (`invalid byte sequence
// … 0x00`; jsonb refuses `\u0000`): it is written as U+FFFD, so the row is
// stored (as Elasticsearch stores the event) instead of dead-lettered and
// the two sinks hold the same events.
fn no_nul(s: &str) -> String {
    s.replace('\0', "\u{FFFD}")
}

fn text(s: &Option<String>) -> Option<String> {
    s.as_deref().map(no_nul)
}

fn json_no_nul(value: Value) -> Value {
    match value {
        Value::String(s) if s.contains('\0') => Value::String(no_nul(&s)),
        Value::Array(items) => Value::Array(items.into_iter().map(json_no_nul).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (no_nul(&k), json_no_nul(v)))
                .collect(),
        ),
        other => other,
    }
}

fn narrow<T: TryFrom<i64>>(value: Option<i64>, column: &str) -> Result<Option<T>, RowError> {
    value
        .map(|v| {
            T::try_from(v)
                .map_err(|_| RowError(format!("{column} {v} is out of the column's range")))
        })
        .transpose()
}

impl Row {
    pub fn from_event(e: &Event) -> Result<Row, RowError> {
        let mut enrichment = Map::new();
        for (name, endpoint) in [("source", &e.source), ("destination", &e.destination)] {
            let mut part = Map::new();
            if let Some(geo) = &endpoint.geo {
                part.insert("geo".into(), json!(geo));
            }
            if let Some(a) = &endpoint.autonomous_system {
                part.insert("as".into(), json!(a));
            }
            if let Some(a) = &endpoint.asset {
                part.insert("asset".into(), json!(a));
            }
            if !part.is_empty() {
                enrichment.insert(name.into(), Value::Object(part));
            }
        }
        if let Some(t) = &e.threat {
            enrichment.insert("threat".into(), json!(t));
        }
        let geo = e.source.geo.as_ref();
        Ok(Row {
            event_id: e.event_id,
            received_at: e.received_at,
            ts: e.timestamp,
            source: no_nul(&e.origin.source),
            dataset: text(&e.event.dataset),
            log_level: text(&e.log.level),
            host_name: text(&e.host.name),
            process_name: text(&e.process.name),
            process_pid: narrow(e.process.pid, "process.pid")?,
            user_name: text(&e.user.name),
            event_action: text(&e.event.action),
            event_outcome: text(&e.event.outcome),
            source_ip: e.source.ip,
            source_port: e.source.port.map(i32::from),
            destination_ip: e.destination.ip,
            destination_port: e.destination.port.map(i32::from),
            http_method: text(&e.http.request_method),
            http_status: narrow(
                e.http.response_status_code.map(i64::from),
                "http.response.status_code",
            )?,
            url_original: text(&e.url.original),
            user_agent: text(&e.user_agent.original),
            message: text(&e.message),
            labels: json_no_nul(json!(e.labels)),
            fields: json_no_nul(json!(e.fields)),
            bytes: i32::try_from(e.raw_bytes)
                .map_err(|_| RowError(format!("raw_bytes {} out of range", e.raw_bytes)))?,
            raw_topic: no_nul(&e.origin.topic),
            raw_partition: e.origin.partition,
            raw_offset: e.origin.offset,
            pipeline_version: no_nul(&e.pipeline_version),
            source_country: geo.and_then(|g| text(&g.country_iso_code)),
            source_city: geo.and_then(|g| text(&g.city_name)),
            source_asn: e
                .source
                .autonomous_system
                .as_ref()
                .map(|a| i64::from(a.number)),
            source_asset_owner: e.source.asset.as_ref().map(|a| no_nul(&a.owner)),
            threat_indicator: e.threat.as_ref().map(|t| no_nul(&t.indicator.matched)),
            enrichment: (!enrichment.is_empty()).then(|| json_no_nul(Value::Object(enrichment))),
        })
    }

    /// The values in [`COLUMNS`] order, for COPY.
    pub fn values(&self) -> [&(dyn ToSql + Sync); 34] {
        [
            &self.event_id,
            &self.received_at,
            &self.ts,
            &self.source,
            &self.dataset,
            &self.log_level,
            &self.host_name,
            &self.process_name,
            &self.process_pid,
            &self.user_name,
            &self.event_action,
            &self.event_outcome,
            &self.source_ip,
            &self.source_port,
            &self.destination_ip,
            &self.destination_port,
            &self.http_method,
            &self.http_status,
            &self.url_original,
            &self.user_agent,
            &self.message,
            &self.labels,
            &self.fields,
            &self.bytes,
            &self.raw_topic,
            &self.raw_partition,
            &self.raw_offset,
            &self.pipeline_version,
            &self.source_country,
            &self.source_city,
            &self.source_asn,
            &self.source_asset_owner,
            &self.threat_indicator,
            &self.enrichment,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use firstmile_event::{Geo, Origin};

    fn event() -> Event {
        let origin = Origin {
            source: "openssh".into(),
            topic: "raw.openssh".into(),
            partition: 2,
            offset: 41,
        };
        Event::new(origin, "2026-11-23T10:00:00Z".parse().unwrap(), "7")
    }

    #[test]
    fn every_column_has_a_value_in_order() {
        let row = Row::from_event(&event()).unwrap();
        assert_eq!(row.values().len(), COLUMNS.len());
    }

    #[test]
    fn typed_columns_and_enrichment_come_from_the_event() {
        let mut e = event();
        e.source.ip = Some("81.2.69.142".parse().unwrap());
        e.source.geo = Some(Geo {
            city_name: Some("London".into()),
            country_iso_code: Some("GB".into()),
            location: None,
        });
        e.raw_bytes = 120;
        e.labels.insert("service".into(), "ssh".into());
        let row = Row::from_event(&e).unwrap();
        assert_eq!(row.source, "openssh");
        assert_eq!((row.raw_partition, row.raw_offset), (2, 41));
        assert_eq!(row.source_country.as_deref(), Some("GB"));
        assert_eq!(row.source_city.as_deref(), Some("London"));
        assert_eq!(row.bytes, 120);
        assert_eq!(row.labels, json!({"service": "ssh"}));
        assert_eq!(
            row.enrichment.unwrap()["source"]["geo"]["city_name"],
            json!("London")
        );
    }

    #[test]
    fn a_value_too_big_for_its_column_is_a_row_error() {
        let mut e = event();
        e.process.pid = Some(i64::from(i32::MAX) + 1);
        let err = Row::from_event(&e).unwrap_err();
        assert!(err.to_string().contains("process.pid"), "{err}");
    }
}
