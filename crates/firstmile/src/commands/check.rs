//! `firstmile check`: the configuration and topic declarations, validated together.

use anyhow::{bail, Result};

use crate::settings::Settings;

pub fn run(settings: &Settings) -> Result<()> {
    let (config, topology) = (&settings.config, &settings.topology);
    let topics = firstmile_kafka::topics::load_dir(&config.topics.dir)?;
    let mut problems = Vec::new();
    for (name, names) in &topology.sources {
        let raw = &names.raw_topic;
        if !topics.iter().any(|t| &t.name == raw) {
            problems.push(format!(
                "sources.{name}: its raw topic `{raw}` is not declared in {}",
                config.topics.dir.display()
            ));
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
        if !topics.iter().any(|t| t.name == required) {
            problems.push(format!(
                "topic `{required}` is not declared in {}; the pipeline needs it",
                config.topics.dir.display()
            ));
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
