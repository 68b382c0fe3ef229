//! Leadership transfer: starting one and the wait for its outcome.

use super::*;

/// A transfer this node started and its caller waits on.
pub(super) struct TransferWait {
    pub(super) target: u64,
    pub(super) started_tick: u64,
    pub(super) reply: Reply<()>,
}

impl<S: StateMachine> Driver<S> {
    pub(super) fn start_transfer(&mut self, target: TransferTarget, reply: Reply<()>) {
        if !self.is_leader() {
            let _ = reply.send(Err(self.not_leader()));
            return;
        }
        if self.transfer.is_some() || self.raw.raft.lead_transferee.is_some() {
            let _ = reply.send(Err(Error::TransferInProgress));
            return;
        }
        let target = match target {
            TransferTarget::Server(id) => match self.member_of(&id) {
                Some((rid, true)) if rid == self.local_raft_id => {
                    let _ = reply.send(Err(Error::failed_precondition(
                        "cannot transfer leadership to the current leader",
                    )));
                    return;
                }
                Some((rid, true)) => rid,
                Some((_, false)) => {
                    let _ = reply.send(Err(Error::failed_precondition(format!(
                        "{id} is a learner and cannot lead"
                    ))));
                    return;
                }
                None => {
                    let _ = reply.send(Err(Error::failed_precondition(format!(
                        "{id} is not a member"
                    ))));
                    return;
                }
            },
            TransferTarget::Any => {
                let best = self
                    .members
                    .conf_state
                    .voters
                    .iter()
                    .filter(|v| **v != self.local_raft_id)
                    .filter_map(|v| self.raw.raft.prs().get(*v).map(|p| (p.matched, *v)))
                    .max();
                match best {
                    Some((_, rid)) => rid,
                    None => {
                        let _ = reply.send(Err(Error::failed_precondition(
                            "no other voter to transfer leadership to",
                        )));
                        return;
                    }
                }
            }
        };
        tracing::info!(node = %self.local_id, target, "transferring leadership");
        self.raw.transfer_leader(target);
        self.transfer = Some(TransferWait {
            target,
            started_tick: self.clock.ticks,
            reply,
        });
    }

    /// Resolves the transfer in flight once its outcome is known.
    pub(super) fn after_round(&mut self) {
        let Some(t) = &self.transfer else {
            return;
        };
        let target = t.target;
        let leader = self.raw.raft.leader_id;
        let outcome = if leader == target && !self.is_leader() {
            Some(Ok(()))
        } else if self.is_leader() && self.raw.raft.lead_transferee.is_none() {
            Some(Err(Error::TransferAborted {
                reason:
                    "raft-rs aborted the transfer (the target did not catch up in time or left)"
                        .into(),
            }))
        } else if !self.is_leader() && leader != 0 && leader != target {
            Some(Err(Error::TransferAborted {
                reason: "another node became leader".into(),
            }))
        } else if self.clock.ticks > t.started_tick + 2 * self.cfg.election_tick as u64 {
            Some(Err(Error::TransferAborted {
                reason: "the target did not take over within two election timeouts".into(),
            }))
        } else {
            None
        };
        if let Some(result) = outcome {
            if let Some(t) = self.transfer.take() {
                let _ = t.reply.send(result);
            }
        }
    }
}
