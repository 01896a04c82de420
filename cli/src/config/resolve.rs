//! The command line with the config files under it: which files a node
//! process reads, and how their settings join the flags.
//!
//! A setting becomes the flag it names, added to the command line only where
//! clap found no value for that flag on the command line or in its environment
//! variable. So precedence is clap's own, with the file below both: file <
//! environment < flags. Resolving again (on SIGHUP) repeats exactly this.

use super::file::{self, ConfigError, Setting, NOT_SETTINGS};
use super::{Table, DEFAULT_DIR};
use clap::parser::ValueSource;
use clap::{ArgMatches, Command};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Why the command line could not be resolved.
#[derive(Debug)]
pub enum Failure {
    /// A usage error (or --help, --version): clap prints it and exits.
    Usage(clap::Error),
    /// Mistakes in the config files, each at its place.
    Config(Vec<ConfigError>),
}

/// The parsed command line and, for a node process, what its files gave.
#[derive(Debug)]
pub struct Resolved {
    pub matches: ArgMatches,
    pub node: Option<NodeSettings>,
}

/// What the config files gave a node process (`up`, `coordinator`, `agent`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSettings {
    /// `up`, `coordinator` or `agent`.
    pub process: String,
    /// The files read: none without --config when no default file exists.
    pub files: Vec<PathBuf>,
    /// Settings this process has no flag for (`sluice up` and, say, `tls_cert`): checked, not used.
    pub unused: Vec<(PathBuf, Setting)>,
    /// Every setting's value in effect, by key, in its flag's words.
    pub effective: BTreeMap<String, Vec<String>>,
}

/// Parses a command line together with its config files; keeps both to do it again.
#[derive(Debug, Clone)]
pub struct Resolver {
    cli: Command,
    argv: Vec<OsString>,
    default_dir: PathBuf,
}

impl Resolver {
    /// `cli` is the whole `sluice` command; `argv` starts with the program name.
    pub fn new(cli: Command, argv: Vec<OsString>) -> Self {
        Self { cli, argv, default_dir: PathBuf::from(DEFAULT_DIR) }
    }

    /// Reads the default files from `dir` instead of /etc/sluice (for tests).
    pub fn with_default_dir(mut self, dir: &Path) -> Self {
        self.default_dir = dir.to_path_buf();
        self
    }

    /// Parses the command line; for a node process, reads its files and adds
    /// their settings where neither flag nor environment set a value.
    pub fn resolve(&self) -> Result<Resolved, Failure> {
        let matches = self.cli.clone().try_get_matches_from(&self.argv).map_err(Failure::Usage)?;
        let Some((process, sub)) = matches.subcommand().filter(|(name, _)| ["up", "coordinator", "agent"].contains(name)) else {
            return Ok(Resolved { matches, node: None });
        };
        let process = process.to_string();
        let command = self.cli.find_subcommand(&process).expect("the subcommand just parsed").clone();
        let sources = self.sources(&process, sub.get_one::<PathBuf>("config").map(PathBuf::as_path))?;
        // By flag, so that for `up` the [coordinator] table's value wins over the [agent] table's.
        let mut settings: BTreeMap<String, (PathBuf, Setting)> = BTreeMap::new();
        for (path, setting) in sources.iter().flat_map(|(path, list)| list.iter().map(move |s| (path, s))) {
            settings.insert(setting.long.clone(), (path.clone(), setting.clone()));
        }
        let mut unused = Vec::new();
        let mut added: Vec<OsString> = Vec::new();
        for (path, setting) in settings.into_values() {
            let Some(arg) = command.get_arguments().find(|a| a.get_long() == Some(setting.long.as_str())) else {
                unused.push((path, setting));
                continue;
            };
            if matches!(sub.value_source(arg.get_id().as_str()), None | Some(ValueSource::DefaultValue)) {
                added.extend(setting.as_flags().into_iter().map(OsString::from));
            }
        }
        let matches = match added.is_empty() {
            true => matches,
            false => self.cli.clone().try_get_matches_from(self.argv.iter().cloned().chain(added)).map_err(Failure::Usage)?,
        };
        let sub = matches.subcommand_matches(&process).expect("the same subcommand");
        let effective = effective(&command, sub);
        let mut files: Vec<PathBuf> = sources.into_iter().map(|(path, _)| path).collect();
        files.dedup();
        Ok(Resolved { node: Some(NodeSettings { process, files, unused, effective }), matches })
    }

    /// The settings of each file `process` reads, in the order they apply
    /// (later wins): the [agent] table before the [coordinator] table.
    fn sources(&self, process: &str, explicit: Option<&Path>) -> Result<Vec<(PathBuf, Vec<Setting>)>, Failure> {
        let wanted: &[Table] = match process {
            "coordinator" => &[Table::Coordinator],
            "agent" => &[Table::Agent],
            _ => &[Table::Agent, Table::Coordinator],
        };
        let mut sources = Vec::new();
        match explicit {
            Some(path) => {
                let mut file = file::read(path).map_err(Failure::Config)?;
                if !wanted.iter().any(|t| file.tables.contains_key(t)) {
                    return Err(Failure::Config(vec![missing_table(path, wanted)]));
                }
                for table in wanted {
                    if let Some(settings) = file.tables.remove(table) {
                        sources.push((path.to_path_buf(), settings));
                    }
                }
            }
            None => {
                for &table in wanted {
                    let path = table.default_file(&self.default_dir);
                    if std::fs::metadata(&path).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound) {
                        continue;
                    }
                    let mut file = file::read(&path).map_err(Failure::Config)?;
                    let settings = file.tables.remove(&table).ok_or_else(|| Failure::Config(vec![missing_table(&path, &[table])]))?;
                    sources.push((path, settings));
                }
            }
        }
        Ok(sources)
    }
}

/// A file without the table its process reads.
pub(super) fn missing_table(path: &Path, wanted: &[Table]) -> ConfigError {
    let names: Vec<String> = wanted.iter().map(|t| format!("[{}]", t.name())).collect();
    let message = format!("no {} table: put the settings under a line `{}` (see examples/config/)", names.join(" or "), names[names.len() - 1]);
    ConfigError { file: path.to_path_buf(), at: None, message }
}

/// Every setting of `command` as parsed into `matches`, in its flag's words.
fn effective(command: &Command, matches: &ArgMatches) -> BTreeMap<String, Vec<String>> {
    command
        .get_arguments()
        .filter(|arg| !NOT_SETTINGS.contains(&arg.get_id().as_str()))
        .filter_map(|arg| {
            let key = arg.get_long()?.replace('-', "_");
            let values = matches.get_raw(arg.get_id().as_str()).map(|raw| raw.map(|v| v.to_string_lossy().into_owned()).collect()).unwrap_or_default();
            Some((key, values))
        })
        .collect()
}
