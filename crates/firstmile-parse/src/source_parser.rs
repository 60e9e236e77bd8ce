//! A source's parser: raw record → normalized event, or the reason it goes to
//! `dlq`.

use std::collections::BTreeMap;

use firstmile_config::{Parse, ParseFormat};
use firstmile_event::{from_fields, DeadLetterKind, Event, Origin};
use jiff::Timestamp;

use crate::timestamp::TimestampParser;
use crate::{access, apache, cef, json, kv, rfc5424, syslog, Fields, Grok, GrokError};

/// Why a record cannot become an event. `kind` is the `dlq` error kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct Failure {
    pub kind: DeadLetterKind,
    pub message: String,
}

fn fail(kind: DeadLetterKind, message: impl Into<String>) -> Failure {
    Failure {
        kind,
        message: message.into(),
    }
}

/// Why a source's `[parse]` configuration cannot make a parser.
#[derive(Debug, thiserror::Error)]
pub enum ParserConfigError {
    #[error("patterns[{index}]: {error}")]
    Pattern { index: usize, error: GrokError },
    #[error("message_patterns[{index}]: {error}")]
    MessagePattern { index: usize, error: GrokError },
    #[error("format grok needs at least one pattern")]
    NoPatterns,
    #[error("timezone: {0}")]
    Zone(crate::TimestampError),
}

/// The parser of one source.
#[derive(Debug, Clone)]
pub struct SourceParser {
    format: ParseFormat,
    groks: Vec<Grok>,
    message_groks: Vec<Grok>,
    clock: TimestampParser,
    dataset: Option<String>,
    rename: BTreeMap<String, String>,
    max_bytes: usize,
}

impl SourceParser {
    pub fn new(config: &Parse) -> Result<SourceParser, ParserConfigError> {
        let groks = config
            .patterns
            .iter()
            .enumerate()
            .map(|(index, p)| {
                Grok::compile(p, &config.pattern_definitions)
                    .map_err(|error| ParserConfigError::Pattern { index, error })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let message_groks = config
            .message_patterns
            .iter()
            .enumerate()
            .map(|(index, p)| {
                Grok::compile(p, &config.pattern_definitions)
                    .map_err(|error| ParserConfigError::MessagePattern { index, error })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if config.format == ParseFormat::Grok && groks.is_empty() {
            return Err(ParserConfigError::NoPatterns);
        }
        Ok(SourceParser {
            format: config.format,
            groks,
            message_groks,
            clock: TimestampParser::new(config.timezone.as_deref())
                .map_err(ParserConfigError::Zone)?,
            dataset: config.dataset.clone(),
            rename: config.rename.clone(),
            max_bytes: config.max_bytes,
        })
    }

    /// Parses one raw record into an event.
    pub fn parse(
        &mut self,
        raw: &[u8],
        origin: Origin,
        received_at: Timestamp,
        pipeline_version: &str,
    ) -> Result<Event, Failure> {
        if raw.len() > self.max_bytes {
            return Err(fail(
                DeadLetterKind::TooLarge,
                format!("{} bytes; the limit is {}", raw.len(), self.max_bytes),
            ));
        }
        let text = std::str::from_utf8(raw).map_err(|e| {
            fail(
                DeadLetterKind::InvalidUtf8,
                format!("not UTF-8 at byte {}", e.valid_up_to()),
            )
        })?;
        if text.trim().is_empty() {
            return Err(fail(DeadLetterKind::Empty, "nothing but whitespace"));
        }
        let fields: Fields = match self.format {
            ParseFormat::Raw => vec![("message".into(), text.to_string())],
            ParseFormat::Syslog => {
                syslog::parse_rfc3164(text).ok_or_else(|| no_match("BSD syslog"))?
            }
            ParseFormat::Rfc5424 => {
                rfc5424::parse_rfc5424(text).ok_or_else(|| no_match("RFC 5424 syslog"))?
            }
            ParseFormat::Access => {
                access::parse_access_log(text).ok_or_else(|| no_match("an access log line"))?
            }
            ParseFormat::ApacheError => {
                apache::parse_error_log(text).ok_or_else(|| no_match("an Apache error log line"))?
            }
            ParseFormat::Json => json::parse_json_within(text, 2 * self.max_bytes).map_err(
                |e| match e {
                    json::JsonError::NotAnObject => no_match("a JSON object"),
                    json::JsonError::TooLarge { budget } => fail(
                        DeadLetterKind::TooLarge,
                        format!("its fields, flattened, take more than {budget} bytes (twice the source's parse.max_bytes)"),
                    ),
                },
            )?,
            ParseFormat::Kv => kv::parse_kv(text).ok_or_else(|| no_match("key=value pairs"))?,
            ParseFormat::Cef => cef::parse_cef(text).ok_or_else(|| no_match("CEF"))?,
            ParseFormat::Grok => self
                .groks
                .iter()
                .find_map(|g| g.parse(raw))
                .ok_or_else(|| no_match("any of the source's patterns"))?,
        };
        let mut fields = fields;
        if !self.message_groks.is_empty() {
            let message = fields
                .iter()
                .find(|(k, _)| k == "message")
                .map(|(_, v)| v.clone());
            if let Some(extra) = message.and_then(|m| {
                self.message_groks
                    .iter()
                    .find_map(|g| g.parse(m.as_bytes()))
            }) {
                fields.extend(extra);
            }
        }
        let fields: Fields = fields
            .into_iter()
            .map(|(k, v)| (self.rename.get(&k).cloned().unwrap_or(k), v))
            .collect();
        let mut event = Event::new(origin, received_at, pipeline_version);
        event.raw_bytes = raw.len() as u64;
        event.event.dataset = self.dataset.clone();
        let written_time = timestamp_text(&fields);
        from_fields(&mut event, fields).map_err(|e| fail(e.kind(), e.to_string()))?;
        if let Some(text) = written_time {
            event.timestamp = self
                .clock
                .parse(&text, received_at)
                .map_err(|e| fail(DeadLetterKind::InvalidTimestamp, e.to_string()))?;
        }
        Ok(event)
    }
}

fn no_match(what: &str) -> Failure {
    fail(DeadLetterKind::NoMatch, format!("the record is not {what}"))
}

/// The timestamp as written: a `timestamp` (or `@timestamp`) field, or
/// `date` and `time` captured apart.
fn timestamp_text(fields: &Fields) -> Option<String> {
    let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    get("timestamp")
        .or_else(|| get("@timestamp"))
        .or_else(|| Some(format!("{} {}", get("date")?, get("time")?)))
}
