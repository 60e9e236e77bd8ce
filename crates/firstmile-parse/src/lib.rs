//! Parsers from a raw event's bytes to named fields (ECS names where one
//! fits: `host.name`, `process.name`, `process.pid`, `log.level`, `message`, …).
//! Pure logic: no I/O, no clock. Parsers return timestamps as written;
//! [`timestamp::TimestampParser`] turns them into instants.
//!
//! - [`syslog::parse_rfc3164`]: BSD syslog with the real-world variants;
//! - [`rfc5424::parse_rfc5424`]: syslog RFC 5424 with structured data;
//! - [`access::parse_access_log`]: Apache/nginx access logs, common and combined;
//! - [`apache::parse_error_log`]: Apache HTTP server error logs;
//! - [`json::parse_json`]: one JSON object per line, flattened;
//! - [`kv::parse_kv`]: logfmt / `key=value`;
//! - [`cef::parse_cef`]: ArcSight CEF, alone or after a syslog header;
//! - [`grok::Grok`]: user patterns in grok syntax on a linear-time engine.

pub mod access;
pub mod apache;
pub mod cef;
pub mod grok;
pub mod json;
pub mod kv;
mod patterns;
mod quoted;
pub mod rfc5424;
mod source_parser;
pub mod syslog;
pub mod timestamp;

/// Field name → value, in the order the parser found them.
pub type Fields = Vec<(String, String)>;

pub use grok::{Grok, GrokError};
pub use source_parser::{Failure, ParserConfigError, SourceParser};
pub use timestamp::{TimestampError, TimestampParser};
