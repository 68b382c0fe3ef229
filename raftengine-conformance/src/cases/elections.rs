//! Elections and crashes (Raft §5.2, §5.4).

use raftengine::{Error, Factory, State};

use crate::harness::{Cluster, wait_for};
use crate::kv::put;

/// When the leader of an `nodes`-node cluster stops, the remaining majority
/// elects a new leader and keeps committing; acknowledged writes are kept.
/// Stamped for 3 and 5 nodes.
pub async fn majority_elects_a_new_leader_after_the_leader_stops<F: Factory>(
    factory: F,
    nodes: usize,
) {
    let c = Cluster::start(factory, nodes).await;
    let old = c.wait_leader().await;
    let before = c
        .engine(old)
        .propose(put("before", "1"))
        .await
        .expect("put");
    c.stop(old).await;
    let new = c.wait_leader().await;
    assert_ne!(new, old);
    let after = c
        .engine(new)
        .propose(put("after", "2"))
        .await
        .expect("put on new leader");
    assert!(after.commit_index > before.commit_index);
    assert_eq!(c.nodes[new].kv.get(b"before"), Some(b"1".to_vec()));
    c.shutdown().await;
}

/// A minority cannot commit: with two of three nodes down the survivor
/// never acknowledges a write.
pub async fn minority_cannot_commit<F: Factory>(factory: F) {
    let c = Cluster::start(factory, 3).await;
    let l = c.wait_leader().await;
    let others: Vec<usize> = (0..3).filter(|i| *i != l).collect();
    for i in others {
        c.stop(i).await;
    }
    let e = c.engine(l).clone();
    let attempt = tokio::time::timeout(
        std::time::Duration::from_secs(3),
        e.propose(put("lonely", "x")),
    )
    .await;
    match attempt {
        Err(_) => {}
        Ok(Err(Error::NotLeader { .. } | Error::OutcomeUnknown { .. } | Error::LeadershipLost)) => {
        }
        Ok(other) => panic!(
            "a minority acknowledged a write: {:?}",
            other.map(|r| r.commit_index)
        ),
    }
    // check_quorum: the isolated leader steps down.
    wait_for("the minority leader to step down", || async {
        (e.state() != State::Leader).then_some(())
    })
    .await;
    c.shutdown().await;
}

/// Five nodes keep committing with two of them down.
pub async fn five_nodes_tolerate_two_failures<F: Factory>(factory: F) {
    let c = Cluster::start(factory, 5).await;
    let l = c.wait_leader().await;
    let down: Vec<usize> = (0..5).filter(|i| *i != l).take(2).collect();
    for i in down {
        c.stop(i).await;
    }
    let l = c.wait_leader().await;
    for i in 0..5 {
        c.engine(l)
            .propose(put(format!("k{i}"), "v"))
            .await
            .expect("put with two down");
    }
    c.shutdown().await;
}
