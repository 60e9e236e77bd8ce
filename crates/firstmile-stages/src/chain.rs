//! `parse` then `enrich` in one step, with no topic in between: what
//! `firstmile replay` runs over a retained range of a raw topic, so a
//! replayed record becomes exactly what the live stages would make of it now.

use firstmile_config::{Config, Topology};
use firstmile_event::Event;
use rdkafka::message::OwnedMessage;

use crate::{EnrichStep, Outcome, ParseStep, StageError, Step};

pub struct Chain {
    parse: ParseStep,
    enrich: EnrichStep,
}

impl Chain {
    /// The chain as configured; registers the event schema for the enrich
    /// stage's output. Call within a tokio runtime.
    pub async fn new(config: &Config, topology: &Topology) -> Result<Chain, StageError> {
        let (_, parse) = ParseStep::new(config, topology).await?;
        let (_, enrich) = EnrichStep::new(config, topology).await?;
        Ok(Chain { parse, enrich })
    }

    /// The source a raw record belongs to, as the parse stage decides it.
    pub fn source_of(&self, record: &OwnedMessage) -> String {
        self.parse.source_of(record)
    }

    /// The enriched event a raw record makes, or why it makes none: an
    /// `Outcome::DeadLetter` or `Outcome::Dropped`.
    pub fn run(&mut self, record: &OwnedMessage, source: &str) -> Result<Event, Outcome> {
        self.enrich.enrich(self.parse.event(record, source)?)
    }

    /// The event encoded for [`Chain::output`].
    pub fn encode(&self, event: &Event) -> Outcome {
        self.enrich.encoder().outcome(event)
    }

    /// Picks up a changed indicator list, as the enrich stage does.
    pub fn refresh(&mut self) {
        self.enrich.reload_if_changed();
    }
}
