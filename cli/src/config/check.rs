//! `sluice config check FILE [--kind coordinator|agent]`: checks a config file
//! as the processes would read it, without starting anything.

use super::{read, Table};
use clap::Subcommand;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Check a config file: exit 0 with one line if it is valid, else every error at its line and column and exit 2.
    Check {
        file: PathBuf,
        /// The table the file must hold (default: any of [coordinator] and [agent], at least one).
        #[arg(long, value_enum)]
        kind: Option<Table>,
    },
}

/// The exit code of a file with mistakes (as for a usage error).
const INVALID: u8 = 2;

pub fn run(command: ConfigCommand) -> ExitCode {
    let ConfigCommand::Check { file, kind } = command;
    match check(&file, kind) {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            ExitCode::from(INVALID)
        }
    }
}

/// The one-line summary of a valid file, or its errors.
pub fn check(file: &Path, kind: Option<Table>) -> Result<String, Vec<String>> {
    let parsed = read(file).map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    let wanted: Vec<Table> = kind.map_or_else(|| Table::ALL.to_vec(), |k| vec![k]);
    if !wanted.iter().any(|t| parsed.tables.contains_key(t)) {
        return Err(vec![super::resolve::missing_table(file, &wanted).to_string()]);
    }
    let tables: Vec<String> = parsed.tables.iter().map(|(t, settings)| format!("[{}] {} setting(s)", t.name(), settings.len())).collect();
    Ok(format!("{}: OK, {}", file.display(), tables.join(", ")))
}
