//! The Raft loop: one OS thread owns the `RawNode`, the storage writes and
//! the state machine.
//!
//! The thread is not a runtime worker, so the fsync in every Ready and the
//! application's synchronous `apply` never block async tasks. Each round
//! takes one event (polling for `EtcdConfig::idle_spin` before it sleeps),
//! drains up to [`MAX_DRAIN`] more (so many proposals share one Ready and
//! one fsync), then processes Readies in raft-rs's order (notes/raft-rs.md
//! §2.2):
//!
//! 1. send the leader's messages (they may go before its own fsync);
//! 2. note role changes and read states;
//! 3. persist entries and hard state atomically, fsync iff `must_sync`;
//! 4. send the messages that depend on that write;
//! 5. apply committed entries (only durable ones are ever handed out), call
//!    `apply_conf_change` for each conf change, answer waiters;
//! 6. `advance`, persist the new commit index, send, apply, `advance_apply`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use protobuf::Message as _;
use raft::eraftpb::{
    ConfChangeSingle, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType, Message,
};
use raft::{RawNode, SnapshotStatus, StateRole};
use tokio::sync::{mpsc, oneshot};

use raftengine::{
    CatchUp, Configuration, Error, LeaderInfo, LeaseBasis, ProposalResult, Result, Server, State,
    StateMachine, Status, StopReason, Suffrage, TransferTarget,
};

mod membership;
mod proposals;
mod publish;
mod reads;
mod screen;
mod snapshot;
mod transfer;

pub(crate) use membership::bootstrap_entries;

use membership::Membership;
use proposals::Waiters;
use reads::Reads;
use snapshot::Schedule;
use transfer::TransferWait;

use crate::config::EtcdConfig;
use crate::event::{Base, Event, MembershipChange, Reply};
use crate::shared::Shared;
use crate::storage::{Member, RaftStorage};
use crate::transport::{Outbound, PeerInput, SendFailure};
use raftengine::numeric_id as raft_id;
use raftengine_kit::SnapshotDir;
use raftengine_kit::idle_spin::blocking_recv_spinning;
use raftengine_kit::join_alarm::JoinAlarm;

/// Most extra events folded into one round after the first.
const MAX_DRAIN: usize = 4096;

/// What the loop counts and remembers about time and leadership: ticks,
/// the lease's quorum acknowledgements, the leader's last contact.
#[derive(Debug, Default)]
struct Clock {
    ticks: u64,
    /// The tick at which the lease was last renewed (a heartbeat round
    /// acknowledged by a quorum).
    last_renewal_tick: u64,
    last_quorum_ack: Option<Instant>,
    /// The term of the newest applied entry (the lease needs one of the
    /// current term).
    applied_term: u64,
    was_leader: bool,
    last_leader_contact: Option<Instant>,
    /// The newest leader this node followed (0: none yet). Kept while an
    /// election runs, when raft-rs forgets it: the removed notice is
    /// honoured from it.
    last_leader: u64,
}

/// Everything the loop owns.
pub(crate) struct Driver<S: StateMachine> {
    pub(crate) raw: RawNode<RaftStorage>,
    pub(crate) storage: RaftStorage,
    pub(crate) sm: S,
    pub(crate) cfg: EtcdConfig,
    pub(crate) local_id: String,
    pub(crate) local_raft_id: u64,
    /// The node's data dir, for the removed marker.
    pub(crate) data_dir: PathBuf,
    /// The membership, the address book and the changes in flight.
    pub(crate) members: Membership,
    pub(crate) outbound: Arc<Outbound>,
    pub(crate) failures: mpsc::Receiver<SendFailure>,
    pub(crate) events: mpsc::Receiver<Event<S::Response>>,
    /// For background work (snapshot writes) to report back.
    pub(crate) events_tx: mpsc::Sender<Event<S::Response>>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) snapshots: SnapshotDir,
    snapshot: Schedule,
    proposals: Waiters<ProposalResult<S::Response>>,
    reads: Reads,
    /// Ticks, leader contact and the lease's quorum acknowledgements.
    clock: Clock,
    transfer: Option<TransferWait>,
    shutdown_reply: Option<oneshot::Sender<()>>,
    /// Replies held until the state they report is published, so a caller
    /// that reads status or configuration after its reply sees it.
    deferred: Vec<Box<dyn FnOnce() + Send>>,
}

enum Flow {
    Continue,
    Stop,
}

impl<S: StateMachine> Driver<S> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        raw: RawNode<RaftStorage>,
        storage: RaftStorage,
        sm: S,
        cfg: EtcdConfig,
        local_id: String,
        join_alarm: JoinAlarm,
        data_dir: PathBuf,
        addresses: HashMap<u64, Member>,
        outbound: Arc<Outbound>,
        failures: mpsc::Receiver<SendFailure>,
        events: mpsc::Receiver<Event<S::Response>>,
        events_tx: mpsc::Sender<Event<S::Response>>,
        shared: Arc<Shared>,
        snapshots: SnapshotDir,
        base: Base,
        departed: raftengine_kit::departed::Departed,
    ) -> Self {
        let conf_state = raw.raft.prs().conf().to_conf_state();
        let local_raft_id = raft_id(&local_id);
        // Read contexts from an earlier life of this node never match.
        let incarnation: u64 = rand::random();
        let cfg_snapshot_interval = cfg.snapshot_interval;
        Driver {
            raw,
            storage,
            sm,
            cfg,
            local_raft_id,
            local_id,
            data_dir,
            members: Membership {
                addresses,
                heard: HashMap::new(),
                conf_state,
                conf_index: base.conf_index,
                waiters: BTreeMap::new(),
                removed: false,
                join_alarm,
                departed,
                refusals: Default::default(),
            },
            outbound,
            failures,
            events,
            events_tx,
            shared,
            snapshots,
            snapshot: Schedule::new(base.snapshot_index, cfg_snapshot_interval),
            proposals: BTreeMap::new(),
            reads: Reads::new(local_raft_id, incarnation),
            clock: Clock {
                applied_term: base.snapshot_term,
                ..Clock::default()
            },
            transfer: None,
            shutdown_reply: None,
            deferred: Vec::new(),
        }
    }

    /// Runs the loop until shutdown or a fatal error.
    pub(crate) fn run(mut self) {
        // A restarted node may already hold a voter role it was not meant to.
        self.check_join_role();
        self.publish();
        // raft-rs reports what it considers unrecoverable (a storage read
        // failing, a broken invariant) by panicking. Callers must get a typed
        // `Fatal` error then, not a hang; the node is not used again after.
        let rounds = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run_rounds()));
        let reason = match rounds {
            Ok(Ok(())) if self.members.removed => StopReason::Removed,
            Ok(Ok(())) => StopReason::Shutdown,
            Ok(Err(e)) => {
                tracing::error!(node = %self.local_id, error = %e, "raft loop stopped on a fatal error");
                StopReason::Fatal(e.to_string())
            }
            Err(panic) => {
                let what = raftengine_kit::panic_message(panic.as_ref());
                tracing::error!(node = %self.local_id, panic = what, "raft loop panicked; node stopped");
                StopReason::Fatal(format!("raft loop panicked: {what}"))
            }
        };
        // Entries applied before the stop still answer their callers.
        for reply in self.deferred.drain(..) {
            reply();
        }
        self.fail_everything(&reason);
        if self.clock.was_leader {
            self.shared.loss.fire();
        }
        // After a fatal error (a failed write or fsync among them) the page
        // cache is not to be trusted: no further sync, nothing more durable.
        if !matches!(reason, StopReason::Fatal(_)) {
            if let Err(e) = self.storage.sync() {
                tracing::error!(node = %self.local_id, error = %e, "final log sync failed");
            }
        }
        // Only this loop writes the log; from here nothing is acknowledged.
        self.storage.sync_counter().close();
        self.outbound.close();
        if reason == StopReason::Removed {
            if let Err(e) = raftengine_kit::node_dir::mark_removed(&self.data_dir) {
                tracing::error!(node = %self.local_id, error = %e, "recording the removal failed; a restart on this dir would not know it");
            }
        }
        self.shared.publish_stopped(reason);
        if let Some(reply) = self.shutdown_reply.take() {
            let _ = reply.send(());
        }
    }

    fn run_rounds(&mut self) -> Result<()> {
        // Restarted on the dir of a node a committed configuration removed.
        if self.members.removed {
            return Ok(());
        }
        while let Some(first) = blocking_recv_spinning(&mut self.events, self.cfg.idle_spin) {
            if let Flow::Stop = self.handle(first)? {
                return Ok(());
            }
            for _ in 0..MAX_DRAIN {
                match self.events.try_recv() {
                    Ok(ev) => {
                        if let Flow::Stop = self.handle(ev)? {
                            return Ok(());
                        }
                    }
                    Err(_) => break,
                }
            }
            while let Ok(f) = self.failures.try_recv() {
                match f {
                    SendFailure::Unreachable(id) => self.raw.report_unreachable(id),
                    SendFailure::Snapshot(id) => {
                        self.raw.report_snapshot(id, SnapshotStatus::Failure)
                    }
                    SendFailure::SnapshotSent(id) => {
                        self.raw.report_snapshot(id, SnapshotStatus::Finish)
                    }
                    SendFailure::RemovedBy(id) => {
                        if self.refused_as_removed(id) {
                            self.members.removed = true;
                            return Ok(());
                        }
                    }
                }
            }
            self.issue_reads();
            self.process_ready()?;
            if self.raw.raft.leader_id != raft::INVALID_ID {
                self.clock.last_leader = self.raw.raft.leader_id;
            }
            if self.members.removed {
                return Ok(());
            }
            self.maybe_snapshot();
            self.after_round();
            self.publish();
        }
        Ok(())
    }

    fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    fn leader_info(&self) -> Option<LeaderInfo> {
        let lid = self.raw.raft.leader_id;
        if lid == 0 {
            return None;
        }
        Some(match self.members.address_of(lid) {
            Some(m) => LeaderInfo {
                id: m.id.clone(),
                address: m.address.clone(),
            },
            None => LeaderInfo {
                id: format!("raft-{lid}"),
                address: String::new(),
            },
        })
    }

    fn not_leader(&self) -> Error {
        Error::NotLeader {
            leader: self.leader_info(),
        }
    }

    fn handle(&mut self, ev: Event<S::Response>) -> Result<Flow> {
        match ev {
            Event::Tick => {
                self.clock.ticks += 1;
                self.raw.tick();
                if self.clock.ticks % 64 == 0 {
                    self.sweep_abandoned();
                }
            }
            Event::Peer(PeerInput::Messages {
                from_id,
                from_address,
                messages,
            }) => self.step_inbound(from_id, from_address, messages),
            Event::Propose { data, reply } => self.propose(data, reply),
            Event::Read { reply } => {
                if !self.is_leader() {
                    let _ = reply.send(Err(self.not_leader()));
                } else if self.raw.raft.lead_transferee.is_some() {
                    // Handing leadership off: like proposals and the lease,
                    // reads wait for the new leader (the contract's answer).
                    let _ = reply.send(Err(Error::TransferInProgress));
                } else {
                    self.reads.queue(reply);
                }
            }
            Event::Membership {
                change,
                prev_index,
                reply,
            } => self.change_membership(change, prev_index, reply),
            Event::Transfer { target, reply } => self.start_transfer(target, reply),
            Event::SnapshotWritten { meta, data, result } => {
                self.snapshot_written(meta, data, result)?
            }
            Event::Shutdown { reply } => {
                self.shutdown_reply = Some(reply);
                return Ok(Flow::Stop);
            }
            Event::Peer(PeerInput::Removed {
                from_id,
                conf_index,
                reply,
            }) => {
                let verdict = self.removed_notice(&from_id, conf_index);
                let stop = matches!(verdict, Ok(true));
                let _ = reply.send(verdict.map(|_| ()));
                if stop {
                    tracing::warn!(node = %self.local_id, from = %from_id, conf_index, "removed from the cluster; stopping");
                    self.members.removed = true;
                    return Ok(Flow::Stop);
                }
            }
        }
        Ok(Flow::Continue)
    }

    /// Sends one ReadIndex for every read queued this round, and renews the
    /// lease once per heartbeat interval.
    fn issue_reads(&mut self) {
        if !self.is_leader() {
            let leader = self.leader_info();
            self.reads.refuse_unsent(|| Error::NotLeader {
                leader: leader.clone(),
            });
            return;
        }
        // raft-rs silently drops ReadIndex until the leader has committed an
        // entry of its term; hold reads until then instead of losing them.
        if !self.raw.raft.commit_to_current_term() {
            return;
        }
        let renewal_due =
            self.clock.ticks >= self.clock.last_renewal_tick + self.cfg.heartbeat_tick as u64;
        let Some(ctx) = self.reads.start_round(self.raw.raft.term, renewal_due) else {
            return;
        };
        self.clock.last_renewal_tick = self.clock.ticks;
        self.raw.read_index(ctx);
    }

    fn process_ready(&mut self) -> Result<()> {
        while self.raw.has_ready() {
            let mut rd = self.raw.ready();
            self.send_all(rd.take_messages());
            if !rd.snapshot().is_empty() {
                let snap = rd.snapshot().clone();
                self.install_snapshot(&snap, rd.hs())?;
            }
            self.on_role_change();
            for rs in rd.take_read_states() {
                self.on_read_state(rs.index, rs.request_ctx);
            }
            self.storage
                .persist(rd.entries(), rd.hs(), rd.must_sync())?;
            self.send_all(rd.take_persisted_messages());
            let committed = rd.take_committed_entries();
            self.apply_entries(committed)?;
            let mut light = self.raw.advance(rd);
            if let Some(commit) = light.commit_index() {
                self.storage.persist_commit(commit)?;
            }
            self.send_all(light.take_messages());
            let committed = light.take_committed_entries();
            self.apply_entries(committed)?;
            self.raw.advance_apply();
            self.release_reads();
            if !self.deferred.is_empty() {
                self.publish();
                for reply in self.deferred.drain(..) {
                    reply();
                }
            }
        }
        self.on_role_change();
        Ok(())
    }

    fn send_all(&mut self, messages: Vec<Message>) {
        for m in messages {
            let to = m.to;
            match self.members.address_of(to) {
                Some(member) if !member.address.is_empty() => {
                    let address = member.address.clone();
                    self.outbound.send(m, &address);
                }
                _ => {
                    tracing::debug!(node = %self.local_id, to, "no address for peer; message dropped");
                    self.raw.report_unreachable(to);
                }
            }
        }
    }

    fn on_role_change(&mut self) {
        let leader = self.is_leader();
        if leader == self.clock.was_leader {
            return;
        }
        self.clock.was_leader = leader;
        if leader {
            tracing::info!(node = %self.local_id, term = self.raw.raft.term, "became leader");
            self.clock.last_quorum_ack = None;
            self.publish();
            self.shared.acquired.fire();
        } else {
            tracing::info!(node = %self.local_id, term = self.raw.raft.term, "lost leadership");
            self.clock.last_quorum_ack = None;
            self.fail_on_step_down();
            self.publish();
            self.shared.loss.fire();
        }
    }

    fn fail_on_step_down(&mut self) {
        self.fail_waiters(
            || Error::OutcomeUnknown {
                reason: "leadership lost after the entry was appended".into(),
            },
            || Error::LeadershipLost,
        );
    }

    /// Fails every proposal and membership waiter with `appended()` and every
    /// read with `read()`.
    fn fail_waiters(&mut self, appended: impl Fn() -> Error, read: impl Fn() -> Error) {
        for (_, (_, reply)) in std::mem::take(&mut self.proposals) {
            let _ = reply.send(Err(appended()));
        }
        for (_, (_, reply)) in std::mem::take(&mut self.members.waiters) {
            let _ = reply.send(Err(appended()));
        }
        self.reads.fail_all(read);
    }

    fn on_read_state(&mut self, index: u64, ctx: Vec<u8>) {
        let Some(round) = self.reads.confirmed(index, &ctx) else {
            return;
        };
        if round.term == self.raw.raft.term && self.is_leader() {
            // A quorum answered heartbeats sent at `sent_at` in this term, so
            // none of them votes for another leader before
            // sent_at + election timeout: that is the lease's base.
            self.clock.last_quorum_ack = Some(match self.clock.last_quorum_ack {
                Some(prev) if prev > round.sent_at => prev,
                _ => round.sent_at,
            });
        }
    }

    fn release_reads(&mut self) {
        for (index, w) in self.reads.take_applied(self.raw.raft.raft_log.applied) {
            self.deferred.push(Box::new(move || {
                let _ = w.send(Ok(index));
            }));
        }
    }

    fn apply_entries(&mut self, entries: Vec<Entry>) -> Result<()> {
        for entry in entries {
            let index = entry.index;
            let term = entry.term;
            self.clock.applied_term = term;
            match entry.get_entry_type() {
                EntryType::EntryNormal => {
                    let conf_waiter = self.members.waiters.remove(&index);
                    if let Some((_, reply)) = conf_waiter {
                        // raft-rs turns a refused conf change into an empty
                        // normal entry at the same place.
                        let _ = reply.send(Err(Error::ConfChangePending));
                    }
                    if entry.data.is_empty() {
                        self.resolve_proposal_mismatch(index, term);
                        continue;
                    }
                    let response = self.sm.apply(index, &entry.data);
                    match self.proposals.remove(&index) {
                        Some((t, reply)) if t == term => {
                            self.deferred.push(Box::new(move || {
                                let _ = reply.send(Ok(ProposalResult {
                                    commit_index: index,
                                    response,
                                }));
                            }));
                        }
                        Some((_, reply)) => {
                            let _ = reply.send(Err(Error::LeadershipLost));
                        }
                        None => {}
                    }
                }
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    self.apply_conf_change(&entry)?;
                    self.resolve_proposal_mismatch(index, term);
                }
            }
        }
        Ok(())
    }

    /// Drops waiters whose callers went away (their futures were dropped).
    fn sweep_abandoned(&mut self) {
        self.proposals.retain(|_, (_, r)| !r.is_closed());
        self.reads.sweep_abandoned();
    }

    fn fail_everything(&mut self, reason: &StopReason) {
        self.fail_waiters(
            || Error::OutcomeUnknown {
                reason: format!("engine stopped ({reason:?}) before the entry was known to commit"),
            },
            || Error::Shutdown,
        );
        if let Some(t) = self.transfer.take() {
            let _ = t.reply.send(Err(Error::Shutdown));
        }
        // Requests still queued get Shutdown when their sender sees the
        // closed channel.
        self.events.close();
        while let Ok(ev) = self.events.try_recv() {
            match ev {
                Event::Propose { reply, .. } => {
                    let _ = reply.send(Err(Error::Shutdown));
                }
                Event::Read { reply } => {
                    let _ = reply.send(Err(Error::Shutdown));
                }
                Event::Membership { reply, .. } => {
                    let _ = reply.send(Err(Error::Shutdown));
                }
                Event::Transfer { reply, .. } => {
                    let _ = reply.send(Err(Error::Shutdown));
                }
                Event::Shutdown { reply } => {
                    let _ = reply.send(());
                }
                Event::Tick | Event::Peer(_) | Event::SnapshotWritten { .. } => {}
            }
        }
    }
}
