//! The Raft log on disk: entries, hard state, configuration and the latest
//! snapshot, in one `redb` database, with an in-memory copy that serves raft-rs.
//!
//! Why redb: a pure-Rust embedded store whose commits are atomic and, with
//! `Durability::Immediate` (set on every write, not left to the default),
//! fsynced before `commit` returns; a crash mid-commit
//! (a torn tail) is detected by its checksummed commit slots and rolled back to
//! the previous commit when the file is opened. One write transaction per Raft
//! `Ready` gives batching for free: every entry a `Ready` carries costs one fsync
//! together. raft-engine would be faster for huge logs but brings a C
//! compression library and far more code than a coordinator's small log needs.
//!
//! Reads never touch the disk: the log after the last snapshot is small (it is
//! compacted every `snapshot_every` entries), so it is kept in memory too, and
//! `Storage` is served from there.

use raft::prelude::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};
use redb::{Database, Durability, ReadableDatabase, TableDefinition, WriteTransaction};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const HARD_STATE: &str = "hard_state";
const CONF_STATE: &str = "conf_state";
const SNAPSHOT: &str = "snapshot";

/// A failure to read or write the log. The node cannot go on safely after one:
/// it stops, and the operator fixes the disk.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("raft log database: {0}")]
    Db(String),
    #[error("raft log holds an undecodable {what}: {reason}; the data directory is damaged, restore it or re-join this node empty")]
    Corrupt { what: &'static str, reason: String },
}

fn db_err(e: impl std::fmt::Display) -> LogError {
    LogError::Db(e.to_string())
}

/// A write that is on disk when `commit` returns: Raft acknowledges what it
/// persisted, so a commit must never be merely in the page cache. Stated
/// here rather than trusted to the library's default.
fn durable_write(db: &Database) -> Result<WriteTransaction, LogError> {
    let mut txn = db.begin_write().map_err(db_err)?;
    txn.set_durability(Durability::Immediate).map_err(db_err)?;
    Ok(txn)
}

/// What one `Ready` asks to persist, written in a single fsynced transaction.
#[derive(Debug, Default)]
pub struct Persist<'a> {
    pub snapshot: Option<&'a Snapshot>,
    pub entries: &'a [Entry],
    pub hard_state: Option<&'a HardState>,
    pub conf_state: Option<&'a ConfState>,
}

pub struct LogStore {
    db: Database,
    hard_state: HardState,
    conf_state: ConfState,
    snapshot: Snapshot,
    /// Entries after the snapshot, in index order.
    entries: Vec<Entry>,
    /// Raft asked for a snapshot the stored one cannot serve; the replica takes
    /// a new one after the current `Ready`.
    snapshot_wanted: AtomicBool,
}

impl LogStore {
    /// Opens (or creates) the log at `path`.
    pub fn open(path: &Path) -> Result<Self, LogError> {
        Self::load(Database::create(path).map_err(db_err)?)
    }

    /// A log that lives in memory only, for tests where fsync is not the point.
    #[cfg(test)]
    pub fn in_memory() -> Result<Self, LogError> {
        Self::load(Database::builder().create_with_backend(redb::backends::InMemoryBackend::new()).map_err(db_err)?)
    }

    /// A log on a given storage backend, for tests of what a failing disk does.
    #[cfg(test)]
    pub fn with_backend(backend: impl redb::StorageBackend) -> Result<Self, LogError> {
        Self::load(Database::builder().create_with_backend(backend).map_err(db_err)?)
    }

    fn load(db: Database) -> Result<Self, LogError> {
        let txn = durable_write(&db)?;
        txn.open_table(ENTRIES).map_err(db_err)?;
        txn.open_table(META).map_err(db_err)?;
        txn.commit().map_err(db_err)?;

        let read = db.begin_read().map_err(db_err)?;
        let meta = read.open_table(META).map_err(db_err)?;
        let decode_meta = |key: &'static str| -> Result<Option<Vec<u8>>, LogError> { Ok(meta.get(key).map_err(db_err)?.map(|v| v.value().to_vec())) };
        let mut hard_state = decode_meta(HARD_STATE)?.map(|b| decode::<HardState>(&b, "hard state")).transpose()?.unwrap_or_default();
        let conf_state = decode_meta(CONF_STATE)?.map(|b| decode::<ConfState>(&b, "configuration")).transpose()?.unwrap_or_default();
        let snapshot = decode_meta(SNAPSHOT)?.map(|b| decode::<Snapshot>(&b, "snapshot")).transpose()?.unwrap_or_default();
        // A snapshot holds committed entries only, but the stored commit index can be
        // older: one learnt after persisting (`set_commit`, every write of a cluster
        // of one) is written only with a later hard state, and a compaction or a
        // received snapshot is its own transaction. raft-rs refuses to start with a
        // commit index below the log's first index.
        hard_state.commit = hard_state.commit.max(snapshot.get_metadata().index);
        let table = read.open_table(ENTRIES).map_err(db_err)?;
        let mut entries = Vec::new();
        for row in table.range(snapshot.get_metadata().index + 1..).map_err(db_err)? {
            let (_, value) = row.map_err(db_err)?;
            entries.push(decode::<Entry>(value.value(), "entry")?);
        }
        drop((table, meta, read));
        Ok(Self { db, hard_state, conf_state, snapshot, entries, snapshot_wanted: AtomicBool::new(false) })
    }

    /// Whether nothing was ever written: a new node that has to be bootstrapped or join.
    pub fn is_empty(&self) -> bool {
        self.hard_state == HardState::default() && self.conf_state == ConfState::default() && self.entries.is_empty() && self.snapshot.get_metadata().index == 0
    }

    /// The latest snapshot (empty metadata if none).
    pub fn snapshot_ref(&self) -> &Snapshot {
        &self.snapshot
    }

    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    /// Writes and fsyncs what a `Ready` holds, then updates the in-memory copy.
    pub fn persist(&mut self, p: Persist<'_>) -> Result<(), LogError> {
        if p.snapshot.is_none() && p.entries.is_empty() && p.hard_state.is_none() && p.conf_state.is_none() {
            return Ok(());
        }
        let txn = durable_write(&self.db)?;
        {
            let mut table = txn.open_table(ENTRIES).map_err(db_err)?;
            let mut meta = txn.open_table(META).map_err(db_err)?;
            if let Some(snap) = p.snapshot {
                // A snapshot replaces the whole log: everything before it is in it,
                // and anything after it came from an old leader.
                table.retain(|_, _| false).map_err(db_err)?;
                meta.insert(SNAPSHOT, encode(snap)?.as_slice()).map_err(db_err)?;
                meta.insert(CONF_STATE, encode(snap.get_metadata().get_conf_state())?.as_slice()).map_err(db_err)?;
            }
            if let Some(first) = p.entries.first() {
                // Entries from `first.index` on are replaced: a new leader overwrote them.
                table.retain_in(first.index.., |_, _| false).map_err(db_err)?;
                for e in p.entries {
                    table.insert(e.index, encode(e)?.as_slice()).map_err(db_err)?;
                }
            }
            if let Some(hs) = p.hard_state {
                meta.insert(HARD_STATE, encode(hs)?.as_slice()).map_err(db_err)?;
            }
            if let Some(cs) = p.conf_state {
                meta.insert(CONF_STATE, encode(cs)?.as_slice()).map_err(db_err)?;
            }
        }
        txn.commit().map_err(db_err)?;

        if let Some(snap) = p.snapshot {
            let meta = snap.get_metadata();
            self.hard_state.term = self.hard_state.term.max(meta.term);
            self.hard_state.commit = self.hard_state.commit.max(meta.index);
            self.conf_state = meta.get_conf_state().clone();
            self.entries.clear();
            self.snapshot = snap.clone();
        }
        if let Some(first) = p.entries.first() {
            let keep = self.entries.iter().take_while(|e| e.index < first.index).count();
            self.entries.truncate(keep);
            self.entries.extend_from_slice(p.entries);
        }
        if let Some(hs) = p.hard_state {
            self.hard_state = hs.clone();
        }
        if let Some(cs) = p.conf_state {
            self.conf_state = cs.clone();
        }
        Ok(())
    }

    /// Records a commit index learnt after persisting; it is written with the next
    /// transaction, since a lost commit index is recovered from the leader.
    pub fn set_commit(&mut self, commit: u64) {
        self.hard_state.commit = self.hard_state.commit.max(commit);
    }

    /// Stores `snapshot` (taken by the state machine at an applied index) and
    /// drops the entries it covers.
    pub fn compact(&mut self, snapshot: Snapshot) -> Result<(), LogError> {
        let index = snapshot.get_metadata().index;
        let txn = durable_write(&self.db)?;
        {
            let mut table = txn.open_table(ENTRIES).map_err(db_err)?;
            let mut meta = txn.open_table(META).map_err(db_err)?;
            meta.insert(SNAPSHOT, encode(&snapshot)?.as_slice()).map_err(db_err)?;
            table.retain_in(..=index, |_, _| false).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)?;
        self.entries.retain(|e| e.index > index);
        self.snapshot = snapshot;
        Ok(())
    }

    /// Whether raft-rs asked for a newer snapshot than the stored one (and forgets the ask).
    pub fn take_snapshot_wanted(&self) -> bool {
        self.snapshot_wanted.swap(false, Ordering::Relaxed)
    }

    fn first(&self) -> u64 {
        self.snapshot.get_metadata().index + 1
    }

    fn last(&self) -> u64 {
        self.entries.last().map_or(self.snapshot.get_metadata().index, |e| e.index)
    }
}

impl Storage for LogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState { hard_state: self.hard_state.clone(), conf_state: self.conf_state.clone() })
    }

    fn entries(&self, low: u64, high: u64, max_size: impl Into<Option<u64>>, _context: GetEntriesContext) -> raft::Result<Vec<Entry>> {
        if low < self.first() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last() + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let offset = self.first();
        let mut out = self.entries[(low - offset) as usize..(high - offset) as usize].to_vec();
        raft::util::limit_size(&mut out, max_size.into());
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let meta = self.snapshot.get_metadata();
        if idx == meta.index {
            return Ok(meta.term);
        }
        if idx < self.first() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        match self.entries.get((idx - self.first()) as usize) {
            Some(e) => Ok(e.term),
            None => Err(raft::Error::Store(StorageError::Unavailable)),
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        // The stored snapshot is the last compaction point. It will not do for a
        // member added since (a new node refuses a snapshot whose configuration
        // does not include it) or for an explicit newer request: ask the replica
        // for a fresh one, and raft-rs retries on its next probe.
        let meta = self.snapshot.get_metadata();
        let conf = meta.get_conf_state();
        let knows_peer = conf.voters.contains(&to) || conf.learners.contains(&to);
        if meta.index < request_index || !knows_peer {
            self.snapshot_wanted.store(true, Ordering::Relaxed);
            return Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable));
        }
        Ok(self.snapshot.clone())
    }
}

fn encode(m: &impl protobuf::Message) -> Result<Vec<u8>, LogError> {
    m.write_to_bytes().map_err(|e| LogError::Corrupt { what: "record", reason: e.to_string() })
}

fn decode<M: protobuf::Message>(bytes: &[u8], what: &'static str) -> Result<M, LogError> {
    M::parse_from_bytes(bytes).map_err(|e| LogError::Corrupt { what, reason: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry { index, term, data: vec![index as u8].into(), ..Default::default() }
    }

    #[test]
    fn entries_hard_state_and_snapshots_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft.redb");
        {
            let mut log = LogStore::open(&path).unwrap();
            assert!(log.is_empty());
            let hs = HardState { term: 2, vote: 1, commit: 3, ..Default::default() };
            log.persist(Persist { entries: &[entry(1, 1), entry(2, 1), entry(3, 2)], hard_state: Some(&hs), ..Default::default() }).unwrap();
            // A new leader overwrites index 3 onwards.
            log.persist(Persist { entries: &[entry(3, 3), entry(4, 3)], ..Default::default() }).unwrap();
        }
        let mut log = LogStore::open(&path).unwrap();
        assert_eq!(log.last_index().unwrap(), 4);
        assert_eq!(log.term(3).unwrap(), 3);
        assert_eq!(log.initial_state().unwrap().hard_state.commit, 3);

        let mut snap = Snapshot::default();
        snap.mut_metadata().index = 3;
        snap.mut_metadata().term = 3;
        snap.mut_metadata().mut_conf_state().voters = vec![1, 2];
        snap.data = b"state".to_vec().into();
        log.compact(snap).unwrap();
        drop(log);

        let log = LogStore::open(&path).unwrap();
        assert_eq!(log.first_index().unwrap(), 4);
        assert_eq!(log.term(3).unwrap(), 3);
        assert!(matches!(log.entries(2, 4, None, GetEntriesContext::empty(false)), Err(raft::Error::Store(StorageError::Compacted))));
        assert_eq!(log.entries(4, 5, None, GetEntriesContext::empty(false)).unwrap(), vec![entry(4, 3)]);
        assert_eq!(&log.snapshot(0, 2).unwrap().data[..], b"state");
        // A member the snapshot does not know (added since) needs a newer one.
        assert!(log.snapshot(0, 4).is_err());
        assert!(log.take_snapshot_wanted());
    }

    #[test]
    fn a_received_snapshot_replaces_the_log() {
        let mut log = LogStore::in_memory().unwrap();
        log.persist(Persist { entries: &[entry(1, 1), entry(2, 1)], ..Default::default() }).unwrap();
        let mut snap = Snapshot::default();
        snap.mut_metadata().index = 10;
        snap.mut_metadata().term = 4;
        snap.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
        log.persist(Persist { snapshot: Some(&snap), ..Default::default() }).unwrap();
        assert_eq!((log.first_index().unwrap(), log.last_index().unwrap()), (11, 10));
        assert_eq!(log.initial_state().unwrap().conf_state.voters, vec![1, 2, 3]);
        assert_eq!(log.initial_state().unwrap().hard_state.commit, 10);
    }
}
