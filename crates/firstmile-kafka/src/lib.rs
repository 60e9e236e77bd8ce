//! Kafka plumbing for firstmile: client settings from `[kafka]`, and topics as
//! code (`topics/*.toml` planned against and applied to the broker).

pub mod client;
pub mod topics;

pub use client::{client_config, ClientKind};
