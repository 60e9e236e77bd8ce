//! `firstmile status [--json] [--watch]`: the whole pipeline on one screen.
//! Exit status 0 when nothing is flagged, 2 when something is (for scripts
//! and checks), 1 on an error.

use std::io::Write;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use firstmile_observe::status::{self, Options};

use super::parse_span;
use crate::settings::Settings;

#[derive(Args)]
pub struct StatusArgs {
    /// Print the snapshot as JSON.
    #[arg(long)]
    json: bool,
    /// Refresh in place until Ctrl-C.
    #[arg(long)]
    watch: bool,
    /// Rates, dead-letter counts and recent rows are over this window.
    #[arg(long, default_value = "5m", value_parser = parse_span)]
    window: Duration,
    /// Flag a target whose newest row or document is older than this.
    #[arg(long, default_value = "5m", value_parser = parse_span)]
    stale_after: Duration,
    /// Time between the two samples of group offsets that tell a stalled
    /// group (lag, nothing committed) from a busy one.
    #[arg(long, default_value = "5s", value_parser = parse_span)]
    sample: Duration,
    /// A role's metrics endpoint (`http://host:9464`) to read its counters
    /// and readiness from; repeat for each role, or comma-separate.
    #[arg(
        long = "metrics",
        env = "FIRSTMILE_STATUS_METRICS",
        value_delimiter = ','
    )]
    metrics: Vec<String>,
}

pub async fn run(settings: &Settings, args: StatusArgs) -> Result<()> {
    let options = Options {
        window: args.window,
        stale_after: args.stale_after,
        sample: args.sample,
        metrics: args.metrics,
    };
    loop {
        let snapshot = status::collect(
            &settings.config,
            &settings.topology,
            &super::sink::targets(&settings.config)?,
            &options,
        )
        .await?;
        let text = if args.json {
            serde_json::to_string_pretty(&snapshot)? + "\n"
        } else {
            status::render(&snapshot)
        };
        let mut out = std::io::stdout().lock();
        if args.watch {
            // Home and clear: the snapshot replaces the last one.
            write!(out, "\x1b[H\x1b[2J")?;
        }
        out.write_all(text.as_bytes())?;
        out.flush()?;
        if !args.watch {
            if snapshot.problems() > 0 {
                std::process::exit(2);
            }
            return Ok(());
        }
        tokio::select! {
            _ = super::shutdown_signal() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}
