//! `firstmile check`: the configuration and topic declarations, validated together.

use anyhow::{bail, Result};

use crate::settings::Settings;

pub fn run(settings: &Settings) -> Result<()> {
    let (config, topology) = (&settings.config, &settings.topology);
    let topics = firstmile_kafka::topics::load_dir(&config.topics.dir)?;
    let mut problems = Vec::new();
    let declared = |name: &str| topics.iter().find(|t| t.name == name);
    // What a receiver writes: the largest event and its headers.
    let largest_raw_record = config.ingest.max_event_bytes + (64 << 10);
    let mut largest_raw_limit = 0;
    for (name, names) in &topology.sources {
        let raw = &names.raw_topic;
        match declared(raw) {
            None => problems.push(format!(
                "sources.{name}: its raw topic `{raw}` is not declared in {}",
                config.topics.dir.display()
            )),
            Some(t) if t.max_message_bytes() < largest_raw_record => problems.push(format!(
                "topic `{raw}` takes records of at most {} bytes (max.message.bytes); \
                 ingest.max_event_bytes lets receivers write {largest_raw_record}",
                t.max_message_bytes()
            )),
            Some(t) => largest_raw_limit = largest_raw_limit.max(t.max_message_bytes()),
        }
    }
    for (name, source) in &config.sources {
        if let Err(e) = firstmile_parse::SourceParser::new(&source.parse) {
            problems.push(format!("sources.{name}.parse: {e}"));
        }
        if let Err(e) = firstmile_enrich::SourceRules::new(&source.enrich) {
            problems.push(format!("sources.{name}.enrich: {e}"));
        }
    }
    if let Err(e) = firstmile_enrich::Enricher::new(&config.enrich) {
        problems.push(format!("enrich: {e}"));
    }
    for required in topology.pipeline_topics() {
        match declared(required) {
            None => problems.push(format!(
                "topic `{required}` is not declared in {}; the pipeline needs it",
                config.topics.dir.display()
            )),
            // Workers never send a record larger than the topic takes: an
            // event is dead-lettered as too_large, a dead letter is cut. A
            // pipeline topic smaller than a raw one makes that routine.
            Some(t) if t.max_message_bytes() < largest_raw_limit => problems.push(format!(
                "topic `{required}` takes records of at most {} bytes (max.message.bytes), \
                 less than a raw topic ({largest_raw_limit}): events of the largest records \
                 would be dead-lettered as too_large",
                t.max_message_bytes()
            )),
            Some(_) => {}
        }
    }
    if !problems.is_empty() {
        bail!(
            "{} problem(s):\n  {}",
            problems.len(),
            problems.join("\n  ")
        );
    }
    let from = settings
        .path
        .as_ref()
        .map_or("built-in defaults".to_string(), |p| p.display().to_string());
    say!(
        "ok: {from}: {} sources, {} topics declared in {}",
        config.sources.len(),
        topics.len(),
        config.topics.dir.display()
    );
    say!("{}", topology.to_string().trim_end());
    Ok(())
}
