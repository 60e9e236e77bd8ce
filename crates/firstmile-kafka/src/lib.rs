//! Kafka plumbing for firstmile: client settings from `[kafka]`, topics as code
//! (`topics/*.toml` planned against and applied to the broker), and the raw
//! producer every receiver writes through.

pub mod client;
pub mod dlq;
pub mod raw;
pub mod topics;

pub use client::{client_config, ClientKind};
