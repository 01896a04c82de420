//! This coordinator's cluster identity on disk: `<data-dir>/cluster.id`, the
//! cluster's id (set once by its first leader, replicated in the state) and
//! this member's Raft id.
//!
//! It lives beside the log rather than in it so that a data directory that
//! held a cluster's log and lost it (a disk replaced, `raft.redb` deleted) is
//! told apart from one that never held anything: the first may have voted and
//! acknowledged entries it no longer has, and must not come back as the same
//! member; the second may found a cluster or join one. It is written once,
//! atomically (a temporary file, fsynced, renamed, the directory fsynced).

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

const FILE: &str = "cluster.id";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The cluster this data directory belongs to.
    pub cluster_id: String,
    /// The Raft id this data directory was used as.
    pub member_id: u64,
}

pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// The identity stored in `dir`, if any.
pub fn read(dir: &Path) -> Result<Option<Identity>, String> {
    let path = path(dir);
    match std::fs::read(&path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).map(Some).map_err(|e| format!("{} is damaged ({e}): restore it, or wipe the data directory and rejoin as a new member", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Stores `identity` in `dir` durably.
pub fn write(dir: &Path, identity: &Identity) -> std::io::Result<()> {
    let tmp = dir.join(format!("{FILE}.tmp"));
    let bytes = serde_json::to_vec(identity).map_err(std::io::Error::other)?;
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path(dir))?;
    // The rename is durable only once the directory is.
    std::fs::File::open(dir)?.sync_all()
}

/// A new random cluster id (128 bits, hex), from the kernel's generator.
pub fn new_cluster_id() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_survives_a_round_trip_and_ids_differ() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        let id = Identity { cluster_id: new_cluster_id().unwrap(), member_id: 3 };
        write(dir.path(), &id).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(id.clone()));
        assert_eq!(id.cluster_id.len(), 32);
        assert_ne!(id.cluster_id, new_cluster_id().unwrap());
    }
}
