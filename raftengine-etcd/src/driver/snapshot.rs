//! State-machine snapshots: when the loop takes one (every
//! `snapshot_interval` applied entries, or when raft-rs asks), writing it
//! off the loop's thread, and installing one the leader sent.

use raft::eraftpb::{HardState, Snapshot as RaftSnapshot, SnapshotMetadata};
use raftengine::{Result, StateMachine};

use super::Driver;
use crate::event::Event;
use crate::storage::{Member, decode_snapshot_data, encode_snapshot_data};

/// When the next snapshot is due, and whether one is being written.
pub(super) struct Schedule {
    last_index: u64,
    next_at: u64,
    interval: u64,
    in_progress: bool,
}

impl Schedule {
    pub(super) fn new(last_index: u64, interval: u64) -> Self {
        Schedule {
            last_index,
            next_at: last_index + interval,
            interval,
            in_progress: false,
        }
    }

    /// The newest snapshot's index (taken or installed).
    pub(super) fn last_index(&self) -> u64 {
        self.last_index
    }

    /// Whether to snapshot at `applied`: none is being written, and either
    /// the interval has passed or `requested()` (asked only then) says
    /// raft-rs wants one past the last. Due means scheduled: the next one
    /// is an interval after `applied`.
    pub(super) fn due(&mut self, applied: u64, requested: impl FnOnce() -> bool) -> bool {
        if self.in_progress {
            return false;
        }
        let requested = requested() && applied > self.last_index;
        if !requested && applied < self.next_at {
            return false;
        }
        self.next_at = applied + self.interval;
        true
    }

    pub(super) fn started(&mut self) {
        self.in_progress = true;
    }

    pub(super) fn finished(&mut self) {
        self.in_progress = false;
    }

    /// A snapshot this node took at `index` is recorded.
    pub(super) fn taken(&mut self, index: u64) {
        self.last_index = index;
    }

    /// A snapshot from the leader at `index` replaced the state.
    pub(super) fn installed(&mut self, index: u64) {
        self.last_index = index;
        self.next_at = index + self.interval;
    }
}

impl<S: StateMachine> Driver<S> {
    /// Starts a background snapshot once enough entries were applied since
    /// the last one. Capturing is the state machine's cheap `snapshot()`;
    /// serializing and fsyncing the file happen on another thread.
    pub(super) fn maybe_snapshot(&mut self) {
        let applied = self.raw.raft.raft_log.applied;
        if !self
            .snapshot
            .due(applied, || self.storage.take_snapshot_request())
        {
            return;
        }
        let term = match self.raw.raft.raft_log.term(applied) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(node = %self.local_id, applied, error = %e, "no term for snapshot index");
                return;
            }
        };
        let mut handle = match self.sm.snapshot() {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(node = %self.local_id, error = %e, "state machine refused to snapshot; retrying later");
                return;
            }
        };
        let mut meta = SnapshotMetadata::default();
        meta.index = applied;
        meta.term = term;
        meta.set_conf_state(self.members.conf_state.clone());
        let members: Vec<Member> = self
            .members
            .conf_state
            .voters
            .iter()
            .chain(self.members.conf_state.learners.iter())
            .filter_map(|rid| self.members.addresses.get(rid).cloned())
            .collect();
        let data = encode_snapshot_data(self.members.conf_index, &members);
        let dir = self.snapshots.clone();
        let tx = self.events_tx.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("raft-etcd-snap-{}", self.local_id))
            .spawn(move || {
                let result = dir.write(meta.index, meta.term, &mut handle);
                let _ = tx.blocking_send(Event::SnapshotWritten { meta, data, result });
            });
        match spawned {
            Ok(_) => self.snapshot.started(),
            Err(e) => tracing::warn!(error = %e, "could not start the snapshot writer"),
        }
    }

    pub(super) fn snapshot_written(
        &mut self,
        meta: SnapshotMetadata,
        data: Vec<u8>,
        result: Result<u64>,
    ) -> Result<()> {
        self.snapshot.finished();
        let bytes = match result {
            Ok(b) => b,
            // A failed write or fsync of the data dir stops the node, as
            // every other disk failure does (and as openraft stops on a
            // failed snapshot): the disk is not to be trusted any more.
            Err(e) => {
                tracing::error!(node = %self.local_id, index = meta.index, error = %e, "snapshot write failed; stopping");
                return Err(e);
            }
        };
        if meta.index <= self.snapshot.last_index() {
            // A snapshot received from the leader overtook this one.
            return Ok(());
        }
        self.storage.record_snapshot(&meta, &data)?;
        self.snapshot.taken(meta.index);
        let compact_to = meta.index.saturating_sub(self.cfg.snapshot_keep_entries);
        self.storage.compact(compact_to)?;
        self.snapshots.purge_except(meta.index, meta.term);
        tracing::info!(node = %self.local_id, index = meta.index, bytes, compacted_to = compact_to, "snapshot taken");
        Ok(())
    }

    /// Installs a snapshot the leader sent: the state machine is restored
    /// from the transferred file, then the log is replaced.
    pub(super) fn install_snapshot(
        &mut self,
        snap: &RaftSnapshot,
        hs: Option<&HardState>,
    ) -> Result<()> {
        let meta = snap.get_metadata();
        self.snapshots
            .restore(meta.index, meta.term, &mut self.sm)?;
        let (conf_index, members) = decode_snapshot_data(&snap.data)?;
        self.storage.install_snapshot(meta, &snap.data, hs)?;
        for m in members {
            self.members.commit_address(m);
        }
        self.members.conf_state = meta.get_conf_state().clone();
        self.members.conf_index = conf_index;
        self.check_join_role();
        self.clock.applied_term = meta.term;
        self.snapshot.installed(meta.index);
        self.snapshots.purge_except(meta.index, meta.term);
        tracing::info!(node = %self.local_id, index = meta.index, "installed snapshot from the leader");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_snapshot_at_a_time_every_interval_or_on_request() {
        let mut s = Schedule::new(0, 100);
        assert!(!s.due(50, || false));
        assert!(s.due(50, || true), "raft-rs asked");
        s.started();
        assert!(!s.due(500, || true), "one is being written");
        s.finished();
        s.taken(50);
        assert!(!s.due(120, || false), "next due 100 after 50");
        assert!(s.due(150, || false));
        s.installed(1000);
        assert_eq!(s.last_index(), 1000);
        assert!(!s.due(1000, || true), "nothing past the installed snapshot");
        assert!(s.due(1100, || false));
    }
}
