//! The one error type every trait returns.

use crate::types::{Index, LeaderInfo};

/// A boxed error from a lower layer (disk, socket, state machine).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Shorthand for `std::result::Result<T, raftengine::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a `raftengine` call can fail with.
///
/// The variants are the cases callers branch on. Each backend maps its own
/// errors into them in exactly one place; a backend error with no semantic
/// variant becomes [`Error::Storage`], [`Error::Transport`] or
/// [`Error::Internal`] with its source attached.
///
/// The most important distinction is between the proposal outcomes:
/// * [`Error::NotLeader`], [`Error::TransferInProgress`],
///   [`Error::ProposalTooLarge`], [`Error::Shutdown`] (from `propose`)
///   mean the proposal was **never appended**: retrying cannot apply it twice.
/// * [`Error::OutcomeUnknown`] means it **may or may not** commit; a retry
///   must be idempotent or first check whether the first attempt landed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The local node is not the leader; the request was not appended.
    /// `leader` is a hint where to retry, when one is known.
    #[error("not leader{}", .leader.as_ref().map(|l| format!(" (leader is {l})")).unwrap_or_default())]
    NotLeader {
        /// The leader the local node knows of, if any.
        leader: Option<LeaderInfo>,
    },

    /// The node was leader when the call began and lost leadership before it
    /// could confirm the result (reads, verify_leader, admin calls).
    /// For proposals see [`Error::OutcomeUnknown`].
    #[error("leadership lost")]
    LeadershipLost,

    /// A leadership transfer is under way; the proposal was not appended.
    /// Retry after the transfer finishes (on the new leader).
    #[error("leadership transfer in progress")]
    TransferInProgress,

    /// A leadership transfer did not complete: the target did not take over
    /// (it lagged, was unreachable, or the transfer was superseded).
    #[error("leadership transfer aborted: {reason}")]
    TransferAborted {
        /// Why the engine gave up.
        reason: String,
    },

    /// A membership change is already proposed and not yet applied; only one
    /// change at a time is allowed.
    #[error("a membership change is already pending")]
    ConfChangePending,

    /// The membership change was conditional on a configuration index that is
    /// no longer the latest one.
    #[error("configuration index mismatch: expected {expected}, latest is {actual}")]
    ConfigIndexMismatch {
        /// The `prev_index` the caller passed.
        expected: Index,
        /// The index of the latest configuration.
        actual: Index,
    },

    /// A precondition of an admin call does not hold (learner not caught up,
    /// not a learner, unknown server, transfer to self, …).
    #[error("failed precondition: {reason}")]
    FailedPrecondition {
        /// What does not hold, in words an operator can act on.
        reason: String,
    },

    /// The proposal was appended to the log but the local node can no longer
    /// tell whether it will commit (typically leadership was lost after the
    /// append). It may be applied later by a new leader, or never.
    #[error("proposal outcome unknown: {reason}")]
    OutcomeUnknown {
        /// What happened to the proposal's wait.
        reason: String,
    },

    /// The engine has been shut down (or stopped on a fatal error) and takes
    /// no more requests.
    #[error("engine is shut down")]
    Shutdown,

    /// The configuration given to the engine or the call is invalid.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// The proposal is larger than the engine accepts.
    #[error("proposal of {size} bytes exceeds the limit of {max} bytes")]
    ProposalTooLarge {
        /// The proposal's size in bytes.
        size: usize,
        /// The largest accepted size in bytes.
        max: usize,
    },

    /// The engine does not support this operation.
    #[error("{engine} does not support {operation}")]
    Unsupported {
        /// The engine type, as [`Factory::engine_type`](crate::Factory::engine_type) names it.
        engine: &'static str,
        /// The unsupported operation.
        operation: &'static str,
    },

    /// The data directory could not be read or written, or holds data that is
    /// corrupt or does not belong to this node.
    #[error("storage: {message}")]
    Storage {
        /// What failed, with the path where one is involved.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },

    /// A transport failure (bind, connect, malformed frame).
    #[error("transport: {message}")]
    Transport {
        /// What failed.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },

    /// The state machine failed to take or restore a snapshot.
    #[error("state machine: {message}")]
    StateMachine {
        /// What failed.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },

    /// The lease does not hold, so the node cannot answer a read from its
    /// local state ([`LeaseProvider::check_lease`](crate::LeaseProvider::check_lease)):
    /// fall back to
    /// [`LeaderView::linearizable_read`](crate::LeaderView::linearizable_read),
    /// or, for [`LeaseDenied::NotLeader`](crate::LeaseDenied::NotLeader),
    /// retry on the leader. `?` converts a [`LeaseDenied`](crate::LeaseDenied)
    /// into this variant.
    #[error(transparent)]
    LeaseDenied(#[from] crate::lease::LeaseDenied),

    /// A failure inside the engine that none of the other variants describes.
    #[error("{engine}: {message}")]
    Internal {
        /// The engine type.
        engine: &'static str,
        /// What failed.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
}

impl Error {
    /// An [`Error::Internal`] of the engine named `engine` (its
    /// `engine_type()`), caused by `source` if there is one.
    ///
    /// ```
    /// let e = raftengine::Error::internal("etcd", "raft loop thread panicked", None);
    /// assert_eq!(e.to_string(), "etcd: raft loop thread panicked");
    /// ```
    pub fn internal(
        engine: &'static str,
        message: impl Into<String>,
        source: Option<BoxError>,
    ) -> Self {
        Error::Internal {
            engine,
            message: message.into(),
            source,
        }
    }

    /// A [`Error::Storage`] with a source.
    pub fn storage(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Storage {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// A [`Error::Transport`] with a source.
    pub fn transport(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Transport {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// A [`Error::StateMachine`] with a source.
    pub fn state_machine(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::StateMachine {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// A [`Error::FailedPrecondition`].
    pub fn failed_precondition(reason: impl Into<String>) -> Self {
        Error::FailedPrecondition {
            reason: reason.into(),
        }
    }

    /// The leader hint carried by [`Error::NotLeader`].
    pub fn leader_hint(&self) -> Option<&LeaderInfo> {
        match self {
            Error::NotLeader { leader } => leader.as_ref(),
            _ => None,
        }
    }

    /// True when the same request may succeed if retried later (possibly on
    /// another node), and retrying cannot apply a proposal twice.
    ///
    /// [`Error::OutcomeUnknown`] is **not** retryable in this sense: the first
    /// attempt may still commit.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::NotLeader { .. }
                | Error::LeadershipLost
                | Error::TransferInProgress
                | Error::TransferAborted { .. }
                | Error::ConfChangePending
        )
    }

    /// True when the request may have taken effect although it failed.
    pub fn is_outcome_unknown(&self) -> bool {
        matches!(self, Error::OutcomeUnknown { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_leader_display_names_the_hint() {
        let e = Error::NotLeader {
            leader: Some(LeaderInfo {
                id: "n2".into(),
                address: "127.0.0.1:9".into(),
            }),
        };
        assert_eq!(e.to_string(), "not leader (leader is n2@127.0.0.1:9)");
        assert_eq!(e.leader_hint().map(|l| l.id.as_str()), Some("n2"));
        let e = Error::NotLeader { leader: None };
        assert_eq!(e.to_string(), "not leader");
        assert!(e.leader_hint().is_none());
    }

    #[test]
    fn outcome_unknown_is_not_retryable() {
        let unknown = Error::OutcomeUnknown {
            reason: "leadership lost after append".into(),
        };
        assert!(!unknown.is_retryable());
        assert!(unknown.is_outcome_unknown());
        assert!(Error::NotLeader { leader: None }.is_retryable());
        assert!(!Error::NotLeader { leader: None }.is_outcome_unknown());
        assert!(Error::TransferInProgress.is_retryable());
        assert!(!Error::Shutdown.is_retryable());
    }

    #[test]
    fn storage_error_keeps_its_source() {
        use std::error::Error as _;
        let e = Error::storage(
            "read /x/log",
            std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "torn record"),
        );
        assert!(e.source().is_some_and(|s| s.to_string() == "torn record"));
    }
}
