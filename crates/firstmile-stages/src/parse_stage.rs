//! The `parse` stage's step: raw record → normalized event (Avro, Confluent
//! framing) in `parsed`, or a dead letter with the parser's error kind.

use std::collections::BTreeMap;
use std::time::Duration;

use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::Schema;
use firstmile_config::Config;
use firstmile_event::Origin;
use firstmile_kafka::raw::headers;
use firstmile_parse::SourceParser;
use firstmile_schema::{confluent_frame, value_subject, Registry, RegistryError};
use rdkafka::message::{Headers, Message, OwnedMessage};

use crate::{default_instance_id, Outcome, StageError, StageTopics, Step};

pub struct ParseStep {
    parsers: BTreeMap<String, SourceParser>,
    /// Raw topic → the source that lands there first (for records without a
    /// `firstmile.source` header, written by other producers).
    topic_source: BTreeMap<String, String>,
    /// Built once: resolving the schema per record cost more than encoding.
    writer: GenericDatumWriter<'static>,
    schema_id: u32,
    pipeline_version: String,
}

impl ParseStep {
    /// The parse stage's topics and step; registers the event schema (retrying
    /// while the registry is unavailable: an outage is not bad data).
    pub async fn prepare(config: &Config) -> Result<(StageTopics, ParseStep), StageError> {
        let stage = &config.stages.parse;
        let output = stage.output.clone().unwrap_or_else(|| "parsed".into());
        let group = stage
            .group
            .clone()
            .unwrap_or_else(|| "firstmile-parse".into());
        let instance = stage
            .instance_id
            .clone()
            .unwrap_or_else(default_instance_id);
        let mut parsers = BTreeMap::new();
        let mut topic_source = BTreeMap::new();
        for (name, source) in &config.sources {
            let parser = SourceParser::new(&source.parse)
                .map_err(|e| StageError::Setup(format!("sources.{name}.parse: {e}")))?;
            parsers.insert(name.clone(), parser);
            if let Some(topic) = config.raw_topic(name) {
                topic_source.entry(topic).or_insert_with(|| name.clone());
            }
        }
        let inputs: Vec<String> = topic_source.keys().cloned().collect();
        if inputs.is_empty() {
            return Err(StageError::Setup("no sources: nothing to parse".into()));
        }
        let registry =
            Registry::new(&config.schema_registry).map_err(|e| StageError::Setup(e.to_string()))?;
        let schema_id = register_with_retry(&registry, &value_subject(&output)).await?;
        let topics = StageTopics {
            name: "parse".into(),
            transactional_id: format!("{group}-{instance}"),
            inputs,
            output,
            dlq: stage.dlq.clone(),
            group,
            batch_records: stage.batch_records.max(1),
            batch: Duration::from_millis(stage.batch_ms.max(1)),
        };
        let step = ParseStep {
            parsers,
            topic_source,
            writer: event_writer()?,
            schema_id,
            pipeline_version: config.stages.pipeline_version.clone(),
        };
        Ok((topics, step))
    }
}

/// The writer borrows its schema for as long as it lives; one schema per
/// stage worker is leaked on purpose so the writer can be kept.
fn event_writer() -> Result<GenericDatumWriter<'static>, StageError> {
    let schema: &'static Schema = Box::leak(Box::new(firstmile_event::event_schema()));
    GenericDatumWriter::builder(schema)
        .build()
        .map_err(|e| StageError::Setup(format!("event schema: {e}")))
}

async fn register_with_retry(registry: &Registry, subject: &str) -> Result<u32, StageError> {
    let mut wait = Duration::from_millis(500);
    loop {
        match registry
            .register(subject, firstmile_event::EVENT_SCHEMA)
            .await
        {
            Ok(id) => return Ok(id),
            Err(RegistryError::Unavailable(why)) => {
                tracing::warn!(%subject, error = %why, retry_in = ?wait, "schema registry unavailable");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(30));
            }
            Err(e) => return Err(StageError::Setup(format!("{subject}: {e}"))),
        }
    }
}

fn header<'a>(record: &'a OwnedMessage, name: &str) -> Option<&'a [u8]> {
    record
        .headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
}

impl Step for ParseStep {
    fn source_of(&self, record: &OwnedMessage) -> String {
        header(record, headers::SOURCE)
            .and_then(|s| std::str::from_utf8(s).ok())
            .filter(|s| self.parsers.contains_key(*s))
            .map(str::to_string)
            .or_else(|| self.topic_source.get(record.topic()).cloned())
            .unwrap_or_else(|| "unknown".into())
    }

    fn apply(&mut self, record: &OwnedMessage) -> Outcome {
        let source = self.source_of(record);
        let Some(parser) = self.parsers.get_mut(&source) else {
            return Outcome::DeadLetter {
                kind: "unknown_source",
                message: format!("no source configured for topic {}", record.topic()),
            };
        };
        let received_at = header(record, headers::RECEIVED_AT)
            .and_then(|t| std::str::from_utf8(t).ok())
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .or_else(|| {
                record
                    .timestamp()
                    .to_millis()
                    .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
            })
            .unwrap_or_else(jiff::Timestamp::now);
        let origin = Origin {
            source,
            topic: record.topic().to_string(),
            partition: record.partition(),
            offset: record.offset(),
        };
        let payload = record.payload().unwrap_or_default();
        match parser.parse(payload, origin, received_at, &self.pipeline_version) {
            Ok(event) => match self.writer.write_value_to_vec(event.to_avro()) {
                Ok(datum) => Outcome::Output(confluent_frame(self.schema_id, &datum)),
                Err(e) => Outcome::DeadLetter {
                    kind: "encoding",
                    message: e.to_string(),
                },
            },
            Err(failure) => Outcome::DeadLetter {
                kind: failure.kind,
                message: failure.message,
            },
        }
    }
}
