//! Leadership transfer: starting one and the wait for its outcome.

use super::*;

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
            started_tick: self.ticks,
            reply,
        });
    }
}
