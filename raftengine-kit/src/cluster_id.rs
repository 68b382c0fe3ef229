//! The cluster id: which cluster a node belongs to, stamped on every peer
//! call and checked on every call received (issue #15, item 2).
//!
//! TLS proves *who* a peer is; it does not prove that the peer belongs to
//! *this* cluster: two clusters that share a CA (or an operator who points
//! a node of one at a member of the other) would otherwise mix their logs.
//! Like etcd's cluster ID, the id is derived at bootstrap from the founding
//! voters (their ids and addresses, sorted), so every founding node
//! derives the same one on its own, and it is persisted in the data dir
//! ([`CLUSTER_ID_FILE`]). A node that joins an existing cluster has none
//! until the first authenticated call that carries one, which admits it,
//! and persists it from then on.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use raftengine::Server;

/// The file, directly in the data dir, that holds the cluster id (16 hex
/// digits).
pub const CLUSTER_ID_FILE: &str = "cluster-id";

/// The gRPC metadata key that carries the sender's cluster id.
pub const CLUSTER_HEADER: &str = "raftengine-cluster";

/// The gRPC metadata key that carries the numeric id of the node a call is
/// for.
pub const TARGET_HEADER: &str = "raftengine-to";

/// The id a cluster founded by `voters` gets: FNV-1a 64 over each voter's
/// id and address, in id order (so every founding node derives the same
/// one, whatever order its peer list is in).
pub fn derive(voters: &[Server]) -> u64 {
    let mut sorted: Vec<_> = voters.iter().map(|s| (&s.id, &s.address)).collect();
    sorted.sort();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in b"raftengine-cluster\0".iter().copied().chain(
        sorted
            .iter()
            .flat_map(|(id, addr)| id.bytes().chain([0]).chain(addr.bytes()).chain([0])),
    ) {
        h ^= u64::from(byte);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The text form of a cluster id, as in the file and the header.
pub fn format(id: u64) -> String {
    format!("{id:016x}")
}

/// Parses [`format()`]'s text.
pub fn parse(text: &str) -> Option<u64> {
    let text = text.trim();
    if text.len() != 16 {
        return None;
    }
    u64::from_str_radix(text, 16).ok()
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    known: Mutex<Option<u64>>,
    refused: AtomicU64,
    logged: Mutex<HashSet<(String, &'static str)>>,
}

/// This node's cluster id, known or still to be learned. Cheap to clone;
/// clones share it.
#[derive(Debug, Clone)]
pub struct ClusterId(Arc<Inner>);

impl ClusterId {
    /// Reads `data_dir`'s cluster id; if it holds none and `founders` is
    /// given (the node bootstraps), derives it from them and persists it.
    /// Blocking.
    ///
    /// # Errors
    ///
    /// The file cannot be read or written, or holds no cluster id.
    pub fn open(data_dir: &Path, founders: Option<&[Server]>) -> std::io::Result<Self> {
        let path = data_dir.join(CLUSTER_ID_FILE);
        let known = match std::fs::read_to_string(&path) {
            Ok(text) => Some(parse(&text).ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} holds no cluster id: {text:?}", path.display()),
                )
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match founders {
                Some(voters) => {
                    let id = derive(voters);
                    crate::durable::write_file(&path, format(id).as_bytes())?;
                    Some(id)
                }
                None => None,
            },
            Err(e) => return Err(e),
        };
        Ok(ClusterId(Arc::new(Inner {
            path,
            known: Mutex::new(known),
            refused: AtomicU64::new(0),
            logged: Mutex::new(HashSet::new()),
        })))
    }

    /// [`open`](Self::open) for the node `config` describes (founders:
    /// its bootstrap voters, if it bootstraps), on a blocking thread.
    ///
    /// # Errors
    ///
    /// [`raftengine::Error::Storage`] naming the file.
    pub fn open_for<S>(
        config: &raftengine::FactoryConfig<S>,
    ) -> impl std::future::Future<Output = raftengine::Result<Self>> + Send + 'static {
        // Everything taken from `config` before the future, which must not
        // hold it (the state machine need not be `Sync`).
        let dir = config.data_dir.clone();
        let founders = config.bootstrap.then(|| config.bootstrap_voters());
        async move {
            let what = format!("cluster id in {}", dir.display());
            tokio::task::spawn_blocking(move || Self::open(&dir, founders.as_deref()))
                .await
                .map_err(|e| {
                    raftengine::Error::storage(what.clone(), std::io::Error::other(e.to_string()))
                })?
                .map_err(|e| raftengine::Error::storage(what, e))
        }
    }

    fn known(&self) -> MutexGuard<'_, Option<u64>> {
        // One plain value, set in one assignment.
        self.0.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The id, once known.
    pub fn get(&self) -> Option<u64> {
        *self.known()
    }

    /// Calls refused for another cluster or another target so far.
    pub fn refused(&self) -> u64 {
        self.0.refused.load(Ordering::Relaxed)
    }

    /// Checks a call's cluster id (`None`: it carried none); a node that
    /// has none yet adopts it and persists it first.
    pub(crate) async fn admit(&self, peer: &str, theirs: Option<u64>) -> Result<(), tonic::Status> {
        let ours = self.get();
        match (ours, theirs) {
            (Some(ours), Some(theirs)) if ours == theirs => Ok(()),
            (Some(ours), Some(theirs)) => Err(self.refuse(
                peer,
                "cluster",
                format!(
                    "the call is from cluster {}, this node is in cluster {}",
                    format(theirs),
                    format(ours)
                ),
            )),
            (Some(ours), None) => Err(self.refuse(
                peer,
                "cluster",
                format!(
                    "the call names no cluster, this node is in cluster {}",
                    format(ours)
                ),
            )),
            (None, None) => Ok(()),
            (None, Some(theirs)) => self.adopt(theirs).await,
        }
    }

    async fn adopt(&self, id: u64) -> Result<(), tonic::Status> {
        let path = self.0.path.clone();
        let written = tokio::task::spawn_blocking(move || {
            crate::durable::write_file(&path, format(id).as_bytes())
        })
        .await;
        match written {
            Ok(Ok(())) => {
                let mut known = self.known();
                if known.is_none() {
                    *known = Some(id);
                    tracing::info!(cluster = %format(id), "joined cluster");
                }
                Ok(())
            }
            Ok(Err(e)) => Err(tonic::Status::unavailable(format!(
                "cannot persist the cluster id: {e}"
            ))),
            Err(e) => Err(tonic::Status::unavailable(format!(
                "cannot persist the cluster id: {e}"
            ))),
        }
    }

    /// Counts a refusal and logs it once per peer and reason.
    pub(crate) fn refuse(
        &self,
        peer: &str,
        reason: &'static str,
        message: String,
    ) -> tonic::Status {
        self.0.refused.fetch_add(1, Ordering::Relaxed);
        let first = self
            .0
            .logged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((peer.to_owned(), reason));
        if first {
            tracing::warn!(%peer, "peer call refused: {message} (logged once per peer)");
        }
        tonic::Status::failed_precondition(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn founders_in_any_order_derive_one_id() {
        let a = [Server::voter("n1", "h:1"), Server::voter("n2", "h:2")];
        let b = [Server::voter("n2", "h:2"), Server::voter("n1", "h:1")];
        assert_eq!(derive(&a), derive(&b));
        let other = [Server::voter("n1", "h:1"), Server::voter("n2", "h:3")];
        assert_ne!(derive(&a), derive(&other));
        assert_eq!(parse(&format(derive(&a))), Some(derive(&a)));
        assert_eq!(parse("xyz"), None);
    }

    #[tokio::test]
    async fn a_joiner_adopts_the_first_id_and_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let joiner = ClusterId::open(dir.path(), None).unwrap();
        assert_eq!(joiner.get(), None);
        joiner.admit("n1", None).await.unwrap();
        joiner.admit("n1", Some(7)).await.unwrap();
        assert_eq!(joiner.get(), Some(7));
        let refused = joiner.admit("x", Some(8)).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused}");
        assert_eq!(joiner.refused(), 1);
        let reopened = ClusterId::open(dir.path(), Some(&[Server::voter("n9", "h:9")])).unwrap();
        assert_eq!(
            reopened.get(),
            Some(7),
            "the persisted id wins over a derivation"
        );
    }
}
