//! A node's raft log in its data dir: where it lives, how raft-engine is
//! configured for it, and the identity checks at open.
//!
//! Both backends keep one raft-engine group ([`GROUP`]) in
//! `<data_dir>/raft-log` ([`LOG_DIR`]) with the owner's id under
//! [`NODE_KEY`], and entries in raft-engine's envelope ([`Envelope`],
//! raft-rs's `eraftpb::Entry`, which raft-engine indexes; an engine whose
//! entries are not raft-rs's puts its own encoding in `data`).
//!
//! [`open`] refuses a log that belongs to another node, and an empty log
//! in a dir whose identity file says a node lived there: raft-engine drops
//! a damaged tail silently, and damage reaching back to the first batch
//! would otherwise make an old node look brand new (and vote again in
//! terms it already voted in).

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use raft_engine::{Config, LogBatch, MessageExt, ReadableSize, RecoveryMode};

use crate::node_dir::IDENTITY_FILE;
use crate::raft_log::{LogEngine, SyncCounter};

/// The raft-engine directory inside a data dir.
pub const LOG_DIR: &str = "raft-log";
/// The one raft-engine group a node's log lives in.
pub const GROUP: u64 = 1;
/// The key that holds the owner's string id.
pub const NODE_KEY: &[u8] = b"node";
/// How long [`open`] waits for an engine of this process that still holds
/// the directory lock (a node being restarted in place).
pub const LOCK_WAIT: Duration = Duration::from_secs(10);

/// raft-engine's entry envelope.
pub use raft_proto::eraftpb::Entry as Envelope;

/// Tells raft-engine where an [`Envelope`]'s index is.
#[derive(Debug, Clone, Copy)]
pub struct EnvelopeExt;

impl MessageExt for EnvelopeExt {
    type Entry = Envelope;

    fn index(e: &Envelope) -> u64 {
        e.index
    }
}

/// The log, opened for its node.
pub struct NodeLog {
    /// The engine; shared by the backend's writer and readers.
    pub engine: Arc<LogEngine>,
    /// Completed fsyncs of the log's files.
    pub syncs: SyncCounter,
    /// False when the dir held no node yet: the caller writes its first
    /// state with [`put_owner`] and then calls [`record_created`].
    pub existed: bool,
}

impl std::fmt::Debug for NodeLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeLog")
            .field("dir", &self.engine.path())
            .field("existed", &self.existed)
            .finish_non_exhaustive()
    }
}

/// raft-engine's configuration for a node's log in `data_dir`.
pub fn config(data_dir: &Path) -> Config {
    Config {
        dir: data_dir.join(LOG_DIR).to_string_lossy().into_owned(),
        // A torn tail is an unacknowledged write cut by a crash and may be
        // dropped; corruption anywhere else is an error, never skipped.
        recovery_mode: RecoveryMode::TolerateTailCorruption,
        // Raft entries are small and mostly unique: LZ4 on every batch costs
        // CPU (compressing, then decompressing each entry a leader reads back
        // to replicate) for little disk saved. Off: openraft 87 k vs 77 k
        // writes/s, etcd unchanged within noise (docs/benchmarks.md).
        batch_compression_threshold: ReadableSize(0),
        ..Config::default()
    }
}

/// Opens the log in `data_dir` for `local_id`. Blocking.
///
/// # Errors
///
/// As [`raft_log::open`](crate::raft_log::open); and
/// [`io::ErrorKind::InvalidData`] when the log belongs to another node, or
/// is empty in a dir that held a node (lost to damage).
pub fn open(data_dir: &Path, local_id: &str) -> io::Result<NodeLog> {
    let syncs = SyncCounter::new();
    let engine = Arc::new(crate::raft_log::open(
        &config(data_dir),
        syncs.clone(),
        LOCK_WAIT,
    )?);
    let existed = match engine.get(GROUP, NODE_KEY) {
        Some(stored) if stored == local_id.as_bytes() => true,
        Some(stored) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} belongs to node {:?}, not {:?}",
                    data_dir.display(),
                    String::from_utf8_lossy(&stored),
                    local_id
                ),
            ));
        }
        None if data_dir.join(IDENTITY_FILE).exists() => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} was initialized ({IDENTITY_FILE} exists) but its raft log is empty: \
                     the log was lost or cut by corruption; refusing to start as a new node",
                    data_dir.display()
                ),
            ));
        }
        None => false,
    };
    Ok(NodeLog {
        engine,
        syncs,
        existed,
    })
}

/// Adds the owner record to `batch`: the first batch of a new node's log,
/// and every batch that cleans the group (an installed snapshot).
///
/// # Errors
///
/// raft-engine refused the key (it never does for this one).
pub fn put_owner(batch: &mut LogBatch, local_id: &str) -> io::Result<()> {
    batch
        .put(GROUP, NODE_KEY.to_vec(), local_id.as_bytes().to_vec())
        .map_err(|e| io::Error::other(format!("record node id: {e}")))
}

/// After a new node's first batch (with [`put_owner`]) is fsynced: writes
/// the identity file, durably. From here on an empty log in this dir is
/// damage. Blocking.
///
/// # Errors
///
/// The I/O error of writing the file.
pub fn record_created(data_dir: &Path, local_id: &str) -> io::Result<()> {
    crate::durable::write_file(&data_dir.join(IDENTITY_FILE), local_id.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_knows_its_owner() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), "n1").unwrap();
        assert!(!log.existed);
        let mut batch = LogBatch::default();
        put_owner(&mut batch, "n1").unwrap();
        crate::raft_log::write(&log.engine, &mut batch, true).unwrap();
        record_created(dir.path(), "n1").unwrap();
        drop(log);
        assert!(open(dir.path(), "n1").unwrap().existed);
        let e = open(dir.path(), "n2").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("belongs to node"), "{e}");
        std::fs::remove_dir_all(dir.path().join(LOG_DIR)).unwrap();
        let e = open(dir.path(), "n1").unwrap_err();
        assert!(e.to_string().contains("was initialized"), "{e}");
    }
}
