//! The node's identity file: whether a data dir already holds a node.
//!
//! A backend writes [`IDENTITY_FILE`] (the local id) durably once the node's
//! first state is in its log. Its presence is the one answer to "does this
//! dir hold a node?" that needs no log open: a start that would be refused
//! for an empty dir is refused before anything is created in it. It also
//! catches damage the log cannot: raft-engine drops a damaged tail
//! silently, and if the damage reached back to the first batch the log
//! would look brand new; the identity file says it is not.

use std::path::Path;

use raftengine::{Error, Result};

/// The file, directly in the data dir, that names the node living there.
pub const IDENTITY_FILE: &str = "node-id";

/// True if `data_dir` was ever initialized as a node. Blocking.
pub fn holds_node(data_dir: &Path) -> bool {
    data_dir.join(IDENTITY_FILE).exists()
}

/// Refuses, before anything is written, to start a fresh node that could
/// only form a cluster of its own: `data_dir` holds no node, and there is
/// neither `bootstrap` nor a peer list (`FactoryConfig`'s start-up table).
/// Blocking.
///
/// # Errors
///
/// [`Error::InvalidConfig`] in exactly that case; the dir is left as found.
pub fn check_may_start(data_dir: &Path, bootstrap: bool, has_peers: bool) -> Result<()> {
    if bootstrap || has_peers || holds_node(data_dir) {
        return Ok(());
    }
    Err(Error::InvalidConfig(format!(
        "{} holds no node, and there is neither bootstrap nor a peer list: refusing to start \
         a node that could only form a cluster of its own",
        data_dir.display()
    )))
}

/// The file, directly in the data dir, that says a committed configuration
/// removed this node. A removed node restarted on its dir stops again at
/// once (`StopReason::Removed`) instead of coming up as a member nobody
/// lists: raft alone cannot tell it, since the others no longer talk to it.
pub const REMOVED_FILE: &str = "removed";

/// Records durably that the node living in `data_dir` was removed.
/// Blocking.
///
/// # Errors
///
/// The file or its directory could not be written and synced.
pub fn mark_removed(data_dir: &Path) -> std::io::Result<()> {
    crate::durable::write_file(&data_dir.join(REMOVED_FILE), b"removed from the cluster\n")
}

/// True if [`mark_removed`] was called on `data_dir`. Blocking.
pub fn was_removed(data_dir: &Path) -> bool {
    data_dir.join(REMOVED_FILE).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_empty_dir_without_bootstrap_or_peers_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let node = dir.path().join("n1");
        assert!(matches!(
            check_may_start(&node, false, false),
            Err(Error::InvalidConfig(_))
        ));
        assert!(!node.exists(), "the refusal created the dir");
        assert!(check_may_start(&node, true, false).is_ok());
        assert!(check_may_start(&node, false, true).is_ok());
        std::fs::create_dir_all(&node).unwrap();
        std::fs::write(node.join(IDENTITY_FILE), b"n1").unwrap();
        assert!(holds_node(&node));
        assert!(check_may_start(&node, false, false).is_ok());
        assert!(!was_removed(&node));
        mark_removed(&node).unwrap();
        assert!(was_removed(&node));
    }
}
