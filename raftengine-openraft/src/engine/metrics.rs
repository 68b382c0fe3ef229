//! Reading openraft's metrics: one consistent sample in this crate's
//! terms, and the watcher that turns their changes into leadership edges,
//! the stop reason, removal notices and the join-as-learner alarm.

use super::*;

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
            let fresh = sole_voter(&m.membership_config, node_id)
                || quorum_ack.is_none_or(|t| t.elapsed() < lease);
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

/// `node_id` is the only voter: its own quorum, acknowledged at every
/// instant. openraft dates its quorum acknowledgement by heartbeat rounds,
/// which include learners, so a sole voter with an unreachable learner
/// saw its acknowledgement age and was reported as no longer leading
/// (found by `peers::another_cluster_is_refused_despite_a_valid_certificate`:
/// a learner that refuses every call).
pub(crate) fn sole_voter(membership: &crate::types::StoredMembership, node_id: u64) -> bool {
    let mut voters = membership.voter_ids();
    voters.next() == Some(node_id) && voters.next().is_none()
}

/// What the metrics watcher needs to tell removed nodes they are out.
pub(crate) struct RemovalNotices {
    pub(crate) local_id: String,
    pub(crate) outbound: Arc<Outbound>,
    /// Members removed by memberships committed here, refused at the peer
    /// gate (shared with it).
    pub(crate) departed: raftengine_kit::departed::Departed,
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
            if watched.stop.reason().is_none() {
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
        if let Some(leader) = s.leader {
            watched.follow(leader);
        }
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
            for n in now.keys() {
                notices.departed.added(*n);
            }
            if let Some(before) = &members {
                for n in before.keys().filter(|n| !now.contains_key(n)) {
                    notices.departed.removed(*n, conf_index);
                }
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
        let voters: Vec<u64> = s.membership.voter_ids().collect();
        if notices.outbound.refusals.majority(node_id, &voters) {
            tracing::warn!(
                node = node_id,
                "a majority of the voters refused this node as removed; stopping"
            );
            stop_removed(&raft, &watched);
            return;
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
