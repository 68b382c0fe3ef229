//! Linearizable and lease reads (DESIGN §4 item 3, Raft thesis §6.4).

use raftengine::{Error, Factory, LeaseDenied};

use crate::harness::{Cluster, wait_for};
use crate::kv::put;

/// A read started after a write was acknowledged sees it, on the leader's
/// local state machine.
pub async fn linearizable_read_sees_acknowledged_writes<F: Factory>(factory: F) {
    let c = Cluster::start(factory, 3).await;
    let l = c.wait_leader().await;
    for i in 0..10 {
        let w = c
            .engine(l)
            .propose(put("r", format!("{i}")))
            .await
            .expect("put");
        let idx = c.engine(l).linearizable_read().await.expect("read");
        assert!(
            idx >= w.commit_index,
            "read index {idx} < write {}",
            w.commit_index
        );
        assert_eq!(c.nodes[l].kv.get(b"r"), Some(format!("{i}").into_bytes()));
    }
    c.shutdown().await;
}

/// On a follower, reads and `verify_leader` are `NotLeader`.
pub async fn follower_read_is_not_leader<F: Factory>(factory: F) {
    let c = Cluster::start(factory, 3).await;
    let l = c.wait_leader().await;
    let f = c.other_than(l);
    assert!(matches!(
        c.engine(f).linearizable_read().await,
        Err(Error::NotLeader { .. })
    ));
    assert!(matches!(
        c.engine(f).verify_leader().await,
        Err(Error::NotLeader { .. })
    ));
    c.engine(l).verify_leader().await.expect("leader verifies");
    c.shutdown().await;
}

/// Many concurrent reads all complete.
pub async fn many_concurrent_reads_complete<F: Factory>(factory: F) {
    let c = Cluster::start(factory, 3).await;
    let l = c.wait_leader().await;
    let w = c.engine(l).propose(put("x", "1")).await.expect("put");
    let e = c.engine(l);
    let mut tasks = Vec::new();
    for _ in 0..500 {
        let e = e.clone();
        tasks.push(tokio::spawn(async move { e.linearizable_read().await }));
    }
    for t in tasks {
        let idx = t.await.expect("task").expect("read");
        assert!(idx >= w.commit_index);
    }
    c.shutdown().await;
}

/// A leader gets a valid lease once a quorum acknowledged it; followers never
/// hold one.
pub async fn lease_holds_on_the_leader_only<F: Factory>(factory: F) {
    let c = Cluster::start(factory, 3).await;
    let l = c.wait_leader().await;
    c.engine(l).propose(put("lease", "1")).await.expect("put");
    let e = c.engine(l);
    let grant = wait_for("the leader's lease to become valid", || async {
        e.check_lease().ok()
    })
    .await;
    assert!(grant.applied_index >= 1);
    assert!(grant.remaining <= e.lease_duration());
    let f = c.other_than(l);
    assert!(matches!(
        c.engine(f).check_lease(),
        Err(LeaseDenied::NotLeader { .. })
    ));
    assert!(c.engine(f).last_quorum_ack().is_none());
    c.shutdown().await;
}

/// Heartbeats keep renewing the lease: the leader's `last_quorum_ack`
/// advances while nothing is written (DESIGN §4 item 3).
pub async fn quorum_ack_advances_under_heartbeats<F: Factory>(factory: F) {
    let c = Cluster::start(factory, 3).await;
    let l = c.wait_leader().await;
    c.engine(l).propose(put("hb", "1")).await.expect("put");
    let e = c.engine(l);
    let first = wait_for("a first quorum ack", || async { e.last_quorum_ack() }).await;
    let later = wait_for("a later quorum ack without writes", || async {
        e.last_quorum_ack().filter(|t| *t > first)
    })
    .await;
    assert!(later > first);
    assert!(e.check_lease().is_ok(), "a renewed lease must be valid");
    c.shutdown().await;
}

/// A single-voter cluster's leader is its own quorum and holds a lease
/// (DESIGN §4 item 3).
pub async fn single_voter_leader_has_a_lease<F: Factory>(factory: F) {
    let c = Cluster::start(factory, 1).await;
    let l = c.wait_leader().await;
    c.engine(l).propose(put("solo", "1")).await.expect("put");
    let e = c.engine(l);
    let grant = wait_for("the single voter's lease", || async {
        e.check_lease().ok()
    })
    .await;
    assert!(grant.applied_index >= 1);
    c.shutdown().await;
}
