//! Members a committed configuration removed, refused when they call again,
//! and what a removed node makes of those refusals (etcd answers a removed
//! member with 410 Gone, and the member stops).
//!
//! A removed node learns of its removal from the leader's notice
//! ([`peer::deliver_removed_notice`](crate::peer::deliver_removed_notice)).
//! When that never arrives (the node was cut off from the leader for the
//! notice's whole retry budget), it keeps calling its old peers: each
//! refuses it ([`Departed::check`]), and once a majority of the voters it
//! knows have refused it within [`REFUSAL_WINDOW`], it stops
//! ([`Refusals::majority`]). One member's word is not enough, so a single
//! buggy member cannot stop a healthy node.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tonic::Status;

/// The metadata key on a refusal that tells the caller a committed
/// configuration removed it; the value is that configuration's index.
pub const REMOVED_HEADER: &str = "raftengine-removed";

/// How recent the refusals [`Refusals::majority`] counts are.
pub const REFUSAL_WINDOW: Duration = Duration::from_secs(10);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain maps, each change one insert or remove.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The numeric ids committed membership removed, with the index of the
/// configuration that did, as this node applied them since it started.
/// Cheap to clone; clones share the set.
#[derive(Debug, Clone, Default)]
pub struct Departed(Arc<Mutex<HashMap<u64, u64>>>);

impl Departed {
    /// `id` was removed by the configuration at `conf_index`.
    pub fn removed(&self, id: u64, conf_index: u64) {
        lock(&self.0).insert(id, conf_index);
    }

    /// `id` is a member (again).
    pub fn added(&self, id: u64) {
        lock(&self.0).remove(&id);
    }

    /// Refuses a call from `id` if committed membership removed it.
    ///
    /// # Errors
    ///
    /// `FailedPrecondition` carrying [`REMOVED_HEADER`].
    pub fn check(&self, id: u64) -> Result<(), Status> {
        let Some(conf_index) = lock(&self.0).get(&id).copied() else {
            return Ok(());
        };
        let mut status = Status::failed_precondition(format!(
            "the configuration at index {conf_index} removed the caller from the cluster"
        ));
        status.metadata_mut().insert(
            REMOVED_HEADER,
            tonic::metadata::MetadataValue::from(conf_index),
        );
        Err(status)
    }
}

/// Whether `status` is a [`Departed::check`] refusal.
pub fn is_removed_refusal(status: &Status) -> bool {
    status.metadata().get(REMOVED_HEADER).is_some()
}

/// The peers that refused this node as removed, and when.
#[derive(Debug, Default)]
pub struct Refusals(Mutex<HashMap<u64, Instant>>);

impl Refusals {
    /// Peer `peer` refused this node as removed.
    pub fn record(&self, peer: u64) {
        lock(&self.0).insert(peer, Instant::now());
    }

    /// Whether a majority of `voters` (the newest configuration this node
    /// knows) refused it within [`REFUSAL_WINDOW`]. Never while that
    /// configuration does not list `me` as a voter: a joiner that has not
    /// caught up is refused by members that lag behind its admission, and
    /// must not stop for it.
    pub fn majority(&self, me: u64, voters: &[u64]) -> bool {
        if !voters.contains(&me) {
            return false;
        }
        let refusals = lock(&self.0);
        let recent = voters
            .iter()
            .filter(|v| {
                refusals
                    .get(v)
                    .is_some_and(|at| at.elapsed() <= REFUSAL_WINDOW)
            })
            .count();
        recent > voters.len() / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_departed_caller_is_refused_until_added_again() {
        let d = Departed::default();
        d.check(7).unwrap();
        d.removed(7, 42);
        let refused = d.check(7).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
        assert!(is_removed_refusal(&refused));
        assert!(!is_removed_refusal(&Status::failed_precondition("other")));
        d.clone().added(7);
        d.check(7).unwrap();
    }

    #[test]
    fn a_node_stops_only_on_a_majority_of_its_voters() {
        let r = Refusals::default();
        let voters = [1, 2, 3, 4, 5];
        r.record(2);
        r.record(3);
        assert!(!r.majority(1, &voters), "two of five");
        r.record(9);
        assert!(!r.majority(1, &voters), "a non-voter does not count");
        r.record(4);
        assert!(r.majority(1, &voters), "three of five");
        assert!(
            !r.majority(6, &voters),
            "a node its configuration does not list"
        );
    }
}
