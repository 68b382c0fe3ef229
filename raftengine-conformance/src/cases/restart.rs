//! Restart and durability (DESIGN §4, items 2 and 7).

use raftengine::{Error, Factory};

use crate::Which;
use crate::harness::Cluster;
use crate::kv::put;

/// A single node closed and reopened on its data dir with a fresh state
/// machine gets every acknowledged write back, each applied once.
pub async fn single_node_restart_restores_state<F: Factory>(factory: F) {
    let c = Cluster::start(factory, 1).await;
    c.wait_leader().await;
    let mut last = 0;
    for i in 0..20 {
        last = c
            .engine(0)
            .propose(put(format!("k{i}"), "v"))
            .await
            .expect("put")
            .commit_index;
    }
    c.restart(0).await.expect("restart");
    c.wait_leader().await;
    c.wait_applied(0, last).await;
    for i in 0..20 {
        assert_eq!(
            c.nodes[0].kv.get(format!("k{i}").as_bytes()),
            Some(b"v".to_vec())
        );
    }
    let applied = c.nodes[0].kv.lock().applied.clone();
    let mut idx: Vec<u64> = applied.iter().map(|(i, _)| *i).collect();
    let n = idx.len();
    idx.dedup();
    assert_eq!(idx.len(), n, "an entry was applied twice after restart");
    assert_eq!(n, 20);
    // Writes continue after the restart.
    c.engine(0)
        .propose(put("after", "restart"))
        .await
        .expect("put after restart");
    c.shutdown().await;
}

/// Every acknowledged write survives a restart of the whole cluster.
pub async fn full_cluster_restart_keeps_acknowledged_writes<F: Factory>(factory: F) {
    let c = Cluster::start(factory, 3).await;
    let l = c.wait_leader().await;
    let mut last = 0;
    for i in 0..30 {
        last = c
            .engine(l)
            .propose(put(format!("k{i}"), format!("{i}")))
            .await
            .expect("put")
            .commit_index;
    }
    for i in 0..3 {
        c.stop(i).await;
    }
    for i in 0..3 {
        c.restart(i).await.expect("restart");
    }
    let l = c.wait_leader().await;
    c.engine(l)
        .linearizable_read()
        .await
        .expect("read after restart");
    assert!(c.nodes[l].kv.last_applied() >= last);
    for i in 0..30 {
        assert_eq!(
            c.nodes[l].kv.get(format!("k{i}").as_bytes()),
            Some(format!("{i}").into_bytes()),
            "acknowledged write k{i} lost"
        );
    }
    c.shutdown().await;
}

/// A node restarted while writes continue catches up and applies the same
/// sequence as the leader. Stamped for the leader and a follower: a
/// restarted leader hands over to a new one and rejoins as a follower.
pub async fn restarted_node_catches_up<F: Factory>(factory: F, which: Which) {
    let c = Cluster::start(factory, 3).await;
    let l = c.wait_leader().await;
    let f = match which {
        Which::Leader => l,
        Which::Follower => c.other_than(l),
    };
    for i in 0..10 {
        c.engine(l)
            .propose(put(format!("a{i}"), "1"))
            .await
            .expect("put");
    }
    c.stop(f).await;
    let others: Vec<usize> = (0..3).filter(|i| *i != f).collect();
    let l = c.wait_leader_among(&others).await;
    let mut last = 0;
    for i in 0..10 {
        last = c
            .engine(l)
            .propose(put(format!("b{i}"), "2"))
            .await
            .expect("put while down")
            .commit_index;
    }
    c.restart(f).await.expect("restart");
    c.wait_applied(f, last).await;
    let leader_log = c.nodes[l].kv.lock().applied.clone();
    let restarted_log = c.nodes[f].kv.lock().applied.clone();
    assert_eq!(restarted_log[..], leader_log[..restarted_log.len()]);
    assert_eq!(c.nodes[f].kv.get(b"b9"), Some(b"2".to_vec()));
    c.shutdown().await;
}

/// A wiped node started with neither bootstrap nor peers refuses to start
/// instead of forming a one-node cluster of its own.
pub async fn wiped_node_refuses_to_self_bootstrap<F: Factory>(factory: F) {
    let c = Cluster::start(factory, 3).await;
    c.wait_leader().await;
    c.wipe(2).await;
    match c.start_again(2, false, Vec::new()).await {
        Err(Error::InvalidConfig(_)) => {}
        Err(other) => panic!("expected InvalidConfig, got {other}"),
        Ok(()) => panic!("a wiped node without peers or bootstrap started"),
    }
    c.shutdown().await;
}
