//! `firstmile topics plan|apply`.

use std::collections::BTreeSet;

use anyhow::Result;
use clap::{Args, Subcommand};
use firstmile_kafka::topics::{load_dir, TopicAdmin};

use crate::settings::Settings;

#[derive(Subcommand)]
pub enum TopicsCommand {
    /// Print the difference between topics/*.toml and the broker.
    Plan(TopicsArgs),
    /// Create missing topics, add partitions, alter configs. Never deletes a
    /// topic unless --allow-delete names it.
    Apply(TopicsArgs),
}

#[derive(Args)]
pub struct TopicsArgs {
    /// Delete this undeclared topic (repeatable). Nothing is deleted otherwise.
    #[arg(long = "allow-delete", value_name = "TOPIC")]
    allow_delete: Vec<String>,
}

pub async fn run(settings: &Settings, command: TopicsCommand) -> Result<()> {
    let config = &settings.config;
    let declared = load_dir(&config.topics.dir)?;
    let admin = TopicAdmin::new(&config.kafka)?;
    let (args, apply) = match command {
        TopicsCommand::Plan(a) => (a, false),
        TopicsCommand::Apply(a) => (a, true),
    };
    let allow_delete: BTreeSet<String> = args.allow_delete.into_iter().collect();
    let plan = admin.plan(&declared, &allow_delete).await?;
    crate::output::emit(format_args!("{plan}"));
    if apply && !plan.is_empty() {
        admin.apply(&plan).await?;
        say!("applied {} change(s)", plan.changes.len());
    } else if !plan.refusals.is_empty() {
        anyhow::bail!("{} change(s) refused", plan.refusals.len());
    }
    Ok(())
}
