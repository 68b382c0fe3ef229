//! [`Admin`]: membership changes and leadership transfer.

use std::num::NonZeroU64;

use async_trait::async_trait;

use crate::callbacks::{Callback, Registration};
use crate::error::{Error, Result};
use crate::types::Index;

/// How far a learner must have caught up before
/// [`Admin::promote_learner`] makes it a voter.
///
/// There is deliberately no way to say "at least index 0": a promotion that
/// checks nothing must say so with [`CatchUp::Unchecked`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatchUp {
    /// The leader's view of the learner's replicated (matched) index must be
    /// at least this index, or the call fails with
    /// [`Error::FailedPrecondition`].
    AtLeast(NonZeroU64),
    /// Skip the check: the caller confirmed the catch-up out of band.
    /// Promoting a learner that lags can stall commits until it catches up.
    Unchecked,
}

impl CatchUp {
    /// `AtLeast(index)`.
    ///
    /// # Errors
    ///
    /// [`Error::FailedPrecondition`] for 0: use [`CatchUp::Unchecked`] to skip
    /// the check explicitly.
    pub fn at_least(index: Index) -> Result<Self> {
        NonZeroU64::new(index)
            .map(CatchUp::AtLeast)
            .ok_or_else(|| {
                Error::failed_precondition(
                    "catch-up index 0 checks nothing; pass CatchUp::Unchecked to skip the check explicitly",
                )
            })
    }
}

/// Whom [`Admin::transfer_leadership`] hands leadership to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferTarget {
    /// The most up-to-date other voter.
    Any,
    /// This voter, by node id.
    Server(String),
}

/// Membership changes and leadership transfer.
///
/// # Contract
///
/// * Calls are made on the leader; elsewhere they fail with
///   [`Error::NotLeader`].
/// * One membership change at a time: while one is proposed and not yet
///   applied, another fails with [`Error::ConfChangePending`] (never a silent
///   no-op).
/// * `prev_index`: `None` applies the change unconditionally; `Some(i)` fails
///   with [`Error::ConfigIndexMismatch`] unless the latest configuration's
///   index is `i` (read it from
///   [`ConfigReader::configuration`](crate::ConfigReader::configuration)).
/// * Membership calls return once the change is committed and applied on the
///   leader, with the index of the new configuration.
/// * Learners never count toward a quorum, and their suffrage survives
///   restarts.
///
/// # Errors
///
/// [`Error::NotLeader`] off the leader, [`Error::ConfChangePending`] and
/// [`Error::ConfigIndexMismatch`] as above, [`Error::InvalidConfig`] for an
/// id or address that can never be valid, [`Error::FailedPrecondition`] for
/// a change the current membership forbids (each method names its cases),
/// [`Error::TransferAborted`] for a transfer that did not happen, and
/// [`Error::Shutdown`].
///
/// # Cancel safety
///
/// Dropping a future stops the wait only; a change already proposed keeps
/// its fate.
#[async_trait]
pub trait Admin: Send + Sync {
    /// Adds `id` at `address` as a voter (or promotes it if it is a learner).
    ///
    /// Prefer [`Admin::add_learner`] followed by [`Admin::promote_learner`]:
    /// a fresh voter that must catch up counts toward the quorum immediately.
    ///
    /// # Contract
    ///
    /// Re-adding a voter at the address it has changes nothing and returns
    /// the current configuration index, so a retry after
    /// [`Error::OutcomeUnknown`] is safe.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for an empty id, an address that is not
    /// `host:port` ([`check_address`](crate::check_address)), or an id that
    /// [`numeric_id`](crate::numeric_id) maps to the same number as
    /// another member's (refused by every engine, so a cluster's ids stay
    /// valid whichever engine runs it); [`Error::FailedPrecondition`] for a
    /// member at another address (remove it first to move it).
    async fn add_voter(&self, id: &str, address: &str, prev_index: Option<Index>) -> Result<Index>;

    /// Adds `id` at `address` as a learner: it receives and applies the log
    /// but never counts toward a quorum.
    ///
    /// # Contract
    ///
    /// Re-adding a learner at the address it has changes nothing and
    /// returns the current configuration index.
    ///
    /// # Errors
    ///
    /// As [`add_voter`](Self::add_voter); also
    /// [`Error::FailedPrecondition`] for a voter (a learner is never made by
    /// demoting one).
    async fn add_learner(
        &self,
        id: &str,
        address: &str,
        prev_index: Option<Index>,
    ) -> Result<Index>;

    /// Makes the learner `id` a voter once `catch_up` holds.
    ///
    /// # Errors
    ///
    /// [`Error::FailedPrecondition`] if `id` is not a learner or has not
    /// caught up.
    async fn promote_learner(
        &self,
        id: &str,
        prev_index: Option<Index>,
        catch_up: CatchUp,
    ) -> Result<Index>;

    /// Removes `id` (voter or learner).
    ///
    /// # Contract
    ///
    /// Returns the new configuration's index once the removal committed, on
    /// every engine, also when `id` is the leader itself: the removed node
    /// then stops (`StopReason::Removed`) and the remaining voters elect a
    /// leader within an election timeout. To hand over without that pause,
    /// [`transfer_leadership`](Self::transfer_leadership) first and remove
    /// the old leader from the new one.
    ///
    /// # Errors
    ///
    /// [`Error::FailedPrecondition`] if `id` is not a member or is the last
    /// voter; the errors every membership call has (see the trait docs).
    async fn remove_server(&self, id: &str, prev_index: Option<Index>) -> Result<Index>;

    /// Hands leadership to `target` and returns once the target leads.
    ///
    /// # Errors
    ///
    /// [`Error::FailedPrecondition`] for a target that is unknown, a learner,
    /// or the local node; [`Error::TransferAborted`] when the target did not
    /// take over in time; [`Error::NotLeader`] off the leader.
    async fn transfer_leadership(&self, target: TransferTarget) -> Result<()>;

    /// Registers `callback` to run every time the local node becomes leader
    /// (election, re-election, being a transfer's target), after
    /// [`LeaderView::state`](crate::LeaderView::state) reports
    /// [`State::Leader`](crate::State::Leader). Same contract as
    /// [`LeaseProvider::register_leader_loss_callback`](crate::LeaseProvider::register_leader_loss_callback).
    fn register_leader_acquired_callback(&self, callback: Callback) -> Registration;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catch_up_zero_is_refused() {
        assert!(matches!(
            CatchUp::at_least(0),
            Err(Error::FailedPrecondition { .. })
        ));
        assert_eq!(
            CatchUp::at_least(9).unwrap(),
            CatchUp::AtLeast(NonZeroU64::new(9).unwrap())
        );
    }
}
