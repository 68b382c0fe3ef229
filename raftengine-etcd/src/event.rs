//! What the handle and the transport send the Raft loop.

use bytes::Bytes;
use raft::eraftpb::SnapshotMetadata;
use raftengine::{CatchUp, ProposalResult, Result, TransferTarget};
use tokio::sync::oneshot;

use crate::transport::PeerInput;

/// Where the loop answers a request.
pub(crate) type Reply<T> = oneshot::Sender<Result<T>>;

/// A request to the Raft loop.
pub(crate) enum Event<R> {
    /// One tick of the logical clock.
    Tick,
    /// What a peer sent (Raft messages, the removed notice).
    Peer(PeerInput),
    /// A proposal.
    Propose {
        data: Bytes,
        reply: Reply<ProposalResult<R>>,
    },
    /// A linearizable read (ReadIndex); answered once applied.
    Read { reply: Reply<u64> },
    /// A membership change.
    Membership {
        change: MembershipChange,
        prev_index: Option<u64>,
        reply: Reply<u64>,
    },
    /// A leadership transfer.
    Transfer {
        target: TransferTarget,
        reply: Reply<()>,
    },
    /// A background snapshot write finished.
    SnapshotWritten {
        meta: SnapshotMetadata,
        data: Vec<u8>,
        result: Result<u64>,
    },
    /// Stop the loop.
    Shutdown { reply: oneshot::Sender<()> },
}

/// Where a restarted node's state machine starts: its snapshot, if any.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Base {
    pub(crate) conf_index: u64,
    pub(crate) snapshot_index: u64,
    pub(crate) snapshot_term: u64,
}

/// The membership changes [`Event::Membership`] carries.
#[derive(Debug, Clone)]
pub(crate) enum MembershipChange {
    AddVoter { id: String, address: String },
    AddLearner { id: String, address: String },
    Promote { id: String, catch_up: CatchUp },
    Remove { id: String },
}

/// The transport hands peers' input to the loop's queue without knowing
/// the application's response type.
impl<R> From<PeerInput> for Event<R> {
    fn from(input: PeerInput) -> Self {
        Event::Peer(input)
    }
}
