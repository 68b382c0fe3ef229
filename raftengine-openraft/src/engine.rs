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
use openraft::error::{
    ChangeMembershipError, ClientWriteError, Fatal, ForwardReason, ForwardToLeader,
    LinearizableReadError, RaftError,
};
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

use crate::config::OpenraftConfig;
use crate::network::Outbound;
use crate::shared::{Contact, Epoch, MetricsRx, OpenRaft, Watched, contained, stop_removed};
use crate::state_machine::StateMachineAdapter;
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

/// One consistent sample of openraft's metrics, in this crate's terms.
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    pub(crate) state: State,
    pub(crate) leader: Option<u64>,
    pub(crate) term: u64,
    pub(crate) applied: u64,
    pub(crate) applied_term: u64,
    pub(crate) committed: u64,
    pub(crate) last_log: u64,
    pub(crate) snapshot: u64,
    pub(crate) membership: Arc<StoredMembership>,
    pub(crate) membership_committed: bool,
    pub(crate) fatal: Option<String>,
}

/// Samples `raft`'s metrics; `lease` is openraft's own leader lease (also
/// its longest election timeout) and `contact` when this node last heard
/// from a leader.
///
/// openraft runs pre-vote rounds without leaving the follower state; a voter
/// that has heard from no leader for longer than its longest election
/// timeout is campaigning, and is reported as a candidate.
pub(crate) fn sample<S: StateMachine>(
    raft: &OpenRaft<S>,
    node_id: u64,
    lease: Duration,
    contact: &Contact,
) -> Sample {
    let rx = raft.metrics();
    let m = rx.borrow_watched();
    // openraft's instants are tokio instants; carry them over as ages.
    let quorum_ack = m
        .last_quorum_acked
        .as_ref()
        .and_then(|t| Instant::now().checked_sub(t.elapsed()));
    let is_voter = m.membership_config.voter_ids().any(|v| v == node_id);
    let is_member = m
        .membership_config
        .membership()
        .get_node(&node_id)
        .is_some();
    let state = match m.state {
        ServerState::Leader => {
            let fresh = quorum_ack.is_none_or(|t| t.elapsed() < lease);
            if fresh {
                State::Leader
            } else {
                State::Follower
            }
        }
        ServerState::Candidate => State::Candidate,
        ServerState::Follower if is_voter => {
            if contact.since().is_some_and(|d| d > lease) {
                State::Candidate
            } else {
                State::Follower
            }
        }
        // openraft reports a voter as a Learner until its metrics catch up
        // with a membership that lists it (right after `initialize`).
        ServerState::Learner if is_voter => State::Follower,
        ServerState::Follower | ServerState::Learner if is_member => State::Learner,
        // A joiner no configuration lists yet.
        ServerState::Follower | ServerState::Learner => State::Unknown,
        ServerState::Shutdown => State::Shutdown,
    };
    let leader = match state {
        State::Leader => Some(node_id),
        State::Candidate => None,
        _ => m.current_leader.filter(|l| *l != node_id),
    };
    Sample {
        state,
        leader,
        term: m.current_term,
        applied: m.last_applied.map_or(0, |l| l.index),
        applied_term: m.last_applied.map_or(0, |l| l.leader_id.term),
        committed: m.local_committed.map_or(0, |l| l.index),
        last_log: m.last_log_index.unwrap_or(0),
        snapshot: m.snapshot.map_or(0, |l| l.index),
        membership_committed: m.membership_config.log_id()
            == m.committed_membership_config.log_id(),
        membership: m.membership_config.clone(),
        fatal: m.running_state.as_ref().err().map(|e| e.to_string()),
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
    /// One membership change at a time from this handle.
    pub(crate) tasks: Mutex<Vec<JoinHandle<()>>>,
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

fn peer_info(p: &Peer) -> LeaderInfo {
    LeaderInfo {
        id: p.id.clone(),
        address: p.address.clone(),
    }
}

/// A call that found openraft stopped. A fatal stop (a failed write or
/// fsync) is a stop like any other to the caller: the node takes no more
/// requests, and `stopped()` tells why. Both backends answer it so.
fn fatal_error(_: &Fatal<TypeConfig>) -> Error {
    Error::Shutdown
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
        self.watched.stop.borrow().clone()
    }

    fn leader_info(&self, s: &Sample) -> Option<LeaderInfo> {
        let id = s.leader?;
        s.membership.get_node(&id).map(peer_info)
    }

    fn forward(&self, f: &ForwardToLeader<TypeConfig>) -> Error {
        if f.reason == ForwardReason::LeadershipTransfer {
            return Error::TransferInProgress;
        }
        let leader = f.leader_node.as_ref().map(peer_info).or_else(|| {
            let s = self.sample();
            f.leader_id
                .filter(|id| *id != self.node_id)
                .and_then(|id| s.membership.get_node(&id).map(peer_info))
        });
        Error::NotLeader { leader }
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

    fn write_error(&self, e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> Error {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => self.forward(&f),
            RaftError::APIError(ClientWriteError::LogEntryDiscarded(_)) => Error::OutcomeUnknown {
                reason: "the entry was discarded after leadership changed; another leader may \
                         have committed it"
                    .into(),
            },
            RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => match c {
                ChangeMembershipError::InProgress(_) => Error::ConfChangePending,
                other => Error::failed_precondition(other.to_string()),
            },
            RaftError::APIError(other) => Error::failed_precondition(other.to_string()),
            // The entry may have been appended (and replicated) before the
            // node stopped: as on etcd, its fate is unknown to this node.
            RaftError::Fatal(Fatal::Stopped) => Error::Shutdown,
            RaftError::Fatal(f) => Error::OutcomeUnknown {
                reason: format!("engine stopped ({f}) before the entry was known to commit"),
            },
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
            .map_err(|e| self.write_error(e))
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
                Err(e) => return Err(self.write_error(e)),
            }
        };
        let commit_index = resp.log_id.index;
        let response = Reply::take::<S::Response>(resp.data).ok_or_else(|| {
            crate::error::internal_bare("the state machine's response did not reach the proposer")
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
            Ok(Ok(Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f))))) => {
                Err(self.forward(&f))
            }
            Ok(Ok(Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(_))))) => {
                Err(Error::NotLeader { leader: None })
            }
            Ok(Ok(Err(RaftError::Fatal(f)))) => Err(fatal_error(&f)),
            Err(_) => Err(Error::NotLeader { leader: None }),
        }
    }

    /// Leader-side checks shared by every membership change; returns the
    /// current membership.
    fn membership_preflight(&self, prev_index: Option<Index>) -> Result<Arc<StoredMembership>> {
        let s = self.sample();
        if s.state != State::Leader {
            return Err(self.not_leader());
        }
        if !s.membership_committed || s.membership.get_joint_config().len() > 1 {
            return Err(Error::ConfChangePending);
        }
        let actual = s.membership.log_id().map_or(0, |l| l.index);
        if let Some(expected) = prev_index {
            if expected != actual {
                return Err(Error::ConfigIndexMismatch { expected, actual });
            }
        }
        Ok(s.membership)
    }

    /// Runs one membership change, refusing a second concurrent one.
    async fn change(
        &self,
        prev_index: Option<Index>,
        build: impl FnOnce(&StoredMembership) -> Result<Option<(ChangeMembers<u64, Peer>, bool)>>,
    ) -> Result<Index> {
        let Ok(_one_at_a_time) = self.watched.membership_gate.try_lock() else {
            return Err(Error::ConfChangePending);
        };
        let membership = self.membership_preflight(prev_index)?;
        let Some((change, retain)) = build(&membership)? else {
            return Ok(membership.log_id().map_or(0, |l| l.index));
        };
        let resp = self
            .guarded(self.raft.change_membership(change, retain))
            .await?;
        let index = resp.log_id.index;
        self.await_membership_visible(index).await;
        Ok(index)
    }

    /// openraft answers a membership change once it committed, but the
    /// metrics the next admin call's preflight reads can still show it
    /// uncommitted, and that call would then be refused with
    /// `ConfChangePending` for a change the caller was told is done (a
    /// flake seen in CI, issue #13). Wait — still holding the gate, bounded
    /// by one election timeout — until the metrics show configuration
    /// `index` committed, or this node stops leading.
    async fn await_membership_visible(&self, index: Index) {
        let mut rx = self.raft.metrics();
        let deadline = tokio::time::Instant::now() + self.cfg.election_timeout_max;
        loop {
            let s = self.sample();
            let shown = s.membership.log_id().map_or(0, |l| l.index) >= index;
            if s.state != State::Leader || (shown && s.membership_committed) {
                return;
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                tracing::warn!(
                    index,
                    "committed membership change not yet visible in metrics"
                );
                return;
            }
        }
    }

    fn check_id(&self, membership: &StoredMembership, id: &str) -> Result<u64> {
        let nid = raftengine::numeric_id(id);
        raftengine_kit::member::check_numeric_id_free(
            id,
            membership.get_node(&nid).map(|p| p.id.as_str()),
        )?;
        Ok(nid)
    }

    /// Re-adding a member in the role it has is a no-op only at the address
    /// it has; addresses change by removing and re-adding.
    fn same_address(
        membership: &StoredMembership,
        nid: u64,
        id: &str,
        address: &str,
    ) -> Result<()> {
        match membership.get_node(&nid) {
            Some(p) if p.address != address => Err(Error::failed_precondition(format!(
                "{id} is a member at {:?}, not {address:?}; remove it first to move it",
                p.address
            ))),
            _ => Ok(()),
        }
    }

    fn suffrage(membership: &StoredMembership, nid: u64) -> Option<Suffrage> {
        if membership.voter_ids().any(|v| v == nid) {
            Some(Suffrage::Voter)
        } else if membership.get_node(&nid).is_some() {
            Some(Suffrage::Learner)
        } else {
            None
        }
    }

    /// The leader's view of how far `nid` has replicated.
    fn matched(&self, nid: u64) -> u64 {
        let rx = self.raft.metrics();
        let m = rx.borrow_watched();
        m.replication
            .as_ref()
            .and_then(|r| r.get(&nid).cloned().flatten())
            .map_or(0, |l| l.index)
    }

    async fn transfer(&self, target: TransferTarget) -> Result<()> {
        let s = self.sample();
        if s.state != State::Leader {
            return Err(self.not_leader());
        }
        let voters: BTreeSet<u64> = s.membership.voter_ids().collect();
        let nid = match &target {
            TransferTarget::Server(id) => {
                let nid = raftengine::numeric_id(id);
                if nid == self.node_id {
                    return Err(Error::failed_precondition("this node already leads"));
                }
                match Self::suffrage(&s.membership, nid) {
                    Some(Suffrage::Voter) => nid,
                    Some(Suffrage::Learner) => {
                        return Err(Error::failed_precondition(format!(
                            "{id} is a learner and cannot lead"
                        )));
                    }
                    None => {
                        return Err(Error::failed_precondition(format!(
                            "{id} is not a member of the cluster"
                        )));
                    }
                }
            }
            TransferTarget::Any => voters
                .iter()
                .copied()
                .filter(|v| *v != self.node_id)
                .max_by_key(|v| self.matched(*v))
                .ok_or_else(|| Error::failed_precondition("no other voter to transfer to"))?,
        };
        let name = s
            .membership
            .get_node(&nid)
            .map_or_else(|| nid.to_string(), |p| p.id.clone());
        *self
            .watched
            .transferring
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(name.clone());
        let result = self.await_transfer(nid, &name).await;
        *self
            .watched
            .transferring
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
        result
    }

    async fn await_transfer(&self, nid: u64, name: &str) -> Result<()> {
        contained(self.raft.trigger().transfer_leader(nid))
            .await?
            .map_err(|e| fatal_error(&e))?;
        // openraft only enqueues the transfer; success is the target leading.
        let deadline = tokio::time::Instant::now() + self.cfg.transfer_timeout;
        let mut rx = self.raft.metrics();
        loop {
            let (leader, state) = {
                let m = rx.borrow_watched();
                (m.current_leader, m.state)
            };
            if leader == Some(nid) && state != ServerState::Leader {
                return Ok(());
            }
            if state == ServerState::Shutdown {
                return Err(Error::Shutdown);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(Error::Shutdown),
                Err(_) => {
                    return Err(Error::TransferAborted {
                        reason: format!(
                            "{name} did not take over within {:?}",
                            self.cfg.transfer_timeout
                        ),
                    });
                }
            }
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
                m.last_quorum_acked
                    .as_ref()
                    .and_then(|t| Instant::now().checked_sub(t.elapsed())),
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

#[async_trait]
impl<S: StateMachine> Admin for OpenraftEngine<S> {
    async fn add_voter(&self, id: &str, address: &str, prev_index: Option<Index>) -> Result<Index> {
        raftengine_kit::member::check_new(id, address)?;
        let peer = Peer {
            id: id.to_owned(),
            address: address.to_owned(),
        };
        self.change(prev_index, |m| {
            let nid = self.check_id(m, id)?;
            match Self::suffrage(m, nid) {
                Some(Suffrage::Voter) => Self::same_address(m, nid, id, address).map(|()| None),
                Some(Suffrage::Learner) => Ok(Some((
                    ChangeMembers::AddVoterIds(BTreeSet::from([nid])),
                    false,
                ))),
                None => Ok(Some((
                    ChangeMembers::AddVoters(BTreeMap::from([(nid, peer)])),
                    false,
                ))),
            }
        })
        .await
    }

    async fn add_learner(
        &self,
        id: &str,
        address: &str,
        prev_index: Option<Index>,
    ) -> Result<Index> {
        raftengine_kit::member::check_new(id, address)?;
        let peer = Peer {
            id: id.to_owned(),
            address: address.to_owned(),
        };
        self.change(prev_index, |m| {
            let nid = self.check_id(m, id)?;
            match Self::suffrage(m, nid) {
                Some(Suffrage::Voter) => Err(Error::failed_precondition(format!(
                    "{id} is already a voter"
                ))),
                Some(Suffrage::Learner) => Self::same_address(m, nid, id, address).map(|()| None),
                // AddNodes keeps every voter and adds a learner, like
                // openraft's add_learner without its unbounded blocking wait.
                None => Ok(Some((
                    ChangeMembers::AddNodes(BTreeMap::from([(nid, peer)])),
                    true,
                ))),
            }
        })
        .await
    }

    async fn promote_learner(
        &self,
        id: &str,
        prev_index: Option<Index>,
        catch_up: CatchUp,
    ) -> Result<Index> {
        self.change(prev_index, |m| {
            let nid = self.check_id(m, id)?;
            match Self::suffrage(m, nid) {
                Some(Suffrage::Learner) => {}
                Some(Suffrage::Voter) => {
                    return Err(Error::failed_precondition(format!(
                        "{id} is already a voter"
                    )));
                }
                None => {
                    return Err(Error::failed_precondition(format!("{id} is not a learner")));
                }
            }
            if let CatchUp::AtLeast(required) = catch_up {
                let matched = self.matched(nid);
                if matched < required.get() {
                    return Err(Error::failed_precondition(format!(
                        "{id} has replicated up to {matched}, below the required {required}"
                    )));
                }
            }
            Ok(Some((
                ChangeMembers::AddVoterIds(BTreeSet::from([nid])),
                false,
            )))
        })
        .await
    }

    async fn remove_server(&self, id: &str, prev_index: Option<Index>) -> Result<Index> {
        self.change(prev_index, |m| {
            let nid = self.check_id(m, id)?;
            match Self::suffrage(m, nid) {
                Some(Suffrage::Voter) => {
                    if m.voter_ids().count() == 1 {
                        return Err(Error::failed_precondition("cannot remove the last voter"));
                    }
                    Ok(Some((
                        ChangeMembers::RemoveVoters(BTreeSet::from([nid])),
                        false,
                    )))
                }
                Some(Suffrage::Learner) => Ok(Some((
                    ChangeMembers::RemoveNodes(BTreeSet::from([nid])),
                    false,
                ))),
                None => Err(Error::failed_precondition(format!("{id} is not a member"))),
            }
        })
        .await
    }

    async fn transfer_leadership(&self, target: TransferTarget) -> Result<()> {
        self.transfer(target).await
    }

    fn register_leader_acquired_callback(&self, callback: Callback) -> Registration {
        self.watched.acquired.register(callback)
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
        result.map_err(|e| crate::error::internal_bare(format!("openraft shutdown: {e}")))
    }

    async fn stopped(&self) -> StopReason {
        let mut rx = self.watched.stop.subscribe();
        loop {
            if let Some(reason) = rx.borrow_and_update().clone() {
                return reason;
            }
            if rx.changed().await.is_err() {
                return StopReason::Shutdown;
            }
        }
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

/// What the metrics watcher needs to tell removed nodes they are out.
pub(crate) struct RemovalNotices {
    pub(crate) local_id: String,
    pub(crate) outbound: Arc<Outbound>,
}

/// Follows openraft's metrics: fires the leadership callbacks on exact
/// edges, publishes the epoch pending writes watch, reports a fatal stop,
/// and keeps the join-as-learner alarm.
/// Also ticks, because a lease runs out without any metrics change.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn watch_metrics<S: StateMachine>(
    raft: OpenRaft<S>,
    node_id: u64,
    lease: Duration,
    tick: Duration,
    watched: Arc<Watched>,
    contact: Arc<Contact>,
    join_alarm: JoinAlarm,
    notices: RemovalNotices,
) {
    let mut rx = raft.metrics();
    let mut leading = false;
    // Members of the last committed membership seen, with their addresses,
    // and that membership's log id.
    let mut members: Option<BTreeMap<u64, Peer>> = None;
    let mut seen_conf = None;
    loop {
        let s = sample(&raft, node_id, lease, &contact);
        if let Some(reason) = s.fatal {
            watched.epoch.send_replace(Epoch::default());
            if leading {
                watched.loss.fire();
            }
            if watched.stop.borrow().is_none() {
                let stop = if reason.contains("stopped") {
                    tracing::info!(node = node_id, "openraft stopped");
                    StopReason::Shutdown
                } else {
                    tracing::error!(node = node_id, %reason, "openraft failed");
                    StopReason::Fatal(reason)
                };
                watched.stop_once(stop);
            }
            return;
        }
        let now_leading = s.state == State::Leader;
        watched.epoch.send_if_modified(|e| {
            let next = Epoch {
                leading: now_leading,
                term: s.term,
            };
            let changed = *e != next;
            *e = next;
            changed
        });
        if now_leading != leading {
            leading = now_leading;
            if leading {
                watched.acquired.fire();
            } else {
                watched.loss.fire();
            }
        }
        let conf_id = *s.membership.log_id();
        // Metrics change on every applied entry; the membership rarely.
        if s.membership_committed && conf_id != seen_conf {
            seen_conf = conf_id;
            let now: BTreeMap<u64, Peer> =
                s.membership.nodes().map(|(n, p)| (*n, p.clone())).collect();
            let conf_index = s.membership.log_id().map_or(0, |l| l.index);
            if let Some(before) = &members {
                if before.contains_key(&node_id) && !now.contains_key(&node_id) {
                    tracing::warn!(
                        node = node_id,
                        conf_index,
                        "this node was removed from the cluster; stopping"
                    );
                    stop_removed(&raft, &watched);
                    return;
                }
                if now_leading {
                    // Once committed, openraft stops replicating to a removed
                    // node, so raft alone never tells it; the leader does.
                    for (n, peer) in before.iter().filter(|(n, _)| !now.contains_key(n)) {
                        if *n != node_id {
                            notices.outbound.notify_removed(
                                notices.local_id.clone(),
                                peer.id.clone(),
                                &peer.address,
                                conf_index,
                            );
                        }
                    }
                }
            }
            members = Some(now);
        }
        let role = if s.membership.voter_ids().any(|v| v == node_id) {
            Some(Suffrage::Voter)
        } else if s.membership.get_node(&node_id).is_some() {
            Some(Suffrage::Learner)
        } else {
            None
        };
        let raised = if join_alarm.would_record(role) {
            // Once per node: the first role is recorded on disk.
            let alarm = join_alarm.clone();
            tokio::task::spawn_blocking(move || alarm.observe(role))
                .await
                .unwrap_or(false)
        } else {
            join_alarm.observe(role)
        };
        watched.join_role_violation.store(raised, Ordering::Relaxed);
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(tick) => {}
        }
    }
}
