//! Publishing: the status, lease basis and configuration the handle reads
//! without a round trip, refreshed after every round.

use super::*;

impl<S: StateMachine> Driver<S> {
    pub(crate) fn publish(&self) {
        let raft = &self.raw.raft;
        let state = match raft.state {
            StateRole::Leader => State::Leader,
            StateRole::Candidate | StateRole::PreCandidate => State::Candidate,
            StateRole::Follower => {
                if self
                    .members
                    .conf_state
                    .learners
                    .contains(&self.local_raft_id)
                {
                    State::Learner
                } else if self.members.conf_state.voters.contains(&self.local_raft_id) {
                    State::Follower
                } else {
                    // A joiner no configuration lists yet.
                    State::Unknown
                }
            }
        };
        let mut status = Status::new(state);
        status.leader = self.leader_info();
        status.term = raft.term;
        status.commit_index = raft.raft_log.committed;
        status.applied_index = raft.raft_log.applied;
        status.last_log_index = raft.raft_log.last_index();
        status.last_snapshot_index = self.snapshot.last_index();
        status.fsm_pending = raft
            .raft_log
            .committed
            .saturating_sub(raft.raft_log.applied);
        let members = self.members.conf_state.voters.len() + self.members.conf_state.learners.len();
        let me = usize::from(
            self.members.conf_state.voters.contains(&self.local_raft_id)
                || self
                    .members
                    .conf_state
                    .learners
                    .contains(&self.local_raft_id),
        );
        status.num_peers = (members - me) as u64;
        status.last_contact = if state == State::Leader {
            Some(std::time::Duration::ZERO)
        } else {
            self.clock.last_leader_contact.map(|t| t.elapsed())
        };
        status.lead_transferee = raft.lead_transferee.map(|rid| {
            self.members
                .addresses
                .get(&rid)
                .map(|m| m.id.clone())
                .unwrap_or_else(|| format!("raft-{rid}"))
        });
        status.configuration_index = self.members.conf_index;
        status.pending_conf_change = raft.has_pending_conf() || !self.members.waiters.is_empty();
        status.join_role_violation = self.members.join_alarm.raised();
        status.pending_proposals = self.proposals.len() as u64;
        let lease = LeaseBasis {
            state,
            term: raft.term,
            last_quorum_ack: if state == State::Leader {
                self.clock.last_quorum_ack
            } else {
                None
            },
            transfer_in_progress: raft.lead_transferee.is_some() || self.transfer.is_some(),
            applied_current_term: self.clock.applied_term == raft.term,
            applied_index: raft.raft_log.applied,
        };
        self.shared.publish(status, lease, self.configuration());
    }
}
