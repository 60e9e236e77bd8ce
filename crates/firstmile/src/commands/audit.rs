//! `firstmile audit --from TIME --to TIME`: were all rows captured? Exit
//! status 0 when every raw record is accounted for and both sinks hold every
//! event, 2 when not, 1 on an error.

use anyhow::{bail, Result};
use clap::Args;
use firstmile_observe::audit;
use jiff::Timestamp;

use super::parse_time;
use crate::settings::Settings;

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
        &super::sink::targets(&settings.config)?,
        args.from,
        args.to,
        &args.source,
    )
    .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", audit::render(&report));
    }
    if !report.complete() {
        std::process::exit(2);
    }
    Ok(())
}
