//! `firstmile migrate`.

use anyhow::Result;
use clap::{Args, ValueEnum};
use firstmile_db::Flavour;

use crate::settings::Settings;

#[derive(Args)]
pub struct MigrateArgs {
    /// auto: TimescaleDB where the extension is available, else plain PostgreSQL.
    #[arg(long, default_value = "auto")]
    flavour: FlavourArg,
}

#[derive(Clone, Copy, ValueEnum)]
enum FlavourArg {
    Auto,
    Timescaledb,
    Postgres,
}

pub async fn run(settings: &Settings, args: MigrateArgs) -> Result<()> {
    let db = &settings.config.database;
    let mut client = firstmile_db::connect(db).await?;
    let force = match args.flavour {
        FlavourArg::Auto => None,
        FlavourArg::Timescaledb => Some(Flavour::TimescaleDb),
        FlavourArg::Postgres => Some(Flavour::Postgres),
    };
    let report = firstmile_db::migrate(&mut client, &db.schema, force).await?;
    say!(
        "{} schema {} ({}): applied {} migration(s){}, {} already applied",
        firstmile_config::redact(&db.url),
        db.schema,
        report.flavour,
        report.applied.len(),
        if report.applied.is_empty() {
            String::new()
        } else {
            format!(" [{}]", report.applied.join(", "))
        },
        report.already_applied.len()
    );
    Ok(())
}
