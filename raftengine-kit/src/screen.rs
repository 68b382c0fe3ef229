//! Checks a peer message passes after its sender is authenticated and
//! before the Raft engine sees it. An authenticated member can still be
//! wrong (a bug, a stale process, a replayed packet); these checks keep a
//! message that no correct member would send from panicking the engine,
//! pinning a term no election can pass, or stopping a node.

use tonic::Status;

/// The largest term a message may carry. A correct cluster gains one term
/// per election; at one election per millisecond it would need about 9,000
/// years to get here. The bound is absolute, not relative to this node's
/// term: a relative bound would refuse a leader legitimately elected many
/// terms on while this node was cut off, and a ceiling far past any real
/// cluster's lifetime costs nothing. Terms near `u64::MAX` overflow both
/// engines' arithmetic (a panic in raft-rs's loop, in openraft's core).
pub const MAX_TERM: u64 = 1 << 48;

/// Refuses a term above [`MAX_TERM`]; `what` names the field.
///
/// # Errors
///
/// `InvalidArgument` naming the field and the term.
///
/// ```
/// use raftengine_kit::screen::{plausible_term, MAX_TERM};
/// assert!(plausible_term(MAX_TERM, "term").is_ok());
/// assert_eq!(plausible_term(u64::MAX, "term").unwrap_err().code(), tonic::Code::InvalidArgument);
/// ```
pub fn plausible_term(term: u64, what: &str) -> Result<(), Status> {
    if term > MAX_TERM {
        return Err(Status::invalid_argument(format!(
            "{what} {term} is above the largest plausible term {MAX_TERM}"
        )));
    }
    Ok(())
}

/// A removed-node notice as the node that received it sees it.
#[derive(Debug, Clone, Copy)]
pub struct RemovedNotice<'a> {
    /// The authenticated sender.
    pub from: &'a str,
    /// The leader this node follows now or, while it knows none (an
    /// election under way), the last leader it followed. A node removed by
    /// a configuration it never received stops hearing from the leader and
    /// soon knows none; the notice must still reach it.
    pub leader: Option<&'a str>,
    /// The index of the configuration that removed this node, as the
    /// sender says.
    pub conf_index: u64,
    /// The index of the newest configuration this node knows.
    pub local_conf_index: u64,
    /// Whether that configuration lists this node.
    pub listed: bool,
}

/// Whether a node stops for `notice`: `Ok(true)` to stop, `Ok(false)` for
/// a stale notice (a configuration this node holds, as new or newer,
/// lists it again).
///
/// # Errors
///
/// `PermissionDenied` when the sender is not the leader this node
/// follows: any other member, however authenticated, cannot know more of
/// the configuration than the leader, and one such call would otherwise
/// stop a healthy node.
pub fn honours_removed(notice: &RemovedNotice<'_>) -> Result<bool, Status> {
    if notice.leader != Some(notice.from) {
        return Err(Status::permission_denied(format!(
            "a removed notice from {:?}, but this node follows {:?}: only the leader may remove a node",
            notice.from, notice.leader
        )));
    }
    Ok(!(notice.listed && notice.local_conf_index >= notice.conf_index))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(from: &'static str, leader: Option<&'static str>) -> RemovedNotice<'static> {
        RemovedNotice {
            from,
            leader,
            conf_index: 10,
            local_conf_index: 5,
            listed: true,
        }
    }

    #[test]
    fn only_the_leader_followed_may_remove() {
        assert!(honours_removed(&notice("n1", Some("n1"))).unwrap());
        for (from, leader) in [("n3", Some("n1")), ("n1", None), ("n3", None)] {
            let refused = honours_removed(&notice(from, leader)).unwrap_err();
            assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused}");
        }
    }

    #[test]
    fn a_notice_older_than_a_listing_configuration_is_stale() {
        let mut n = notice("n1", Some("n1"));
        n.local_conf_index = 10;
        assert!(!honours_removed(&n).unwrap());
        n.listed = false;
        assert!(honours_removed(&n).unwrap());
    }

    #[test]
    fn terms_above_the_bound_are_refused() {
        assert!(plausible_term(0, "term").is_ok());
        assert!(plausible_term(MAX_TERM, "term").is_ok());
        let e = plausible_term(MAX_TERM + 1, "log term").unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("log term"), "{e}");
    }
}
