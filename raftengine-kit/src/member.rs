//! Checks of what an admin call names before anything is proposed.

use raftengine::{Error, Result};

/// Checks the id and address of a server about to be added
/// ([`Admin::add_voter`](raftengine::Admin::add_voter),
/// [`Admin::add_learner`](raftengine::Admin::add_learner)): the id must not
/// be empty and the address must pass [`raftengine::check_address`].
///
/// # Errors
///
/// [`Error::InvalidConfig`] naming the server and the problem.
pub fn check_new(id: &str, address: &str) -> Result<()> {
    if id.is_empty() {
        return Err(Error::InvalidConfig("the server id is empty".into()));
    }
    raftengine::check_address(address).map_err(|e| match e {
        Error::InvalidConfig(m) => Error::InvalidConfig(format!("server {id:?}: {m}")),
        other => other,
    })
}

/// Refuses to add `id` when its numeric id
/// ([`raftengine::numeric_id`]) already belongs to the member
/// `holder` of another name: the two would be merged into one Raft node.
///
/// # Errors
///
/// [`Error::InvalidConfig`] naming both ids (the same variant
/// `FactoryConfig::validate` gives at start).
pub fn check_numeric_id_free(id: &str, holder: Option<&str>) -> Result<()> {
    match holder {
        Some(other) if other != id => Err(Error::InvalidConfig(format!(
            "node ids {other:?} and {id:?} map to the same numeric id; rename one"
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_numeric_id_held_by_another_name_is_invalid() {
        assert!(check_numeric_id_free("n4", None).is_ok());
        assert!(check_numeric_id_free("n4", Some("n4")).is_ok());
        assert!(matches!(
            check_numeric_id_free("n4", Some("x9")),
            Err(Error::InvalidConfig(m)) if m.contains("x9") && m.contains("n4")
        ));
    }

    #[test]
    fn empty_ids_and_bad_addresses_are_invalid() {
        assert!(check_new("n4", "127.0.0.1:7004").is_ok());
        for (id, address) in [("", "127.0.0.1:7004"), ("n4", ""), ("", ""), ("n4", "x")] {
            assert!(
                matches!(check_new(id, address), Err(Error::InvalidConfig(_))),
                "{id:?} {address:?}"
            );
        }
    }
}
