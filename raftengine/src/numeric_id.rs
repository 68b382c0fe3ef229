//! Mapping string node ids (the `raftengine` API) onto the `u64` ids Raft
//! libraries use.
//!
//! The number is a deterministic hash of the string, so every node derives
//! the same number without coordination. It is part of the contract, not a
//! backend detail: a set of ids valid on one engine must be valid on every
//! engine, so that switching engines never strands a cluster.

/// The numeric id of `id`: 64-bit FNV-1a, never 0 (raft-rs reserves 0).
///
/// # Contract
///
/// Stable forever: data dirs and logs store these numbers. Two distinct ids
/// with one numeric id cannot be members of one cluster on any engine:
/// [`FactoryConfig::validate`](crate::FactoryConfig::validate) refuses them
/// among the peers, and `add_voter`/`add_learner` refuse an id that
/// collides with a member's, both with
/// [`Error::InvalidConfig`](crate::Error::InvalidConfig).
///
/// ```
/// use raftengine::numeric_id;
/// assert_eq!(numeric_id("n1"), numeric_id("n1"));
/// assert_ne!(numeric_id("n1"), numeric_id("n2"));
/// ```
pub fn numeric_id(id: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for b in id.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(PRIME);
    }
    if h == 0 { 1 } else { h }
}

/// Checks that no two distinct ids in `ids` map to the same
/// [`numeric_id`]; repeats of one id are fine.
///
/// # Errors
///
/// [`Error::InvalidConfig`](crate::Error::InvalidConfig) naming both ids.
pub(crate) fn check_numeric_ids<'a>(ids: impl IntoIterator<Item = &'a str>) -> crate::Result<()> {
    let mut seen: std::collections::HashMap<u64, &str> = std::collections::HashMap::new();
    for id in ids {
        if let Some(other) = seen.insert(numeric_id(id), id) {
            if other != id {
                return Err(crate::Error::InvalidConfig(format!(
                    "node ids {other:?} and {id:?} map to the same numeric id; rename one"
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_fine_and_collisions_are_not() {
        assert!(check_numeric_ids(["n1", "n2", "n1"]).is_ok());
        // An FNV-1a 64 collision (the pair the conformance suite pins).
        let got = check_numeric_ids(["n-e3aa66b1beb61d74", "n-d6d8a48942f97c9d"]);
        assert!(
            matches!(&got, Err(crate::Error::InvalidConfig(m)) if m.contains("same numeric id")),
            "{got:?}"
        );
    }

    #[test]
    fn ids_are_stable_and_distinct() {
        assert_eq!(numeric_id("n1"), numeric_id("n1"));
        assert_ne!(numeric_id("n1"), numeric_id("n2"));
        assert_ne!(numeric_id(""), 0);
        // Pinned: changing the hash would orphan every existing data dir.
        assert_eq!(numeric_id("a"), 0xaf63_dc4c_8601_ec8c);
    }
}
