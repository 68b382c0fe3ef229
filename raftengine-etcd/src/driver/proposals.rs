//! Proposals: appending an application command on the leader, and the
//! callers waiting for their entry, keyed by its index.

use super::*;

/// Waiters keyed by log index, with the term their entry was appended in.
pub(super) type Waiters<T> = BTreeMap<u64, (u64, Reply<T>)>;

impl<S: StateMachine> Driver<S> {
    pub(super) fn propose(&mut self, data: Bytes, reply: Reply<ProposalResult<S::Response>>) {
        if !self.is_leader() {
            let _ = reply.send(Err(self.not_leader()));
            return;
        }
        if self.raw.raft.lead_transferee.is_some() {
            let _ = reply.send(Err(Error::TransferInProgress));
            return;
        }
        let before = self.raw.raft.raft_log.last_index();
        let result = self.raw.propose(Vec::new(), data.to_vec());
        let after = self.raw.raft.raft_log.last_index();
        if result.is_err() || after != before + 1 {
            // raft-rs drops proposals silently in a few states (e.g. the
            // uncommitted-size limit); nothing was appended.
            let _ = reply.send(Err(crate::error::proposal_dropped()));
            return;
        }
        self.proposals.insert(after, (self.raw.raft.term, reply));
    }

    /// A proposal waiting at `index` whose entry was replaced by another
    /// term's entry never committed.
    pub(super) fn resolve_proposal_mismatch(&mut self, index: u64, term: u64) {
        if let Some((t, reply)) = self.proposals.remove(&index) {
            if t != term {
                let _ = reply.send(Err(Error::LeadershipLost));
            } else {
                self.proposals.insert(index, (t, reply));
            }
        }
    }
}
