//! Parsers from a raw event's bytes to named fields (ECS names where one
//! fits: `host.name`, `process.name`, `process.pid`, `log.level`, `message`, …).
//! Pure logic: no I/O, no clock; timestamps are returned as written.
//!
//! - [`syslog::parse_rfc3164`]: BSD syslog with the real-world variants;
//! - [`apache::parse_error_log`]: Apache HTTP server error logs;
//! - [`grok::Grok`]: user patterns in grok syntax on a linear-time engine.

pub mod apache;
pub mod grok;
mod patterns;
pub mod syslog;

/// Field name → value, in the order the parser found them.
pub type Fields = Vec<(String, String)>;

pub use grok::{Grok, GrokError};
