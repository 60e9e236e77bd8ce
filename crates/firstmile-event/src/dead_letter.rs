//! Why a record became a dead letter instead of an event: one type for every
//! stage and sink, with its wire name (the `firstmile.dlq.error_kind` header,
//! the `dlq_<kind>` discard reason).

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DeadLetterKind {
    // The parse stage: the raw record itself.
    /// Longer than the source's `parse.max_bytes`.
    TooLarge,
    InvalidUtf8,
    /// Nothing but whitespace.
    Empty,
    /// Not in the source's format.
    NoMatch,
    /// A value of the wrong type for a typed field (a pid that is not a
    /// number).
    InvalidField,
    InvalidTimestamp,
    /// A raw topic no configured source reads.
    UnknownSource,
    // Decoding an event (the enrich stage, the sinks).
    /// No Confluent frame.
    NotAvro,
    /// The registry has no schema of the frame's id.
    UnknownSchema,
    InvalidSchema,
    /// The bytes do not match the writer schema, or it cannot be read as
    /// the event schema.
    AvroDecode,
    /// Avro of the event schema that is not a valid event.
    InvalidEvent,
    // The sinks' targets.
    /// A value that does not fit its column.
    InvalidRow,
    RejectedByDatabase,
    RejectedByElasticsearch,
}

impl DeadLetterKind {
    /// What the parse stage dead-letters.
    pub const PARSING: &[DeadLetterKind] = &[
        DeadLetterKind::TooLarge,
        DeadLetterKind::InvalidUtf8,
        DeadLetterKind::Empty,
        DeadLetterKind::NoMatch,
        DeadLetterKind::InvalidField,
        DeadLetterKind::InvalidTimestamp,
        DeadLetterKind::UnknownSource,
    ];

    /// What decoding an event (the enrich stage, every sink) dead-letters.
    pub const DECODING: &[DeadLetterKind] = &[
        DeadLetterKind::NotAvro,
        DeadLetterKind::UnknownSchema,
        DeadLetterKind::InvalidSchema,
        DeadLetterKind::AvroDecode,
        DeadLetterKind::InvalidEvent,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterKind::TooLarge => "too_large",
            DeadLetterKind::InvalidUtf8 => "invalid_utf8",
            DeadLetterKind::Empty => "empty",
            DeadLetterKind::NoMatch => "no_match",
            DeadLetterKind::InvalidField => "invalid_field",
            DeadLetterKind::InvalidTimestamp => "invalid_timestamp",
            DeadLetterKind::UnknownSource => "unknown_source",
            DeadLetterKind::NotAvro => "not_avro",
            DeadLetterKind::UnknownSchema => "unknown_schema",
            DeadLetterKind::InvalidSchema => "invalid_schema",
            DeadLetterKind::AvroDecode => "avro_decode",
            DeadLetterKind::InvalidEvent => "invalid_event",
            DeadLetterKind::InvalidRow => "invalid_row",
            DeadLetterKind::RejectedByDatabase => "rejected_by_database",
            DeadLetterKind::RejectedByElasticsearch => "rejected_by_elasticsearch",
        }
    }

    /// The `discarded_events_total` reason of a record dead-lettered so.
    pub fn discard_reason(self) -> String {
        format!("dlq_{}", self.as_str())
    }
}

impl fmt::Display for DeadLetterKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for DeadLetterKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Compared with its wire name (what tests and readers of `dlq` see).
impl PartialEq<&str> for DeadLetterKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}
