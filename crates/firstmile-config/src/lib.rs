//! `firstmile.toml`: the typed configuration, its `FIRSTMILE_*` environment
//! overrides, and validation that reports every error with its key path and
//! where it came from (file line and column, or the environment variable).
//!
//! Environment overrides: `FIRSTMILE_<SECTION>__<KEY>[__<KEY>…]` sets
//! `section.key…` (names lower-cased; `__` separates levels). Inside librdkafka
//! property maps (`kafka.properties`, `.producer`, `.consumer`, `.admin`) a
//! single `_` stands for `.`: `FIRSTMILE_KAFKA__PROPERTIES__SECURITY_PROTOCOL`
//! sets `security.protocol`. Variables without `__` (e.g. `FIRSTMILE_CONFIG`)
//! are not overrides.
//!
//! Pure logic: the caller reads the file and passes the environment.

mod model;
mod redact;
mod topology;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue};
use toml::{Table, Value};

pub use model::*;
pub use redact::redact;
pub use topology::*;

/// Prefix of every firstmile environment variable.
pub const ENV_PREFIX: &str = "FIRSTMILE_";

/// Where a configuration error is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    File {
        path: PathBuf,
        line: usize,
        column: usize,
    },
    Env {
        var: String,
    },
    /// The key is not set anywhere (e.g. a semantic check on a default).
    Unset,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted key path, e.g. `kafka.properties.linger.ms`; empty for syntax errors.
    pub key: String,
    pub location: Location,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Location::File { path, line, column } => {
                write!(f, "{}:{line}:{column}: ", path.display())?
            }
            Location::Env { var } => write!(f, "{var} (environment): ")?,
            Location::Unset => {}
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// All errors found in one configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "{n} configuration error{}:",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

/// The text of a configuration file and the path it was read from.
pub struct ConfigFile<'a> {
    pub path: &'a Path,
    pub text: &'a str,
}

/// Parses the file (if any), applies the environment overrides and validates.
pub fn load<I>(file: Option<ConfigFile<'_>>, env: I) -> Result<Config, ConfigErrors>
where
    I: IntoIterator<Item = (String, String)>,
{
    let mut errors = Vec::new();
    let (table, spans) = match &file {
        Some(f) => match parse_file(f) {
            Ok(parsed) => parsed,
            Err(e) => return Err(ConfigErrors(e)),
        },
        None => (Table::new(), None),
    };
    // A value set by an override is located at its variable; a key in the file
    // at its line; a table that only an override created, at that variable.
    let locate = |key: &str, overrides: &Overrides| -> Location {
        if let Some(var) = overrides.setting(key) {
            return Location::Env {
                var: var.to_string(),
            };
        }
        if let (Some(f), Some(spans)) = (&file, &spans) {
            if spans.0.contains_key(key) {
                return spans.locate(f, key);
            }
        }
        if let Some(var) = overrides.creating(key) {
            return Location::Env {
                var: var.to_string(),
            };
        }
        match (&file, &spans) {
            (Some(f), Some(spans)) => spans.locate(f, key),
            _ => Location::Unset,
        }
    };

    let mut merge = Merge {
        base: table,
        overrides: Overrides::default(),
    };
    for (var, raw) in env {
        if let Err(message) = merge.overrides.add(&merge.base, &var, &raw) {
            errors.push(ConfigError {
                key: String::new(),
                location: Location::Env { var },
                message,
            });
        }
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }

    // Deserialize section by section (and map entry by entry) so that one
    // mistake does not hide the next.
    let sections: Vec<String> = merge.merged().keys().cloned().collect();
    for section in sections {
        let at = |t: &Table| t.get(&section).cloned();
        let result = match section.as_str() {
            "kafka" => merge.check::<Kafka>(&section, at),
            "schema_registry" => merge.check::<SchemaRegistry>(&section, at),
            "database" => merge.check::<Database>(&section, at),
            "elasticsearch" => merge.check::<Elasticsearch>(&section, at),
            "topics" => merge.check::<Topics>(&section, at),
            "sources" => merge.check_entries::<Source>(&section),
            "ingest" => merge.check::<Ingest>(&section, at),
            "metrics" => merge.check::<Metrics>(&section, at),
            "enrich" => merge.check::<Enrich>(&section, at),
            "stages" => merge.check::<Stages>(&section, at),
            "sinks" => merge.check::<Sinks>(&section, at),
            _ => Err(vec![(
                section.clone(),
                format!(
                    "unknown section `{section}` (known: kafka, schema_registry, database, \
                     elasticsearch, topics, sources, ingest, metrics, enrich, stages, sinks)"
                ),
            )]),
        };
        if let Err(found) = result {
            errors.extend(found.into_iter().map(|(key, message)| ConfigError {
                location: locate(&key, &merge.overrides),
                key,
                message,
            }));
        }
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    let config: Config = match Value::Table(merge.merged()).try_into() {
        Ok(c) => c,
        Err(e) => {
            return Err(ConfigErrors(vec![ConfigError {
                key: String::new(),
                location: Location::Unset,
                message: clean_message(&e.to_string()),
            }]))
        }
    };
    let semantic = validate(&config);
    if semantic.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(
            semantic
                .into_iter()
                .map(|(key, message)| ConfigError {
                    location: locate(&key, &merge.overrides),
                    key,
                    message,
                })
                .collect(),
        ))
    }
}

fn parse_file(file: &ConfigFile<'_>) -> Result<(Table, Option<Spans>), Vec<ConfigError>> {
    let (spanned, syntax) = DeTable::parse_recoverable(file.text);
    if !syntax.is_empty() {
        return Err(syntax
            .into_iter()
            .map(|e| {
                let (line, column) = e
                    .span()
                    .map(|s| line_column(file.text, s.start))
                    .unwrap_or((0, 0));
                ConfigError {
                    key: String::new(),
                    location: Location::File {
                        path: file.path.to_path_buf(),
                        line,
                        column,
                    },
                    message: e.message().to_string(),
                }
            })
            .collect());
    }
    let table: Table = toml::from_str(file.text).map_err(|e| {
        vec![ConfigError {
            key: String::new(),
            location: Location::Unset,
            message: e.to_string(),
        }]
    })?;
    let mut spans = Spans::default();
    spans.collect(&[], spanned.get_ref());
    Ok((table, Some(spans)))
}

/// Byte offset → 1-based line and column.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Start offset of every key in the file, by dotted path.
#[derive(Default)]
struct Spans(BTreeMap<String, usize>);

impl Spans {
    fn collect(&mut self, prefix: &[String], table: &DeTable<'_>) {
        for (key, value) in table {
            let mut path = prefix.to_vec();
            path.push(key.get_ref().to_string());
            self.0.insert(path.join("."), key.span().start);
            if let DeValue::Table(inner) = value.get_ref() {
                self.collect(&path, inner);
            }
        }
    }

    /// The location of `key`, or of its nearest ancestor present in the file.
    fn locate(&self, file: &ConfigFile<'_>, key: &str) -> Location {
        let mut candidate = key;
        loop {
            if let Some(&offset) = self.0.get(candidate) {
                let (line, column) = line_column(file.text, offset);
                return Location::File {
                    path: file.path.to_path_buf(),
                    line,
                    column,
                };
            }
            match candidate.rfind('.') {
                Some(i) => candidate = &candidate[..i],
                None => return Location::Unset,
            }
        }
    }
}

/// The librdkafka property maps, where `_` in an override stands for `.`.
const PROPERTY_MAPS: &[&str] = &[
    "kafka.properties",
    "kafka.producer",
    "kafka.consumer",
    "kafka.admin",
];

struct Override {
    var: String,
    path: Vec<String>,
    raw: String,
    /// Whether the value is inserted as a string (else parsed as a TOML literal).
    as_string: bool,
}

#[derive(Default)]
struct Overrides(Vec<Override>);

impl Overrides {
    /// Records an override; checks that its path fits the file's tables.
    fn add(&mut self, base: &Table, var: &str, raw: &str) -> Result<(), String> {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
            return Ok(());
        };
        if !rest.contains("__") {
            return Ok(());
        }
        let mut path: Vec<String> = Vec::new();
        for part in rest.split("__") {
            if part.is_empty() {
                return Err("empty key between `__` separators".into());
            }
            path.push(part.to_ascii_lowercase());
        }
        let dotted = path.join(".");
        if let Some(map) = PROPERTY_MAPS
            .iter()
            .find(|m| dotted.starts_with(&format!("{m}.")))
        {
            let depth = map.split('.').count();
            let property = path[depth..].join(".").replace('_', ".");
            path.truncate(depth);
            path.push(property);
        }
        // A literal when it reads as a number, boolean or array; retyped to a
        // string by `check` if the key wants a string.
        let as_string = parse_literal(raw).is_none();
        let o = Override {
            var: var.to_string(),
            path,
            raw: raw.to_string(),
            as_string,
        };
        let mut probe = base.clone();
        self.write_into(&mut probe)?;
        insert(&mut probe, &o)?;
        self.0.push(o);
        Ok(())
    }

    /// The override that set `key` or one of its ancestors.
    fn setting(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|o| {
                let p = o.path.join(".");
                key == p || key.starts_with(&format!("{p}."))
            })
            .map(|o| o.var.as_str())
    }

    /// An override below `key` (which may have created the table `key`).
    fn creating(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|o| o.path.join(".").starts_with(&format!("{key}.")))
            .map(|o| o.var.as_str())
    }

    /// Flips the override at `key` between literal and string; true if it did.
    fn retype(&mut self, key: &str) -> bool {
        for o in &mut self.0 {
            if o.path.join(".") == key && !o.as_string {
                o.as_string = true;
                return true;
            }
        }
        false
    }

    fn write_into(&self, table: &mut Table) -> Result<(), String> {
        self.0.iter().try_for_each(|o| insert(table, o))
    }
}

fn parse_literal(raw: &str) -> Option<Value> {
    let doc: Table = toml::from_str(&format!("v = {raw}")).ok()?;
    match doc.get("v")? {
        v @ (Value::Integer(_) | Value::Float(_) | Value::Boolean(_) | Value::Array(_)) => {
            Some(v.clone())
        }
        _ => None,
    }
}

fn insert(table: &mut Table, o: &Override) -> Result<(), String> {
    let value = if o.as_string {
        Value::String(o.raw.clone())
    } else {
        parse_literal(&o.raw).unwrap_or_else(|| Value::String(o.raw.clone()))
    };
    let (last, parents) = o.path.split_last().ok_or("empty key")?;
    let mut cursor = table;
    for (i, part) in parents.iter().enumerate() {
        let entry = cursor
            .entry(part.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        match entry {
            Value::Table(t) => cursor = t,
            _ => {
                return Err(format!(
                    "`{}` is not a table, cannot set `{}` in it",
                    o.path[..=i].join("."),
                    o.path.join(".")
                ))
            }
        }
    }
    cursor.insert(last.clone(), value);
    Ok(())
}

type Found = Vec<(String, String)>;

/// The file's table and the environment overrides laid over it.
struct Merge {
    base: Table,
    overrides: Overrides,
}

impl Merge {
    fn merged(&self) -> Table {
        let mut table = self.base.clone();
        // Every override was checked to fit when it was added.
        let _ = self.overrides.write_into(&mut table);
        table
    }

    /// Deserializes the value at `key`. On an error at an override that was
    /// inserted as a literal (`FIRSTMILE_X__PASSWORD=1234` for a string key),
    /// retries with that override as a string.
    fn check<T: DeserializeOwned>(
        &mut self,
        key: &str,
        lookup: impl Fn(&Table) -> Option<Value>,
    ) -> Result<(), Found> {
        loop {
            let Some(value) = lookup(&self.merged()) else {
                return Ok(());
            };
            match serde_path_to_error::deserialize::<_, T>(value) {
                Ok(_) => return Ok(()),
                Err(e) => {
                    let at = join_key(key, &e.path().to_string());
                    if self.overrides.retype(&at) {
                        continue;
                    }
                    return Err(vec![(at, clean_message(&e.inner().to_string()))]);
                }
            }
        }
    }

    /// Checks each entry of a map section on its own.
    fn check_entries<T: DeserializeOwned>(&mut self, section: &str) -> Result<(), Found> {
        let names: Vec<String> = match self.merged().get(section) {
            Some(Value::Table(entries)) => entries.keys().cloned().collect(),
            Some(_) => {
                return Err(vec![(
                    section.to_string(),
                    format!("`{section}` must be a table of named entries"),
                )])
            }
            None => return Ok(()),
        };
        let mut found = Vec::new();
        for name in names {
            let lookup = |t: &Table| t.get(section)?.get(&name).cloned();
            if let Err(mut e) = self.check::<T>(&format!("{section}.{name}"), lookup) {
                found.append(&mut e);
            }
        }
        if found.is_empty() {
            Ok(())
        } else {
            Err(found)
        }
    }
}

fn join_key(section: &str, inner: &str) -> String {
    if inner.is_empty() || inner == "." {
        section.to_string()
    } else {
        format!("{section}.{inner}")
    }
}

/// serde's messages are fine, but toml appends a redundant location when
/// deserializing from a value; keep the first line only.
fn clean_message(message: &str) -> String {
    message.lines().next().unwrap_or(message).trim().to_string()
}

/// Checks that need the whole typed configuration.
fn validate(config: &Config) -> Found {
    let mut found = Vec::new();
    if config.kafka.brokers.trim().is_empty() {
        found.push((
            "kafka.brokers".into(),
            "must list at least one broker (host:port)".into(),
        ));
    }
    for map in ["properties", "producer", "consumer", "admin"] {
        let props = match map {
            "properties" => &config.kafka.properties,
            "producer" => &config.kafka.producer,
            "consumer" => &config.kafka.consumer,
            _ => &config.kafka.admin,
        };
        for key in props.keys() {
            if let Some((_, why)) = model::MANAGED_KAFKA_PROPERTIES
                .iter()
                .find(|(k, _)| k == key)
            {
                found.push((
                    format!("kafka.{map}.{key}"),
                    format!("is set by firstmile itself: {why}"),
                ));
            }
        }
    }
    for (key, url, schemes) in [
        (
            "schema_registry.url",
            &config.schema_registry.url,
            &["http://", "https://"][..],
        ),
        (
            "elasticsearch.url",
            &config.elasticsearch.url,
            &["http://", "https://"][..],
        ),
        (
            "database.url",
            &config.database.url,
            &["postgres://", "postgresql://"][..],
        ),
    ] {
        if !schemes.iter().any(|s| url.starts_with(s)) {
            found.push((
                key.into(),
                format!("`{}` must start with {}", redact(url), schemes.join(" or ")),
            ));
        }
    }
    if !is_sql_identifier(&config.database.schema) {
        found.push((
            "database.schema".into(),
            "must be a lower-case SQL identifier ([a-z_][a-z0-9_]*, at most 63 bytes)".into(),
        ));
    }
    for (name, source) in &config.sources {
        if !valid_topic_name(name) {
            found.push((
                format!("sources.{name}"),
                "source names may use ASCII letters, digits, `.`, `_` and `-` only".into(),
            ));
        }
        if let Some(rule) = &source.multiline {
            let key = format!("sources.{name}.multiline");
            match (&rule.start, &rule.continuation) {
                (Some(p), None) | (None, Some(p)) => {
                    if let Err(e) = regex::bytes::Regex::new(p) {
                        let which = if rule.start.is_some() {
                            "start"
                        } else {
                            "continuation"
                        };
                        found.push((format!("{key}.{which}"), format!("invalid pattern: {e}")));
                    }
                }
                _ => found.push((
                    key.clone(),
                    "set exactly one of `start` and `continuation`".into(),
                )),
            }
            if rule.max_lines == 0 || rule.max_bytes == 0 {
                found.push((key, "max_lines and max_bytes must be at least 1".into()));
            }
        }
        for (i, rule) in source.enrich.drop.iter().enumerate() {
            if let Err(e) = regex::Regex::new(&rule.pattern) {
                found.push((
                    format!("sources.{name}.enrich.drop[{i}].pattern"),
                    format!("invalid pattern: {e}"),
                ));
            }
        }
        if let Some(topic) = &source.topic {
            if !valid_topic_name(topic) {
                found.push((
                    format!("sources.{name}.topic"),
                    format!("`{topic}` is not a valid Kafka topic name"),
                ));
            }
        }
    }
    validate_ingest(config, &mut found);
    for (key, addr) in [
        ("metrics.listen", &config.metrics.listen),
        ("ingest.http.listen", &config.ingest.http.listen),
    ] {
        if !addr.is_empty() && addr.parse::<std::net::SocketAddr>().is_err() {
            found.push((
                key.into(),
                format!("`{addr}` is not host:port (an IP address and a port)"),
            ));
        }
    }
    found
}

fn validate_ingest(config: &Config, found: &mut Found) {
    let ingest = &config.ingest;
    for (name, listener) in &ingest.syslog {
        let key = format!("ingest.syslog.{name}");
        if listener.listen.parse::<std::net::SocketAddr>().is_err() {
            found.push((
                format!("{key}.listen"),
                format!("`{}` is not host:port", listener.listen),
            ));
        }
        if !config.sources.contains_key(&listener.source) {
            found.push((
                format!("{key}.source"),
                format!("no source named `{}` in [sources]", listener.source),
            ));
        }
    }
    if ingest.http.max_decompressed_bytes < ingest.http.max_body_bytes {
        found.push((
            "ingest.http.max_decompressed_bytes".into(),
            "must be at least ingest.http.max_body_bytes".into(),
        ));
    }
    if ingest.http.max_concurrent_requests == 0 {
        found.push((
            "ingest.http.max_concurrent_requests".into(),
            "must be at least 1".into(),
        ));
    }
    if (ingest.max_in_flight_bytes as usize) < ingest.max_event_bytes {
        found.push((
            "ingest.max_in_flight_bytes".into(),
            "must be at least ingest.max_event_bytes, or a largest event could never be sent"
                .into(),
        ));
    }
}

/// A name that needs no quoting in PostgreSQL.
pub fn is_sql_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z' | '_'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
        && name.len() <= 63
}

/// Kafka's rule: 1–249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}
