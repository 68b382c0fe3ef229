//! openraft's `RaftStateMachine` over the application's
//! [`raftengine::StateMachine`].
//!
//! Snapshots are files in `<data_dir>/snapshots` written by
//! [`raftengine_kit::SnapshotDir`] (header, payload, CRC-32, written to a
//! temporary name, fsynced, renamed). The payload starts with the openraft
//! snapshot metadata (last log id and membership, bincode, length-prefixed)
//! followed by exactly what the application's `Snapshot::write_to` wrote, so
//! a file alone is enough to restore a node.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::StreamExt;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, Snapshot};
use raftengine::StateMachine;
use raftengine_kit::SnapshotDir;

use crate::codec::{decode_io, encode_io};
use crate::types::{LogId, Reply, SnapshotMeta, StoredMembership, TypeConfig};

/// A snapshot as openraft passes it around: an open file and where it is.
///
/// Local snapshots are opened at their final path (an open handle keeps the
/// bytes readable even if a newer snapshot deletes the file meanwhile);
/// received ones sit at a temporary path until installed.
#[derive(Debug)]
pub(crate) struct SnapshotFile {
    pub(crate) file: File,
    pub(crate) path: PathBuf,
}

struct Applied<S> {
    sm: S,
    last: Option<LogId>,
    membership: StoredMembership,
}

struct Shared<S> {
    applied: Mutex<Applied<S>>,
    /// A copy of `applied.last` readers can take without waiting for an
    /// apply or a restore in progress.
    last: Mutex<Option<LogId>>,
    snapshots: SnapshotDir,
    current: Mutex<Option<SnapshotMeta>>,
}

/// The adapter openraft drives; clones share the state machine.
pub(crate) struct StateMachineAdapter<S> {
    shared: Arc<Shared<S>>,
}

impl<S> Clone for StateMachineAdapter<S> {
    fn clone(&self) -> Self {
        StateMachineAdapter {
            shared: self.shared.clone(),
        }
    }
}

fn io_from(e: raftengine::Error) -> io::Error {
    io::Error::other(e.to_string())
}

fn join_err(e: tokio::task::JoinError) -> io::Error {
    io::Error::other(format!("snapshot task failed: {e}"))
}

fn file_name_of(meta: &SnapshotMeta) -> (u64, u64) {
    meta.last_log_id
        .map_or((0, 0), |l| (l.index, l.leader_id.term))
}

/// Writes the metadata prefix, then the application's bytes.
struct WithMeta<T> {
    meta: Vec<u8>,
    inner: T,
}

impl<T: raftengine::Snapshot> raftengine::Snapshot for WithMeta<T> {
    fn write_to(&mut self, w: &mut dyn Write) -> io::Result<u64> {
        let len = u32::try_from(self.meta.len())
            .map_err(|_| io::Error::other("snapshot metadata over 4 GiB"))?;
        w.write_all(&len.to_be_bytes())?;
        w.write_all(&self.meta)?;
        let n = self.inner.write_to(w)?;
        Ok(4 + self.meta.len() as u64 + n)
    }
}

/// Reads the metadata prefix of a snapshot payload.
fn read_meta(payload: &mut dyn Read) -> io::Result<SnapshotMeta> {
    let mut len = [0u8; 4];
    payload.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    const MAX_META: usize = 64 * 1024 * 1024;
    if len > MAX_META {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "snapshot metadata length is implausible",
        ));
    }
    let mut meta = vec![0u8; len];
    payload.read_exact(&mut meta)?;
    decode_io(&meta, "snapshot metadata")
}

impl<S: StateMachine> StateMachineAdapter<S> {
    /// Wraps `sm`, restoring it from the newest snapshot file in `snapshots`
    /// if there is one. Blocking.
    pub(crate) fn open(mut sm: S, snapshots: SnapshotDir) -> raftengine::Result<Self> {
        snapshots.remove_temporaries();
        let mut current = None;
        let mut last = None;
        let mut membership = StoredMembership::default();
        if let Some(&(index, term)) = snapshots.list().last() {
            let mut payload = snapshots.payload(index, term)?;
            let meta = read_meta(&mut payload).map_err(|e| {
                raftengine::Error::storage(
                    format!("snapshot {}", snapshots.path(index, term).display()),
                    e,
                )
            })?;
            sm.restore(&mut payload)
                .map_err(|e| raftengine::Error::state_machine("restore from snapshot", e))?;
            last = meta.last_log_id;
            membership = meta.last_membership.clone();
            current = Some(meta);
        }
        Ok(StateMachineAdapter {
            shared: Arc::new(Shared {
                applied: Mutex::new(Applied {
                    sm,
                    last,
                    membership,
                }),
                last: Mutex::new(last),
                snapshots,
                current: Mutex::new(current),
            }),
        })
    }

    fn applied(&self) -> MutexGuard<'_, Applied<S>> {
        // A panic inside the application's apply poisons the lock; the state
        // machine is then as the application left it, which is all we have.
        self.shared
            .applied
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Makes the snapshot `meta` (its file already published) the one
    /// `get_current_snapshot` serves, then deletes the others. Blocking.
    ///
    /// Both under the `current` lock: before, a snapshot built while
    /// another was being read for a follower purged the file that
    /// `current` still named, and openraft stopped fatally on
    /// "Read Snapshot(None): No such file or directory" (seen once in the
    /// power-cut case, in a leader sending a snapshot to a restarted
    /// follower). A snapshot older than the current one (a build that
    /// finished after an install of a newer one) never replaces it.
    fn make_current(shared: &Shared<S>, meta: &SnapshotMeta) {
        let mut current = shared.current.lock().unwrap_or_else(|p| p.into_inner());
        let index_of = |m: &SnapshotMeta| m.last_log_id.map(|l| l.index);
        if current
            .as_ref()
            .is_some_and(|c| index_of(c) > index_of(meta))
        {
            return;
        }
        *current = Some(meta.clone());
        let (index, term) = file_name_of(meta);
        shared.snapshots.purge_except(index, term);
    }

    /// The id of the last entry applied.
    pub(crate) fn last_applied(&self) -> Option<LogId> {
        *self.shared.last.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish_last(shared: &Shared<S>, last: Option<LogId>) {
        *shared.last.lock().unwrap_or_else(|p| p.into_inner()) = last;
    }

    /// Applies `batch` in order and answers each entry's waiter. Blocking:
    /// runs the application's `apply`.
    fn apply_batch(&self, batch: Vec<EntryResponder<TypeConfig>>) {
        for (entry, responder) in batch {
            let log_id = entry.log_id;
            let reply = {
                let mut a = self.applied();
                let reply = match entry.payload {
                    EntryPayload::Blank => Reply::none(),
                    EntryPayload::Normal(request) => {
                        Reply::new(a.sm.apply(log_id.index, &request.0))
                    }
                    EntryPayload::Membership(m) => {
                        a.membership = StoredMembership::new(Some(log_id), m);
                        Reply::none()
                    }
                };
                a.last = Some(log_id);
                reply
            };
            Self::publish_last(&self.shared, Some(log_id));
            if let Some(responder) = responder {
                responder.send(reply);
            }
        }
    }
}

/// Entries handed to one blocking-pool call of `apply`, at most.
const APPLY_BATCH: usize = 4096;

impl<S: StateMachine> RaftSnapshotBuilder<TypeConfig> for StateMachineAdapter<S> {
    type SnapshotData = SnapshotFile;

    async fn build_snapshot(
        &mut self,
    ) -> io::Result<Snapshot<crate::types::Committed, u64, crate::types::Peer, SnapshotFile>> {
        let (snap, meta) = {
            let mut a = self.applied();
            let snap = a.sm.snapshot()?;
            let meta = SnapshotMeta {
                last_log_id: a.last,
                last_membership: a.membership.clone(),
            };
            (snap, meta)
        };
        let shared = self.shared.clone();
        let meta_bytes = encode_io(&meta, "snapshot metadata")?;
        let (index, term) = file_name_of(&meta);
        let file = tokio::task::spawn_blocking({
            let meta = meta.clone();
            move || -> io::Result<SnapshotFile> {
                let dir = &shared.snapshots;
                let mut body = WithMeta {
                    meta: meta_bytes,
                    inner: snap,
                };
                dir.write(index, term, &mut body).map_err(io_from)?;
                let path = dir.path(index, term);
                let file = File::open(&path)?;
                Self::make_current(&shared, &meta);
                Ok(SnapshotFile { file, path })
            }
        })
        .await
        .map_err(join_err)??;
        Ok(Snapshot {
            meta,
            snapshot: file,
        })
    }
}

impl<S: StateMachine> RaftStateMachine<TypeConfig> for StateMachineAdapter<S> {
    type SnapshotData = SnapshotFile;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> io::Result<(Option<LogId>, StoredMembership)> {
        let a = self.applied();
        Ok((a.last, a.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> io::Result<()>
    where
        Strm: futures::Stream<Item = io::Result<EntryResponder<TypeConfig>>> + Unpin + Send,
    {
        use futures::FutureExt as _;
        // The application's `apply` may block (the contract runs it on a
        // blocking thread), so it never runs on a runtime worker: every
        // entry already available goes to one blocking-pool call, one hop
        // per batch rather than per entry (a dedicated apply thread measured
        // no better; docs/backends/openraft.md).
        while let Some(first) = entries.next().await {
            let mut batch = vec![first?];
            while batch.len() < APPLY_BATCH {
                match entries.next().now_or_never() {
                    Some(Some(item)) => batch.push(item?),
                    _ => break,
                }
            }
            let this = self.clone();
            tokio::task::spawn_blocking(move || this.apply_batch(batch))
                .await
                .map_err(|e| io::Error::other(format!("state machine apply failed: {e}")))?;
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotFile,
    ) -> io::Result<()> {
        let shared = self.shared.clone();
        let (index, term) = file_name_of(meta);
        let expected = meta.clone();
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            let dir = &shared.snapshots;
            let final_path = dir.path(index, term);
            drop(snapshot.file);
            if snapshot.path != final_path {
                dir.publish(&snapshot.path, index, term).map_err(io_from)?;
            }
            let mut payload = dir.payload(index, term).map_err(io_from)?;
            let found = read_meta(&mut payload)?;
            if found != expected {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "snapshot file metadata differs from the announced metadata",
                ));
            }
            let mut a = shared.applied.lock().unwrap_or_else(|p| p.into_inner());
            a.sm.restore(&mut payload)?;
            a.last = found.last_log_id;
            a.membership = found.last_membership;
            drop(a);
            Self::publish_last(&shared, found.last_log_id);
            Self::make_current(&shared, &expected);
            Ok(())
        })
        .await
        .map_err(join_err)??;
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> io::Result<Option<Snapshot<crate::types::Committed, u64, crate::types::Peer, SnapshotFile>>>
    {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            // Under the lock `make_current` purges with, so the file of the
            // snapshot read here cannot be deleted before it is open (an
            // open file stays readable after its name is gone).
            let current = shared.current.lock().unwrap_or_else(|p| p.into_inner());
            let Some(meta) = current.clone() else {
                return Ok(None);
            };
            let (index, term) = file_name_of(&meta);
            let path = shared.snapshots.path(index, term);
            let file = File::open(&path)?;
            Ok(Some(Snapshot {
                meta,
                snapshot: SnapshotFile { file, path },
            }))
        })
        .await
        .map_err(join_err)?
    }
}
