//! The one mapping from this backend's failures into `raftengine::Error`.
//! raft-rs itself rarely fails a call (it drops what it refuses), so most
//! of what lands here is the loop's own invariants; storage failures are
//! the core's `Error::storage`.

use raftengine::Error;

/// This backend's internal error (a broken invariant or a failed start).
pub(crate) fn internal(
    what: impl Into<String>,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
) -> Error {
    Error::internal(crate::ENGINE_TYPE, what, source)
}

/// raft-rs dropped a proposal without appending it: in the states where it
/// does so (the uncommitted-size limit), retrying later can succeed.
pub(crate) fn proposal_dropped() -> Error {
    internal(
        "raft-rs dropped the proposal (uncommitted log too large); retry",
        None,
    )
}

/// raft-rs refused a configuration change outright.
pub(crate) fn conf_change_refused(e: &raft::Error) -> Error {
    Error::failed_precondition(format!("membership change refused: {e}"))
}
