//! Linearizable reads on the leader (ReadIndex): the reads waiting for a
//! round, the rounds raft-rs is confirming, and the confirmed reads waiting
//! for the state machine to reach their index.

use std::collections::HashMap;
use std::time::Instant;

use raftengine::Error;

use crate::event::Reply;

/// One ReadIndex round: every read queued when it was sent.
struct Round {
    sent_at: Instant,
    term: u64,
    waiters: Vec<Reply<u64>>,
}

/// What a confirmed round says about the lease: a quorum answered the
/// heartbeats sent at `sent_at` in `term`.
pub(super) struct Confirmed {
    pub(super) sent_at: Instant,
    pub(super) term: u64,
}

pub(super) struct Reads {
    /// Unique across nodes and restarts (raft id, incarnation), so a
    /// ReadState from an earlier life or another node never matches.
    ctx_prefix: [u8; 16],
    seq: u64,
    unsent: Vec<Reply<u64>>,
    inflight: HashMap<Vec<u8>, Round>,
    /// Confirmed at an index, waiting for it to be applied.
    ready: Vec<(u64, Reply<u64>)>,
}

impl Reads {
    pub(super) fn new(local_raft_id: u64, incarnation: u64) -> Self {
        let mut ctx_prefix = [0u8; 16];
        ctx_prefix[..8].copy_from_slice(&local_raft_id.to_be_bytes());
        ctx_prefix[8..].copy_from_slice(&incarnation.to_be_bytes());
        Reads {
            ctx_prefix,
            seq: 0,
            unsent: Vec::new(),
            inflight: HashMap::new(),
            ready: Vec::new(),
        }
    }

    /// Queues a read for the next round.
    pub(super) fn queue(&mut self, reply: Reply<u64>) {
        self.unsent.push(reply);
    }

    /// Answers every queued read with `error()` (this node does not lead).
    pub(super) fn refuse_unsent(&mut self, error: impl Fn() -> Error) {
        for r in self.unsent.drain(..) {
            let _ = r.send(Err(error()));
        }
    }

    /// Starts a round for the queued reads, or an empty one when a lease
    /// renewal is `renewal_due` and no round is in flight. Returns the
    /// context to hand to `RawNode::read_index`, or `None` when there is
    /// nothing to send.
    pub(super) fn start_round(&mut self, term: u64, renewal_due: bool) -> Option<Vec<u8>> {
        let renew = renewal_due && self.inflight.is_empty();
        if self.unsent.is_empty() && !renew {
            return None;
        }
        self.seq += 1;
        let mut ctx = Vec::with_capacity(24);
        ctx.extend_from_slice(&self.ctx_prefix);
        ctx.extend_from_slice(&self.seq.to_be_bytes());
        let waiters = std::mem::take(&mut self.unsent);
        self.inflight.insert(
            ctx.clone(),
            Round {
                sent_at: Instant::now(),
                term,
                waiters,
            },
        );
        Some(ctx)
    }

    /// raft-rs confirmed the round `ctx` at `index`: its reads wait for
    /// `index` to be applied. `None` for a context that is not ours.
    pub(super) fn confirmed(&mut self, index: u64, ctx: &[u8]) -> Option<Confirmed> {
        let round = self.inflight.remove(ctx)?;
        for w in round.waiters {
            self.ready.push((index, w));
        }
        Some(Confirmed {
            sent_at: round.sent_at,
            term: round.term,
        })
    }

    /// Takes the confirmed reads whose index is applied.
    pub(super) fn take_applied(&mut self, applied: u64) -> Vec<(u64, Reply<u64>)> {
        if self.ready.is_empty() {
            return Vec::new();
        }
        let (done, keep) = std::mem::take(&mut self.ready)
            .into_iter()
            .partition(|(index, _)| *index <= applied);
        self.ready = keep;
        done
    }

    /// Answers every read, wherever it is, with `error()`.
    pub(super) fn fail_all(&mut self, error: impl Fn() -> Error) {
        for (_, round) in self.inflight.drain() {
            for w in round.waiters {
                let _ = w.send(Err(error()));
            }
        }
        for w in self.unsent.drain(..) {
            let _ = w.send(Err(error()));
        }
        for (_, w) in self.ready.drain(..) {
            let _ = w.send(Err(error()));
        }
    }

    /// Drops reads whose callers went away.
    pub(super) fn sweep_abandoned(&mut self) {
        self.ready.retain(|(_, r)| !r.is_closed());
        self.unsent.retain(|r| !r.is_closed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    #[test]
    fn a_round_carries_its_reads_until_applied() {
        let mut reads = Reads::new(7, 1);
        assert!(reads.start_round(3, false).is_none(), "nothing to send");
        let (tx, mut rx) = oneshot::channel();
        reads.queue(tx);
        let ctx = reads.start_round(3, false).expect("a round");
        assert!(reads.confirmed(10, b"not ours").is_none());
        let confirmed = reads.confirmed(10, &ctx).expect("our round");
        assert_eq!(confirmed.term, 3);
        assert!(reads.take_applied(9).is_empty(), "index 10 not yet applied");
        let done = reads.take_applied(10);
        assert_eq!(done.len(), 1);
        for (index, w) in done {
            let _ = w.send(Ok(index));
        }
        assert_eq!(rx.try_recv().ok().and_then(|r| r.ok()), Some(10));
    }

    #[test]
    fn contexts_differ_across_rounds_and_incarnations() {
        let (mut a, mut b) = (Reads::new(7, 1), Reads::new(7, 2));
        let a1 = a.start_round(1, true).expect("renewal");
        assert!(
            a.start_round(1, true).is_none(),
            "one renewal in flight at a time"
        );
        let b1 = b.start_round(1, true).expect("renewal");
        assert_ne!(a1, b1);
        assert!(b.confirmed(1, &a1).is_none());
    }
}
