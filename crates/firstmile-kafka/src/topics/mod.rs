//! Topics as code: declarations in `topics/*.toml`, compared with the broker
//! (`plan`) and applied to it (`apply`).

mod plan;
mod spec;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewPartitions, NewTopic, ResourceSpecifier,
    TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::FromClientConfig;
use rdkafka::metadata::Metadata;

pub use plan::{plan, BrokerConfig, BrokerTopic, Change, Plan, Refusal};
pub use spec::{load_dir, parse_file, TopicSpec};

use crate::client::{client_config, ClientKind};

#[derive(Debug, thiserror::Error)]
pub enum TopicsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("kafka refused to {action} {topic}: {code}")]
    Rejected {
        action: &'static str,
        topic: String,
        code: rdkafka::types::RDKafkaErrorCode,
    },
    #[error("refused, nothing was changed:\n{}", .0.iter().map(|r| format!("  {r}")).collect::<Vec<_>>().join("\n"))]
    Refused(Vec<Refusal>),
    #[error("the broker did not show {0} within the request timeout")]
    NotVisible(String),
    #[error("cannot talk to the brokers at {brokers} within {seconds} s: {error}. Check kafka.brokers, and that [kafka.properties] security.protocol and sasl.* match the listener (a SASL or TLS listener drops a plaintext client without a word)")]
    Unreachable {
        brokers: String,
        seconds: u64,
        error: rdkafka::error::KafkaError,
    },
}

/// An admin connection for reading and changing topics.
pub struct TopicAdmin {
    admin: Arc<AdminClient<DefaultClientContext>>,
    brokers: String,
    timeout: Duration,
}

impl TopicAdmin {
    pub fn new(kafka: &firstmile_config::Kafka) -> Result<Self, TopicsError> {
        let config = client_config(kafka, ClientKind::Admin);
        Ok(TopicAdmin {
            admin: Arc::new(AdminClient::from_config(&config)?),
            brokers: kafka.brokers.clone(),
            timeout: Duration::from_millis(kafka.request_timeout_ms),
        })
    }

    fn options(&self) -> AdminOptions {
        AdminOptions::new()
            .request_timeout(Some(self.timeout))
            .operation_timeout(Some(self.timeout))
    }

    async fn metadata(&self) -> Result<Metadata, TopicsError> {
        let admin = Arc::clone(&self.admin);
        let timeout = self.timeout;
        tracing::info!(brokers = %self.brokers, "asking the brokers for their topics");
        // fetch_metadata blocks on librdkafka; keep it off the async workers.
        tokio::task::spawn_blocking(move || admin.inner().fetch_metadata(None, timeout))
            .await
            .map_err(|e| TopicsError::NotVisible(format!("metadata ({e})")))?
            .map_err(|error| TopicsError::Unreachable {
                brokers: self.brokers.clone(),
                seconds: timeout.as_secs(),
                error,
            })
    }

    /// Every topic on the broker with its partition count, replication factor
    /// and configs.
    pub async fn broker_state(&self) -> Result<BTreeMap<String, BrokerTopic>, TopicsError> {
        let metadata = self.metadata().await?;
        let mut topics = BTreeMap::new();
        let mut names = Vec::new();
        for t in metadata.topics() {
            if t.error().is_some() {
                continue; // being created or deleted right now
            }
            let replication_factor = t
                .partitions()
                .first()
                .map_or(0, |p| i16::try_from(p.replicas().len()).unwrap_or(i16::MAX));
            names.push(t.name().to_string());
            topics.insert(
                t.name().to_string(),
                BrokerTopic {
                    partitions: i32::try_from(t.partitions().len()).unwrap_or(i32::MAX),
                    replication_factor,
                    configs: BTreeMap::new(),
                },
            );
        }
        if names.is_empty() {
            return Ok(topics);
        }
        let specifiers: Vec<ResourceSpecifier<'_>> =
            names.iter().map(|n| ResourceSpecifier::Topic(n)).collect();
        let described = self
            .admin
            .describe_configs(&specifiers, &self.options())
            .await?;
        for (name, result) in names.iter().zip(described) {
            let resource = result.map_err(|code| TopicsError::Rejected {
                action: "describe configs of",
                topic: name.clone(),
                code,
            })?;
            if let Some(topic) = topics.get_mut(name) {
                topic.configs = resource
                    .entries
                    .into_iter()
                    .map(|e| {
                        let topic_override =
                            matches!(e.source, rdkafka::admin::ConfigSource::DynamicTopic);
                        (
                            e.name,
                            BrokerConfig {
                                value: e.value,
                                topic_override,
                            },
                        )
                    })
                    .collect();
            }
        }
        Ok(topics)
    }

    /// Plans the declared topics against the broker.
    pub async fn plan(
        &self,
        declared: &[TopicSpec],
        allow_delete: &BTreeSet<String>,
    ) -> Result<Plan, TopicsError> {
        Ok(plan(declared, &self.broker_state().await?, allow_delete))
    }

    /// Carries out a plan. Any refusal stops it before anything changes.
    pub async fn apply(&self, plan: &Plan) -> Result<(), TopicsError> {
        if !plan.refusals.is_empty() {
            return Err(TopicsError::Refused(plan.refusals.clone()));
        }
        let opts = self.options();
        let mut wait_for: Vec<(String, i32)> = Vec::new();
        for change in &plan.changes {
            match change {
                Change::Create(spec) => {
                    let mut topic = NewTopic::new(
                        &spec.name,
                        spec.partitions,
                        TopicReplication::Fixed(i32::from(spec.replication_factor)),
                    );
                    for (k, v) in &spec.configs {
                        topic = topic.set(k, v);
                    }
                    let results = self.admin.create_topics([&topic], &opts).await?;
                    check(results, "create")?;
                    wait_for.push((spec.name.clone(), spec.partitions));
                }
                Change::AddPartitions { topic, to, .. } => {
                    let count = usize::try_from(*to).unwrap_or(0);
                    let results = self
                        .admin
                        .create_partitions([&NewPartitions::new(topic, count)], &opts)
                        .await?;
                    check(results, "add partitions to")?;
                    wait_for.push((topic.clone(), *to));
                }
                Change::AlterConfigs {
                    topic, full_set, ..
                } => {
                    let mut alter = AlterConfig::new(ResourceSpecifier::Topic(topic));
                    for (k, v) in full_set {
                        alter = alter.set(k, v);
                    }
                    for result in self.admin.alter_configs([&alter], &opts).await? {
                        result.map_err(|(_, code)| TopicsError::Rejected {
                            action: "alter configs of",
                            topic: topic.clone(),
                            code,
                        })?;
                    }
                }
                Change::Delete { topic } => {
                    let results = self.admin.delete_topics(&[topic.as_str()], &opts).await?;
                    check(results, "delete")?;
                }
            }
        }
        self.wait_visible(&wait_for).await
    }

    /// Waits until metadata shows each topic with its partitions, so that the
    /// next plan (or producer) sees what was just created.
    async fn wait_visible(&self, topics: &[(String, i32)]) -> Result<(), TopicsError> {
        let deadline = Instant::now() + self.timeout;
        for (topic, partitions) in topics {
            loop {
                let metadata = self.metadata().await?;
                let seen = metadata.topics().iter().any(|t| {
                    t.name() == topic
                        && t.error().is_none()
                        && i32::try_from(t.partitions().len()).unwrap_or(0) >= *partitions
                });
                if seen {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(TopicsError::NotVisible(topic.clone()));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }
}

type TopicResults = Vec<Result<String, (String, rdkafka::types::RDKafkaErrorCode)>>;

fn check(results: TopicResults, action: &'static str) -> Result<(), TopicsError> {
    for r in results {
        r.map_err(|(topic, code)| TopicsError::Rejected {
            action,
            topic,
            code,
        })?;
    }
    Ok(())
}
