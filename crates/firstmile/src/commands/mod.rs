pub mod check;
pub mod ingest;
pub mod migrate;
pub mod parse;
pub mod process;
pub mod produce;
pub mod schemas;
pub mod topics;
