//! The difference between the declared topics and the broker: pure logic.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::spec::{normalize_list, TopicSpec};

/// A topic as the broker has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerTopic {
    pub partitions: i32,
    pub replication_factor: i16,
    /// Every config the broker reports for the topic.
    pub configs: BTreeMap<String, BrokerConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    pub value: Option<String>,
    /// Set on the topic itself (not inherited from the broker or a default):
    /// such values must be carried over when configs are altered.
    pub topic_override: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Create(TopicSpec),
    AddPartitions {
        topic: String,
        from: i32,
        to: i32,
    },
    AlterConfigs {
        topic: String,
        /// key → (current value, declared value)
        changes: BTreeMap<String, (Option<String>, String)>,
        /// The complete set of topic-level overrides after the change: Kafka's
        /// AlterConfigs replaces the whole set, so undeclared overrides are kept.
        full_set: BTreeMap<String, String>,
    },
    Delete {
        topic: String,
    },
}

/// What Kafka cannot do, or what firstmile will not do without being told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    FewerPartitions {
        topic: String,
        declared: i32,
        actual: i32,
    },
    ReplicationFactor {
        topic: String,
        declared: i16,
        actual: i16,
    },
    DeleteDeclared {
        topic: String,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::FewerPartitions {
                topic,
                declared,
                actual,
            } => write!(
                f,
                "{topic}: declared {declared} partitions but the topic has {actual}; Kafka cannot \
                 remove partitions (create a new topic and migrate, or declare {actual})"
            ),
            Refusal::ReplicationFactor {
                topic,
                declared,
                actual,
            } => write!(
                f,
                "{topic}: declared replication factor {declared} but the topic has {actual}; \
                 changing it needs a partition reassignment (kafka-reassign-partitions), which \
                 `topics apply` does not do"
            ),
            Refusal::DeleteDeclared { topic } => write!(
                f,
                "{topic}: --allow-delete names a topic that is still declared; remove its \
                 declaration first"
            ),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub changes: Vec<Change>,
    pub refusals: Vec<Refusal>,
    /// Declared topics that already match.
    pub unchanged: Vec<String>,
    /// Topics on the broker that no file declares (internal ones left out); left alone.
    pub undeclared: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.refusals.is_empty()
    }
}

/// Kafka's own and other tools' internal topics, never listed as undeclared.
fn is_internal(topic: &str) -> bool {
    topic.starts_with("__") || topic.starts_with("_schemas") || topic.starts_with("_confluent")
}

/// Computes what `apply` would do. `allow_delete` names undeclared topics to delete.
pub fn plan(
    declared: &[TopicSpec],
    broker: &BTreeMap<String, BrokerTopic>,
    allow_delete: &BTreeSet<String>,
) -> Plan {
    let mut plan = Plan::default();
    for spec in declared {
        let Some(actual) = broker.get(&spec.name) else {
            plan.changes.push(Change::Create(spec.clone()));
            continue;
        };
        let before = plan.changes.len() + plan.refusals.len();
        if spec.partitions < actual.partitions {
            plan.refusals.push(Refusal::FewerPartitions {
                topic: spec.name.clone(),
                declared: spec.partitions,
                actual: actual.partitions,
            });
        } else if spec.partitions > actual.partitions {
            plan.changes.push(Change::AddPartitions {
                topic: spec.name.clone(),
                from: actual.partitions,
                to: spec.partitions,
            });
        }
        if spec.replication_factor != actual.replication_factor {
            plan.refusals.push(Refusal::ReplicationFactor {
                topic: spec.name.clone(),
                declared: spec.replication_factor,
                actual: actual.replication_factor,
            });
        }
        let mut changes = BTreeMap::new();
        for (key, want) in &spec.configs {
            let have = actual.configs.get(key).and_then(|c| c.value.clone());
            let same = match (key.as_str(), &have) {
                ("cleanup.policy", Some(h)) => normalize_list(h) == *want,
                (_, Some(h)) => h == want,
                (_, None) => false,
            };
            if !same {
                changes.insert(key.clone(), (have, want.clone()));
            }
        }
        if !changes.is_empty() {
            let mut full_set: BTreeMap<String, String> = actual
                .configs
                .iter()
                .filter(|(_, c)| c.topic_override)
                .filter_map(|(k, c)| Some((k.clone(), c.value.clone()?)))
                .collect();
            full_set.extend(spec.configs.clone());
            plan.changes.push(Change::AlterConfigs {
                topic: spec.name.clone(),
                changes,
                full_set,
            });
        }
        if plan.changes.len() + plan.refusals.len() == before {
            plan.unchanged.push(spec.name.clone());
        }
    }
    let declared_names: BTreeSet<&str> = declared.iter().map(|s| s.name.as_str()).collect();
    for topic in allow_delete {
        if declared_names.contains(topic.as_str()) {
            plan.refusals.push(Refusal::DeleteDeclared {
                topic: topic.clone(),
            });
        } else if broker.contains_key(topic) {
            plan.changes.push(Change::Delete {
                topic: topic.clone(),
            });
        }
    }
    plan.undeclared = broker
        .keys()
        .filter(|t| !declared_names.contains(t.as_str()) && !is_internal(t))
        .filter(|t| !allow_delete.contains(*t))
        .cloned()
        .collect();
    plan
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for change in &self.changes {
            match change {
                Change::Create(spec) => {
                    writeln!(
                        f,
                        "+ create {} (partitions {}, replication factor {})",
                        spec.name, spec.partitions, spec.replication_factor
                    )?;
                    for (k, v) in &spec.configs {
                        writeln!(f, "    {k} = {v}")?;
                    }
                }
                Change::AddPartitions { topic, from, to } => {
                    writeln!(f, "~ {topic}: partitions {from} -> {to}")?
                }
                Change::AlterConfigs { topic, changes, .. } => {
                    writeln!(f, "~ {topic}:")?;
                    for (k, (from, to)) in changes {
                        let from = from.as_deref().unwrap_or("(unset)");
                        writeln!(f, "    {k}: {from} -> {to}")?;
                    }
                }
                Change::Delete { topic } => writeln!(f, "- delete {topic}")?,
            }
        }
        for refusal in &self.refusals {
            writeln!(f, "! refused: {refusal}")?;
        }
        if self.is_empty() {
            writeln!(
                f,
                "no changes: {} declared topics match the broker",
                self.unchanged.len()
            )?;
        }
        if !self.undeclared.is_empty() {
            writeln!(
                f,
                "undeclared topics on the broker, left alone: {}",
                self.undeclared.join(", ")
            )?;
        }
        Ok(())
    }
}
