//! Which token a client command sends: `--token` (or `$SLUICE_TOKEN`), else
//! the file `--token-file` (or `$SLUICE_TOKEN_FILE`), else the admin token
//! that `sluice up` wrote to its data directory, if this user can read it.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// The file a new cluster's admin token is written to, in a data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
/// The file the agent inside `sluice up` keeps its token in.
pub const AGENT_TOKEN_FILE: &str = "agent.token";

/// The token to send, if any.
pub fn resolve(token: Option<String>, token_file: Option<&Path>) -> Result<Option<String>> {
    if let Some(token) = token.filter(|t| !t.trim().is_empty()) {
        return Ok(Some(token.trim().to_string()));
    }
    if let Some(file) = token_file {
        let text = std::fs::read_to_string(file).with_context(|| format!("--token-file {}: cannot read it; check the path and its permissions", file.display()))?;
        return one_token(&text, file).map(Some);
    }
    let default = default_data_dir().join(ADMIN_TOKEN_FILE);
    match std::fs::read_to_string(&default) {
        Ok(text) => one_token(&text, &default).map(Some),
        // No default file: the call goes without a token, and a coordinator that needs one says so.
        Err(_) => Ok(None),
    }
}

fn one_token(text: &str, file: &Path) -> Result<String> {
    let token = text.trim();
    if token.is_empty() || token.contains(char::is_whitespace) {
        bail!("{} does not hold one token: it should hold the single line `sluice tokens create` printed", file.display());
    }
    Ok(token.to_string())
}

/// `$XDG_DATA_HOME/sluice`, else `~/.local/share/sluice`, else `./sluice-data`.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("sluice");
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/share/sluice"),
        None => PathBuf::from("sluice-data"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_explicit_token_wins_and_a_token_file_must_hold_one_token() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t");
        std::fs::write(&file, "sluice_abc_def\n").unwrap();
        assert_eq!(resolve(Some("given".into()), Some(&file)).unwrap().as_deref(), Some("given"));
        assert_eq!(resolve(None, Some(&file)).unwrap().as_deref(), Some("sluice_abc_def"));
        std::fs::write(&file, "two tokens\n").unwrap();
        assert!(resolve(None, Some(&file)).unwrap_err().to_string().contains("one token"));
        assert!(resolve(None, Some(&dir.path().join("missing"))).is_err());
    }
}
