//! Events out: Avro of `topics/events.avsc` in Confluent framing, under the
//! schema id registered for the output topic.

use firstmile_config::Config;
use firstmile_event::Event;
use firstmile_kafka::Backoff;
use firstmile_schema::{confluent_frame, value_subject, Registry, RegistryError};

use crate::{Outcome, StageError};

pub struct EventEncoder {
    schema_id: u32,
}

impl EventEncoder {
    /// Registers the event schema for `topic` (retrying while the registry is
    /// unavailable: an outage is not bad data).
    pub async fn for_topic(config: &Config, topic: &str) -> Result<EventEncoder, StageError> {
        let registry = Registry::new(&config.schema_registry)?;
        let schema_id = register_with_retry(&registry, &value_subject(topic)).await?;
        Ok(EventEncoder { schema_id })
    }

    /// The event in Confluent framing: written straight after the frame's
    /// header, without a copy.
    pub fn encode(&self, event: &Event) -> Vec<u8> {
        let mut framed = confluent_frame(self.schema_id, &[]);
        event.write_avro_datum(&mut framed);
        framed
    }

    /// The encoded event as a stage's output.
    pub fn outcome(&self, event: &Event) -> Outcome {
        Outcome::Output(self.encode(event))
    }
}

async fn register_with_retry(registry: &Registry, subject: &str) -> Result<u32, StageError> {
    let mut backoff = Backoff::default();
    loop {
        match registry
            .register(subject, firstmile_event::EVENT_SCHEMA)
            .await
        {
            Ok(id) => return Ok(id),
            Err(RegistryError::Unavailable(why)) => {
                let wait = backoff.next_wait();
                tracing::warn!(%subject, error = %why, retry_in = ?wait, "schema registry unavailable");
                tokio::time::sleep(wait).await;
            }
            Err(error) => {
                return Err(StageError::Register {
                    subject: subject.to_string(),
                    error,
                })
            }
        }
    }
}
