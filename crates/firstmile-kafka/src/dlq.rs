//! The dead-letter topic's record: the input's bytes and headers, plus what
//! went wrong where, so a person (or `replay`) can find and fix it. A dead
//! letter always fits its topic: an input too large for it keeps a prefix of
//! its bytes, with its size and coordinates (the input's own topic keeps the
//! whole record).

use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};

use crate::limits::{headers_size, record_size};

/// Header names a dead letter carries besides the input's own headers.
pub mod names {
    pub const STAGE: &str = "firstmile.dlq.stage";
    pub const ERROR_KIND: &str = "firstmile.dlq.error_kind";
    pub const ERROR_MESSAGE: &str = "firstmile.dlq.error_message";
    pub const TOPIC: &str = "firstmile.dlq.topic";
    pub const PARTITION: &str = "firstmile.dlq.partition";
    pub const OFFSET: &str = "firstmile.dlq.offset";
    /// Set when the dead letter holds only a prefix of the input: the
    /// input's size in bytes.
    pub const ORIGINAL_BYTES: &str = "firstmile.dlq.original_bytes";
    /// Set when the input's own headers were left out to make room.
    pub const HEADERS_DROPPED: &str = "firstmile.dlq.headers_dropped";
}

/// Error messages longer than this are cut (at a character boundary).
const MAX_ERROR_MESSAGE: usize = 4096;

/// A dead letter ready to send: the input's key, as much of its payload as
/// fits, and the headers.
pub struct DeadLetter<'a> {
    pub key: Option<&'a [u8]>,
    pub payload: &'a [u8],
    pub headers: OwnedHeaders,
}

/// The dead letter of `record`, no larger than `limit` bytes as a record:
/// the input's own headers plus `firstmile.dlq.*` (the stage or sink that
/// gave up, the error kind and message, the input's coordinates). When the
/// whole input does not fit, its headers go first, then its payload is cut
/// to what fits and `firstmile.dlq.original_bytes` says how large it was.
pub fn dead_letter<'a>(
    record: &'a OwnedMessage,
    stage: &str,
    kind: &str,
    message: &str,
    limit: usize,
) -> DeadLetter<'a> {
    let key = record.key();
    let payload = record.payload().unwrap_or_default();
    let own = own_headers(record);
    let ours = dlq_headers(record, stage, kind, message);
    let whole = record_size(key.unwrap_or_default(), payload, Some(&own)) + headers_size(&ours);
    if whole <= limit {
        return DeadLetter {
            key,
            payload,
            headers: append(own, &ours),
        };
    }
    let mut headers = ours;
    if record_size(key.unwrap_or_default(), &[], Some(&own)) + headers_size(&headers) + 64 <= limit
    {
        headers = append(own, &headers);
    } else {
        headers = headers.insert(Header {
            key: names::HEADERS_DROPPED,
            value: Some("true"),
        });
    }
    let room = |headers: &OwnedHeaders| {
        limit.saturating_sub(record_size(key.unwrap_or_default(), &[], Some(headers)))
    };
    if room(&headers) < payload.len() {
        let original = payload.len().to_string();
        headers = headers.insert(Header {
            key: names::ORIGINAL_BYTES,
            value: Some(original.as_str()),
        });
    }
    let kept = room(&headers).min(payload.len());
    DeadLetter {
        key,
        payload: &payload[..kept],
        headers,
    }
}

fn own_headers(record: &OwnedMessage) -> OwnedHeaders {
    let mut headers = OwnedHeaders::new();
    if let Some(original) = record.headers() {
        for h in original.iter() {
            headers = headers.insert(Header {
                key: h.key,
                value: h.value,
            });
        }
    }
    headers
}

fn dlq_headers(record: &OwnedMessage, stage: &str, kind: &str, message: &str) -> OwnedHeaders {
    let (partition, offset) = (record.partition().to_string(), record.offset().to_string());
    let mut headers = OwnedHeaders::new();
    for (key, value) in [
        (names::STAGE, stage),
        (names::ERROR_KIND, kind),
        (names::ERROR_MESSAGE, cut(message, MAX_ERROR_MESSAGE)),
        (names::TOPIC, record.topic()),
        (names::PARTITION, partition.as_str()),
        (names::OFFSET, offset.as_str()),
    ] {
        headers = headers.insert(Header {
            key,
            value: Some(value),
        });
    }
    headers
}

fn append(mut to: OwnedHeaders, more: &OwnedHeaders) -> OwnedHeaders {
    for h in more.iter() {
        to = to.insert(Header {
            key: h.key,
            value: h.value,
        });
    }
    to
}

/// `text` cut to at most `max` bytes, at a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use rdkafka::message::Timestamp;

    use super::*;

    fn record(payload: Vec<u8>, headers: OwnedHeaders) -> OwnedMessage {
        OwnedMessage::new(
            Some(payload),
            Some(b"key".to_vec()),
            "raw.x".into(),
            Timestamp::NotAvailable,
            2,
            41,
            Some(headers),
        )
    }

    fn header<'a>(letter: &'a DeadLetter<'_>, name: &str) -> Option<&'a [u8]> {
        letter.headers.iter().find(|h| h.key == name)?.value
    }

    fn one_header(key: &str, value: &[u8]) -> OwnedHeaders {
        OwnedHeaders::new().insert(Header {
            key,
            value: Some(value),
        })
    }

    #[test]
    fn a_dead_letter_that_fits_keeps_the_whole_input_and_its_headers() {
        let input = record(b"line".to_vec(), one_header("firstmile.source", b"x"));
        let letter = dead_letter(&input, "parse", "no_match", "why", 10_000);
        assert_eq!(letter.payload, b"line");
        assert_eq!(header(&letter, "firstmile.source"), Some(&b"x"[..]));
        assert_eq!(header(&letter, names::OFFSET), Some(&b"41"[..]));
        assert_eq!(header(&letter, names::ORIGINAL_BYTES), None);
    }

    #[test]
    fn an_input_too_large_keeps_a_prefix_its_size_and_coordinates_within_the_limit() {
        let input = record(vec![b'a'; 50_000], one_header("firstmile.source", b"x"));
        let letter = dead_letter(&input, "parse", "too_large", "why", 10_000);
        let size = record_size(b"key", letter.payload, Some(&letter.headers));
        assert!(size <= 10_000, "{size}");
        assert!(letter.payload.len() > 9_000, "{}", letter.payload.len());
        assert_eq!(header(&letter, names::ORIGINAL_BYTES), Some(&b"50000"[..]));
        assert_eq!(header(&letter, names::TOPIC), Some(&b"raw.x"[..]));
        assert_eq!(header(&letter, names::PARTITION), Some(&b"2"[..]));
        assert_eq!(header(&letter, "firstmile.source"), Some(&b"x"[..]));
    }

    #[test]
    fn headers_too_large_are_left_out_and_a_long_message_is_cut() {
        let input = record(b"line".to_vec(), one_header("huge", &vec![b'h'; 50_000]));
        let message = "é".repeat(10_000);
        let letter = dead_letter(&input, "parse", "no_match", &message, 10_000);
        assert!(record_size(b"key", letter.payload, Some(&letter.headers)) <= 10_000);
        assert_eq!(header(&letter, "huge"), None);
        assert_eq!(header(&letter, names::HEADERS_DROPPED), Some(&b"true"[..]));
        let kept = header(&letter, names::ERROR_MESSAGE).unwrap_or_default();
        assert!(std::str::from_utf8(kept).is_ok() && kept.len() <= MAX_ERROR_MESSAGE);
        assert_eq!(letter.payload, b"line");
    }
}
