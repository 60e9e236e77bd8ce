pub mod check;
pub mod migrate;
pub mod topics;
