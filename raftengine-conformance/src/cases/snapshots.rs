//! Snapshots and log compaction (Raft §7, DESIGN §4 item 7).
//!
//! The backend under test must be configured to snapshot within a few
//! thousand entries; each case writes until the leader reports a snapshot.

use std::sync::Arc;

use raftengine::Factory;

use crate::harness::{Cluster, KvEngine};
use crate::kv::put;

/// Most writes a case makes while waiting for a snapshot.
const MAX_WRITES: usize = 20_000;

/// Writes `prefix`-keys, 32 at a time, until `engine` reports a snapshot
/// index of at least `min_snapshot`; returns the last commit index.
async fn write_until_snapshot(engine: &KvEngine, prefix: &str, min_snapshot: u64) -> u64 {
    let mut last = 0;
    let mut written = 0;
    while engine.status().last_snapshot_index < min_snapshot {
        assert!(
            written < MAX_WRITES,
            "no snapshot at or past index {min_snapshot} after {written} writes; \
             configure the backend to snapshot more often for the suite"
        );
        let mut batch = Vec::new();
        for _ in 0..32 {
            let e = Arc::clone(engine);
            let key = format!("{prefix}{written}");
            written += 1;
            batch.push(tokio::spawn(async move { e.propose(put(key, "v")).await }));
        }
        for t in batch {
            last = last.max(t.await.expect("task").expect("put").commit_index);
        }
    }
    last
}

fn assert_same_history(c: &Cluster<impl Factory>, reference: usize, i: usize) {
    let a = c.nodes[reference].kv.lock().applied.clone();
    let b = c.nodes[i].kv.lock().applied.clone();
    let n = a.len().min(b.len());
    assert_eq!(
        a[..n],
        b[..n],
        "{} and {} diverged",
        c.nodes[reference].id,
        c.nodes[i].id
    );
    let mut idx: Vec<u64> = b.iter().map(|(i, _)| *i).collect();
    let len = idx.len();
    idx.dedup();
    assert_eq!(idx.len(), len, "{} applied an entry twice", c.nodes[i].id);
    // One statement per lock: the two handles may be the same node.
    let ma = c.nodes[reference].kv.lock().map.clone();
    let mb = c.nodes[i].kv.lock().map.clone();
    assert_eq!(ma, mb, "{} has different state", c.nodes[i].id);
}

/// After a snapshot and compaction, a full-cluster restart with fresh state
/// machines restores the snapshot, replays the rest and loses nothing.
pub async fn restart_from_snapshot_after_compaction<F: Factory>(factory: F) {
    let c = Cluster::start(factory, 3).await;
    let l = c.wait_leader().await;
    let e = c.engine(l).clone();
    write_until_snapshot(&e, "s", 1).await;
    let mut last = 0;
    for i in 0..10 {
        last = e
            .propose(put(format!("tail{i}"), "t"))
            .await
            .expect("put")
            .commit_index;
    }
    for i in 0..3 {
        c.wait_applied(i, last).await;
    }
    let before = c.nodes[l].kv.lock().map.clone();
    for i in 0..3 {
        c.stop(i).await;
    }
    for i in 0..3 {
        c.restart(i).await.expect("restart");
    }
    let l = c.wait_leader().await;
    c.engine(l).linearizable_read().await.expect("read");
    for i in 0..3 {
        c.wait_applied(i, last).await;
    }
    assert!(
        c.nodes.iter().any(|n| n.kv.lock().restored_from > 0),
        "no node restored from a snapshot at restart"
    );
    let after = c.nodes[l].kv.lock().map.clone();
    for (k, v) in &before {
        assert_eq!(
            after.get(k),
            Some(v),
            "lost {:?} across restart",
            String::from_utf8_lossy(k)
        );
    }
    for i in 0..3 {
        assert_same_history(&c, l, i);
    }
    c.shutdown().await;
}

/// A learner added after the log was compacted catches up (through a
/// snapshot) to the identical state.
pub async fn learner_added_after_compaction_catches_up<F: Factory>(factory: F) {
    let mut c = Cluster::start(factory, 3).await;
    let l = c.wait_leader().await;
    let e = c.engine(l).clone();
    let last = write_until_snapshot(&e, "c", 1).await;
    let (j, _) = c.add_learner_node(l, "n4").await;
    let w = e.propose(put("after", "join")).await.expect("put");
    c.wait_applied(j, w.commit_index.max(last)).await;
    c.engine(l).linearizable_read().await.expect("read");
    assert_same_history(&c, l, j);
    c.shutdown().await;
}

/// A follower that was down while the leader compacted its log catches up
/// after restart.
pub async fn lagging_follower_catches_up_after_compaction<F: Factory>(factory: F) {
    let c = Cluster::start(factory, 3).await;
    let l = c.wait_leader().await;
    let f = c.other_than(l);
    let e = c.engine(l).clone();
    e.propose(put("early", "1")).await.expect("put");
    c.stop(f).await;
    let target = e.status().last_log_index + 1;
    write_until_snapshot(&e, "lag", target).await;
    // Two snapshots past the follower: the entries it needs are gone.
    let again = e.status().last_snapshot_index + 1;
    let last = write_until_snapshot(&e, "lag2-", again).await;
    c.restart(f).await.expect("restart follower");
    c.wait_applied(f, last).await;
    assert_same_history(&c, l, f);
    c.shutdown().await;
}

/// A snapshot far larger than one transport chunk (≥ 8 MiB of state)
/// reaches a new learner intact (Raft §7).
pub async fn large_snapshot_transfers_intact<F: Factory>(factory: F) {
    let mut c = Cluster::start(factory, 3).await;
    let l = c.wait_leader().await;
    let e = c.engine(l);
    for i in 0..10u8 {
        let value: Vec<u8> = (0..1024 * 1024).map(|j| (j as u8) ^ i).collect();
        e.propose(put(format!("big{i}"), value))
            .await
            .expect("a 1 MiB put");
    }
    let snap = e.status().last_snapshot_index;
    let last = write_until_snapshot(&e, "fill", snap + 1).await;
    let (j, _) = c.add_learner_node(l, "n4").await;
    c.wait_applied(j, last).await;
    for i in 0..10u8 {
        let want: Vec<u8> = (0..1024 * 1024).map(|j| (j as u8) ^ i).collect();
        assert!(
            c.nodes[j].kv.get(format!("big{i}").as_bytes()) == Some(want),
            "big{i} arrived damaged or not at all"
        );
    }
    assert_same_history(&c, l, j);
    c.shutdown().await;
}
