//! Reading one config file: TOML with a `[coordinator]` table, an `[agent]`
//! table or both. Each key is the long name of a flag of `sluice coordinator`
//! or `sluice agent` with `_` for `-`, and each value is checked by that flag's
//! own parser, so the files accept exactly what the flags accept. Every
//! mistake is reported at its line and column, with the fix.

use super::Table;
use clap::{Arg, ArgAction, Command};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// Flags that are not settings: clap's own, and `--config`, which names the file.
pub(super) const NOT_SETTINGS: &[&str] = &["help", "version", "config"];

/// A mistake in a config file, at a line and column when it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// Line and column, from 1; None for the file as a whole (missing, unreadable).
    pub at: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.at {
            Some((line, column)) => write!(f, "{}:{line}:{column}: {}", self.file.display(), self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// What a setting says: a switch (`join = true`) or the values of a flag (one, or several for repeatable flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Switch(bool),
    Values(Vec<String>),
}

/// One `key = value` of a table, checked against its flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The key as written: the flag's long name with `_` for `-`.
    pub key: String,
    /// The flag's long name (without `--`).
    pub long: String,
    pub value: Value,
    /// Line and column of the key.
    pub at: (usize, usize),
}

impl Setting {
    /// The command-line words that say the same as this setting.
    pub fn as_flags(&self) -> Vec<String> {
        match &self.value {
            Value::Switch(true) => vec![format!("--{}", self.long)],
            Value::Switch(false) => Vec::new(),
            Value::Values(values) => values.iter().map(|v| format!("--{}={v}", self.long)).collect(),
        }
    }
}

/// A config file's tables, each with its settings in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigFile {
    pub path: PathBuf,
    pub tables: BTreeMap<Table, Vec<Setting>>,
}

/// The settings a table may hold: the flags of its command, by key.
pub fn settings_of(table: Table) -> BTreeMap<String, Arg> {
    table.command().get_arguments().filter(|arg| !NOT_SETTINGS.contains(&arg.get_id().as_str())).filter_map(|arg| Some((arg.get_long()?.replace('-', "_"), arg.clone()))).collect()
}

/// Reads and checks `path`; a missing or unreadable file is one error naming it.
pub fn read(path: &Path) -> Result<ConfigFile, Vec<ConfigError>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        let message = match e.kind() {
            std::io::ErrorKind::NotFound => "no such file: check the path given to --config, or leave --config out to read the default file if there is one".to_string(),
            _ => format!("cannot read it: {e}; check that it is a file this user may read"),
        };
        vec![ConfigError { file: path.to_path_buf(), at: None, message }]
    })?;
    parse(path, &text)
}

/// Checks the text of the file `path`: every error, in file order.
pub fn parse(path: &Path, text: &str) -> Result<ConfigFile, Vec<ConfigError>> {
    let error = |at: usize, message: String| ConfigError { file: path.to_path_buf(), at: Some(line_col(text, at)), message };
    let doc = DeTable::parse(text).map_err(|e| {
        let at = e.span().map_or(0, |s| s.start);
        vec![error(at, format!("{}: fix the TOML syntax (strings are quoted: api = \"127.0.0.1:7070\")", e.message().trim_end()))]
    })?;
    let mut file = ConfigFile { path: path.to_path_buf(), tables: BTreeMap::new() };
    let mut errors = Vec::new();
    for (name, value) in in_file_order(doc.get_ref()) {
        let table = match Table::ALL.into_iter().find(|t| t.name() == name.get_ref().as_ref()) {
            Some(table) => table,
            None => {
                let fix = match did_you_mean(name.get_ref(), &Table::ALL.map(Table::name)) {
                    Some(near) => format!("did you mean `[{near}]`?"),
                    None => "a config file holds a [coordinator] table, an [agent] table or both, and nothing else".into(),
                };
                errors.push(error(name.span().start, format!("unknown table `{}`: {fix}", name.get_ref())));
                continue;
            }
        };
        let DeValue::Table(entries) = value.get_ref() else {
            errors.push(error(name.span().start, format!("`{name}` must be a table: write `[{name}]` on its own line, then its settings", name = table.name())));
            continue;
        };
        let known = settings_of(table);
        let mut settings = Vec::new();
        for (key, value) in in_file_order(entries) {
            match setting(table, &known, key, value) {
                Ok(s) => settings.push(Setting { at: line_col(text, key.span().start), ..s }),
                Err((at, message)) => errors.push(error(at, message)),
            }
        }
        file.tables.insert(table, settings);
    }
    if errors.is_empty() {
        Ok(file)
    } else {
        Err(errors)
    }
}

/// A table's entries in file order (the table keeps them by key).
fn in_file_order<'t, 'i>(table: &'t DeTable<'i>) -> Vec<(&'t Spanned<std::borrow::Cow<'i, str>>, &'t Spanned<DeValue<'i>>)> {
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    entries
}

/// The setting `key = value` of `table`, or the error's file offset and message.
fn setting(table: Table, known: &BTreeMap<String, Arg>, key: &Spanned<std::borrow::Cow<'_, str>>, value: &Spanned<DeValue<'_>>) -> Result<Setting, (usize, String)> {
    let name = key.get_ref().as_ref();
    let Some(arg) = known.get(name) else {
        let keys: Vec<&str> = known.keys().map(String::as_str).collect();
        let fix = match did_you_mean(name, &keys) {
            Some(near) if near == name.replace('-', "_") => format!("write it `{near}`: keys have _ where the flag has -"),
            Some(near) => format!("did you mean `{near}`?"),
            None => format!("the keys of [{0}] are the long flags of `sluice {0}` with _ for - (`sluice {0} --help`; examples/config/{0}.toml lists them all)", table.name()),
        };
        return Err((key.span().start, format!("unknown key `{name}` in [{}]: {fix}", table.name())));
    };
    let long = arg.get_long().unwrap_or(name).to_string();
    let value = if arg.get_action().takes_values() {
        let repeatable = matches!(arg.get_action(), ArgAction::Append) || arg.get_value_delimiter().is_some();
        let items: Vec<&Spanned<DeValue<'_>>> = match value.get_ref() {
            DeValue::Array(items) if repeatable => items.iter().collect(),
            DeValue::Array(_) => return Err((value.span().start, format!("`{name}` takes one value, not a list: write {name} = {}", example(arg)))),
            _ => vec![value],
        };
        let mut values = Vec::with_capacity(items.len());
        for item in items {
            let text = scalar(item.get_ref()).ok_or_else(|| {
                let shape = if repeatable { format!("a list of strings, e.g. {name} = [{}]", example(arg)) } else { format!("e.g. {name} = {}", example(arg)) };
                (item.span().start, format!("`{name}` cannot be {}: write {shape}", item.get_ref().type_str()))
            })?;
            check_value(arg, &long, &text).map_err(|why| (item.span().start, format!("`{name}`: {why}")))?;
            values.push(text);
        }
        Value::Values(values)
    } else {
        match value.get_ref() {
            DeValue::Boolean(on) => Value::Switch(*on),
            other => return Err((value.span().start, format!("`{name}` is a switch, not {}: write {name} = true or {name} = false", other.type_str()))),
        }
    };
    Ok(Setting { key: name.to_string(), long, value, at: (0, 0) })
}

/// A string, number or boolean as the flag would be given it; None for tables, arrays and dates.
fn scalar(value: &DeValue<'_>) -> Option<String> {
    match value {
        DeValue::String(s) => Some(s.to_string()),
        DeValue::Integer(i) => i128::from_str_radix(i.as_str(), i.radix()).ok().map(|n| n.to_string()),
        DeValue::Float(f) => Some(f.as_str().to_string()),
        DeValue::Boolean(b) => Some(b.to_string()),
        DeValue::Datetime(_) | DeValue::Array(_) | DeValue::Table(_) => None,
    }
}

/// Runs `value` through the flag's own parser (the one the command line
/// uses), so the file accepts exactly what the flag accepts.
fn check_value(arg: &Arg, long: &str, value: &str) -> Result<(), String> {
    let probe = Arg::new(arg.get_id().clone()).action(ArgAction::Set).allow_hyphen_values(true).value_parser(arg.get_value_parser().clone());
    let Err(e) = Command::new("sluice").no_binary_name(true).arg(probe).try_get_matches_from([value]) else {
        return Ok(());
    };
    let possible: Vec<String> = arg.get_possible_values().iter().map(|v| v.get_name().to_string()).collect();
    let why = match std::error::Error::source(&e) {
        Some(source) => source.to_string(),
        None if !possible.is_empty() => format!("use one of {}", possible.join(", ")),
        None => e.kind().to_string(),
    };
    let hint = match arg.get_default_values().first() {
        Some(d) if !d.is_empty() => format!(" (the default is {:?})", d.to_string_lossy()),
        _ => String::new(),
    };
    Err(format!("invalid value {value:?} for --{long}: {why}{hint}"))
}

/// A value for `arg` to show in a fix: its default, else a placeholder.
fn example(arg: &Arg) -> String {
    match arg.get_default_values().first() {
        Some(d) if !d.is_empty() => format!("{:?}", d.to_string_lossy()),
        _ => "\"...\"".into(),
    }
}

/// 1-based line and column (in characters) of byte offset `at` in `text`.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let before = &text[..at];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (before.matches('\n').count() + 1, before[line_start..].chars().count() + 1)
}

/// The candidate within a small edit distance of `word` (a typo, or `-` for `_`).
fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let allowed = |len: usize| if len <= 4 { 1 } else { 2 };
    candidates.iter().map(|c| (distance(word, c), *c)).filter(|(d, c)| *d <= allowed(c.len())).min_by_key(|(d, _)| *d).map(|(_, c)| c)
}

/// Levenshtein distance over characters, with `-` and `_` the same.
fn distance(a: &str, b: &str) -> usize {
    let norm = |c: char| if c == '-' { '_' } else { c.to_ascii_lowercase() };
    let b: Vec<char> = b.chars().map(norm).collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().map(norm).enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (diagonal + usize::from(ca != *cb)).min(row[j] + 1).min(row[j + 1] + 1);
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}
