//! The `enrich` stage's step: event (Avro, any registered writer schema) →
//! the same event with the source's labels, GeoIP, asset and indicator data,
//! in `events`; dropped by a source's drop rule; or a dead letter when the
//! input cannot be decoded.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use firstmile_config::{Config, StageName, Topology};
use firstmile_enrich::{Enricher, SourceRules};
use firstmile_event::DeadLetterKind;
use firstmile_event::Event;
use firstmile_kafka::raw::headers;
use firstmile_metrics::KnownLabels;
use firstmile_schema::{Decoder, Registry};
use rdkafka::message::{Message, OwnedMessage};

use crate::encoder::EventEncoder;
use firstmile_kafka::header_str;

use crate::{Outcome, StageError, StageTopics, Step};

/// How often the indicator list's file is checked for changes.
const RELOAD_CHECK: Duration = Duration::from_secs(1);

pub struct EnrichStep {
    decoder: Decoder,
    enricher: Enricher,
    rules: BTreeMap<String, SourceRules>,
    encoder: EventEncoder,
    pipeline_version: String,
    /// `prepare` runs on the stage's own thread; registry calls run here.
    runtime: tokio::runtime::Handle,
    checked: Instant,
}

impl EnrichStep {
    /// The enrich stage's topics and step: loads the enrichment data and
    /// registers the event schema for the output. Call within a tokio runtime.
    pub async fn new(
        config: &Config,
        topology: &Topology,
    ) -> Result<(StageTopics, EnrichStep), StageError> {
        let topics = StageTopics::new(config, topology, StageName::Enrich);
        let mut rules = BTreeMap::new();
        for (name, source) in &config.sources {
            let r = SourceRules::new(&source.enrich).map_err(|error| StageError::Rules {
                name: name.clone(),
                error,
            })?;
            rules.insert(name.clone(), r);
        }
        let enricher = Enricher::new(&config.enrich).map_err(StageError::Enrich)?;
        let registry = Registry::new(&config.schema_registry)?;
        let step = EnrichStep {
            decoder: Decoder::new(registry, firstmile_event::event_schema()),
            enricher,
            rules,
            encoder: EventEncoder::for_topic(config, &topics.output).await?,
            pipeline_version: config.stages.pipeline_version.clone(),
            runtime: tokio::runtime::Handle::current(),
            checked: Instant::now(),
        };
        Ok((topics, step))
    }

    /// Reloads the indicator list if its file changed (checked at most once
    /// a second).
    pub(crate) fn reload_if_changed(&mut self) {
        if self.checked.elapsed() < RELOAD_CHECK {
            return;
        }
        self.checked = Instant::now();
        match self.enricher.refresh() {
            Ok(true) => tracing::info!("indicator list reloaded"),
            Ok(false) => {}
            // The list loaded before stays in use.
            Err(e) => tracing::warn!(error = %e, "indicator list not reloaded"),
        }
    }
}

impl Step for EnrichStep {
    fn prepare(&mut self, batch: &[OwnedMessage]) -> Result<(), String> {
        self.reload_if_changed();
        let missing = self
            .decoder
            .missing(batch.iter().map(|r| r.payload().unwrap_or_default()));
        for id in missing {
            let decoder = &mut self.decoder;
            self.runtime
                .block_on(decoder.fetch(id))
                .map_err(|e| format!("fetching schema id {id}: {e}"))?;
        }
        Ok(())
    }

    fn source_of(&self, record: &OwnedMessage) -> String {
        header_str(record, headers::SOURCE)
            .unwrap_or("unknown")
            .to_string()
    }

    fn known_labels(&self) -> KnownLabels {
        let mut discarded = Vec::new();
        for (source, rules) in &self.rules {
            let kinds = DeadLetterKind::DECODING.iter().map(|k| k.discard_reason());
            let drops = rules.drop_rules().map(crate::drop_reason);
            discarded.extend(kinds.chain(drops).map(|reason| (source.clone(), reason)));
        }
        KnownLabels {
            sources: self.rules.keys().cloned().collect(),
            discarded,
            ..KnownLabels::default()
        }
    }

    fn apply(&mut self, record: &OwnedMessage, _source: &str) -> Outcome {
        let event = match self
            .decoder
            .decode_event(record.payload().unwrap_or_default())
        {
            Ok(e) => e,
            Err(e) => {
                return Outcome::DeadLetter {
                    kind: e.kind,
                    message: e.message,
                }
            }
        };
        match self.enrich(event) {
            Ok(event) => self.encoder.outcome(&event),
            Err(dropped) => dropped,
        }
    }
}

impl EnrichStep {
    /// The event with its source's labels and the enrichment data, stamped
    /// with this pipeline version; or `Dropped` by a source's drop rule.
    pub(crate) fn enrich(&mut self, mut event: Event) -> Result<Event, Outcome> {
        if let Some(rules) = self.rules.get(&event.origin.source) {
            rules.label(&mut event);
            if let Some(rule) = rules.drop_rule(&event) {
                return Err(Outcome::Dropped {
                    rule: rule.to_string(),
                });
            }
        }
        self.enricher.enrich(&mut event);
        event.pipeline_version.clone_from(&self.pipeline_version);
        Ok(event)
    }

    pub(crate) fn encoder(&self) -> &EventEncoder {
        &self.encoder
    }
}
