//! Confluent-framed Avro values to Avro values of a reader schema, or, for
//! the event schema, to events (`decode_event`: data written with exactly
//! that schema is read straight into an `Event`, without a value tree).
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
use firstmile_event::Event;

use firstmile_event::DeadLetterKind;

use crate::{confluent_unframe, Registry, RegistryError};

/// A value that cannot be decoded: bad data, for the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct DecodeError {
    /// `not_avro` (no Confluent frame), `unknown_schema` (the registry has no
    /// such id), `invalid_schema`, `avro_decode` (the bytes do not match the
    /// schema, or the schema cannot be read as the reader schema).
    pub kind: DeadLetterKind,
    pub message: String,
}

/// At most this many ids the registry does not know are remembered; a
/// producer writing random ids cannot grow memory without bound.
const MAX_UNKNOWN_IDS: usize = 1024;

enum Writer {
    /// `exact`: written with the reader schema itself, no resolution needed.
    Known {
        reader: GenericDatumReader<'static>,
        exact: bool,
    },
    /// Not decodable with this id; the reason, for every record carrying it.
    Bad(DecodeError),
}

/// Writer schemas by id, and a reader for each.
pub struct Decoder {
    registry: Registry,
    reader_schema: &'static Schema,
    writers: HashMap<u32, Writer>,
    unknown: usize,
    /// The reader schema is the event schema: exact data reads directly.
    reads_events: bool,
}

impl Decoder {
    /// Decodes values into `reader_schema` (schema resolution: fields the
    /// writer lacks take their defaults, fields the reader lacks are skipped).
    pub fn new(registry: Registry, reader_schema: Schema) -> Decoder {
        let reads_events =
            reader_schema.canonical_form() == firstmile_event::event_schema().canonical_form();
        Decoder {
            registry,
            reads_events,
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
                    self.writers
                        .retain(|_, w| matches!(w, Writer::Known { .. }));
                    self.unknown = 0;
                }
                self.unknown += 1;
                Writer::Bad(DecodeError {
                    kind: DeadLetterKind::UnknownSchema,
                    message: format!("schema id {id} is not in the schema registry"),
                })
            }
            Err(RegistryError::InvalidSchema(why)) => Writer::Bad(DecodeError {
                kind: DeadLetterKind::InvalidSchema,
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
                kind: DeadLetterKind::InvalidSchema,
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
            Ok(reader) => Writer::Known {
                reader,
                exact: same,
            },
            Err(e) => bad(format!("schema id {id} against the reader schema: {e}")),
        }
    }

    /// Decodes a framed value whose schema has been fetched. An id not
    /// fetched yet is an error of the caller's, reported as `unknown_schema`.
    pub fn decode(&self, framed: &[u8]) -> Result<Value, DecodeError> {
        let (id, reader, _, datum) = self.writer(framed)?;
        read_value(id, reader, datum)
    }

    /// Decodes a framed event. With the event schema as the reader schema,
    /// data written with exactly it is read straight into the event; other
    /// versions (and other reader schemas) go through schema resolution.
    pub fn decode_event(&self, framed: &[u8]) -> Result<Event, DecodeError> {
        let (id, reader, exact, datum) = self.writer(framed)?;
        if exact && self.reads_events {
            if let Ok(event) = Event::from_avro_datum(datum) {
                return Ok(event);
            }
            // Bad data: the generic path below names what is wrong with it
            // (the bytes, or the value), as it always has.
        }
        let value = read_value(id, reader, datum)?;
        Event::from_avro(&value).map_err(|e| DecodeError {
            kind: DeadLetterKind::InvalidEvent,
            message: e.to_string(),
        })
    }

    /// The writer of a framed value: its id, reader, whether it is the
    /// reader schema itself, and the datum.
    fn writer<'a>(
        &self,
        framed: &'a [u8],
    ) -> Result<(u32, &GenericDatumReader<'static>, bool, &'a [u8]), DecodeError> {
        let Some((id, datum)) = confluent_unframe(framed) else {
            return Err(DecodeError {
                kind: DeadLetterKind::NotAvro,
                message: "not in Confluent wire format (magic byte 0, 4-byte schema id)".into(),
            });
        };
        match self.writers.get(&id) {
            Some(Writer::Known { reader, exact }) => Ok((id, reader, *exact, datum)),
            Some(Writer::Bad(e)) => Err(e.clone()),
            None => Err(DecodeError {
                kind: DeadLetterKind::UnknownSchema,
                message: format!("schema id {id} was not fetched"),
            }),
        }
    }
}

fn read_value(
    id: u32,
    reader: &GenericDatumReader<'static>,
    mut datum: &[u8],
) -> Result<Value, DecodeError> {
    reader.read_value(&mut datum).map_err(|e| DecodeError {
        kind: DeadLetterKind::AvroDecode,
        message: format!("schema id {id}: {e}"),
    })
}
