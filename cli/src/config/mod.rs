//! Config files of `sluice coordinator`, `sluice agent` and `sluice up`.
//!
//! A file holds a `[coordinator]` table, an `[agent]` table or both. A key is
//! the long name of a flag with `_` for `-` (`gateway_threads` for
//! `--gateway-threads`), so every flag is a setting and the two cannot drift.
//! A setting counts only where neither the environment variable clap reads
//! (e.g. `SLUICE_DATA_DIR`) nor the flag gives a value: file < environment <
//! flags. Without `--config`, `/etc/sluice/coordinator.toml` and
//! `/etc/sluice/agent.toml` are read when they exist. On SIGHUP the files are
//! read again (`reload`).

pub mod check;
mod file;
mod reload;
mod resolve;

pub use file::{parse, read, settings_of, ConfigError, ConfigFile, Setting, Value};
pub use reload::{start, Reloads};
pub use resolve::{Failure, NodeSettings, Resolved, Resolver};

use clap::{Args, Command};
use std::path::PathBuf;

/// Where the files are read from when no `--config` is given.
pub const DEFAULT_DIR: &str = "/etc/sluice";

/// A table of a config file: the settings of one kind of process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Table {
    Coordinator,
    Agent,
}

impl Table {
    pub const ALL: [Table; 2] = [Table::Coordinator, Table::Agent];

    /// The table's name in a file, and the command it configures.
    pub fn name(self) -> &'static str {
        match self {
            Table::Coordinator => "coordinator",
            Table::Agent => "agent",
        }
    }

    /// The flags of `sluice coordinator` or `sluice agent`: the keys this table may hold.
    pub fn command(self) -> Command {
        let command = Command::new(self.name());
        match self {
            Table::Coordinator => crate::node::CoordinatorCommand::augment_args(command),
            Table::Agent => crate::node::AgentArgs::augment_args(command),
        }
    }

    /// The file read for this table when no `--config` is given.
    pub fn default_file(self, dir: &std::path::Path) -> PathBuf {
        dir.join(format!("{}.toml", self.name()))
    }
}

#[cfg(test)]
mod tests;
