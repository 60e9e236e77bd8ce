//! Topic declarations: `topics/*.toml`.
//!
//! ```toml
//! [defaults]                      # optional, for every topic of this file
//! partitions = 3
//! replication_factor = 1
//! retention_ms = 1209600000       # -1: keep forever
//! cleanup_policy = "delete"       # delete | compact | "compact,delete"
//! compression = "zstd"            # zstd | lz4 | gzip | snappy | producer | uncompressed
//! min_insync_replicas = 1
//!
//! [topic."raw.syslog"]            # one table per topic, overriding the defaults
//! partitions = 6
//! value_schema = "events.avsc"    # Avro schema of the values, next to this file
//! [topic."raw.syslog".config]     # any other topic-level Kafka config
//! "segment.ms" = "3600000"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::TopicsError;

/// One declared topic, defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i16,
    /// Kafka topic configs firstmile manages for this topic (`retention.ms`, …).
    pub configs: BTreeMap<String, String>,
    /// Path of the Avro schema for the topic's values, if it has one.
    pub value_schema: Option<PathBuf>,
    /// The file that declares it, for messages.
    pub file: PathBuf,
}

impl TopicSpec {
    /// The largest record the topic will take: its `max.message.bytes`, or
    /// Kafka's default.
    pub fn max_message_bytes(&self) -> usize {
        self.configs
            .get("max.message.bytes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(crate::limits::BROKER_DEFAULT)
    }
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    partitions: Option<i32>,
    replication_factor: Option<i16>,
    retention_ms: Option<i64>,
    retention_bytes: Option<i64>,
    cleanup_policy: Option<String>,
    compression: Option<String>,
    min_insync_replicas: Option<i32>,
    value_schema: Option<PathBuf>,
    #[serde(default)]
    config: BTreeMap<String, toml::Value>,
}

impl Settings {
    /// `self` over `base`.
    fn over(self, base: &Settings) -> Settings {
        let mut config = base.config.clone();
        config.extend(self.config);
        Settings {
            partitions: self.partitions.or(base.partitions),
            replication_factor: self.replication_factor.or(base.replication_factor),
            retention_ms: self.retention_ms.or(base.retention_ms),
            retention_bytes: self.retention_bytes.or(base.retention_bytes),
            cleanup_policy: self.cleanup_policy.or_else(|| base.cleanup_policy.clone()),
            compression: self.compression.or_else(|| base.compression.clone()),
            min_insync_replicas: self.min_insync_replicas.or(base.min_insync_replicas),
            value_schema: self.value_schema.or_else(|| base.value_schema.clone()),
            config,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopicFile {
    #[serde(default)]
    defaults: Settings,
    #[serde(default)]
    topic: BTreeMap<String, Settings>,
}

const CLEANUP_POLICIES: &[&str] = &["delete", "compact", "compact,delete", "delete,compact"];
const COMPRESSIONS: &[&str] = &["zstd", "lz4", "gzip", "snappy", "producer", "uncompressed"];

/// Reads every `*.toml` in `dir`, in name order.
pub fn load_dir(dir: &Path) -> Result<Vec<TopicSpec>, TopicsError> {
    let entries = std::fs::read_dir(dir).map_err(|source| TopicsError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    let mut specs: Vec<TopicSpec> = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|source| TopicsError::Read {
            path: file.clone(),
            source,
        })?;
        for spec in parse_file(&file, &text)? {
            if let Some(earlier) = specs.iter().find(|s| s.name == spec.name) {
                return Err(TopicsError::Invalid {
                    path: file.clone(),
                    message: format!(
                        "topic `{}` is declared here and in {}",
                        spec.name,
                        earlier.file.display()
                    ),
                });
            }
            specs.push(spec);
        }
    }
    Ok(specs)
}

/// Parses one topic file. Schema paths are resolved next to the file.
pub fn parse_file(path: &Path, text: &str) -> Result<Vec<TopicSpec>, TopicsError> {
    let invalid = |message: String| TopicsError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let file: TopicFile = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
    let mut specs = Vec::new();
    for (name, settings) in file.topic {
        if !firstmile_config::valid_topic_name(&name) {
            return Err(invalid(format!("`{name}` is not a valid Kafka topic name")));
        }
        let s = settings.over(&file.defaults);
        let partitions = s
            .partitions
            .ok_or_else(|| invalid(format!("topic `{name}`: `partitions` is not set")))?;
        let replication_factor = s
            .replication_factor
            .ok_or_else(|| invalid(format!("topic `{name}`: `replication_factor` is not set")))?;
        if partitions < 1 {
            return Err(invalid(format!(
                "topic `{name}`: partitions must be at least 1"
            )));
        }
        if replication_factor < 1 {
            return Err(invalid(format!(
                "topic `{name}`: replication_factor must be at least 1"
            )));
        }
        let mut configs = BTreeMap::new();
        if let Some(v) = s.retention_ms {
            configs.insert("retention.ms".to_string(), v.to_string());
        }
        if let Some(v) = s.retention_bytes {
            configs.insert("retention.bytes".to_string(), v.to_string());
        }
        if let Some(v) = &s.cleanup_policy {
            if !CLEANUP_POLICIES.contains(&v.as_str()) {
                return Err(invalid(format!(
                    "topic `{name}`: cleanup_policy `{v}` is not one of {CLEANUP_POLICIES:?}"
                )));
            }
            configs.insert("cleanup.policy".to_string(), normalize_list(v));
        }
        if let Some(v) = &s.compression {
            if !COMPRESSIONS.contains(&v.as_str()) {
                return Err(invalid(format!(
                    "topic `{name}`: compression `{v}` is not one of {COMPRESSIONS:?}"
                )));
            }
            configs.insert("compression.type".to_string(), v.clone());
        }
        if let Some(v) = s.min_insync_replicas {
            if v < 1 || i32::from(replication_factor) < v {
                return Err(invalid(format!(
                    "topic `{name}`: min_insync_replicas {v} must be between 1 and the \
                     replication factor {replication_factor}"
                )));
            }
            configs.insert("min.insync.replicas".to_string(), v.to_string());
        }
        for (key, value) in &s.config {
            let value = match value {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => {
                    return Err(invalid(format!(
                        "topic `{name}`: config `{key}` must be a scalar, not {}",
                        other.type_str()
                    )))
                }
            };
            if configs.insert(key.clone(), value).is_some() {
                return Err(invalid(format!(
                    "topic `{name}`: `{key}` is set both as a field and in `config`"
                )));
            }
        }
        let value_schema = s
            .value_schema
            .map(|p| path.parent().map(|dir| dir.join(&p)).unwrap_or(p));
        if let Some(schema) = &value_schema {
            if !schema.is_file() {
                return Err(invalid(format!(
                    "topic `{name}`: value_schema {} does not exist",
                    schema.display()
                )));
            }
        }
        specs.push(TopicSpec {
            name,
            partitions,
            replication_factor,
            configs,
            value_schema,
            file: path.to_path_buf(),
        });
    }
    Ok(specs)
}

/// Kafka reports list configs in its own order; compare them sorted.
pub(crate) fn normalize_list(v: &str) -> String {
    let mut parts: Vec<&str> = v.split(',').map(str::trim).collect();
    parts.sort_unstable();
    parts.join(",")
}
