//! Finding and loading the configuration for a command.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use firstmile_config::{Config, ConfigFile, Topology};

pub struct Settings {
    pub config: Config,
    /// Every topic, group and id of every role, resolved once.
    pub topology: Topology,
    /// The file the configuration came from, if any.
    pub path: Option<PathBuf>,
}

impl Settings {
    /// `--config` (or FIRSTMILE_CONFIG) must exist; without it ./firstmile.toml
    /// is used when present, else the built-in defaults.
    pub fn load(explicit: Option<&Path>) -> Result<Settings> {
        let path = match explicit {
            Some(p) => Some(p.to_path_buf()),
            None => Some(PathBuf::from("firstmile.toml")).filter(|p| p.is_file()),
        };
        let text = match &path {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read the configuration {}", p.display()))?,
            ),
            None => None,
        };
        let file = match (&path, &text) {
            (Some(path), Some(text)) => Some(ConfigFile { path, text }),
            _ => None,
        };
        let config = firstmile_config::load(file, std::env::vars())?;
        let topology = Topology::resolve(&config, &default_instance_id());
        Ok(Settings {
            config,
            topology,
            path,
        })
    }
}

/// The instance id of roles whose configuration sets none: this host's name
/// and the process id. Two workers of one group on one host never share it
/// (a shared static member id fences one of them); in a container, where the
/// worker is process 1 under the container's own host name, it stays the
/// same across restarts, so a restarted worker takes its partitions back
/// without a rebalance.
fn default_instance_id() -> String {
    format!(
        "{}-{}",
        gethostname::gethostname().to_string_lossy(),
        std::process::id()
    )
}
