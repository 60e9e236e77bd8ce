//! Value schemas and the schema registry: a small client for the Confluent
//! REST API (Confluent Schema Registry, Apicurio's `/apis/ccompat/v7`,
//! Karapace) that checks a schema against what is registered under
//! `<topic>-value` and registers it.
//!
//! Errors say whether the registry was unavailable (retry: an outage is never
//! bad data) or refused the request.
//!
//! [`Decoder`] reads Confluent-framed Avro values: writer schemas are fetched
//! by id and cached, and values are resolved to a reader schema.

mod decoder;

pub use decoder::{DecodeError, Decoder};

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Connection refused, timeout, 5xx: try again later.
    #[error("schema registry unavailable: {0}")]
    Unavailable(String),
    /// The registry answered and said no.
    #[error("schema registry refused ({status}): {message}")]
    Rejected { status: u16, message: String },
    #[error("schema registry: {0}")]
    Config(String),
    #[error("invalid Avro schema: {0}")]
    InvalidSchema(String),
}

/// Confluent wire format: magic byte 0, the schema id (big-endian), the datum.
pub fn confluent_frame(schema_id: u32, datum: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + datum.len());
    out.push(0);
    out.extend_from_slice(&schema_id.to_be_bytes());
    out.extend_from_slice(datum);
    out
}

/// The schema id and datum of a Confluent-framed value.
pub fn confluent_unframe(value: &[u8]) -> Option<(u32, &[u8])> {
    match value {
        [0, a, b, c, d, datum @ ..] => Some((u32::from_be_bytes([*a, *b, *c, *d]), datum)),
        _ => None,
    }
}

/// The subject a topic's value schema is registered under (TopicNameStrategy).
pub fn value_subject(topic: &str) -> String {
    format!("{topic}-value")
}

/// Parses an Avro schema locally, before asking the registry anything.
pub fn parse_avro(schema: &str) -> Result<apache_avro::Schema, RegistryError> {
    apache_avro::Schema::parse_str(schema).map_err(|e| RegistryError::InvalidSchema(e.to_string()))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compatibility {
    /// Nothing is registered under the subject yet.
    NotRegistered,
    /// Compatible with the latest version (under the subject's rule).
    Compatible { latest_version: u32 },
    /// Exactly what is registered already.
    Registered { id: u32, version: u32 },
    Incompatible {
        latest_version: u32,
        messages: Vec<String>,
    },
}

pub struct Registry {
    http: reqwest::Client,
    base: String,
    auth: Option<(String, String)>,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error_code: i64,
    #[serde(default)]
    message: String,
}

impl Registry {
    pub fn new(config: &firstmile_config::SchemaRegistry) -> Result<Registry, RegistryError> {
        let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(10));
        if let Some(ca) = &config.tls.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| RegistryError::Config(format!("{}: {e}", ca.display())))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| RegistryError::Config(e.to_string()))?;
            builder = builder.add_root_certificate(cert);
        }
        if config.tls.insecure_skip_verify {
            builder = builder.danger_accept_invalid_certs(true);
        }
        let auth = match (&config.username, &config.password) {
            (Some(u), p) => Some((u.clone(), p.clone().unwrap_or_default())),
            _ => None,
        };
        Ok(Registry {
            http: builder
                .build()
                .map_err(|e| RegistryError::Config(e.to_string()))?,
            base: config.url.trim_end_matches('/').to_string(),
            auth,
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(u16, serde_json::Value), RegistryError> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header(reqwest::header::ACCEPT, CONTENT_TYPE);
        if let Some((u, p)) = &self.auth {
            request = request.basic_auth(u, Some(p));
        }
        if let Some(b) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
                .json(&b);
        }
        let response = request
            .send()
            .await
            .map_err(|e| RegistryError::Unavailable(e.to_string()))?;
        let status = response.status().as_u16();
        let value: serde_json::Value = response.json().await.unwrap_or(serde_json::Value::Null);
        if status >= 500 {
            return Err(RegistryError::Unavailable(format!(
                "HTTP {status}: {value}"
            )));
        }
        Ok((status, value))
    }

    fn rejected(status: u16, body: serde_json::Value) -> RegistryError {
        let e: ErrorBody = serde_json::from_value(body).unwrap_or(ErrorBody {
            error_code: 0,
            message: String::new(),
        });
        RegistryError::Rejected {
            status,
            message: format!("{} (error code {})", e.message, e.error_code),
        }
    }

    /// Compares `schema` with what is registered under `subject`.
    pub async fn check(&self, subject: &str, schema: &str) -> Result<Compatibility, RegistryError> {
        parse_avro(schema)?;
        let path = format!("/subjects/{subject}/versions/latest");
        let (status, latest) = self.call(reqwest::Method::GET, &path, None).await?;
        if status == 404 {
            return Ok(Compatibility::NotRegistered);
        }
        if status != 200 {
            return Err(Self::rejected(status, latest));
        }
        let latest_version = latest["version"].as_u64().unwrap_or(0) as u32;
        // Already registered exactly?
        let (status, found) = self
            .call(
                reqwest::Method::POST,
                &format!("/subjects/{subject}"),
                Some(json!({ "schema": schema })),
            )
            .await?;
        if status == 200 {
            return Ok(Compatibility::Registered {
                id: found["id"].as_u64().unwrap_or(0) as u32,
                version: found["version"].as_u64().unwrap_or(0) as u32,
            });
        }
        let (status, verdict) = self
            .call(
                reqwest::Method::POST,
                &format!("/compatibility/subjects/{subject}/versions/latest?verbose=true"),
                Some(json!({ "schema": schema })),
            )
            .await?;
        if status != 200 {
            return Err(Self::rejected(status, verdict));
        }
        if verdict["is_compatible"].as_bool() == Some(true) {
            Ok(Compatibility::Compatible { latest_version })
        } else {
            let messages = verdict["messages"]
                .as_array()
                .map(|m| {
                    m.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            Ok(Compatibility::Incompatible {
                latest_version,
                messages,
            })
        }
    }

    /// The schema registered under `id`; `None` if the registry has no such id
    /// (the one answer that makes a record carrying the id bad data).
    pub async fn schema_by_id(&self, id: u32) -> Result<Option<String>, RegistryError> {
        let (status, body) = self
            .call(reqwest::Method::GET, &format!("/schemas/ids/{id}"), None)
            .await?;
        match status {
            200 => {
                // Only Avro: a schema of another type is not ours to decode.
                if let Some(kind) = body["schemaType"].as_str().filter(|t| *t != "AVRO") {
                    return Err(RegistryError::InvalidSchema(format!(
                        "schema {id} is {kind}, not Avro"
                    )));
                }
                body["schema"]
                    .as_str()
                    .map(|s| Some(s.to_string()))
                    .ok_or_else(|| RegistryError::Rejected {
                        status,
                        message: format!("no schema in {body}"),
                    })
            }
            404 => Ok(None),
            _ => Err(Self::rejected(status, body)),
        }
    }

    /// Registers `schema` under `subject`; returns its id (the same id if it is
    /// registered already).
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        parse_avro(schema)?;
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                &format!("/subjects/{subject}/versions"),
                Some(json!({ "schema": schema })),
            )
            .await?;
        if status != 200 {
            return Err(Self::rejected(status, body));
        }
        body["id"]
            .as_u64()
            .map(|id| id as u32)
            .ok_or_else(|| RegistryError::Rejected {
                status,
                message: format!("no id in {body}"),
            })
    }
}
