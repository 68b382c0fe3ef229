//! [`LeaderView`]: who leads, and reads that are safe against a newer leader.

use async_trait::async_trait;

use crate::error::Result;
use crate::types::{Index, LeaderInfo, State};

/// The local node's view of leadership, and linearizable reads.
///
/// # Contract
///
/// [`state`](Self::state) and [`leader`](Self::leader) are the last
/// observation and never block; decisions use
/// [`verify_leader`](Self::verify_leader) (one quorum round) or
/// [`linearizable_read`](Self::linearizable_read) (ReadIndex), which never
/// succeed on a leader a newer one has superseded.
///
/// # Errors
///
/// The async methods answer [`Error::NotLeader`](crate::Error::NotLeader)
/// with the leader hint off the leader,
/// [`Error::TransferInProgress`](crate::Error::TransferInProgress) during a
/// handover, [`Error::LeadershipLost`](crate::Error::LeadershipLost) when
/// the leader stepped down meanwhile, and
/// [`Error::Shutdown`](crate::Error::Shutdown) once stopped.
///
/// # Cancel safety
///
/// Both async methods only wait: dropping the future abandons the round,
/// changes no state and leaks nothing.
#[async_trait]
pub trait LeaderView: Send + Sync {
    /// The local role as last observed. Cheap; never blocks.
    ///
    /// A `Leader` answer is not proof the node can still commit or read:
    /// a partitioned leader says `Leader` until it notices. Use
    /// [`LeaderView::verify_leader`], [`LeaderView::linearizable_read`] or
    /// [`LeaseProvider::check_lease`](crate::LeaseProvider::check_lease) for
    /// decisions.
    fn state(&self) -> State;

    /// The leader the local node knows of, if any. Cheap; never blocks.
    fn leader(&self) -> Option<LeaderInfo>;

    /// Confirms with a quorum that the local node is still the leader.
    ///
    /// # Errors
    ///
    /// [`Error::NotLeader`](crate::Error::NotLeader) when the node is not
    /// leader, [`Error::TransferInProgress`](crate::Error::TransferInProgress)
    /// while it is handing leadership to another voter (retry on the new
    /// leader, like a proposal), [`Error::LeadershipLost`](crate::Error::LeadershipLost)
    /// when it stepped down while confirming, [`Error::Shutdown`](crate::Error::Shutdown).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future abandons the confirmation; nothing leaks.
    async fn verify_leader(&self) -> Result<()>;

    /// Returns a log index such that reading the **local** state machine now
    /// observes every write acknowledged before this call began.
    ///
    /// # Contract
    ///
    /// Implementations use the ReadIndex protocol (Raft thesis §6.4): record
    /// the commit index, confirm leadership with a quorum, then wait until the
    /// local state machine has applied that index. The call returns only
    /// after the apply, so the caller may read immediately. It never returns
    /// an index from a leader that a newer leader has superseded.
    ///
    /// # Errors
    ///
    /// Same as [`LeaderView::verify_leader`]. Right after an election the
    /// engine either completes the read once the new leader has committed an
    /// entry of its term or returns a typed error; it never hangs silently.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future abandons the read; nothing leaks.
    async fn linearizable_read(&self) -> Result<Index>;
}
