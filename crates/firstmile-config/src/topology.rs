//! The topology: every topic, consumer group, dead-letter topic,
//! transactional id and static membership id of every role, resolved once
//! from the configuration. Roles, `status`, `audit`, replay and `check` take
//! their names from here; nothing else works out a default name.
//!
//! Pure: the caller passes the default instance id (the host name, for the
//! binary), so the same configuration always resolves to the same names.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use crate::Config;

/// The topic the parse stage writes by default.
pub const DEFAULT_PARSED_TOPIC: &str = "parsed";
/// The topic the enrich stage writes, and the sinks read, by default.
pub const DEFAULT_EVENTS_TOPIC: &str = "events";
/// The dead-letter topic of every stage and sink by default.
pub const DEFAULT_DLQ_TOPIC: &str = "dlq";
/// Prefix of every consumer group and transactional id firstmile names.
const GROUP_PREFIX: &str = "firstmile-";

/// A processing stage (`firstmile process --stage NAME`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StageName {
    Parse,
    Enrich,
}

impl StageName {
    /// Upstream first.
    pub const ALL: [StageName; 2] = [StageName::Parse, StageName::Enrich];

    pub fn as_str(self) -> &'static str {
        match self {
            StageName::Parse => "parse",
            StageName::Enrich => "enrich",
        }
    }
}

/// A sink (`firstmile sink NAME`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SinkName {
    Timescale,
    Elasticsearch,
}

impl SinkName {
    pub const ALL: [SinkName; 2] = [SinkName::Timescale, SinkName::Elasticsearch];

    pub fn as_str(self) -> &'static str {
        match self {
            SinkName::Timescale => "timescale",
            SinkName::Elasticsearch => "elasticsearch",
        }
    }

    /// The name a sink's dead letters carry in `firstmile.dlq.stage`, and
    /// `status` shows: `sink:<name>`.
    pub fn worker(self) -> String {
        format!("sink:{}", self.as_str())
    }
}

macro_rules! names {
    ($t:ty, $what:literal) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                Self::ALL
                    .into_iter()
                    .find(|n| n.as_str() == s)
                    .ok_or_else(|| {
                        let known: Vec<&str> = Self::ALL.iter().map(|n| n.as_str()).collect();
                        format!(
                            concat!("unknown ", $what, " `{}` (known: {})"),
                            s,
                            known.join(", ")
                        )
                    })
            }
        }
    };
}
names!(StageName, "stage");
names!(SinkName, "sink");

/// Where a stage reads and writes, and who it is in its group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageTopology {
    pub name: StageName,
    pub inputs: Vec<String>,
    pub output: String,
    pub dlq: String,
    pub group: String,
    /// `<group>-<instance id>`: the transactional id and the static group
    /// membership id, so a restarted worker fences its earlier self and
    /// takes its partitions back without a rebalance.
    pub member_id: String,
}

/// Where a sink reads and dead-letters, and who it is in its group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkTopology {
    pub name: SinkName,
    pub input: String,
    pub dlq: String,
    pub group: String,
    /// `<group>-<instance id>`: the static group membership id.
    pub member_id: String,
}

/// A source's raw topic and the names its replays use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceTopology {
    pub raw_topic: String,
    /// `firstmile-replay-<source>`: the replay's consumer group (its
    /// progress) and transactional id; never a live stage's group.
    pub replay_group: String,
}

/// Every name of the pipeline, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// By source name.
    pub sources: BTreeMap<String, SourceTopology>,
    pub parse: StageTopology,
    pub enrich: StageTopology,
    pub timescale: SinkTopology,
    pub elasticsearch: SinkTopology,
    /// The group `status` and `audit` name their readers with; it never
    /// commits (librdkafka wants a group even to assign partitions).
    pub observer_group: String,
}

impl Topology {
    /// `default_instance_id`: the instance id of roles whose configuration
    /// sets none (the binary passes the host name).
    pub fn resolve(config: &Config, default_instance_id: &str) -> Topology {
        let sources: BTreeMap<String, SourceTopology> = config
            .sources
            .iter()
            .map(|(name, source)| {
                let topology = SourceTopology {
                    raw_topic: raw_topic(name, source),
                    replay_group: replay_group(name),
                };
                (name.clone(), topology)
            })
            .collect();
        let raw_topics: BTreeSet<String> = sources.values().map(|s| s.raw_topic.clone()).collect();
        // The group (configured, else `firstmile-<role>`) and the member id
        // `<group>-<instance id>`.
        let member = |group: &Option<String>, role: String, instance: &Option<String>| {
            let group = group
                .clone()
                .unwrap_or_else(|| format!("{GROUP_PREFIX}{role}"));
            let instance = instance.as_deref().unwrap_or(default_instance_id);
            (format!("{group}-{instance}"), group)
        };
        let stage = |name: StageName, settings: &crate::Stage, inputs, default_output: &str| {
            let (member_id, group) =
                member(&settings.group, name.to_string(), &settings.instance_id);
            let output = settings.output.clone();
            StageTopology {
                name,
                inputs,
                output: output.unwrap_or_else(|| default_output.to_string()),
                dlq: settings.dlq.clone(),
                member_id,
                group,
            }
        };
        let parse = stage(
            StageName::Parse,
            &config.stages.parse,
            raw_topics.into_iter().collect(),
            DEFAULT_PARSED_TOPIC,
        );
        let enrich_inputs = if config.stages.enrich.input.is_empty() {
            vec![parse.output.clone()]
        } else {
            config.stages.enrich.input.clone()
        };
        let enrich = stage(
            StageName::Enrich,
            &config.stages.enrich,
            enrich_inputs,
            DEFAULT_EVENTS_TOPIC,
        );
        let sink = |name: SinkName, settings: &crate::SinkSettings| {
            let (member_id, group) = member(
                &settings.group,
                format!("sink-{name}"),
                &settings.instance_id,
            );
            let input = settings.input.clone();
            SinkTopology {
                name,
                input: input.unwrap_or_else(|| enrich.output.clone()),
                dlq: settings.dlq.clone(),
                member_id,
                group,
            }
        };
        Topology {
            timescale: sink(SinkName::Timescale, &config.sinks.timescale),
            elasticsearch: sink(SinkName::Elasticsearch, &config.sinks.elasticsearch),
            sources,
            parse,
            enrich,
            observer_group: format!("{GROUP_PREFIX}observe"),
        }
    }

    pub fn stage(&self, name: StageName) -> &StageTopology {
        match name {
            StageName::Parse => &self.parse,
            StageName::Enrich => &self.enrich,
        }
    }

    pub fn sink(&self, name: SinkName) -> &SinkTopology {
        match name {
            SinkName::Timescale => &self.timescale,
            SinkName::Elasticsearch => &self.elasticsearch,
        }
    }

    /// The stages, upstream first.
    pub fn stages(&self) -> impl Iterator<Item = &StageTopology> {
        StageName::ALL.into_iter().map(|n| self.stage(n))
    }

    pub fn sinks(&self) -> impl Iterator<Item = &SinkTopology> {
        SinkName::ALL.into_iter().map(|n| self.sink(n))
    }

    /// The topic replay writes its events to, and the parse → enrich chain's
    /// final output: the enrich stage's.
    pub fn events_topic(&self) -> &str {
        &self.enrich.output
    }

    /// Every configured dead-letter topic, each once: what `status`, `audit`
    /// and replay's dry run read.
    pub fn dlq_topics(&self) -> BTreeSet<&str> {
        self.stages()
            .map(|s| s.dlq.as_str())
            .chain(self.sinks().map(|s| s.dlq.as_str()))
            .collect()
    }

    /// The topics the pipeline writes between its roles, each once: the
    /// stages' outputs and every dead-letter topic (`firstmile check` wants
    /// them declared).
    pub fn pipeline_topics(&self) -> BTreeSet<&str> {
        let mut topics = self.dlq_topics();
        topics.extend(self.stages().map(|s| s.output.as_str()));
        topics
    }
}

/// The raw topic of the source `name`: its `topic`, else `raw.<name>`.
pub(crate) fn raw_topic(name: &str, source: &crate::Source) -> String {
    source
        .topic
        .clone()
        .unwrap_or_else(|| format!("raw.{name}"))
}

/// The consumer group (and transactional id) of a source's replays.
pub fn replay_group(source: &str) -> String {
    format!("{GROUP_PREFIX}replay-{source}")
}

impl fmt::Display for Topology {
    /// One line per role: what it reads, writes and is called in Kafka.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, s) in &self.sources {
            writeln!(
                f,
                "source {name:<14} raw {}  replay group {}",
                s.raw_topic, s.replay_group
            )?;
        }
        for s in self.stages() {
            writeln!(
                f,
                "stage  {:<14} {} -> {}  dlq {}  group {}  member/transactional id {}",
                s.name,
                s.inputs.join(","),
                s.output,
                s.dlq,
                s.group,
                s.member_id
            )?;
        }
        for s in self.sinks() {
            writeln!(
                f,
                "sink   {:<14} {}  dlq {}  group {}  member id {}",
                s.name, s.input, s.dlq, s.group, s.member_id
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml: &str) -> Config {
        let file = crate::ConfigFile {
            path: std::path::Path::new("t.toml"),
            text: toml,
        };
        crate::load(Some(file), Vec::new()).unwrap()
    }

    #[test]
    fn defaults_name_every_role() {
        let c = config("[sources.linux]\n[sources.web]\ntopic = \"raw.nginx\"\n");
        let t = Topology::resolve(&c, "host1");
        assert_eq!(t.parse.inputs, ["raw.linux", "raw.nginx"]);
        assert_eq!(t.parse.output, "parsed");
        assert_eq!(t.parse.group, "firstmile-parse");
        assert_eq!(t.parse.member_id, "firstmile-parse-host1");
        assert_eq!(t.enrich.inputs, ["parsed"]);
        assert_eq!(t.enrich.output, "events");
        assert_eq!(t.timescale.input, "events");
        assert_eq!(t.timescale.group, "firstmile-sink-timescale");
        assert_eq!(
            t.elasticsearch.member_id,
            "firstmile-sink-elasticsearch-host1"
        );
        assert_eq!(t.sources["web"].raw_topic, "raw.nginx");
        assert_eq!(t.sources["linux"].replay_group, "firstmile-replay-linux");
        assert_eq!(t.dlq_topics().into_iter().collect::<Vec<_>>(), ["dlq"]);
        assert_eq!(
            t.pipeline_topics().into_iter().collect::<Vec<_>>(),
            ["dlq", "events", "parsed"]
        );
    }

    #[test]
    fn configured_names_flow_downstream_and_every_dlq_is_listed() {
        let c = config(
            "[stages.parse]\noutput = \"p2\"\ngroup = \"g\"\ninstance_id = \"i\"\n\
             [stages.enrich]\noutput = \"e2\"\n\
             [sinks.elasticsearch]\ndlq = \"dlq.es\"\n[sinks.timescale]\ninput = \"other\"\n",
        );
        let t = Topology::resolve(&c, "host1");
        assert_eq!(t.parse.member_id, "g-i");
        assert_eq!(t.enrich.inputs, ["p2"], "enrich reads what parse writes");
        assert_eq!(t.elasticsearch.input, "e2", "sinks read what enrich writes");
        assert_eq!(t.timescale.input, "other");
        assert_eq!(t.events_topic(), "e2");
        assert_eq!(
            t.dlq_topics().into_iter().collect::<Vec<_>>(),
            ["dlq", "dlq.es"]
        );
        let text = t.to_string();
        assert!(text.contains("dlq dlq.es"), "{text}");
    }

    #[test]
    fn names_parse_back_and_unknown_ones_are_refused_with_the_known() {
        for s in StageName::ALL {
            assert_eq!(s.as_str().parse::<StageName>(), Ok(s));
        }
        for s in SinkName::ALL {
            assert_eq!(s.to_string().parse::<SinkName>(), Ok(s));
        }
        assert_eq!(
            "pars".parse::<StageName>(),
            Err("unknown stage `pars` (known: parse, enrich)".to_string())
        );
        assert_eq!(SinkName::Timescale.worker(), "sink:timescale");
    }
}
