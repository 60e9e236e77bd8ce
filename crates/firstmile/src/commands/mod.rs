pub mod check;
pub mod ingest;
pub mod migrate;
pub mod produce;
pub mod topics;
