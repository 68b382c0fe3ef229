//! The one mapping from openraft's errors into `raftengine::Error`. What
//! needs the node's state (who leads, by which address) comes in as a
//! `leader_of` lookup, so the mapping itself holds no state.

use openraft::error::{
    ChangeMembershipError, ClientWriteError, Fatal, ForwardReason, ForwardToLeader,
    LinearizableReadError, RaftError,
};
use raftengine::{Error, LeaderInfo};

use crate::types::{Peer, TypeConfig};

/// A member's id and address as the core reports a leader.
pub(crate) fn leader_info(p: &Peer) -> LeaderInfo {
    LeaderInfo {
        id: p.id.clone(),
        address: p.address.clone(),
    }
}

/// This backend's internal error (a broken invariant or a failed start).
pub(crate) fn internal(
    what: impl Into<String>,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
) -> Error {
    Error::internal(crate::ENGINE_TYPE, what, source)
}

/// A call that found openraft stopped. A fatal stop (a failed write or
/// fsync) is a stop like any other to the caller: the node takes no more
/// requests, and `stopped()` tells why. Both backends answer it so.
pub(crate) fn stopped(_: &Fatal<TypeConfig>) -> Error {
    Error::Shutdown
}

/// openraft refused because another node leads (or is taking over).
/// `leader_of` names a node openraft gave only the id of.
pub(crate) fn forward(
    f: &ForwardToLeader<TypeConfig>,
    leader_of: impl FnOnce(u64) -> Option<LeaderInfo>,
) -> Error {
    if f.reason == ForwardReason::LeadershipTransfer {
        return Error::TransferInProgress;
    }
    let leader = f
        .leader_node
        .as_ref()
        .map(leader_info)
        .or_else(|| f.leader_id.and_then(leader_of));
    Error::NotLeader { leader }
}

/// A refused or failed write (proposal or membership change).
pub(crate) fn write(
    e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>,
    leader_of: impl FnOnce(u64) -> Option<LeaderInfo>,
) -> Error {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => forward(&f, leader_of),
        RaftError::APIError(ClientWriteError::LogEntryDiscarded(_)) => Error::OutcomeUnknown {
            reason: "the entry was discarded after leadership changed; another leader may \
                     have committed it"
                .into(),
        },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => match c {
            ChangeMembershipError::InProgress(_) => Error::ConfChangePending,
            other => Error::failed_precondition(other.to_string()),
        },
        RaftError::APIError(other) => Error::failed_precondition(other.to_string()),
        // The entry may have been appended (and replicated) before the
        // node stopped: as on etcd, its fate is unknown to this node.
        RaftError::Fatal(Fatal::Stopped) => Error::Shutdown,
        RaftError::Fatal(f) => Error::OutcomeUnknown {
            reason: format!("engine stopped ({f}) before the entry was known to commit"),
        },
    }
}

/// A refused linearizable read. Losing the quorum is `NotLeader` with no
/// leader known: this node cannot tell who leads now.
pub(crate) fn read(
    e: RaftError<TypeConfig, LinearizableReadError<TypeConfig>>,
    leader_of: impl FnOnce(u64) -> Option<LeaderInfo>,
) -> Error {
    match e {
        RaftError::APIError(LinearizableReadError::ForwardToLeader(f)) => forward(&f, leader_of),
        RaftError::APIError(LinearizableReadError::QuorumNotEnough(_)) => {
            Error::NotLeader { leader: None }
        }
        RaftError::Fatal(f) => stopped(&f),
    }
}
