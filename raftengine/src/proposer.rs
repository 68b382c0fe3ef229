//! [`Proposer`]: getting entries into the replicated log.

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::Result;
use crate::types::ProposalResult;

/// Proposes entries and waits until they are committed and applied locally.
///
/// `R` is the [`StateMachine::Response`](crate::StateMachine::Response) of the
/// engine's state machine: the proposer gets it back typed, with no
/// downcasting.
///
/// # Contract
///
/// * On success the entry is committed (durable on a quorum) and applied to
///   the local state machine at [`ProposalResult::commit_index`]; `response` is
///   what the local `apply` returned for **this** entry. A response never
///   reaches another proposer, also across leader changes (waiters are keyed
///   by the entry's term and index, not by a per-process counter).
/// * Only the leader accepts proposals. Backends do not forward.
///
/// # Errors
///
/// * [`Error::NotLeader`](crate::Error::NotLeader) (with a leader hint when
///   known), [`Error::TransferInProgress`](crate::Error::TransferInProgress),
///   [`Error::ProposalTooLarge`](crate::Error::ProposalTooLarge),
///   [`Error::Shutdown`](crate::Error::Shutdown): the entry was **not**
///   appended; a retry cannot apply it twice.
/// * [`Error::OutcomeUnknown`](crate::Error::OutcomeUnknown): the entry was
///   appended but leadership was lost (or the engine stopped) before it was
///   known to commit. It may still be applied.
///
/// # Cancel safety
///
/// Dropping the returned future stops the wait only: an entry already
/// appended keeps its fate, and the engine frees the waiter (no leak). Use
/// `tokio::time::timeout` for deadlines.
#[async_trait]
pub trait Proposer<R>: Send + Sync {
    /// Proposes `data` as an ordinary entry.
    async fn propose(&self, data: Bytes) -> Result<ProposalResult<R>>;

    /// Proposes `data` as an administrative entry.
    ///
    /// Today this takes the same path as [`Proposer::propose`]. It exists so
    /// that a future barrier (e.g. a cut-over that holds ordinary traffic) can
    /// let administrative entries through while holding the others; code that
    /// writes such entries should call it already.
    async fn propose_admin(&self, data: Bytes) -> Result<ProposalResult<R>>;
}
