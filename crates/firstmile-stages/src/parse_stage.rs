//! The `parse` stage's step: raw record → normalized event (Avro, Confluent
//! framing) in `parsed`, or a dead letter with the parser's error kind.

use std::collections::BTreeMap;

use firstmile_config::{Config, StageName, Topology};
use firstmile_event::DeadLetterKind;
use firstmile_event::{Event, Origin};
use firstmile_kafka::raw::headers;
use firstmile_metrics::KnownLabels;
use firstmile_parse::SourceParser;
use rdkafka::message::{Message, OwnedMessage};

use crate::encoder::EventEncoder;
use firstmile_kafka::header_str;

use crate::{Outcome, StageError, StageTopics, Step};

pub struct ParseStep {
    parsers: BTreeMap<String, SourceParser>,
    /// Raw topic → the source that lands there first (for records without a
    /// `firstmile.source` header, written by other producers).
    topic_source: BTreeMap<String, String>,
    encoder: EventEncoder,
    pipeline_version: String,
}

impl ParseStep {
    /// The parse stage's topics and step; registers the event schema.
    pub async fn new(
        config: &Config,
        topology: &Topology,
    ) -> Result<(StageTopics, ParseStep), StageError> {
        let mut parsers = BTreeMap::new();
        let mut topic_source = BTreeMap::new();
        for (name, source) in &config.sources {
            let parser = SourceParser::new(&source.parse).map_err(|error| StageError::Parser {
                name: name.clone(),
                error,
            })?;
            parsers.insert(name.clone(), parser);
            if let Some(names) = topology.sources.get(name) {
                topic_source
                    .entry(names.raw_topic.clone())
                    .or_insert_with(|| name.clone());
            }
        }
        let topics = StageTopics::new(config, topology, StageName::Parse);
        if topics.inputs.is_empty() {
            return Err(StageError::NoSources);
        }
        let step = ParseStep {
            parsers,
            topic_source,
            encoder: EventEncoder::for_topic(config, &topics.output).await?,
            pipeline_version: config.stages.pipeline_version.clone(),
        };
        Ok((topics, step))
    }
}

impl ParseStep {
    /// The event a raw record parses to, or why it cannot be one (a
    /// `DeadLetter` outcome).
    pub(crate) fn event(&mut self, record: &OwnedMessage, source: &str) -> Result<Event, Outcome> {
        let Some(parser) = self.parsers.get_mut(source) else {
            return Err(Outcome::DeadLetter {
                kind: DeadLetterKind::UnknownSource,
                message: format!("no source configured for topic {}", record.topic()),
            });
        };
        let received_at = header_str(record, headers::RECEIVED_AT)
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .or_else(|| {
                record
                    .timestamp()
                    .to_millis()
                    .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
            })
            .unwrap_or_else(jiff::Timestamp::now);
        let origin = Origin {
            source: source.to_string(),
            topic: record.topic().to_string(),
            partition: record.partition(),
            offset: record.offset(),
        };
        let payload = record.payload().unwrap_or_default();
        parser
            .parse(payload, origin, received_at, &self.pipeline_version)
            .map_err(|failure| Outcome::DeadLetter {
                kind: failure.kind,
                message: failure.message,
            })
    }
}

impl Step for ParseStep {
    fn source_of(&self, record: &OwnedMessage) -> String {
        header_str(record, headers::SOURCE)
            .filter(|s| self.parsers.contains_key(*s))
            .map(str::to_string)
            .or_else(|| self.topic_source.get(record.topic()).cloned())
            .unwrap_or_else(|| "unknown".into())
    }

    fn known_labels(&self) -> KnownLabels {
        let sources: Vec<String> = self.parsers.keys().cloned().collect();
        let discarded = sources
            .iter()
            .flat_map(|source| {
                DeadLetterKind::PARSING
                    .iter()
                    .map(move |kind| (source.clone(), kind.discard_reason()))
            })
            .collect();
        KnownLabels {
            sources,
            discarded,
            ..KnownLabels::default()
        }
    }

    fn apply(&mut self, record: &OwnedMessage, source: &str) -> Outcome {
        match self.event(record, source) {
            Ok(event) => self.encoder.outcome(&event),
            Err(dead_letter) => dead_letter,
        }
    }
}
