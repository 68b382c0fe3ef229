//! [`OpenraftEngine`]: `raftengine`'s traits on an openraft `Raft`.
//!
//! Reads of the node's state come straight from openraft's metrics (a short
//! borrow, never held across an await). One deliberate difference from
//! openraft's own view: a leader whose lease ran out (no quorum heard from
//! within `election_timeout_max`) still calls itself `Leader` in openraft but
//! rejects writes; this engine reports it as a follower with no known
//! leader, because it cannot serve.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use openraft::async_runtime::watch::WatchReceiver;
use openraft::error::{ClientWriteError, ForwardReason, RaftError};
use openraft::raft::ClientWriteResponse;
use openraft::{ChangeMembers, Instant as _, ReadPolicy, ServerState};
use tokio::task::JoinHandle;

use raftengine::{
    Admin, Callback, CatchUp, ConfigReader, Configuration, Engine, Error, HealthReader, Index,
    LeaderInfo, LeaderView, LeaseBasis, LeaseProvider, ProposalResult, Proposer, Registration,
    Result, Server, State, StateMachine, Status, StatusReader, StopReason, Suffrage,
    TransferTarget,
};
use raftengine_kit::join_alarm::JoinAlarm;

mod admin;
mod metrics;

pub(crate) use metrics::{RemovalNotices, Sample, sample, watch_metrics};

use crate::config::OpenraftConfig;
use crate::error;
use crate::shared::{Contact, Epoch, MetricsRx, OpenRaft, Watched, contained, stop_removed};
use crate::state_machine::StateMachineAdapter;
use crate::transport::outbound::Outbound;
use crate::types::{Peer, Reply, Request, StoredMembership, TypeConfig};

/// Counts one waiting proposal for as long as it lives.
struct PendingGuard<'a>(&'a AtomicU64);

impl<'a> PendingGuard<'a> {
    fn new(counter: &'a AtomicU64) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        PendingGuard(counter)
    }
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A running openraft node. Obtain it from
/// [`OpenraftFactory`](crate::OpenraftFactory); share it as
/// `Arc<dyn raftengine::Engine<R>>`.
pub struct OpenraftEngine<S: StateMachine> {
    pub(crate) local_id: String,
    pub(crate) node_id: u64,
    pub(crate) cfg: OpenraftConfig,
    pub(crate) raft: OpenRaft<S>,
    /// Kept to sample the metrics without cloning a receiver per call.
    pub(crate) metrics: MetricsRx,
    /// The state machine as applied (ahead of openraft's metrics, which
    /// are published after the response reached the proposer).
    pub(crate) sm: StateMachineAdapter<S>,
    pub(crate) watched: Arc<Watched>,
    pub(crate) contact: Arc<Contact>,
    pub(crate) outbound: Arc<Outbound>,
    /// The background tasks this handle started (the metrics watcher, the
    /// wait for recovery after a restart),
    /// aborted on shutdown and drop.
    pub(crate) tasks: Mutex<Vec<JoinHandle<()>>>,
    /// One shutdown at a time; a second caller waits for the first.
    pub(crate) shutdown_lock: tokio::sync::Mutex<()>,
    /// The log's fsync count (`Status::log_syncs`).
    pub(crate) log_syncs: raftengine_kit::raft_log::SyncCounter,
}

impl<S: StateMachine> std::fmt::Debug for OpenraftEngine<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenraftEngine")
            .field("local_id", &self.local_id)
            .field("state", &self.sample().state)
            .finish_non_exhaustive()
    }
}

impl<S: StateMachine> OpenraftEngine<S> {
    pub(crate) fn sample(&self) -> Sample {
        let mut s = sample(
            &self.raft,
            self.node_id,
            self.cfg.election_timeout_max,
            &self.contact,
        );
        if let Some(applied) = self.sm.last_applied() {
            if applied.index > s.applied {
                s.applied = applied.index;
                s.applied_term = applied.leader_id.term;
                s.committed = s.committed.max(applied.index);
                s.last_log = s.last_log.max(applied.index);
            }
        }
        s
    }

    fn stopped_reason(&self) -> Option<StopReason> {
        self.watched.stop.reason()
    }

    fn leader_info(&self, s: &Sample) -> Option<LeaderInfo> {
        let id = s.leader?;
        s.membership.get_node(&id).map(error::leader_info)
    }

    /// Names a leader openraft gave only the id of, from this node's
    /// membership; never this node itself.
    fn leader_of(&self) -> impl FnOnce(u64) -> Option<LeaderInfo> + '_ {
        move |id| {
            if id == self.node_id {
                return None;
            }
            self.sample()
                .membership
                .get_node(&id)
                .map(error::leader_info)
        }
    }

    fn not_leader(&self) -> Error {
        if self.stopped_reason().is_some() {
            return Error::Shutdown;
        }
        let s = self.sample();
        Error::NotLeader {
            leader: self.leader_info(&s),
        }
    }

    /// Runs a write, failing it with `OutcomeUnknown` if this node stops
    /// leading (or its term changes) before openraft answers: openraft keeps
    /// such a write pending until a later leader commits or drops it, which
    /// can be forever for a partitioned leader.
    async fn guarded<T>(
        &self,
        write: impl std::future::Future<
            Output = std::result::Result<T, RaftError<TypeConfig, ClientWriteError<TypeConfig>>>,
        >,
    ) -> Result<T> {
        self.guarded_raw(write)
            .await?
            .map_err(|e| error::write(e, self.leader_of()))
    }

    /// [`Self::guarded`] that hands openraft's own error back unmapped.
    async fn guarded_raw<T>(
        &self,
        write: impl std::future::Future<
            Output = std::result::Result<T, RaftError<TypeConfig, ClientWriteError<TypeConfig>>>,
        >,
    ) -> Result<std::result::Result<T, RaftError<TypeConfig, ClientWriteError<TypeConfig>>>> {
        let mut epoch = self.watched.epoch.subscribe();
        let start = *epoch.borrow_and_update();
        let lost = async move {
            if !start.leading {
                return std::future::pending::<()>().await;
            }
            loop {
                if epoch.changed().await.is_err() {
                    return;
                }
                let now = *epoch.borrow_and_update();
                if now != start {
                    return;
                }
            }
        };
        tokio::select! {
            biased;
            r = contained(write) => r,
            _ = lost => Err(Error::OutcomeUnknown {
                reason: "leadership was lost while the entry was in flight".into(),
            }),
        }
    }

    async fn propose_bytes(&self, data: Bytes) -> Result<ProposalResult<S::Response>> {
        // openraft holds the responder until the entry applies; this counts
        // the calls waiting on one, released however the call ends
        // (including its future being dropped).
        let _pending = PendingGuard::new(&self.watched.pending_proposals);
        if data.len() > self.cfg.max_proposal_bytes {
            return Err(Error::ProposalTooLarge {
                size: data.len(),
                max: self.cfg.max_proposal_bytes,
            });
        }
        if self.stopped_reason().is_some() {
            return Err(Error::Shutdown);
        }
        // A leader elected a moment ago has no quorum acknowledgement yet and
        // openraft refuses writes until the first heartbeat round answers;
        // wait for it (bounded by one lease) instead of failing the caller.
        let deadline = tokio::time::Instant::now() + self.cfg.election_timeout_max;
        let resp: ClientWriteResponse<TypeConfig> = loop {
            let attempt = self
                .guarded_raw(self.raft.client_write(Request(data.clone())))
                .await?;
            match attempt {
                Ok(resp) => break resp,
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))
                    if f.reason == ForwardReason::LeaseExpired
                        && self.raft.is_leader()
                        && tokio::time::Instant::now() < deadline =>
                {
                    let mut rx = self.raft.metrics();
                    let _ = tokio::time::timeout(self.cfg.heartbeat_interval, rx.changed()).await;
                }
                Err(e) => return Err(error::write(e, self.leader_of())),
            }
        };
        let commit_index = resp.log_id.index;
        let response = Reply::take::<S::Response>(resp.data).ok_or_else(|| {
            error::internal(
                "the state machine's response did not reach the proposer",
                None,
            )
        })?;
        Ok(ProposalResult {
            commit_index,
            response,
        })
    }

    async fn read_index(&self) -> Result<Index> {
        if self.stopped_reason().is_some() {
            return Err(Error::Shutdown);
        }
        if self.sample().state != State::Leader {
            return Err(self.not_leader());
        }
        let read = contained(self.raft.ensure_linearizable(ReadPolicy::ReadIndex));
        match tokio::time::timeout(self.cfg.read_timeout, read).await {
            Ok(Err(stopped)) => Err(stopped),
            Ok(Ok(Ok(read_log_id))) => Ok(read_log_id.index()),
            Ok(Ok(Err(e))) => Err(error::read(e, self.leader_of())),
            Err(_) => Err(Error::NotLeader { leader: None }),
        }
    }
}

#[async_trait]
impl<S: StateMachine> Proposer<S::Response> for OpenraftEngine<S> {
    async fn propose(&self, data: Bytes) -> Result<ProposalResult<S::Response>> {
        self.propose_bytes(data).await
    }

    async fn propose_admin(&self, data: Bytes) -> Result<ProposalResult<S::Response>> {
        self.propose_bytes(data).await
    }
}

#[async_trait]
impl<S: StateMachine> LeaderView for OpenraftEngine<S> {
    fn state(&self) -> State {
        if self.stopped_reason().is_some() {
            return State::Shutdown;
        }
        self.sample().state
    }

    fn leader(&self) -> Option<LeaderInfo> {
        if self.stopped_reason().is_some() {
            return None;
        }
        let s = self.sample();
        self.leader_info(&s)
    }

    async fn verify_leader(&self) -> Result<()> {
        self.read_index().await.map(|_| ())
    }

    async fn linearizable_read(&self) -> Result<Index> {
        self.read_index().await
    }
}

impl<S: StateMachine> LeaseProvider for OpenraftEngine<S> {
    fn lease_duration(&self) -> Duration {
        self.cfg.lease_duration()
    }

    fn lease_basis(&self) -> LeaseBasis {
        if self.stopped_reason().is_some() {
            return LeaseBasis::none(State::Shutdown);
        }
        // The hot path of lease reads: one short borrow of the metrics, no
        // membership scan (a non-leader or an expired lease is refused by
        // the rule itself, which checks the acknowledgement's age).
        let (is_leader, term, quorum_ack) = {
            let m = self.metrics.borrow_watched();
            (
                m.state == ServerState::Leader,
                m.current_term,
                if m.state == ServerState::Leader
                    && metrics::sole_voter(&m.membership_config, self.node_id)
                {
                    Some(Instant::now())
                } else {
                    m.last_quorum_acked
                        .as_ref()
                        .and_then(|t| Instant::now().checked_sub(t.elapsed()))
                },
            )
        };
        if !is_leader {
            return LeaseBasis::none(self.sample().state);
        }
        let applied = self.sm.last_applied();
        LeaseBasis {
            state: State::Leader,
            term,
            last_quorum_ack: quorum_ack,
            transfer_in_progress: self.watched.transferee().is_some(),
            applied_current_term: applied.is_some_and(|l| l.leader_id.term == term),
            applied_index: applied.map_or(0, |l| l.index),
        }
    }

    fn register_leader_loss_callback(&self, callback: Callback) -> Registration {
        self.watched.loss.register(callback)
    }
}

impl<S: StateMachine> StatusReader for OpenraftEngine<S> {
    fn status(&self) -> Status {
        if self.stopped_reason().is_some() {
            return Status::new(State::Shutdown);
        }
        let s = self.sample();
        let mut st = Status::new(s.state);
        st.leader = self.leader_info(&s);
        st.term = s.term;
        st.commit_index = s.committed;
        st.applied_index = s.applied;
        st.last_log_index = s.last_log;
        st.last_snapshot_index = s.snapshot;
        st.fsm_pending = s.committed.saturating_sub(s.applied);
        st.num_peers = s.membership.nodes().count().saturating_sub(1) as u64;
        st.last_contact = match s.state {
            State::Leader => Some(Duration::ZERO),
            _ => self.contact.since(),
        };
        st.lead_transferee = self.watched.transferee();
        st.configuration_index = s.membership.log_id().map_or(0, |l| l.index);
        st.pending_conf_change = !s.membership_committed;
        st.join_role_violation = self.watched.join_role_violation.load(Ordering::Relaxed);
        st.pending_proposals = self.watched.pending_proposals.load(Ordering::Relaxed);
        st.log_syncs = self.log_syncs.get();
        st
    }
}

#[async_trait]
impl<S: StateMachine> ConfigReader for OpenraftEngine<S> {
    async fn configuration(&self) -> Result<Configuration> {
        if self.stopped_reason().is_some() {
            return Err(Error::Shutdown);
        }
        let s = self.sample();
        let mut servers: Vec<Server> = s
            .membership
            .nodes()
            .map(|(nid, p)| {
                let suffrage = Self::suffrage(&s.membership, *nid).unwrap_or(Suffrage::Learner);
                Server {
                    id: p.id.clone(),
                    address: p.address.clone(),
                    suffrage,
                }
            })
            .collect();
        // openraft keys members by numeric id (a hash of the string id);
        // the contract orders them by the string id.
        servers.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(Configuration {
            index: s.membership.log_id().map_or(0, |l| l.index),
            servers,
        })
    }
}

#[async_trait]
impl<S: StateMachine> HealthReader for OpenraftEngine<S> {
    async fn check_serving(&self) -> Result<()> {
        if self.stopped_reason().is_some() {
            return Err(Error::Shutdown);
        }
        let s = self.sample();
        if s.state != State::Leader {
            return Err(Error::NotLeader {
                leader: self.leader_info(&s),
            });
        }
        if !self.watched.recovered.load(Ordering::Acquire) {
            return Err(Error::failed_precondition(
                "still recovering: the restarted log is not yet covered by the cluster's commit",
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl<S: StateMachine> Engine<S::Response> for OpenraftEngine<S> {
    fn engine_type(&self) -> &'static str {
        crate::ENGINE_TYPE
    }

    fn local_id(&self) -> &str {
        &self.local_id
    }

    async fn shutdown(&self) -> Result<()> {
        let _one_at_a_time = self.shutdown_lock.lock().await;
        // Stopped by itself (removed, fatal): openraft is down already,
        // but our tasks and connections still need releasing.
        let result = if self.stopped_reason().is_some() {
            Ok(())
        } else {
            // A panic inside means the core was already gone: stopped.
            contained(self.raft.shutdown()).await.unwrap_or(Ok(()))
        };
        for t in self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            t.abort();
        }
        self.outbound.close();
        self.watched.epoch.send_replace(Epoch::default());
        self.watched.stop_once(StopReason::Shutdown);
        result.map_err(|e| error::internal(format!("openraft shutdown: {e}"), None))
    }

    async fn stopped(&self) -> StopReason {
        self.watched.stop.stopped().await
    }
}

impl<S: StateMachine> Drop for OpenraftEngine<S> {
    fn drop(&mut self) {
        for t in self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            t.abort();
        }
        if self.stopped_reason().is_none() {
            // A handle dropped without shutdown() still stops the node.
            let raft = self.raft.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = contained(raft.shutdown()).await;
                });
            }
        }
    }
}
