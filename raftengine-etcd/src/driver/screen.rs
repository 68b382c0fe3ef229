//! What the loop checks of an authenticated peer's input before raft-rs
//! sees it: checks that need the loop's state (the transport checked the
//! rest, `transport::inbound`).

use std::time::Instant;

use raft::eraftpb::{Message, MessageType};
use raftengine::StateMachine;
use raftengine::numeric_id as raft_id;
use raftengine_kit::screen::{RemovedNotice, honours_removed};

use super::Driver;
use crate::storage::Member;

impl<S: StateMachine> Driver<S> {
    /// Steps a peer's batch: each message must be from the sender and for
    /// this node; a heartbeat may not commit past this node's log.
    pub(super) fn step_inbound(
        &mut self,
        from_id: String,
        from_address: String,
        messages: Vec<Message>,
    ) {
        let from = raft_id(&from_id);
        if !from_address.is_empty() {
            self.members.hear(Member {
                raft_id: from,
                id: from_id.clone(),
                address: from_address,
            });
        }
        let now = Instant::now();
        for m in messages {
            if m.from != from || m.to != self.local_raft_id {
                tracing::warn!(node = %self.local_id, claimed = %from_id, from = m.from, to = m.to, "dropping misaddressed raft message");
                continue;
            }
            // raft-rs commits a heartbeat's index unchecked and panics
            // (`fatal!`) past its log end. A correct leader never sends
            // one: it commits no further than this node's matched index.
            let last_index = self.raw.raft.raft_log.last_index();
            if m.get_msg_type() == MessageType::MsgHeartbeat && m.commit > last_index {
                tracing::warn!(node = %self.local_id, from = %from_id, commit = m.commit, last_index, "dropping a heartbeat that commits past the log");
                continue;
            }
            if m.from == self.raw.raft.leader_id && m.term >= self.raw.raft.term {
                self.clock.last_leader_contact = Some(now);
            }
            if let Err(e) = self.raw.step(m) {
                // StepPeerNotFound / StepLocalMsg are expected for stale
                // responses and are harmless.
                tracing::debug!(node = %self.local_id, error = %e, "step refused a message");
            }
        }
    }

    /// Records that peer `id` refused this node as removed; whether a
    /// majority of the voters this node knows have now
    /// ([`Refusals::majority`](raftengine_kit::departed::Refusals::majority)).
    pub(super) fn refused_as_removed(&mut self, id: u64) -> bool {
        self.members.refusals.record(id);
        let stop = self
            .members
            .refusals
            .majority(self.local_raft_id, &self.members.conf_state.voters);
        if stop {
            tracing::warn!(node = %self.local_id, "a majority of the voters refused this node as removed; stopping");
        }
        stop
    }

    /// Whether to stop for a removed notice from `from_id`
    /// ([`honours_removed`]): only from the leader this node follows, or
    /// followed last while an election runs.
    pub(super) fn removed_notice(
        &self,
        from_id: &str,
        conf_index: u64,
    ) -> Result<bool, tonic::Status> {
        let leader = match self.raw.raft.leader_id {
            raft::INVALID_ID => self.clock.last_leader,
            id => id,
        };
        // By numeric id: the leader's name may be missing from the address
        // book of a node that never applied the configuration naming it.
        let leader_name = if leader == raft::INVALID_ID {
            None
        } else if raft_id(from_id) == leader {
            Some(from_id)
        } else {
            Some(
                self.members
                    .address_of(leader)
                    .map_or("another node", |m| m.id.as_str()),
            )
        };
        let cs = &self.members.conf_state;
        honours_removed(&RemovedNotice {
            from: from_id,
            leader: leader_name,
            conf_index,
            local_conf_index: self.members.conf_index,
            listed: cs.voters.contains(&self.local_raft_id)
                || cs.learners.contains(&self.local_raft_id),
        })
    }
}
