//! Parsed fields → the normalized event. Names with a place in the event go
//! there (typed: a pid that is not a number, an IP that is not an address is an
//! error, and the record goes to `dlq` with it); all others go to `fields`.

use std::str::FromStr;

use crate::Event;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: `{value}` is not {expected}")]
pub struct MappingError {
    pub field: String,
    pub value: String,
    pub expected: &'static str,
}

impl MappingError {
    /// The `dlq` error kind.
    pub fn kind(&self) -> crate::DeadLetterKind {
        crate::DeadLetterKind::InvalidField
    }
}

fn typed<T: FromStr>(field: &str, value: &str, expected: &'static str) -> Result<T, MappingError> {
    value.trim().parse().map_err(|_| MappingError {
        field: field.to_string(),
        value: value.to_string(),
        expected,
    })
}

/// Lays `fields` onto `event`. `timestamp` fields are left for the caller
/// (they need the source's time zone); everything unknown lands in `fields`.
pub fn from_fields(event: &mut Event, fields: Vec<(String, String)>) -> Result<(), MappingError> {
    for (name, value) in fields {
        let v = || Some(value.clone());
        match name.as_str() {
            "message" => event.message = v(),
            "event.dataset" => event.event.dataset = v(),
            "event.action" => event.event.action = v(),
            "event.outcome" => event.event.outcome = v(),
            "event.code" => event.event.code = v(),
            "event.severity" => event.event.severity = Some(typed(&name, &value, "an integer")?),
            "log.level" => event.log.level = v(),
            "log.logger" => event.log.logger = v(),
            "host.name" => event.host.name = v(),
            "process.name" => event.process.name = v(),
            "process.pid" => event.process.pid = Some(typed(&name, &value, "an integer")?),
            "user.name" => event.user.name = v(),
            "source.ip" => event.source.ip = Some(typed(&name, &value, "an IP address")?),
            "source.port" => event.source.port = Some(typed(&name, &value, "a port number")?),
            "destination.ip" => event.destination.ip = Some(typed(&name, &value, "an IP address")?),
            "destination.port" => {
                event.destination.port = Some(typed(&name, &value, "a port number")?)
            }
            "http.request.method" => event.http.request_method = v(),
            "http.response.status_code" => {
                event.http.response_status_code = Some(typed(&name, &value, "an HTTP status")?)
            }
            "url.original" => event.url.original = v(),
            "user_agent.original" => event.user_agent.original = v(),
            "timestamp" => {}
            _ => {
                event.fields.insert(name, value);
            }
        }
    }
    Ok(())
}
