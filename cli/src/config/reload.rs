//! SIGHUP: the config files are read again (with the same flags and
//! environment over them); what can change while running is applied, and
//! every other change is logged as needing a restart.
//!
//! What changes while running: the log filter (`log_level`) of every process,
//! and the labels and instance limit (`label`, `max_instances`) of `sluice
//! agent`, which it reports at once. Everything else is bound into listeners,
//! threads, the Raft log or the loops at start, and swapping it safely would
//! need those parts rebuilt.

use super::{Failure, NodeSettings, Resolver};
use clap::ArgMatches;
use std::io::IsTerminal;
use tokio::sync::watch;
use tracing::{info, warn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Registry};

/// The installed log filter, which SIGHUP may replace.
#[derive(Clone)]
struct LogFilter(reload::Handle<EnvFilter, Registry>);

/// Starts logging with `log_level`, says which config files were read and
/// which of their settings this process has no use for, and reads them again
/// on every SIGHUP. Call it inside the process's tokio runtime.
pub fn start(log_level: &str, resolver: Resolver, settings: NodeSettings) -> Reloads {
    let log = init_tracing(log_level);
    let files: Vec<String> = settings.files.iter().map(|f| f.display().to_string()).collect();
    match files.is_empty() {
        true => info!("no config file: flags, environment and defaults only"),
        false => info!(files = ?files, "config read; SIGHUP reads it again"),
    }
    for (file, setting) in &settings.unused {
        let (line, column) = setting.at;
        warn!("{}:{line}:{column}: `{}` is not a setting of `sluice {}`: ignored", file.display(), setting.key, settings.process);
    }
    let (changed, reloads) = watch::channel(None);
    tokio::spawn(watch_sighup(resolver, settings, log, changed));
    Reloads(reloads)
}

/// The process's command line (its subcommand's part) after each SIGHUP that
/// changed a setting the process applies itself: the agent's placement.
#[derive(Debug)]
pub struct Reloads(watch::Receiver<Option<ArgMatches>>);

impl Reloads {
    /// The next such command line; None once SIGHUP is no longer watched.
    pub async fn next(&mut self) -> Option<ArgMatches> {
        self.0.changed().await.ok()?;
        self.0.borrow_and_update().clone()
    }
}

/// The settings `process` applies while running; other changes need a restart.
pub(super) fn reloadable(process: &str) -> &'static [&'static str] {
    match process {
        "agent" => &["log_level", "label", "max_instances"],
        _ => &["log_level"],
    }
}

/// Installs the tracing subscriber with `filter` (RUST_LOG syntax, checked by
/// `--log-level`'s parser) and returns the handle that changes it.
fn init_tracing(filter: &str) -> LogFilter {
    let (layer, handle) = reload::Layer::new(EnvFilter::new(filter));
    // fmt writes to stdout; colour only for a person at a terminal, plain text for journald and files.
    let ansi = std::io::stdout().is_terminal();
    tracing_subscriber::registry().with(layer).with(fmt::layer().with_target(false).with_ansi(ansi)).init();
    LogFilter(handle)
}

impl LogFilter {
    fn set(&self, filter: &str) -> Result<(), String> {
        let filter = EnvFilter::try_new(filter).map_err(|e| e.to_string())?;
        self.0.reload(filter).map_err(|e| e.to_string())
    }
}

/// A setting whose value in effect would change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Change {
    pub key: String,
    pub from: String,
    pub to: String,
}

/// The settings whose value differs between `now` and `next`, by key.
pub(super) fn changes(now: &NodeSettings, next: &NodeSettings) -> Vec<Change> {
    let show = |values: Option<&Vec<String>>| match values.map(Vec::as_slice) {
        None | Some([]) => "(unset)".to_string(),
        Some(values) => values.join(","),
    };
    let keys: std::collections::BTreeSet<&String> = now.effective.keys().chain(next.effective.keys()).collect();
    keys.into_iter()
        .filter(|key| now.effective.get(*key) != next.effective.get(*key))
        .map(|key| Change { key: key.clone(), from: show(now.effective.get(key)), to: show(next.effective.get(key)) })
        .collect()
}

/// Reads the config again on every SIGHUP for as long as the process runs.
async fn watch_sighup(resolver: Resolver, mut current: NodeSettings, log: LogFilter, changed: watch::Sender<Option<ArgMatches>>) {
    #[cfg(unix)]
    {
        let mut hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGHUP: config changes need a restart");
                return;
            }
        };
        while hangups.recv().await.is_some() {
            current = reload(&resolver, current, &log, &changed);
        }
    }
    #[cfg(not(unix))]
    let _ = (resolver, &mut current, log, changed);
}

/// One reload: returns the settings in effect afterwards.
fn reload(resolver: &Resolver, mut current: NodeSettings, log: &LogFilter, changed: &watch::Sender<Option<ArgMatches>>) -> NodeSettings {
    let (matches, next) = match resolver.resolve() {
        Ok(resolved) => (resolved.matches, resolved.node.expect("a node process resolves to node settings")),
        Err(Failure::Config(errors)) => {
            for e in &errors {
                warn!("config not reloaded: {e}");
            }
            return current;
        }
        Err(Failure::Usage(e)) => {
            warn!("config not reloaded: {}", e.to_string().lines().next().unwrap_or_default());
            return current;
        }
    };
    let files: Vec<String> = next.files.iter().map(|f| f.display().to_string()).collect();
    let changes = changes(&current, &next);
    if changes.is_empty() {
        info!(files = ?files, "SIGHUP: config read again, nothing changed");
    }
    let mut placement = false;
    for Change { key, from, to } in changes {
        if !reloadable(&current.process).contains(&key.as_str()) {
            warn!("{key} changed from {from} to {to}: needs a restart");
            continue;
        }
        if key == "log_level" {
            if let Err(e) = log.set(&to) {
                warn!("log_level {to:?} not applied: {e}");
                continue;
            }
        } else {
            placement = true;
        }
        info!("{key} changed from {from} to {to}: applied");
        current.effective.insert(key.clone(), next.effective.get(&key).cloned().unwrap_or_default());
    }
    if placement {
        changed.send_replace(matches.subcommand_matches(&current.process).cloned());
    }
    current
}
