//! The first credentials: a new cluster's admin token, and the token the agent
//! inside `sluice up` speaks with, each written once to a file only its owner
//! can read (mode 0600).
//!
//! The admin token enters the replicated state through one `BootstrapAdmin`
//! entry, which applies once per cluster: if several founders each try, the
//! first committed wins and the others remove the file they wrote, so no file
//! ever holds a token that does not work.

use super::{new_token, record_for, Role};
use crate::state_machine::{Command, Response};
use crate::store::Store;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// Settings of authentication on a coordinator.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    pub mode: super::AuthMode,
    /// Where a new cluster's admin token is written (usually `<data-dir>/admin.token`).
    pub admin_token_file: Option<PathBuf>,
    /// Serve a non-loopback address with authentication off: only when told so.
    pub expose_without_auth: bool,
}

/// Makes sure the cluster has its first admin token and, if this coordinator
/// made it, that `file` holds it. Retries until the cluster can commit.
pub async fn admin_token(store: Arc<Store>, file: PathBuf) {
    loop {
        match try_admin_token(&store, &file).await {
            Ok(()) => return,
            Err(e) => {
                warn!(error = %e, "cannot settle the admin token yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn try_admin_token(store: &Store, file: &Path) -> Result<(), String> {
    let existing = read_token_file(file)?;
    let (bootstrapped, known) = store
        .read_linearizable(|s| {
            let known = existing.as_deref().and_then(super::split).and_then(|(id, _)| s.auth.tokens.get(id)).map(|r| r.name.clone());
            (s.auth.bootstrapped, known)
        })
        .await
        .map_err(|e| e.to_string())?;
    if bootstrapped {
        match (existing, known) {
            (None, _) => info!("the cluster's admin token was made earlier, by this or another coordinator; `sluice tokens create --role admin` makes another"),
            (Some(_), None) => warn!(file = %file.display(), "this file's token is not known to the cluster (revoked, or from another cluster): remove the file"),
            (Some(_), Some(_)) => info!(file = %file.display(), "admin token ready"),
        }
        return Ok(());
    }
    let roles = BTreeSet::from([Role::Admin]);
    let (token, wrote) = match existing {
        Some(token) => (token, false),
        None => (new_token("admin", roles.clone(), store.now(), None).map_err(|e| e.message)?.token, true),
    };
    if wrote {
        write_token_file(file, &token)?;
    }
    let record = record_for(&token, "admin", roles, store.now()).ok_or_else(|| format!("{} does not hold a Sluice token: remove it and restart", file.display()))?;
    match store.execute(Command::BootstrapAdmin { token: record }).await.map_err(|e| e.to_string())? {
        Response::Rejected { .. } => {
            if wrote {
                let _ = std::fs::remove_file(file);
                info!("another coordinator made the cluster's admin token first; use the file it wrote");
            } else {
                warn!(file = %file.display(), "this file's token is not the cluster's admin token: the cluster was bootstrapped with another");
            }
        }
        _ => info!(file = %file.display(), "admin token ready (mode 0600); the CLI reads it by default"),
    }
    Ok(())
}

/// Makes sure `file` holds a working token with `roles`, creating one (and the
/// file) if it is missing or no longer known to the cluster.
pub async fn ensure_token_file(store: &Store, file: &Path, name: &str, roles: BTreeSet<Role>) -> Result<String, String> {
    if let Some(token) = read_token_file(file)? {
        let id = super::split(&token).map(|(id, _)| id.to_string()).unwrap_or_default();
        if store.read_linearizable(|s| s.auth.tokens.contains_key(&id)).await.map_err(|e| e.to_string())? {
            return Ok(token);
        }
        info!(file = %file.display(), "its token is no longer known to the cluster; making a new one");
        std::fs::remove_file(file).map_err(|e| format!("cannot replace {}: {e}", file.display()))?;
    }
    let made = new_token(name, roles, store.now(), None).map_err(|e| e.message)?;
    write_token_file(file, &made.token)?;
    match store.execute(Command::CreateToken { token: made.record }).await.map_err(|e| e.to_string())? {
        Response::Ok => Ok(made.token),
        other => {
            let _ = std::fs::remove_file(file);
            Err(format!("the cluster refused the token: {other:?}"))
        }
    }
}

/// The token in `file`, or `None` if there is no such file.
pub fn read_token_file(file: &Path) -> Result<Option<String>, String> {
    match std::fs::read_to_string(file) {
        Ok(text) => Ok(Some(text.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}; check its permissions", file.display())),
    }
}

/// Writes a new token file readable by its owner only; refuses to overwrite.
fn write_token_file(file: &Path, token: &str) -> Result<(), String> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(file).map_err(|e| format!("cannot create {}: {e}; check the directory's permissions", file.display()))?;
    f.write_all(format!("{token}\n").as_bytes()).and_then(|()| f.sync_all()).map_err(|e| format!("cannot write {}: {e}", file.display()))
}
