//! Proposals: responses, replication, errors (DESIGN §4 item 1).

use bytes::Bytes;
use raftengine::{Error, Factory, State};

use crate::harness::{Cluster, wait_for};
use crate::kv::put;

/// A single bootstrapped node elects itself (Raft §5.2).
pub async fn single_node_elects_itself<F: Factory>(factory: F) {
    let c = Cluster::start(factory, 1).await;
    let leader = c.wait_leader().await;
    assert_eq!(leader, 0);
    let e = c.engine(0);
    assert_eq!(e.state(), State::Leader);
    assert_eq!(e.leader().map(|l| l.id), Some("n1".to_owned()));
    c.shutdown().await;
}

/// `propose` returns the state machine's own response for this entry and the
/// index it committed at.
pub async fn propose_returns_response_and_commit_index<F: Factory>(factory: F) {
    let c = Cluster::start(factory, 1).await;
    let l = c.wait_leader().await;
    let e = c.engine(l);
    let first = e.propose(put("k", "v1")).await.expect("first put");
    assert_eq!(first.response.previous, None);
    assert_eq!(first.response.index, first.commit_index);
    let second = e.propose(put("k", "v2")).await.expect("second put");
    assert_eq!(second.response.previous, Some(b"v1".to_vec()));
    assert!(second.commit_index > first.commit_index);
    assert_eq!(c.nodes[l].kv.get(b"k"), Some(b"v2".to_vec()));
    c.shutdown().await;
}

/// `propose_admin` takes the same path as `propose` today.
pub async fn propose_admin_behaves_like_propose<F: Factory>(factory: F) {
    let c = Cluster::start(factory, 1).await;
    let l = c.wait_leader().await;
    let r = c
        .engine(l)
        .propose_admin(put("admin", "x"))
        .await
        .expect("admin put");
    assert_eq!(r.response.index, r.commit_index);
    assert!(r.response.valid);
    assert_eq!(c.nodes[l].kv.get(b"admin"), Some(b"x".to_vec()));
    c.shutdown().await;
}

/// Every replica of an `nodes`-node cluster applies the identical sequence
/// of entries, each once (Raft §5.3 State Machine Safety). Stamped for 1, 3
/// and 5 nodes.
pub async fn replicas_apply_the_identical_sequence<F: Factory>(factory: F, nodes: usize) {
    let c = Cluster::start(factory, nodes).await;
    let l = c.wait_leader().await;
    let mut last = 0;
    for i in 0..50 {
        last = c
            .engine(l)
            .propose(put(format!("k{}", i % 7), format!("v{i}")))
            .await
            .expect("put")
            .commit_index;
    }
    for i in 0..nodes {
        c.wait_applied(i, last).await;
    }
    let reference = c.nodes[l].kv.lock().applied.clone();
    assert_eq!(reference.len(), 50);
    let mut indexes: Vec<u64> = reference.iter().map(|(i, _)| *i).collect();
    indexes.dedup();
    assert_eq!(indexes.len(), 50, "an index was applied twice");
    for n in &c.nodes {
        let applied = n.kv.lock().applied.clone();
        assert_eq!(applied, reference, "{} applied a different sequence", n.id);
    }
    c.shutdown().await;
}

/// A follower refuses proposals with `NotLeader` and names the leader.
pub async fn follower_propose_is_not_leader_with_hint<F: Factory>(factory: F) {
    let c = Cluster::start(factory, 3).await;
    let l = c.wait_leader().await;
    let f = c.other_than(l);
    match c.engine(f).propose(put("a", "b")).await {
        Err(Error::NotLeader { leader: Some(hint) }) => {
            assert_eq!(hint.id, c.nodes[l].id);
            assert_eq!(hint.address, c.nodes[l].address);
        }
        other => panic!("expected NotLeader with a hint, got {other:?}"),
    }
    c.shutdown().await;
}

/// An oversized proposal is a typed error and nothing is appended.
pub async fn oversized_proposal_is_a_typed_error<F: Factory>(factory: F) {
    let c = Cluster::start(factory, 1).await;
    let l = c.wait_leader().await;
    let e = c.engine(l);
    let before = e.status().last_log_index;
    let huge = Bytes::from(vec![7u8; 64 * 1024 * 1024]);
    match e.propose(huge).await {
        Err(Error::ProposalTooLarge { size, max }) => assert!(size > max),
        other => panic!(
            "expected ProposalTooLarge, got {:?}",
            other.map(|r| r.commit_index)
        ),
    }
    assert_eq!(e.status().last_log_index, before);
    // The engine still works.
    e.propose(put("after", "ok"))
        .await
        .expect("put after refusal");
    c.shutdown().await;
}

/// Dropping a `propose` future cancels only the wait: the entry still
/// applies, later proposals are unaffected, and no waiter is left behind
/// (`Status::pending_proposals` returns to 0).
pub async fn dropped_propose_future_does_not_break_the_engine<F: Factory>(factory: F) {
    let c = Cluster::start(factory, 1).await;
    let l = c.wait_leader().await;
    let e = c.engine(l).clone();
    for i in 0..20 {
        let fut = e.propose(put(format!("dropped{i}"), "x"));
        drop(fut);
    }
    // Cancelled with the request possibly queued: poll once, then drop.
    for i in 0..20 {
        let e2 = e.clone();
        let h = tokio::spawn(async move { e2.propose(put(format!("aborted{i}"), "x")).await });
        h.abort();
    }
    let r = e
        .propose(put("final", "y"))
        .await
        .expect("put after cancellations");
    assert_eq!(r.response.previous, None);
    let kv = c.nodes[l].kv.clone();
    wait_for("the final write to be applied", || async {
        (kv.get(b"final") == Some(b"y".to_vec())).then_some(())
    })
    .await;
    // Every waiter, including those of the dropped futures, is released.
    wait_for("no proposal waiter left behind", || async {
        (e.status().pending_proposals == 0).then_some(())
    })
    .await;
    c.shutdown().await;
}

/// 10,000 proposals from 64 concurrent proposers on a 3-node cluster: every
/// proposal commits, and every replica applies the identical sequence with
/// no index applied twice and no acknowledged proposal missing (DESIGN §4 item 1,
/// Raft §5.3 log matching, state machine safety).
pub async fn many_proposers_apply_the_identical_sequence<F: Factory>(factory: F) {
    const PROPOSERS: usize = 64;
    const TOTAL: usize = 10_000;
    let c = Cluster::start(factory, 3).await;
    let l = c.wait_leader().await;
    let leader = c.engine(l).clone();
    let mut tasks = Vec::new();
    for p in 0..PROPOSERS {
        let e = leader.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for n in (p..TOTAL).step_by(PROPOSERS) {
                let r = e
                    .propose(put(format!("p{p}"), format!("{n}")))
                    .await
                    .unwrap_or_else(|err| panic!("proposal {n} failed: {err}"));
                acked.push((r.commit_index, n));
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.expect("proposer task"));
    }
    assert_eq!(acked.len(), TOTAL);
    let last = acked.iter().map(|(i, _)| *i).max().unwrap_or(0);
    for i in 0..3 {
        c.wait_applied(i, last).await;
    }
    let reference = c.nodes[l].kv.lock().applied.clone();
    assert_eq!(
        reference.len(),
        TOTAL,
        "the leader applied a different count"
    );
    let mut indexes: Vec<u64> = reference.iter().map(|(i, _)| *i).collect();
    indexes.sort_unstable();
    indexes.dedup();
    assert_eq!(indexes.len(), TOTAL, "an index was applied twice");
    let applied: std::collections::HashSet<u64> = indexes.into_iter().collect();
    for (index, n) in &acked {
        assert!(
            applied.contains(index),
            "acknowledged proposal {n} at {index} was not applied"
        );
    }
    for n in &c.nodes {
        let log = n.kv.lock().applied.clone();
        assert_eq!(log, reference, "{} applied a different sequence", n.id);
    }
    c.shutdown().await;
}

/// The application's `apply` runs on a thread that may block — never on a
/// thread that drives the async runtime (`StateMachine`'s contract; issue
/// #13, item 9: openraft ran it on a runtime worker). Checked on every node,
/// leader and followers, over writes from several proposers.
pub async fn apply_runs_off_the_async_runtime<F: Factory>(factory: F) {
    let c = Cluster::start(factory, 3).await;
    let l = c.wait_leader().await;
    let e = c.engine(l).clone();
    let mut tasks = Vec::new();
    for p in 0..4 {
        let e = e.clone();
        tasks.push(tokio::spawn(async move {
            let mut last = 0;
            for i in 0..50 {
                last = e
                    .propose(put(format!("off-{p}-{i}"), "v"))
                    .await
                    .expect("put")
                    .commit_index;
            }
            last
        }));
    }
    let mut last = 0;
    for t in tasks {
        last = last.max(t.await.expect("proposer task"));
    }
    for i in 0..c.nodes.len() {
        c.wait_applied(i, last).await;
        let s = c.nodes[i].kv.lock();
        assert!(
            s.applied.len() >= 200,
            "{} applied only {}",
            c.nodes[i].id,
            s.applied.len()
        );
        assert_eq!(
            s.applied_on_runtime_worker,
            0,
            "{}: {} of {} applies ran on an async runtime worker",
            c.nodes[i].id,
            s.applied_on_runtime_worker,
            s.applied.len()
        );
    }
    c.shutdown().await;
}
