//! `firstmile audit --from TIME --to TIME`: were all rows captured? Exit
//! status 0 when every raw record is accounted for and both sinks hold every
//! event, 2 when not, 1 on an error.

use anyhow::{bail, Result};
use clap::Args;
use firstmile_observe::audit::{self, AuditReport};
use jiff::Timestamp;
use uuid::Uuid;

use super::parse_time;
use crate::settings::Settings;
use firstmile_config::SinkName;

#[derive(Args)]
pub struct AuditArgs {
    /// Records received from this time (RFC 3339, or a time ago: 90m, 6h, 2d).
    #[arg(long, value_parser = parse_time)]
    from: Timestamp,
    /// Up to this time (exclusive).
    #[arg(long, value_parser = parse_time)]
    to: Timestamp,
    /// Only this source; repeat for several (default: every source).
    #[arg(long)]
    source: Vec<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(settings: &Settings, args: AuditArgs) -> Result<()> {
    if args.to <= args.from {
        bail!("--to ({}) must be after --from ({})", args.to, args.from);
    }
    let report = audit::audit(
        &settings.config,
        &settings.topology,
        &super::sink::targets(&settings.config, &SinkName::ALL)?,
        args.from,
        args.to,
        &args.source,
    )
    .await?;
    let text = if args.json {
        serde_json::to_string_pretty(&report)? + "\n"
    } else {
        render(&report)
    };
    // A sink's error can quote a URL.
    print!("{}", firstmile_config::redact(&text));
    if !report.complete() {
        std::process::exit(2);
    }
    Ok(())
}

/// The report for a terminal.
fn render(report: &AuditReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "audit of records received from {} to {}",
        report.from, report.to
    );
    let _ = writeln!(
        out,
        "\n{:<20} {:>9} {:>9} {:>7} {:>12} {:>10} {:>14}",
        "SOURCE", "RAW", "EVENTS", "DLQ", "UNACCOUNTED", "TIMESCALE", "ELASTICSEARCH"
    );
    for s in &report.sources {
        let held = |name: &str| {
            s.sinks
                .iter()
                .find(|k| k.sink == name)
                .map_or("-".to_string(), |k| match &k.error {
                    Some(_) => "error".into(),
                    None => k.present.to_string(),
                })
        };
        let _ = writeln!(
            out,
            "{:<20} {:>9} {:>9} {:>7} {:>12} {:>10} {:>14}",
            s.source,
            s.raw,
            s.events,
            s.dlq,
            s.unaccounted,
            held("timescale"),
            held("elasticsearch")
        );
    }
    for s in &report.sources {
        if s.unaccounted > 0 {
            let _ = writeln!(
                out,
                "\n{}: {} raw record(s) with neither event nor dead letter (dropped by a rule, or lost), first: {}",
                s.source,
                s.unaccounted,
                s.unaccounted_records.join(" ")
            );
        }
        for k in &s.sinks {
            if let Some(e) = &k.error {
                let _ = writeln!(out, "\n{}: {} could not be checked: {e}", s.source, k.sink);
                continue;
            }
            if k.dead_lettered > 0 {
                let _ = writeln!(
                    out,
                    "\n{}: {} refused {} event(s) for their content: in its dead-letter topic with the reason",
                    s.source, k.sink, k.dead_lettered
                );
            }
            if k.missing_count > 0 {
                let ids: Vec<String> = k.missing.iter().map(Uuid::to_string).collect();
                let _ = writeln!(
                    out,
                    "\n{}: {} missing {} event(s), first: {}",
                    s.source,
                    k.sink,
                    k.missing_count,
                    ids.join(" ")
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "\n{}",
        if report.complete() {
            "complete: every raw record accounted for; every sink holds every event, or refused it into its dead-letter topic"
        } else {
            "incomplete"
        }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use firstmile_observe::audit::{SinkAudit, SourceAudit};

    #[test]
    fn the_text_names_what_each_sink_misses_and_refused() {
        let sink = |name: &str, dead_lettered, missing_count| SinkAudit {
            sink: name.into(),
            present: 10 - dead_lettered - missing_count,
            dead_lettered,
            missing_count,
            missing: (0..missing_count as u128).map(Uuid::from_u128).collect(),
            error: None,
        };
        let report = AuditReport {
            from: Timestamp::UNIX_EPOCH,
            to: Timestamp::UNIX_EPOCH,
            sources: vec![SourceAudit {
                source: "linux".into(),
                topic: "raw.linux".into(),
                raw: 10,
                events: 10,
                dlq: 0,
                unaccounted: 0,
                unaccounted_records: Vec::new(),
                sinks: vec![sink("timescale", 0, 2), sink("elasticsearch", 3, 0)],
            }],
        };
        let text = render(&report);
        for line in [
            "linux: timescale missing 2 event(s), first: 00000000-0000-0000-0000-000000000000",
            "linux: elasticsearch refused 3 event(s) for their content",
            "\nincomplete\n",
        ] {
            assert!(text.contains(line), "{line:?} not in:\n{text}");
        }
    }
}
