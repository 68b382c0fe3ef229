//! Durable Raft storage on `raft-engine` (tikv's log store for raft-rs).
//!
//! Layout under `<data_dir>/raft-log/` (raft-engine's own files), one raft
//! group (id 1) with these keys next to the entries:
//!
//! | key | value |
//! |---|---|
//! | `node` | the local node's string id; a dir of another node is refused |
//! | `hs` | the `HardState` (term, vote, commit) |
//! | `cs` | the `ConfState` the log replays from (empty until snapshots exist) |
//! | `members` | `raft id \t string id \t address` lines known at creation |
//! | `snap` | metadata (index, term, conf state) of the newest snapshot file |
//! | `snap_data` | the membership and config index that snapshot covers |
//! | `trunc` | index and term of the last entry removed by compaction |
//!
//! A new cluster's membership is not written as a `ConfState`: each founding
//! node writes the same conf-change entries (one `AddNode` per voter, term 1,
//! indexes 1..=n, committed), as etcd's `Bootstrap` does. A node that joins
//! later replays them from the leader and learns the full membership and
//! every address from the log itself.
//!
//! Entries and the hard state of one Ready go into one `LogBatch`, written with
//! fsync when raft-rs says the Ready must be synced, so they are atomic and
//! durable before any message that depends on them is sent. A torn tail left
//! by a crash in the middle of a write is dropped at open (it was never
//! acknowledged); any other corruption fails the open with a storage error.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};
use raft_engine::{Command, LogBatch};
use raftengine_kit::log_mark::{Legacy, Mark, MarkFile, MarkUpdate};
use raftengine_kit::node_log::{EnvelopeExt as EntryExt, GROUP};
use raftengine_kit::raft_log::{LogEngine, SyncCounter};

use protobuf::Message as _;
use raftengine::{Error, Result};
use raftengine_kit::entry_cache::{CachedEntry, EntryCache};

/// The newest entries kept in memory (`Cached::recent`): enough for every
/// append in flight to a follower that keeps up; one further behind reads
/// from the files.
const RECENT_ENTRIES: usize = 4096;
const RECENT_BYTES: usize = 8 * 1024 * 1024;
const KEY_HARD_STATE: &[u8] = b"hs";
const KEY_CONF_STATE: &[u8] = b"cs";
const KEY_MEMBERS: &[u8] = b"members";
const KEY_SNAPSHOT: &[u8] = b"snap";
const KEY_SNAPSHOT_DATA: &[u8] = b"snap_data";
const KEY_TRUNCATED: &[u8] = b"trunc";
/// A member as persisted in the address book.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    pub(crate) raft_id: u64,
    pub(crate) id: String,
    pub(crate) address: String,
}

#[derive(Debug)]
struct Cached {
    hard_state: HardState,
    conf_state: ConfState,
    /// The newest snapshot (index 0 before any) and its membership data.
    snapshot: SnapshotMetadata,
    snapshot_data: Vec<u8>,
    /// The last entry compaction removed: (index, term).
    truncated: (u64, u64),
    /// The newest entries: raft-rs asks for the term of recent entries on
    /// every acknowledgement and re-reads entries it replicates; from the
    /// files that was about a third of the leader loop's CPU at 256 clients
    /// (docs/benchmarks.md).
    recent: EntryCache<Entry>,
}

/// The raft-rs `Storage` over raft-engine. Cheap to clone; the Raft loop
/// writes through [`RaftStorage::persist`], raft-rs reads through the trait.
#[derive(Clone)]
pub(crate) struct RaftStorage {
    /// Set when raft-rs needed a snapshot the recorded one cannot serve;
    /// the Raft loop then takes a fresh one.
    snapshot_wanted: Arc<std::sync::atomic::AtomicBool>,
    local_id: String,
    engine: Arc<LogEngine>,
    /// Completed fsyncs of the log files (`Status::log_syncs`).
    syncs: SyncCounter,
    cached: Arc<Mutex<Cached>>,
    /// See [`raftengine_kit::log_mark`]; only the Raft loop writes, so the
    /// lock is never contended.
    mark: Arc<Mutex<MarkFile>>,
}

impl std::fmt::Debug for RaftStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftStorage")
            .field("dir", &self.engine.path())
            .finish_non_exhaustive()
    }
}

/// What [`RaftStorage::open`] found.
#[derive(Debug)]
pub(crate) struct Opened {
    pub(crate) storage: RaftStorage,
    /// False when the directory held no node yet.
    pub(crate) existed: bool,
    pub(crate) members: Vec<Member>,
    /// The newest snapshot's (index, term, membership data), if any.
    pub(crate) snapshot: Option<(u64, u64, Vec<u8>)>,
}

impl RaftStorage {
    /// Opens (creating if needed) the log under `data_dir` for `local_id`.
    /// Blocking: call it off the async runtime.
    pub(crate) fn open(data_dir: &Path, local_id: &str) -> Result<Opened> {
        // No other instance may hold the directory: a node restarted in
        // place has fully stopped before `create` returns again.
        let log = raftengine_kit::node_log::open(data_dir, local_id)
            .map_err(|e| Error::storage(e.to_string(), e))?;
        let (engine, syncs, existed) = (log.engine, log.syncs, log.existed);
        let hard_state: HardState = engine
            .get_message(GROUP, KEY_HARD_STATE)
            .map_err(|e| Error::storage("read hard state", e))?
            .unwrap_or_default();
        let conf_state: ConfState = engine
            .get_message(GROUP, KEY_CONF_STATE)
            .map_err(|e| Error::storage("read conf state", e))?
            .unwrap_or_default();
        let members = match engine.get(GROUP, KEY_MEMBERS) {
            Some(raw) => decode_members(&raw)?,
            None => Vec::new(),
        };
        let snapshot: SnapshotMetadata = engine
            .get_message(GROUP, KEY_SNAPSHOT)
            .map_err(|e| Error::storage("read snapshot metadata", e))?
            .unwrap_or_default();
        let snapshot_data = engine.get(GROUP, KEY_SNAPSHOT_DATA).unwrap_or_default();
        let truncated = match engine.get(GROUP, KEY_TRUNCATED) {
            None => (0, 0),
            Some(raw) if raw.len() == 16 => {
                let mut a = [0u8; 8];
                let mut b = [0u8; 8];
                a.copy_from_slice(&raw[..8]);
                b.copy_from_slice(&raw[8..]);
                (u64::from_be_bytes(a), u64::from_be_bytes(b))
            }
            Some(_) => {
                return Err(Error::Storage {
                    message: "corrupt truncation record in raft log".into(),
                    source: None,
                });
            }
        };
        let conf_state = if snapshot.index > 0 {
            snapshot.get_conf_state().clone()
        } else {
            conf_state
        };
        let snapshot_out =
            (snapshot.index > 0).then(|| (snapshot.index, snapshot.term, snapshot_data.clone()));
        let (mark_file, claim) =
            MarkFile::open(data_dir, Legacy::TermVoteCommitLast).map_err(|e| {
                Error::storage(
                    format!("open the raft log mark in {}", data_dir.display()),
                    e,
                )
            })?;
        let storage = RaftStorage {
            snapshot_wanted: Arc::default(),
            local_id: local_id.to_owned(),
            engine,
            syncs,
            cached: Arc::new(Mutex::new(Cached {
                hard_state,
                conf_state,
                snapshot,
                snapshot_data,
                truncated,
                recent: EntryCache::new(RECENT_ENTRIES, RECENT_BYTES),
            })),
            mark: Arc::new(Mutex::new(mark_file)),
        };
        if existed || claim != Mark::default() {
            storage.check_consistency(&claim)?;
        }
        Ok(Opened {
            storage,
            existed,
            members,
            snapshot: snapshot_out,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Cached> {
        // The cache holds plain values; a panic elsewhere cannot leave it
        // half-updated, so a poisoned lock is still usable.
        self.cached.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The hard state must not point past the log, and the log must hold at
    /// least what the watermark says was durable: otherwise records the node
    /// had acknowledged (entries, a vote) were lost to corruption.
    fn check_consistency(&self, claim: &Mark) -> Result<()> {
        let found = self.found_mark();
        let dir = self.engine.path().to_owned();
        if found.commit_end > found.end {
            return Err(Error::Storage {
                message: format!(
                    "raft log in {dir} is missing entries: commit index {} is past the last \
                     entry {}",
                    found.commit_end - 1,
                    found.end.saturating_sub(1)
                ),
                source: None,
            });
        }
        claim.check(&found).map_err(|lost| Error::Storage {
            message: format!("raft log in {dir} is corrupt: {lost}"),
            source: None,
        })?;
        self.verify_entries()
    }

    /// Reads every live entry once. raft-engine checks an entry's checksum
    /// only when it is read, and raft-rs treats a failed read as fatal (it
    /// panics), so a damaged entry must be found here, as a typed error. The
    /// log is bounded by compaction, so this reads at most a few thousand
    /// entries, in chunks.
    fn verify_entries(&self) -> Result<()> {
        const CHUNK: u64 = 1024;
        let (first, last) = (self.first_index_raw(), self.last_index_raw());
        let mut low = first;
        let mut buf = Vec::new();
        while low <= last {
            let high = (low + CHUNK).min(last + 1);
            buf.clear();
            self.engine
                .fetch_entries_to::<EntryExt>(GROUP, low, high, None, &mut buf)
                .map_err(|e| {
                    Error::storage(
                        format!(
                            "raft log in {} is corrupt: entries {low}..{high} are unreadable",
                            self.engine.path()
                        ),
                        e,
                    )
                })?;
            let contiguous = buf.iter().zip(low..high).all(|(e, i)| e.index == i);
            if buf.len() as u64 != high - low || !contiguous {
                return Err(Error::Storage {
                    message: format!(
                        "raft log in {} is corrupt: entries {low}..{high} are not contiguous",
                        self.engine.path()
                    ),
                    source: None,
                });
            }
            low = high;
        }
        Ok(())
    }

    /// What the log holds, in the watermark's terms.
    fn found_mark(&self) -> Mark {
        let end = end_of(self.last_index_raw());
        let c = self.lock();
        Mark {
            end,
            ..mark_of(&c.hard_state)
        }
    }

    fn marks(&self) -> MutexGuard<'_, MarkFile> {
        // The mark file holds plain values; a panic elsewhere cannot leave it
        // half-updated.
        self.mark.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// After an fsync everything written so far is durable: raise the mark.
    fn after_sync(&self) {
        self.marks().synced();
    }

    /// Before a write that ends the log at `end`, lower the mark; if that
    /// fails the write must not happen (the mark would then lead the log).
    fn lower_mark(&self, end: u64) -> Result<()> {
        self.marks()
            .lower_end(end)
            .map_err(|e| Error::storage("lower the raft log mark", e))
    }

    /// Writes a brand-new node: its identity, the initial voters (empty for a
    /// node that waits to be added) and their addresses. Synced.
    pub(crate) fn initialize(
        &self,
        data_dir: &Path,
        local_id: &str,
        bootstrap: &[Entry],
        members: &[Member],
    ) -> Result<()> {
        let mut batch = LogBatch::default();
        raftengine_kit::node_log::put_owner(&mut batch, local_id)
            .map_err(|e| Error::storage("record node id", e))?;
        put_raw(&mut batch, KEY_MEMBERS, encode_members(members), "members")?;
        let mut hs = HardState::default();
        let mut cs = ConfState::default();
        if let Some(last) = bootstrap.last() {
            // The bootstrap entries are committed by definition: every
            // founding node writes the identical entries.
            batch
                .add_entries::<EntryExt>(GROUP, bootstrap)
                .map_err(|e| Error::storage("encode bootstrap entries", e))?;
            hs.term = last.term;
            hs.commit = last.index;
            put_message(&mut batch, KEY_HARD_STATE, &hs, "hard state")?;
            // raft-rs learns its voters from the configuration it starts
            // with, not from committed entries it has yet to apply: without
            // this a founding node is no voter (and reports `Unknown`) until
            // its first round applies the entries. Applying them again then
            // changes nothing (adding a voter twice is a no-op).
            for e in bootstrap {
                let cc = raft::eraftpb::ConfChangeV2::parse_from_bytes(&e.data)
                    .map_err(|err| Error::storage("decode bootstrap conf change", err))?;
                cs.voters.extend(cc.get_changes().iter().map(|c| c.node_id));
            }
            put_message(&mut batch, KEY_CONF_STATE, &cs, "conf state")?;
        }
        raftengine_kit::raft_log::write(&self.engine, &mut batch, true)
            .map_err(|e| Error::storage("write initial state", e))?;
        raftengine_kit::node_log::record_created(data_dir, local_id).map_err(|e| {
            Error::storage(
                format!("write the identity file in {}", data_dir.display()),
                e,
            )
        })?;
        self.marks().written(&MarkUpdate {
            end: bootstrap.last().map(|e| e.index + 1),
            ..update_of(&hs)
        });
        {
            let mut c = self.lock();
            c.hard_state = hs;
            if !cs.voters.is_empty() {
                c.conf_state = cs;
            }
        }
        self.after_sync();
        Ok(())
    }

    /// Persists one Ready's entries and hard state atomically; fsyncs when
    /// `sync`. Entries at or after the first new index replace the old tail.
    pub(crate) fn persist(
        &self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
        sync: bool,
    ) -> Result<()> {
        if entries.is_empty() && hard_state.is_none() {
            return Ok(());
        }
        if let Some(first) = entries.first() {
            self.lower_mark(first.index)?;
        }
        let mut batch = LogBatch::default();
        if !entries.is_empty() {
            batch
                .add_entries::<EntryExt>(GROUP, entries)
                .map_err(|e| Error::storage("encode entries", e))?;
        }
        if let Some(hs) = hard_state {
            put_message(&mut batch, KEY_HARD_STATE, hs, "hard state")?;
        }
        raftengine_kit::raft_log::write(&self.engine, &mut batch, sync)
            .map_err(|e| Error::storage("write raft log", e))?;
        self.marks().written(&MarkUpdate {
            end: entries.last().map(|e| e.index + 1),
            ..hard_state.map(update_of).unwrap_or_default()
        });
        if !entries.is_empty() || hard_state.is_some() {
            let mut c = self.lock();
            c.recent.append(entries.iter().map(|e| CachedEntry {
                index: e.index,
                term: e.term,
                size: e.compute_size() as usize,
                entry: e.clone(),
            }));
            if let Some(hs) = hard_state {
                c.hard_state = hs.clone();
            }
        }
        if sync {
            self.after_sync();
        }
        Ok(())
    }

    /// Updates only the commit index (raft-rs's `LightReady::commit_index`);
    /// no fsync needed: a lost commit index is re-learned from the leader.
    pub(crate) fn persist_commit(&self, commit: u64) -> Result<()> {
        let mut hs = self.lock().hard_state.clone();
        if hs.commit >= commit {
            return Ok(());
        }
        hs.commit = commit;
        self.persist(&[], Some(&hs), false)
    }

    /// True (once) when raft-rs asked for a snapshot the recorded one could
    /// not serve.
    pub(crate) fn take_snapshot_request(&self) -> bool {
        self.snapshot_wanted
            .swap(false, std::sync::atomic::Ordering::Relaxed)
    }

    /// The counter of completed fsyncs of the log files.
    pub(crate) fn sync_counter(&self) -> SyncCounter {
        self.syncs.clone()
    }

    /// Forces everything written so far to disk (raft-engine's own
    /// `Engine::sync` does not: see [`raftengine_kit::raft_log`]).
    pub(crate) fn sync(&self) -> Result<()> {
        raftengine_kit::raft_log::sync(&self.engine, GROUP)
            .map_err(|e| Error::storage("sync raft log", e))?;
        self.after_sync();
        Ok(())
    }

    fn last_index_raw(&self) -> u64 {
        let truncated = self.lock().truncated.0;
        self.engine.last_index(GROUP).unwrap_or(0).max(truncated)
    }

    fn first_index_raw(&self) -> u64 {
        self.lock().truncated.0 + 1
    }

    /// Records a snapshot file written locally. Synced, so the metadata never
    /// points at a file that is not durable (the file is synced first).
    pub(crate) fn record_snapshot(&self, meta: &SnapshotMetadata, data: &[u8]) -> Result<()> {
        let mut batch = LogBatch::default();
        put_snapshot(&mut batch, meta, data)?;
        raftengine_kit::raft_log::write(&self.engine, &mut batch, true)
            .map_err(|e| Error::storage("write snapshot metadata", e))?;
        {
            let mut c = self.lock();
            c.snapshot = meta.clone();
            c.snapshot_data = data.to_vec();
        }
        self.after_sync();
        Ok(())
    }

    /// Removes entries up to and including `index`, which must be covered by
    /// the recorded snapshot.
    pub(crate) fn compact(&self, index: u64) -> Result<()> {
        let (snap_index, truncated) = {
            let c = self.lock();
            (c.snapshot.index, c.truncated.0)
        };
        if index <= truncated || index > snap_index {
            return Ok(());
        }
        let term = raft::Storage::term(self, index)
            .map_err(|e| Error::storage(format!("term of compaction index {index}"), e))?;
        let mut batch = LogBatch::default();
        put_raw(
            &mut batch,
            KEY_TRUNCATED,
            truncation_record(index, term),
            "truncation record",
        )?;
        batch.add_command(GROUP, Command::Compact { index: index + 1 });
        raftengine_kit::raft_log::write(&self.engine, &mut batch, true)
            .map_err(|e| Error::storage("write compaction", e))?;
        {
            let mut c = self.lock();
            c.truncated = (index, term);
            c.recent.compact_to(index);
        }
        self.after_sync();
        // Rewrites or deletes log files whose entries are all compacted.
        if let Err(e) = self.engine.purge_expired_files() {
            tracing::warn!(error = %e, "purging old raft log files failed");
        }
        Ok(())
    }

    /// Replaces the whole log with a snapshot received from the leader: the
    /// entries are dropped, the snapshot becomes the base, `hs` is written.
    pub(crate) fn install_snapshot(
        &self,
        meta: &SnapshotMetadata,
        data: &[u8],
        hs: Option<&HardState>,
    ) -> Result<()> {
        self.lower_mark(meta.index + 1)?;
        let mut batch = LogBatch::default();
        batch.add_command(GROUP, Command::Clean);
        raftengine_kit::node_log::put_owner(&mut batch, &self.local_id)
            .map_err(|e| Error::storage("record node id", e))?;
        put_snapshot(&mut batch, meta, data)?;
        put_raw(
            &mut batch,
            KEY_TRUNCATED,
            truncation_record(meta.index, meta.term),
            "truncation record",
        )?;
        let mut hard_state = self.lock().hard_state.clone();
        if let Some(hs) = hs {
            hard_state = hs.clone();
        }
        hard_state.commit = hard_state.commit.max(meta.index);
        put_message(&mut batch, KEY_HARD_STATE, &hard_state, "hard state")?;
        raftengine_kit::raft_log::write(&self.engine, &mut batch, true)
            .map_err(|e| Error::storage("install snapshot", e))?;
        self.marks().written(&MarkUpdate {
            end: Some(meta.index + 1),
            ..update_of(&hard_state)
        });
        let mut c = self.lock();
        c.snapshot = meta.clone();
        c.snapshot_data = data.to_vec();
        c.truncated = (meta.index, meta.term);
        c.recent.clear();
        c.conf_state = meta.get_conf_state().clone();
        c.hard_state = hard_state;
        drop(c);
        self.after_sync();
        Ok(())
    }
}

/// One past `index`; 0 for none (raft-rs's log starts at 1).
fn end_of(index: u64) -> u64 {
    if index == 0 { 0 } else { index + 1 }
}

/// A hard state in the watermark's terms.
fn mark_of(hs: &HardState) -> Mark {
    Mark {
        vote_term: hs.term,
        voted_for: hs.vote,
        commit_end: end_of(hs.commit),
        end: 0,
    }
}

/// What writing `hs` changes in the watermark.
fn update_of(hs: &HardState) -> MarkUpdate {
    MarkUpdate {
        end: None,
        vote: Some((hs.term, hs.vote)),
        commit_end: Some(end_of(hs.commit)),
    }
}

impl raft::Storage for RaftStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let c = self.lock();
        Ok(RaftState {
            hard_state: c.hard_state.clone(),
            conf_state: c.conf_state.clone(),
        })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first_index_raw() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_index_raw() + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let max_size = max_size.into();
        if let Some(cached) = self.lock().recent.range(low, high, max_size) {
            return Ok(cached);
        }
        let mut out = Vec::with_capacity((high - low) as usize);
        let max = max_size.map(|m| m as usize);
        self.engine
            .fetch_entries_to::<EntryExt>(GROUP, low, high, max, &mut out)
            .map_err(|e| raft::Error::Store(StorageError::Other(Box::new(e))))?;
        // raft-rs expects at least one entry even if it exceeds max_size;
        // raft-engine already honours that.
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let (truncated, snapshot) = {
            let c = self.lock();
            if idx > c.truncated.0 {
                if let Some(term) = c.recent.term(idx) {
                    return Ok(term);
                }
            }
            (c.truncated, (c.snapshot.index, c.snapshot.term))
        };
        if idx == truncated.0 {
            return Ok(truncated.1);
        }
        if idx == snapshot.0 && idx > 0 {
            return Ok(snapshot.1);
        }
        if idx < truncated.0 {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        match self.engine.get_entry::<EntryExt>(GROUP, idx) {
            Ok(Some(e)) => Ok(e.term),
            Ok(None) => Err(raft::Error::Store(StorageError::Unavailable)),
            Err(e) => Err(raft::Error::Store(StorageError::Other(Box::new(e)))),
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first_index_raw())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_index_raw())
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let c = self.lock();
        let cs = c.snapshot.get_conf_state();
        let knows_peer = cs.voters.contains(&to) || cs.learners.contains(&to);
        // No snapshot yet, an older one than raft-rs asks for, or one taken
        // before the peer joined (the peer would refuse it): ask the loop
        // for a fresh one; raft-rs retries.
        if c.snapshot.index == 0 || c.snapshot.index < request_index || !knows_peer {
            self.snapshot_wanted
                .store(true, std::sync::atomic::Ordering::Relaxed);
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        // The message carries only metadata and the membership; the state
        // machine's bytes travel separately (see `transport`).
        let mut snap = Snapshot::default();
        snap.set_metadata(c.snapshot.clone());
        snap.data = c.snapshot_data.clone().into();
        Ok(snap)
    }
}

/// Adds `key = message` (protobuf-encoded) to `batch`.
fn put_message<M: protobuf::Message>(
    batch: &mut LogBatch,
    key: &[u8],
    message: &M,
    what: &str,
) -> Result<()> {
    batch
        .put_message(GROUP, key.to_vec(), message)
        .map_err(|e| Error::storage(format!("encode {what}"), e))
}

/// Adds the snapshot metadata and its membership data to `batch`.
fn put_snapshot(batch: &mut LogBatch, meta: &SnapshotMetadata, data: &[u8]) -> Result<()> {
    put_message(batch, KEY_SNAPSHOT, meta, "snapshot metadata")?;
    put_raw(batch, KEY_SNAPSHOT_DATA, data.to_vec(), "snapshot data")
}

/// The `trunc` value: index and term of the last compacted entry.
fn truncation_record(index: u64, term: u64) -> Vec<u8> {
    let mut record = index.to_be_bytes().to_vec();
    record.extend_from_slice(&term.to_be_bytes());
    record
}

/// Adds `key = value` to `batch`.
fn put_raw(batch: &mut LogBatch, key: &[u8], value: Vec<u8>, what: &str) -> Result<()> {
    batch
        .put(GROUP, key.to_vec(), value)
        .map_err(|e| Error::storage(format!("encode {what}"), e))
}

pub(crate) fn encode_members(members: &[Member]) -> Vec<u8> {
    let mut out = String::new();
    for m in members {
        out.push_str(&format!("{}\t{}\t{}\n", m.raft_id, m.id, m.address));
    }
    out.into_bytes()
}

pub(crate) fn decode_members(raw: &[u8]) -> Result<Vec<Member>> {
    let corrupt = || Error::Storage {
        message: "corrupt member list in raft log".into(),
        source: None,
    };
    let text = std::str::from_utf8(raw).map_err(|_| corrupt())?;
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let mut parts = line.splitn(3, '\t');
        let (Some(rid), Some(id), Some(addr)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(corrupt());
        };
        out.push(Member {
            raft_id: rid.parse().map_err(|_| corrupt())?,
            id: id.to_owned(),
            address: addr.to_owned(),
        });
    }
    Ok(out)
}

/// The membership a snapshot covers, carried in the raft snapshot message's
/// data: the configuration index, then the members.
pub(crate) fn encode_snapshot_data(conf_index: u64, members: &[Member]) -> Vec<u8> {
    let mut out = format!("{conf_index}\n").into_bytes();
    out.extend_from_slice(&encode_members(members));
    out
}

/// The inverse of [`encode_snapshot_data`].
pub(crate) fn decode_snapshot_data(raw: &[u8]) -> Result<(u64, Vec<Member>)> {
    let corrupt = || Error::Storage {
        message: "corrupt snapshot membership data".into(),
        source: None,
    };
    let split = raw.iter().position(|b| *b == b'\n').ok_or_else(corrupt)?;
    let index = std::str::from_utf8(&raw[..split])
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or_else(corrupt)?;
    Ok((index, decode_members(&raw[split + 1..])?))
}

#[cfg(test)]
#[path = "storage_tests.rs"]
mod tests;
