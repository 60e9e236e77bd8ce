//! `firstmile schemas check|register`: the Avro value schemas declared in
//! `topics/*.toml` (`value_schema`) against the registry's `<topic>-value`.

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use firstmile_kafka::topics::load_dir;
use firstmile_schema::{value_subject, Compatibility, Registry};

use crate::settings::Settings;

#[derive(Subcommand)]
pub enum SchemasCommand {
    /// Is each shipped schema compatible (under the subject's rule, BACKWARD by
    /// default) with what is registered? Fails on an incompatible schema.
    Check,
    /// Register each shipped schema (after the same check).
    Register,
}

pub async fn run(settings: &Settings, command: SchemasCommand) -> Result<()> {
    let config = &settings.config;
    let registry = Registry::new(&config.schema_registry)?;
    let mut incompatible = 0;
    let mut checked = 0;
    for topic in load_dir(&config.topics.dir)? {
        let Some(path) = &topic.value_schema else {
            continue;
        };
        checked += 1;
        let schema = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let subject = value_subject(&topic.name);
        let verdict = registry
            .check(&subject, &schema)
            .await
            .with_context(|| format!("{subject} ({})", path.display()))?;
        match &verdict {
            Compatibility::NotRegistered => say!("{subject}: not registered yet"),
            Compatibility::Registered { id, version } => {
                say!("{subject}: registered as id {id}, version {version}")
            }
            Compatibility::Compatible { latest_version } => {
                say!("{subject}: compatible with version {latest_version}")
            }
            Compatibility::Incompatible {
                latest_version,
                messages,
            } => {
                incompatible += 1;
                say!(
                    "{subject}: INCOMPATIBLE with version {latest_version}: {}",
                    messages.join("; ")
                );
            }
        }
        if matches!(command, SchemasCommand::Register)
            && matches!(
                verdict,
                Compatibility::NotRegistered | Compatibility::Compatible { .. }
            )
        {
            let id = registry.register(&subject, &schema).await?;
            say!("{subject}: registered as id {id}");
        }
    }
    if checked == 0 {
        say!(
            "no topic in {} declares a value_schema: nothing to check",
            config.topics.dir.display()
        );
    }
    if incompatible > 0 {
        bail!("{incompatible} schema(s) incompatible with the registry; nothing incompatible was registered");
    }
    Ok(())
}
