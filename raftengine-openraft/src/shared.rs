//! What the engine handle, the metrics watcher and the inbound service
//! share: the state they read without a round trip through openraft, and
//! the stop of a removed node.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::Raft;
use raftengine::{CallbackRegistry, Error, Result, StateMachine, StopReason};
use raftengine_kit::stop_signal::StopSignal;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::state_machine::StateMachineAdapter;
use crate::types::TypeConfig;

/// Whether this node currently leads, and in which term: the edge pending
/// proposals watch so they fail with `OutcomeUnknown` when leadership goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Epoch {
    pub(crate) leading: bool,
    pub(crate) term: u64,
}

/// What the background watcher maintains for the engine handle.
#[derive(Debug)]
pub(crate) struct Watched {
    pub(crate) epoch: watch::Sender<Epoch>,
    pub(crate) loss: CallbackRegistry,
    pub(crate) acquired: CallbackRegistry,
    pub(crate) stop: StopSignal,
    /// Set while `transfer_leadership` runs on this node.
    pub(crate) transferring: Mutex<Option<String>>,
    /// Set once `wait_for_recovery` finished after a restart.
    pub(crate) recovered: AtomicBool,
    /// The join-as-learner alarm (`Status::join_role_violation`).
    pub(crate) join_role_violation: AtomicBool,
    /// `Status::pending_proposals`.
    pub(crate) pending_proposals: AtomicU64,
    /// Held while a membership change runs on this node (one at a time).
    pub(crate) membership_gate: tokio::sync::Mutex<()>,
    /// The node's data dir, for the removed marker (`node_dir::mark_removed`).
    pub(crate) data_dir: std::path::PathBuf,
    /// The newest leader this node followed (0: none yet), kept while an
    /// election runs: the removed notice is honoured from it.
    last_leader: AtomicU64,
}

impl Watched {
    pub(crate) fn new(data_dir: std::path::PathBuf) -> Self {
        Watched {
            data_dir,
            epoch: watch::channel(Epoch::default()).0,
            loss: CallbackRegistry::new("openraft-leader-loss"),
            acquired: CallbackRegistry::new("openraft-leader-acquired"),
            stop: StopSignal::new(),
            transferring: Mutex::new(None),
            recovered: AtomicBool::new(false),
            join_role_violation: AtomicBool::new(false),
            pending_proposals: AtomicU64::new(0),
            membership_gate: tokio::sync::Mutex::new(()),
            last_leader: AtomicU64::new(0),
        }
    }

    /// Records the leader this node follows now.
    pub(crate) fn follow(&self, leader: u64) {
        self.last_leader.store(leader, Ordering::Relaxed);
    }

    /// The newest leader this node followed, if any.
    pub(crate) fn last_leader(&self) -> Option<u64> {
        Some(self.last_leader.load(Ordering::Relaxed)).filter(|l| *l != 0)
    }

    /// Records why the engine stopped; the first cause wins.
    pub(crate) fn stop_once(&self, reason: StopReason) {
        self.stop.stop(reason);
    }

    pub(crate) fn transferee(&self) -> Option<String> {
        self.transferring
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

pub(crate) type OpenRaft<S> = Raft<TypeConfig, StateMachineAdapter<S>>;

/// openraft's metrics watch receiver.
pub(crate) type MetricsRx = <<<TypeConfig as openraft::RaftTypeConfig>::AsyncRuntime as openraft::AsyncRuntime>::Watch as openraft::async_runtime::watch::Watch>::Receiver<openraft::RaftMetrics<TypeConfig>>;

/// When this node last heard from a leader (for `Status::last_contact`);
/// starts at the node's start.
#[derive(Debug)]
pub(crate) struct Contact(Mutex<Option<Instant>>);

impl Default for Contact {
    fn default() -> Self {
        Contact(Mutex::new(Some(Instant::now())))
    }
}

impl Contact {
    pub(crate) fn touch(&self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    pub(crate) fn since(&self) -> Option<Duration> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|t| t.elapsed())
    }
}

/// Runs a call into openraft's API with its panics contained.
///
/// openraft 0.10.0-alpha.37 can panic in its API once the core has stopped
/// (after a fatal storage error, say): a caller waiting for the stopped
/// core that is dropped mid-wait leaves the core's join state half-done,
/// the next caller hits `unreachable!("RaftCore should have already
/// quit")` while holding a lock, and every later call panics on the
/// poisoned lock. Found by the power-cut cases (callers time out and drop
/// their futures). Such a panic only ever means the core is gone, so it is
/// answered as [`Error::Shutdown`] instead of unwinding into the
/// application's task.
pub(crate) async fn contained<T>(call: impl std::future::Future<Output = T>) -> Result<T> {
    use futures::FutureExt as _;
    std::panic::AssertUnwindSafe(call)
        .catch_unwind()
        .await
        .map_err(|_| Error::Shutdown)
}

/// Stops a node a committed membership removed: the reason is recorded
/// first, so openraft's own stop does not overwrite it.
pub(crate) fn stop_removed<S: StateMachine>(raft: &OpenRaft<S>, watched: &Arc<Watched>) {
    let raft = raft.clone();
    let watched = watched.clone();
    tokio::spawn(async move {
        // A leader removing itself is still waiting for its own change to
        // answer: let that call finish (it holds the gate) before stopping,
        // so the caller learns the removal committed.
        let _change_done = watched.membership_gate.lock().await;
        // Recorded before the stop is reported, so a restart on this dir
        // that follows the report stops again at once.
        let dir = watched.data_dir.clone();
        let marked =
            tokio::task::spawn_blocking(move || raftengine_kit::node_dir::mark_removed(&dir)).await;
        if !matches!(marked, Ok(Ok(()))) {
            tracing::error!(
                ?marked,
                "recording the removal failed; a restart on this dir would not know it"
            );
        }
        watched.stop_once(StopReason::Removed);
        watched.epoch.send_replace(Epoch::default());
        if let Ok(Err(e)) = contained(raft.shutdown()).await {
            tracing::warn!(error = %e, "stopping a removed node");
        }
    });
}
