//! The durable Raft log: openraft's `RaftLogStorage` on `raft-engine`.
//!
//! Layout under `<data_dir>/raft-log/`: raft-engine's own files, one group
//! (id 1). Each openraft entry is stored bincode-encoded inside raft-engine's
//! entry envelope (raft-rs's `eraftpb::Entry`, which raft-engine indexes);
//! next to the entries these keys:
//!
//! | key | value |
//! |---|---|
//! | `node` | the local node's string id; a dir of another node is refused |
//! | `vote` | the last saved vote |
//! | `committed` | the last saved committed log id |
//! | `purged` | the last purged log id |
//! | `end` | after `truncate_after`: entries at and after this index are dead |
//!
//! raft-engine cannot cut the tail of a group, so `truncate_after` records
//! where the live log ends, readers stop there, and the next append (which
//! starts exactly at that index) overwrites the dead tail and clears the key.
//!
//! Writes go to one writer thread through a bounded queue. The thread takes
//! every command queued at that moment (a group) and writes them in order
//! (`append` returns once its entries are written), then makes one fsync
//! for the whole group, and only after it returns are the group's
//! `io_completed` callbacks fired: group commit, many entries per fsync,
//! without blocking the runtime. `save_vote` and `purge` are written with
//! `sync = true` and return after their own fsync (which also covers every
//! write before them).
//!
//! raft-engine 0.4.2's `Engine::sync()` does not sync at all
//! (tikv/raft-engine#395); until this was found every append here was
//! acknowledged after that no-op. The fsync now comes from
//! [`raftengine_kit::raft_log::sync`], a one-key write with `sync = true`,
//! and every fsync is counted at the file layer.
//!
//! A failed write or fsync stops the log for good (fail closed): after a
//! failed fsync the page cache can no longer be trusted to reach the disk,
//! so every pending and later write is answered with the error, openraft
//! stops with a storage error, and the node with `StopReason::Fatal`.

use std::collections::Bound;
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use raft_engine::{Command as LogCommand, LogBatch};
use raftengine_kit::entry_cache::{CachedEntry, EntryCache};
use raftengine_kit::log_mark::{Legacy, Mark, MarkFile, MarkUpdate};
use raftengine_kit::node_log::{Envelope, EnvelopeExt, GROUP};
use raftengine_kit::raft_log::{LogEngine, SyncCounter};
use raftengine_kit::read_thread::ReadThread;
use tokio::sync::{mpsc, oneshot};

use crate::codec::{decode_io, encode_io};
use crate::types::{Committed, Entry, LogId, TypeConfig, Vote};

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_PURGED: &[u8] = b"purged";
const KEY_END: &[u8] = b"end";
/// Batches waiting for the writer thread; `append` waits when it is full.
const WRITE_QUEUE: usize = 256;
/// The newest entries kept in memory (`Inner::recent`): enough for every
/// append in flight to a follower that keeps up; one further behind reads
/// from the files.
const RECENT_ENTRIES: usize = 4096;
const RECENT_BYTES: usize = 8 * 1024 * 1024;
/// What is live in the log, kept in memory next to the engine.
#[derive(Debug, Default, Clone)]
struct Bounds {
    last_purged: Option<LogId>,
    last_log: Option<LogId>,
    /// Entries at or after this index are dead (see the module docs).
    end: Option<u64>,
}

/// How a write moves the watermark ([`raftengine_kit::log_mark`]).
#[derive(Debug, Clone, Copy, Default)]
struct MarkMove {
    /// The live log ends before this index from now on: recorded before
    /// the write, so the mark never claims more than the log may hold.
    lower_end: Option<u64>,
    /// What the write changes once it is durable.
    update: MarkUpdate,
}

// Nearly every command is a `Write`; boxing it would add an allocation per
// write to save queue slots sized for the rare `PurgeFiles`.
#[allow(clippy::large_enum_variant)]
enum Command {
    Write {
        batch: LogBatch,
        sync: bool,
        mark: MarkMove,
        written: oneshot::Sender<io::Result<()>>,
        flushed: Option<IOFlushed<TypeConfig>>,
    },
    /// Deletes or rewrites log files whose entries are all purged.
    PurgeFiles,
}

struct Inner {
    engine: Arc<LogEngine>,
    /// Completed fsyncs of the log files (`Status::log_syncs`).
    syncs: SyncCounter,
    bounds: Mutex<Bounds>,
    /// The newest live entries. Replication reads every entry it sends;
    /// from here that needs no blocking-pool hop and no decode (on the
    /// single-client path the hop alone delayed the first send to a
    /// follower by ~100 µs, docs/benchmarks.md). Locked after `bounds`
    /// whenever both are held, and changed under `bounds` so readers see the
    /// two agree.
    recent: Mutex<EntryCache<Entry>>,
    writer: mpsc::Sender<Command>,
    /// Where every read of the log's entries runs: raft-engine caches the
    /// last block it decoded per thread, not per log, so a blocking-pool
    /// thread shared with another node's log can answer with that log's
    /// entry (`raftengine_kit::read_thread`).
    reads: ReadThread,
}

/// The log store; clones share one engine and serve as log readers.
#[derive(Clone)]
pub(crate) struct LogStore {
    inner: Arc<Inner>,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore")
            .field("dir", &self.inner.engine.path())
            .finish_non_exhaustive()
    }
}

/// What [`LogStore::open`] found.
pub(crate) struct Opened {
    pub(crate) store: LogStore,
    /// False when the directory held no node yet.
    pub(crate) existed: bool,
}

fn engine_err(what: &str, e: raft_engine::Error) -> io::Error {
    io::Error::other(format!("{what}: {e}"))
}

fn writer_gone() -> io::Error {
    io::Error::other("raft log writer thread stopped")
}

impl LogStore {
    /// Opens (creating if needed) the log under `data_dir` for `local_id`.
    /// Blocking: call it off the async runtime.
    pub(crate) fn open(data_dir: &Path, local_id: &str) -> io::Result<Opened> {
        let dir = data_dir.join(raftengine_kit::node_log::LOG_DIR);
        let log = raftengine_kit::node_log::open(data_dir, local_id)?;
        let (engine, syncs, existed) = (log.engine, log.syncs, log.existed);
        if !existed {
            let mut batch = LogBatch::default();
            raftengine_kit::node_log::put_owner(&mut batch, local_id)?;
            raftengine_kit::raft_log::write(&engine, &mut batch, true).map_err(io::Error::other)?;
            raftengine_kit::node_log::record_created(data_dir, local_id)?;
        }
        let get = |key: &[u8], what: &str| -> io::Result<Option<LogId>> {
            engine
                .get(GROUP, key)
                .map(|raw| decode_io::<LogId>(&raw, what))
                .transpose()
        };
        let last_purged = get(KEY_PURGED, "purged log id")?;
        let committed = get(KEY_COMMITTED, "committed log id")?;
        let end = match engine.get(GROUP, KEY_END) {
            Some(raw) => Some(decode_io::<u64>(&raw, "log end")?),
            None => None,
        };
        let mut bounds = Bounds {
            last_purged,
            last_log: None,
            end,
        };
        let (marks, claim) = MarkFile::open(data_dir, Legacy::EndVoteTerm)?;
        let vote = match engine.get(GROUP, KEY_VOTE) {
            Some(raw) => Some(decode_io::<Vote>(&raw, "vote")?.leader_id),
            None => None,
        };
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let thread_engine = engine.clone();
        let closing = syncs.clone();
        std::thread::Builder::new()
            .name(format!("raft-log-{local_id}"))
            .spawn(move || {
                write_loop(&thread_engine, rx, marks);
                // Nothing is written or acknowledged after this.
                closing.close();
            })?;
        let store = LogStore {
            inner: Arc::new(Inner {
                engine,
                syncs,
                bounds: Mutex::new(Bounds::default()),
                recent: Mutex::new(EntryCache::new(RECENT_ENTRIES, RECENT_BYTES)),
                writer: tx,
                reads: ReadThread::spawn(&format!("raft-log-read-{local_id}"))?,
            }),
        };
        bounds.last_log = {
            let (this, bounds) = (store.clone(), bounds.clone());
            store
                .inner
                .reads
                .run_blocking(move || this.read_last_log(&bounds))??
        };
        let durable_end = [bounds.last_log, bounds.last_purged]
            .into_iter()
            .flatten()
            .map(|l| l.index)
            .max();
        let found = Mark {
            vote_term: vote.map_or(0, |v| v.term),
            voted_for: 0,
            commit_end: committed.map_or(0, |c| c.index + 1),
            end: durable_end.map_or(0, |e| e + 1),
        };
        claim.check(&found).map_err(|lost| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("raft log in {} is corrupt: {lost}", dir.display()),
            )
        })?;
        if let Some(c) = committed {
            if durable_end.is_none_or(|end| end < c.index) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "raft log in {} ends before its committed entry {}: committed \
                         entries were lost (corruption or a truncated file)",
                        dir.display(),
                        c.index
                    ),
                ));
            }
        }
        *store.bounds() = bounds;
        Ok(Opened { store, existed })
    }

    fn recent(&self) -> MutexGuard<'_, EntryCache<Entry>> {
        // Updated by whole calls that cannot panic half-way.
        self.inner.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `[start, stop)` from the cache, clamped to the live log like
    /// `read_range`; `None` unless the cache holds all of it.
    fn read_recent(&self, start: u64, stop: u64) -> Option<Vec<Entry>> {
        let b = self.bounds();
        let live_end = b.last_log.map_or(0, |l| l.index + 1);
        let stop = stop.min(live_end).min(b.end.unwrap_or(u64::MAX));
        let recent = self.recent();
        recent.range(start, stop, None)
    }

    /// The counter of completed fsyncs of the log files.
    pub(crate) fn sync_counter(&self) -> SyncCounter {
        self.inner.syncs.clone()
    }

    fn bounds(&self) -> MutexGuard<'_, Bounds> {
        // Plain values, updated in one assignment each: a poisoned lock is
        // still consistent.
        self.inner.bounds.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The id of the newest live entry in the engine.
    fn read_last_log(&self, bounds: &Bounds) -> io::Result<Option<LogId>> {
        let engine = &self.inner.engine;
        let Some(mut last) = engine.last_index(GROUP) else {
            return Ok(None);
        };
        if let Some(end) = bounds.end {
            if end == 0 {
                return Ok(None);
            }
            last = last.min(end - 1);
        }
        match engine.first_index(GROUP) {
            Some(first) if first <= last => {}
            _ => return Ok(None),
        }
        let entry = engine
            .get_entry::<EnvelopeExt>(GROUP, last)
            .map_err(|e| engine_err("read last entry", e))?
            .ok_or_else(|| io::Error::other(format!("entry {last} missing from the raft log")))?;
        let entry: Entry = decode_io(&entry.data, "log entry")?;
        Ok(Some(entry.log_id))
    }

    async fn submit(&self, command: Command) -> io::Result<()> {
        self.inner
            .writer
            .send(command)
            .await
            .map_err(|_| writer_gone())
    }

    async fn write(&self, batch: LogBatch, sync: bool, mark: MarkMove) -> io::Result<()> {
        let (written, rx) = oneshot::channel();
        self.submit(Command::Write {
            batch,
            sync,
            mark,
            written,
            flushed: None,
        })
        .await?;
        rx.await.map_err(|_| writer_gone())?
    }

    fn put(batch: &mut LogBatch, key: &[u8], value: Vec<u8>) -> io::Result<()> {
        batch
            .put(GROUP, key.to_vec(), value)
            .map_err(|e| engine_err("encode raft log batch", e))
    }

    /// Entries in `[start, stop)` that are live, read atomically. Blocking.
    fn read_range(&self, start: u64, stop: u64) -> io::Result<Vec<Entry>> {
        let engine = &self.inner.engine;
        let stop = match self.bounds().end {
            Some(end) => stop.min(end),
            None => stop,
        };
        let (Some(first), Some(last)) = (engine.first_index(GROUP), engine.last_index(GROUP))
        else {
            return Ok(Vec::new());
        };
        // Missing entries are allowed only at the ends: purged ones before
        // `first`, not yet appended ones after `last`.
        let start = start.max(first);
        let stop = stop.min(last + 1);
        if start >= stop {
            return Ok(Vec::new());
        }
        let mut raw = Vec::with_capacity((stop - start) as usize);
        engine
            .fetch_entries_to::<EnvelopeExt>(GROUP, start, stop, None, &mut raw)
            .map_err(|e| engine_err("read raft log", e))?;
        let mut out = Vec::with_capacity(raw.len());
        for (expected, e) in (start..).zip(raw.iter()) {
            let entry: Entry = decode_io(&e.data, "log entry")?;
            if e.index != expected || entry.log_id.index != expected {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("raft log entry {} found where {expected} belongs", e.index),
                ));
            }
            out.push(entry);
        }
        Ok(out)
    }

    /// Checks that entries about to be appended continue the live log.
    fn check_append(&self, first: &LogId) -> io::Result<()> {
        let b = self.bounds().clone();
        let next = match (&b.last_log, &b.last_purged) {
            (Some(l), _) => l.index + 1,
            (None, Some(p)) => p.index + 1,
            (None, None) => first.index,
        };
        let floor = b.last_purged.as_ref().map_or(0, |p| p.index + 1);
        if first.index > next || first.index < floor {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "append at index {} would leave a hole or rewrite purged entries \
                     (live log continues at {next}, purged below {floor})",
                    first.index
                ),
            ));
        }
        Ok(())
    }
}

fn complete_all(callbacks: &mut Vec<IOFlushed<TypeConfig>>, result: &Result<(), String>) {
    for cb in callbacks.drain(..) {
        cb.io_completed(result.clone().map_err(io::Error::other));
    }
}

fn write_loop(engine: &Arc<LogEngine>, mut rx: mpsc::Receiver<Command>, mut marks: MarkFile) {
    // Set by the first failed write or fsync; the log takes nothing after
    // it (see the module docs).
    let mut failed: Option<String> = None;
    let mut purging: Option<std::thread::JoinHandle<()>> = None;
    let mut group: Vec<Command> = Vec::with_capacity(WRITE_QUEUE);
    // Callbacks of writes in this group that wait for its fsync.
    let mut unsynced: Vec<IOFlushed<TypeConfig>> = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        group.push(first);
        while group.len() < WRITE_QUEUE {
            match rx.try_recv() {
                Ok(c) => group.push(c),
                Err(_) => break,
            }
        }
        for command in group.drain(..) {
            match command {
                Command::Write {
                    mut batch,
                    sync,
                    mark,
                    written,
                    flushed,
                } => {
                    if let Some(why) = &failed {
                        let _ = written.send(Err(io::Error::other(why.clone())));
                        if let Some(cb) = flushed {
                            cb.io_completed(Err(io::Error::other(why.clone())));
                        }
                        continue;
                    }
                    let lowered = match mark.lower_end {
                        Some(end) => marks
                            .lower_end(end)
                            .map_err(|e| format!("lower the raft log mark: {e}")),
                        None => Ok(()),
                    };
                    match lowered.and_then(|()| {
                        raftengine_kit::raft_log::write(engine, &mut batch, sync)
                            .map_err(|e| e.to_string())
                    }) {
                        Ok(()) => {
                            marks.written(&mark.update);
                            let _ = written.send(Ok(()));
                            unsynced.extend(flushed);
                            if sync {
                                marks.synced();
                                complete_all(&mut unsynced, &Ok(()));
                            }
                        }
                        Err(why) => {
                            tracing::error!(error = %why, "raft log write failed; the log takes no more writes");
                            let _ = written.send(Err(io::Error::other(why.clone())));
                            if let Some(cb) = flushed {
                                cb.io_completed(Err(io::Error::other(why.clone())));
                            }
                            complete_all(&mut unsynced, &Err(why.clone()));
                            failed = Some(why);
                        }
                    }
                }
                Command::PurgeFiles => {
                    // Rewriting or deleting old files can take a while: do
                    // it beside the writer, one pass at a time.
                    if failed.is_none() && purging.as_ref().is_none_or(|h| h.is_finished()) {
                        let engine = engine.clone();
                        purging = std::thread::Builder::new()
                            .name("raft-log-purge".into())
                            .spawn(move || {
                                if let Err(e) = engine.purge_expired_files() {
                                    tracing::warn!(error = %e, "purging old raft log files failed");
                                }
                            })
                            .ok();
                    }
                }
            }
        }
        // One fsync for every write of the group that waits for one. It is
        // a write of its own (a one-key batch with `sync = true`) rather
        // than the group's last write carrying the sync, so that `append`
        // returns as soon as its entries are written: openraft's core
        // awaits `append` before it replicates, and a sync inside it put
        // the leader's fsync and the followers' one in series (single-client
        // p50 817 µs instead of ~350 µs).
        if !unsynced.is_empty() {
            match raftengine_kit::raft_log::sync(engine, GROUP) {
                Ok(()) => {
                    marks.synced();
                    complete_all(&mut unsynced, &Ok(()));
                }
                Err(e) => {
                    let why = e.to_string();
                    tracing::error!(error = %why, "raft log fsync failed; the log takes no more writes");
                    complete_all(&mut unsynced, &Err(why.clone()));
                    failed = Some(why);
                }
            }
        }
    }
    if let Some(h) = purging {
        let _ = h.join();
    }
}

fn range_to_span<RB: RangeBounds<u64>>(range: &RB) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let stop = match range.end_bound() {
        Bound::Included(&e) => e.saturating_add(1),
        Bound::Excluded(&e) => e,
        Bound::Unbounded => u64::MAX,
    };
    (start, stop)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<Entry>> {
        let (start, stop) = range_to_span(&range);
        if let Some(entries) = self.read_recent(start, stop) {
            return Ok(entries);
        }
        let this = self.clone();
        // Entries come from raft-engine's files (usually the page cache):
        // still file I/O, so off the runtime's threads, and on the log's own
        // read thread (see `Inner::reads`).
        self.inner
            .reads
            .run(move || this.read_range(start, stop))
            .await?
    }

    /// Replication's read. openraft 0.10.0-alpha.37's replication stream
    /// can ask for a range whose start was purged after it chose the range
    /// (its purge-in-use check does not cover the stream's next read; seen
    /// as its `prev_log_id ... immediately before the first entry` debug
    /// assertion under load with frequent snapshots). The purged start is
    /// allowed to be missing by `try_get_log_entries`'s contract, but here
    /// openraft would send the entries after it behind the old
    /// `prev_log_id`: a hole in the follower's log, which its store refuses
    /// (a fatal stop). An empty answer makes openraft send a heartbeat
    /// instead; the leader then finds the follower behind its purged log and
    /// sends a snapshot.
    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> io::Result<Vec<Entry>> {
        let first_live = self.bounds().last_purged.map_or(0, |p| p.index + 1);
        if start < first_live {
            tracing::debug!(start, first_live, "replication asked for purged entries");
            return Ok(Vec::new());
        }
        self.try_get_log_entries(start..end).await
    }

    async fn read_vote(&mut self) -> io::Result<Option<Vote>> {
        // raft-engine keeps key-values in memory: no I/O here.
        self.inner
            .engine
            .get(GROUP, KEY_VOTE)
            .map(|raw| decode_io(&raw, "vote"))
            .transpose()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> io::Result<LogState<TypeConfig>> {
        let b = self.bounds().clone();
        let last_log_id = match (&b.last_log, &b.last_purged) {
            (Some(l), Some(p)) if p.index > l.index => Some(*p),
            (Some(l), _) => Some(*l),
            (None, p) => *p,
        };
        Ok(LogState {
            last_purged_log_id: b.last_purged,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> io::Result<()> {
        let mut batch = LogBatch::default();
        Self::put(&mut batch, KEY_VOTE, encode_io(vote, "vote")?)?;
        // The mark pins the term only: openraft moves a vote within its
        // term from the node itself (a candidate's) to the leader that won
        // (a committed vote ranks above it), so a mark lagging by that one
        // change would read as a lost vote. Rolling back across that move is
        // harmless (the node had voted in the term either way); rolling back
        // the term is what the check must catch.
        let mark = MarkMove {
            update: MarkUpdate {
                vote: Some((vote.leader_id.term, 0)),
                ..MarkUpdate::default()
            },
            ..MarkMove::default()
        };
        self.write(batch, true, mark).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> io::Result<()> {
        let mut batch = LogBatch::default();
        match committed {
            Some(c) => Self::put(&mut batch, KEY_COMMITTED, encode_io(&c, "committed")?)?,
            None => batch.delete(GROUP, KEY_COMMITTED.to_vec()),
        }
        // Not fsynced on its own: a committed id older than the truth is
        // safe (entries are re-learned from the leader), and the next append
        // or vote fsync covers it (and only then raises the mark).
        let mark = MarkMove {
            update: MarkUpdate {
                commit_end: committed.map(|c| c.index + 1),
                ..MarkUpdate::default()
            },
            ..MarkMove::default()
        };
        self.write(batch, false, mark).await
    }

    async fn read_committed(&mut self) -> io::Result<Option<LogId>> {
        self.inner
            .engine
            .get(GROUP, KEY_COMMITTED)
            .map(|raw| decode_io(&raw, "committed log id"))
            .transpose()
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> io::Result<()>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut envelopes = Vec::new();
        let mut cached = Vec::new();
        let mut last = None;
        for entry in entries {
            let e = Envelope {
                index: entry.log_id.index,
                term: entry.log_id.leader_id.term,
                data: encode_io(&entry, "log entry")?.into(),
                ..Envelope::default()
            };
            last = Some(entry.log_id);
            cached.push(CachedEntry {
                index: e.index,
                term: e.term,
                size: e.data.len(),
                entry,
            });
            envelopes.push(e);
        }
        let (Some(first), Some(last)) = (envelopes.first(), last) else {
            callback.io_completed(Ok(()));
            return Ok(());
        };
        let first_id = LogId::new(Committed::new(first.term), first.index);
        self.check_append(&first_id)?;
        let mut batch = LogBatch::default();
        batch
            .add_entries::<EnvelopeExt>(GROUP, &envelopes)
            .map_err(|e| engine_err("encode raft log batch", e))?;
        let (had_end, live_end) = {
            let b = self.bounds();
            (b.end.is_some(), b.last_log.map_or(0, |l| l.index + 1))
        };
        if had_end {
            batch.delete(GROUP, KEY_END.to_vec());
        }
        let new_end = last.index + 1;
        let mark = MarkMove {
            lower_end: (new_end < live_end).then_some(new_end),
            update: MarkUpdate {
                end: Some(new_end),
                ..MarkUpdate::default()
            },
        };
        let (written, rx) = oneshot::channel();
        self.submit(Command::Write {
            batch,
            sync: false,
            mark,
            written,
            flushed: Some(callback),
        })
        .await?;
        rx.await.map_err(|_| writer_gone())??;
        let mut b = self.bounds();
        b.last_log = Some(last);
        b.end = None;
        self.recent().append(cached);
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> io::Result<()> {
        let end = last_log_id.map_or(0, |l| l.index + 1);
        {
            let b = self.bounds();
            let live_end = b.last_log.map_or(0, |l| l.index + 1);
            if end >= live_end {
                return Ok(());
            }
        }
        let mut batch = LogBatch::default();
        Self::put(&mut batch, KEY_END, encode_io(&end, "log end")?)?;
        // Readers must stop at the new end before the call returns.
        {
            let mut b = self.bounds();
            b.end = Some(end);
            b.last_log = last_log_id;
            self.recent().truncate_from(end);
        }
        let mark = MarkMove {
            lower_end: Some(end),
            update: MarkUpdate {
                end: Some(end),
                ..MarkUpdate::default()
            },
        };
        self.write(batch, false, mark).await
    }

    async fn purge(&mut self, log_id: LogId) -> io::Result<()> {
        // The purged id and raft-engine's compaction in one synced batch:
        // old files may be deleted right after, and a purge record lost to
        // a power cut would then leave the log starting at an entry it does
        // not claim.
        let mut batch = LogBatch::default();
        Self::put(&mut batch, KEY_PURGED, encode_io(&log_id, "purged log id")?)?;
        batch.add_command(
            GROUP,
            LogCommand::Compact {
                index: log_id.index + 1,
            },
        );
        let live_end = self.bounds().last_log.map_or(0, |l| l.index + 1);
        let mark = MarkMove {
            update: MarkUpdate {
                end: Some(live_end.max(log_id.index + 1)),
                ..MarkUpdate::default()
            },
            ..MarkMove::default()
        };
        self.write(batch, true, mark).await?;
        {
            let mut b = self.bounds();
            b.last_purged = Some(log_id);
            if b.last_log.is_some_and(|l| l.index <= log_id.index) {
                b.last_log = None;
            }
            self.recent().compact_to(log_id.index);
        }
        self.submit(Command::PurgeFiles).await
    }
}

#[cfg(test)]
#[path = "log_store_tests.rs"]
mod tests;
