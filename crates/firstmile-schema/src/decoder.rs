//! Confluent-framed Avro values to Avro values of a reader schema.
//!
//! The schema a value was written with is fetched from the registry by the id
//! in its frame, once, and kept. Fetching is separate from decoding so a stage
//! can fetch (and wait out a registry outage) before it opens a transaction,
//! and decode without I/O.
//!
//! `schema_registry_converter`'s decoder was not used here: it treats HTTP 500,
//! 504 and 401 as permanent and caches them, which would dead-letter good
//! records during an outage or a credentials mix-up.

use std::collections::HashMap;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use apache_avro::Schema;

use crate::{confluent_unframe, Registry, RegistryError};

/// A value that cannot be decoded: bad data, for the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct DecodeError {
    /// `not_avro` (no Confluent frame), `unknown_schema` (the registry has no
    /// such id), `invalid_schema`, `avro_decode` (the bytes do not match the
    /// schema, or the schema cannot be read as the reader schema).
    pub kind: &'static str,
    pub message: String,
}

/// At most this many ids the registry does not know are remembered; a
/// producer writing random ids cannot grow memory without bound.
const MAX_UNKNOWN_IDS: usize = 1024;

enum Writer {
    Known(GenericDatumReader<'static>),
    /// Not decodable with this id; the reason, for every record carrying it.
    Bad(DecodeError),
}

/// Writer schemas by id, and a reader for each.
pub struct Decoder {
    registry: Registry,
    reader_schema: &'static Schema,
    writers: HashMap<u32, Writer>,
    unknown: usize,
}

impl Decoder {
    /// Decodes values into `reader_schema` (schema resolution: fields the
    /// writer lacks take their defaults, fields the reader lacks are skipped).
    pub fn new(registry: Registry, reader_schema: Schema) -> Decoder {
        Decoder {
            registry,
            // Readers borrow their schemas for their whole life; the reader
            // schema and each writer schema (a few KiB, one per id seen) are
            // kept for the life of the process.
            reader_schema: Box::leak(Box::new(reader_schema)),
            writers: HashMap::new(),
            unknown: 0,
        }
    }

    /// The schema ids in these values that are not fetched yet.
    pub fn missing<'a>(&self, values: impl IntoIterator<Item = &'a [u8]>) -> Vec<u32> {
        let mut ids: Vec<u32> = values
            .into_iter()
            .filter_map(confluent_unframe)
            .map(|(id, _)| id)
            .filter(|id| !self.writers.contains_key(id))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Fetches the writer schema `id`. An error means the registry could not
    /// be asked (retry later); an id it does not know is remembered as bad.
    pub async fn fetch(&mut self, id: u32) -> Result<(), RegistryError> {
        let writer = match self.registry.schema_by_id(id).await {
            Ok(Some(text)) => self.reader_for(id, &text),
            Ok(None) => {
                if self.unknown >= MAX_UNKNOWN_IDS {
                    self.writers.retain(|_, w| matches!(w, Writer::Known(_)));
                    self.unknown = 0;
                }
                self.unknown += 1;
                Writer::Bad(DecodeError {
                    kind: "unknown_schema",
                    message: format!("schema id {id} is not in the schema registry"),
                })
            }
            Err(RegistryError::InvalidSchema(why)) => Writer::Bad(DecodeError {
                kind: "invalid_schema",
                message: format!("schema id {id}: {why}"),
            }),
            Err(e) => return Err(e),
        };
        self.writers.insert(id, writer);
        Ok(())
    }

    fn reader_for(&self, id: u32, text: &str) -> Writer {
        let bad = |message: String| {
            Writer::Bad(DecodeError {
                kind: "invalid_schema",
                message,
            })
        };
        let schema = match Schema::parse_str(text) {
            Ok(s) => s,
            Err(e) => return bad(format!("schema id {id}: {e}")),
        };
        let same = schema.canonical_form() == self.reader_schema.canonical_form();
        let schema: &'static Schema = Box::leak(Box::new(schema));
        // Resolution costs time per value; skip it when nothing differs.
        let reader = GenericDatumReader::builder(schema)
            .maybe_reader_schema((!same).then_some(self.reader_schema))
            .build();
        match reader {
            Ok(r) => Writer::Known(r),
            Err(e) => bad(format!("schema id {id} against the reader schema: {e}")),
        }
    }

    /// Decodes a framed value whose schema has been fetched. An id not
    /// fetched yet is an error of the caller's, reported as `unknown_schema`.
    pub fn decode(&self, framed: &[u8]) -> Result<Value, DecodeError> {
        let Some((id, mut datum)) = confluent_unframe(framed) else {
            return Err(DecodeError {
                kind: "not_avro",
                message: "not in Confluent wire format (magic byte 0, 4-byte schema id)".into(),
            });
        };
        match self.writers.get(&id) {
            Some(Writer::Known(reader)) => reader.read_value(&mut datum).map_err(|e| DecodeError {
                kind: "avro_decode",
                message: format!("schema id {id}: {e}"),
            }),
            Some(Writer::Bad(e)) => Err(e.clone()),
            None => Err(DecodeError {
                kind: "unknown_schema",
                message: format!("schema id {id} was not fetched"),
            }),
        }
    }
}
