//! `firstmile parse (--source NAME | --format FORMAT) [FILE|-]`: try a source's
//! parse and enrich chain on sample lines before deploying it. No Kafka: each
//! line is treated as a raw record received now, at offset = its line number.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use firstmile_config::{Parse, ParseFormat};
use firstmile_enrich::{Enricher, SourceRules};
use firstmile_event::Origin;
use firstmile_parse::SourceParser;
use serde_json::json;

use crate::settings::Settings;

#[derive(Args)]
pub struct ParseArgs {
    /// Use this source's parser from the configuration.
    #[arg(long, conflicts_with = "format")]
    source: Option<String>,
    /// Use a parser of this format with default settings: raw, syslog,
    /// rfc5424, access, apache_error, json, kv, cef (grok needs patterns: use --source).
    #[arg(long, value_parser = parse_format)]
    format: Option<ParseFormat>,
    /// File to read; `-` or nothing reads stdin.
    file: Option<PathBuf>,
}

/// The configuration's format names, so the CLI and `firstmile.toml` agree.
fn parse_format(name: &str) -> Result<ParseFormat, String> {
    use serde::de::IntoDeserializer;
    use serde::Deserialize;
    let format = ParseFormat::deserialize(name.into_deserializer())
        .map_err(|e: serde::de::value::Error| e.to_string())?;
    if format == ParseFormat::Grok {
        return Err("grok needs patterns: configure a source and use --source".into());
    }
    Ok(format)
}

pub fn run(settings: &Settings, args: ParseArgs) -> Result<()> {
    let (name, parse, rules) = match (&args.source, args.format) {
        (Some(name), _) => {
            let source = settings
                .config
                .sources
                .get(name)
                .with_context(|| format!("unknown source `{name}` (not in [sources])"))?;
            (name.clone(), source.parse.clone(), source.enrich.clone())
        }
        (None, Some(format)) => (
            "cli".to_string(),
            Parse {
                format,
                ..Default::default()
            },
            Default::default(),
        ),
        (None, None) => bail!("give --source NAME or --format FORMAT"),
    };
    let mut parser = SourceParser::new(&parse).with_context(|| format!("sources.{name}.parse"))?;
    let rules = SourceRules::new(&rules).with_context(|| format!("sources.{name}.enrich"))?;
    let enricher = Enricher::new(&settings.config.enrich).context("enrich")?;
    let mut dropped = BTreeMap::<String, u64>::new();
    let input: Box<dyn BufRead> = match &args.file {
        Some(p) if p.as_os_str() != "-" => Box::new(std::io::BufReader::new(
            std::fs::File::open(p).with_context(|| format!("cannot open {}", p.display()))?,
        )),
        _ => Box::new(std::io::stdin().lock()),
    };
    // What the stages stamp, so a drop rule or a diff tried here sees the
    // events as the pipeline makes them.
    let version = settings.config.stages.pipeline_version.as_str();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let (mut parsed, mut failed) = (0u64, BTreeMap::<&str, u64>::new());
    for (n, line) in input.split(b'\n').enumerate() {
        let mut line = line.context("cannot read input")?;
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        let origin = Origin {
            source: name.clone(),
            topic: "cli".into(),
            partition: 0,
            offset: n as i64 + 1,
        };
        let json = match parser.parse(&line, origin, jiff::Timestamp::now(), version) {
            Ok(mut event) => {
                rules.label(&mut event);
                if let Some(rule) = rules.drop_rule(&event) {
                    *dropped.entry(rule.to_string()).or_default() += 1;
                    continue;
                }
                enricher.enrich(&mut event);
                parsed += 1;
                serde_json::to_string(&event)?
            }
            Err(f) => {
                *failed.entry(f.kind.as_str()).or_default() += 1;
                json!({
                    "dlq": { "line": n + 1, "error_kind": f.kind, "error": f.message,
                             "raw": String::from_utf8_lossy(&line) }
                })
                .to_string()
            }
        };
        if let Err(e) = writeln!(out, "{json}") {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(());
            }
            return Err(e.into());
        }
    }
    out.flush().ok();
    let failed_total: u64 = failed.values().sum();
    eprintln!("{parsed} parsed, {failed_total} to dlq {failed:?}, dropped by rule {dropped:?}");
    Ok(())
}
