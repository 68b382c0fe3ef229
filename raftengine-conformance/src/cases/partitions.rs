//! Partitions over real sockets (Raft §5.2, §9.6 pre-vote, DESIGN §4 item 3).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use raftengine::{Error, Factory, State};

use crate::faults::Link;
use crate::harness::{Cluster, wait_for};
use crate::kv::put;

/// An isolated leader: the majority elects a new leader; the old one steps
/// down, fails its pending proposal with a typed error, refuses reads and
/// has no lease; after healing every replica applies the same sequence and
/// the old leader's uncommitted entry is gone. Stamped for 3 and 5 nodes.
pub async fn isolated_leader_is_replaced_and_converges<F: Factory>(factory: F, nodes: usize) {
    let c = Cluster::start(factory, nodes).await;
    let old = c.wait_leader().await;
    c.engine(old)
        .propose(put("k", "before"))
        .await
        .expect("put before");
    c.isolate(old);
    let stale = c.engine(old).clone();
    let pending = tokio::spawn(async move { stale.propose(put("lost", "x")).await });
    let majority: Vec<usize> = (0..nodes).filter(|i| *i != old).collect();
    let new = c.wait_leader_among(&majority).await;
    // A newer leader exists: the old one must not hold a lease any more.
    assert!(
        c.engine(old).check_lease().is_err(),
        "the isolated old leader still passes the lease check after a new leader was elected"
    );
    let w = c
        .engine(new)
        .propose(put("k", "after"))
        .await
        .expect("put on the new leader");
    if let Ok(idx) = c.engine(old).linearizable_read().await {
        panic!("isolated old leader served a read at index {idx}");
    }
    assert!(c.engine(old).verify_leader().await.is_err());
    let e_old = c.engine(old).clone();
    wait_for("the isolated leader to step down", || async {
        (e_old.state() != State::Leader).then_some(())
    })
    .await;
    match tokio::time::timeout(crate::harness::WAIT, pending).await {
        Ok(Ok(Ok(r))) => panic!(
            "a proposal on the isolated leader committed at {}",
            r.commit_index
        ),
        Ok(Ok(Err(
            Error::OutcomeUnknown { .. } | Error::NotLeader { .. } | Error::LeadershipLost,
        ))) => {}
        Ok(Ok(Err(other))) => panic!("unexpected error for the stranded proposal: {other}"),
        Ok(Err(join)) => panic!("proposal task failed: {join}"),
        Err(_) => panic!("the stranded proposal never resolved"),
    }
    c.heal();
    for i in 0..nodes {
        c.wait_applied(i, w.commit_index).await;
    }
    let reference = c.nodes[new].kv.lock().applied.clone();
    for n in &c.nodes {
        let log = n.kv.lock().applied.clone();
        assert_eq!(log[..], reference[..log.len()], "{} diverged", n.id);
        assert_eq!(
            n.kv.get(b"lost"),
            None,
            "{} applied an uncommitted entry",
            n.id
        );
    }
    c.shutdown().await;
}

/// A follower cut off for several election timeouts rejoins without
/// disturbing the leader: pre-vote keeps the term (Raft thesis §9.6).
pub async fn rejoining_node_does_not_disrupt_the_leader<F: Factory>(factory: F) {
    let c = Cluster::start(factory, 3).await;
    let l = c.wait_leader().await;
    c.engine(l).propose(put("a", "1")).await.expect("put");
    let term = c.engine(l).status().term;
    let f = c.other_than(l);
    c.isolate(f);
    let fe = c.engine(f).clone();
    wait_for("the isolated follower to start campaigning", || async {
        (fe.state() == State::Candidate).then_some(())
    })
    .await;
    c.heal();
    let leader_id = c.nodes[l].id.clone();
    wait_for("the follower to rejoin the leader", || async {
        (fe.leader().is_some_and(|x| x.id == leader_id) && fe.state() == State::Follower)
            .then_some(())
    })
    .await;
    let w = c
        .engine(l)
        .propose(put("a", "2"))
        .await
        .expect("put after rejoin");
    assert_eq!(c.engine(l).state(), State::Leader);
    assert_eq!(
        c.engine(l).status().term,
        term,
        "the rejoining node forced a new term"
    );
    c.wait_applied(f, w.commit_index).await;
    c.shutdown().await;
}

/// Writes keep landing while links flap; every acknowledged write survives
/// and replicas converge.
pub async fn progress_continues_under_flapping_links<F: Factory>(factory: F) {
    let c = Cluster::start(factory, 3).await;
    c.wait_leader().await;
    let stop = Arc::new(AtomicBool::new(false));
    let net = c.net.clone();
    let flapper = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut k = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let (a, b) = (k % 3, (k + 1) % 3);
                net.set(
                    a,
                    b,
                    if k % 2 == 0 {
                        Link::Cut
                    } else {
                        Link::Blackhole
                    },
                );
                tokio::time::sleep(Duration::from_millis(150)).await;
                net.heal_all();
                tokio::time::sleep(Duration::from_millis(150)).await;
                k += 1;
            }
        })
    };
    let mut acked = Vec::new();
    for i in 0..40 {
        let key = format!("f{i}");
        let r = wait_for(&format!("write {key} to be acknowledged"), || async {
            for n in 0..3 {
                let e = c.engine(n);
                if e.state() != State::Leader {
                    continue;
                }
                if let Ok(Ok(r)) =
                    tokio::time::timeout(Duration::from_secs(2), e.propose(put(&key, "v"))).await
                {
                    return Some(r);
                }
            }
            None
        })
        .await;
        acked.push((key, r.commit_index));
    }
    stop.store(true, Ordering::SeqCst);
    let _ = flapper.await;
    c.heal();
    let last = acked.iter().map(|(_, i)| *i).max().unwrap_or(0);
    for i in 0..3 {
        c.wait_applied(i, last).await;
    }
    for n in &c.nodes {
        for (key, _) in &acked {
            assert_eq!(
                n.kv.get(key.as_bytes()),
                Some(b"v".to_vec()),
                "{} lost {key}",
                n.id
            );
        }
    }
    let reference = c.nodes[0].kv.lock().applied.clone();
    for n in &c.nodes {
        let log = n.kv.lock().applied.clone();
        let common = log.len().min(reference.len());
        assert_eq!(log[..common], reference[..common], "{} diverged", n.id);
    }
    c.shutdown().await;
}

/// Leadership callbacks fire on the exact edges of a partition: the isolated
/// leader's loss callback, and the new leader's acquired callback.
pub async fn leadership_callbacks_fire_on_isolation<F: Factory>(factory: F) {
    use std::sync::atomic::AtomicUsize;
    let c = Cluster::start(factory, 3).await;
    let old = c.wait_leader().await;
    c.engine(old).propose(put("cb", "1")).await.expect("put");
    let lost = Arc::new(AtomicUsize::new(0));
    let gained = Arc::new(AtomicUsize::new(0));
    let l2 = lost.clone();
    let loss = c
        .engine(old)
        .register_leader_loss_callback(Arc::new(move || {
            l2.fetch_add(1, Ordering::SeqCst);
        }));
    let mut acquired = Vec::new();
    for i in (0..3).filter(|i| *i != old) {
        let g = gained.clone();
        acquired.push(
            c.engine(i)
                .register_leader_acquired_callback(Arc::new(move || {
                    g.fetch_add(1, Ordering::SeqCst);
                })),
        );
    }
    c.isolate(old);
    let majority: Vec<usize> = (0..3).filter(|i| *i != old).collect();
    c.wait_leader_among(&majority).await;
    wait_for(
        "the old leader's loss callback and the new leader's acquired callback",
        || async {
            (lost.load(Ordering::SeqCst) >= 1 && gained.load(Ordering::SeqCst) >= 1).then_some(())
        },
    )
    .await;
    // The old leader stepped down once: one loss edge.
    assert_eq!(
        lost.load(Ordering::SeqCst),
        1,
        "loss callback fired more than once"
    );
    loss.deregister();
    for r in acquired {
        r.deregister();
    }
    c.heal();
    c.shutdown().await;
}

/// A transfer to a voter that cannot be reached is reported as aborted
/// within a bounded time instead of hanging, and the leader keeps serving.
pub async fn transfer_to_an_isolated_target_is_aborted<F: Factory>(factory: F) {
    let c = Cluster::start(factory, 3).await;
    let l = c.wait_leader().await;
    c.engine(l).propose(put("t", "1")).await.expect("put");
    let f = c.other_than(l);
    c.isolate(f);
    let target = c.nodes[f].id.clone();
    let outcome = tokio::time::timeout(
        crate::harness::WAIT,
        c.engine(l)
            .transfer_leadership(raftengine::TransferTarget::Server(target)),
    )
    .await
    .expect("transfer to an isolated target hung");
    match outcome {
        Err(Error::TransferAborted { .. } | Error::NotLeader { .. } | Error::LeadershipLost) => {}
        Ok(()) => panic!("transfer to an isolated node reported success"),
        Err(other) => panic!("unexpected transfer error: {other}"),
    }
    // Some node (most likely the same leader) keeps accepting writes.
    let majority: Vec<usize> = (0..3).filter(|i| *i != f).collect();
    let leader = c.wait_leader_among(&majority).await;
    c.engine(leader)
        .propose(put("t", "2"))
        .await
        .expect("put after aborted transfer");
    c.heal();
    c.shutdown().await;
}

/// A linearizable read issued right after a new leader is elected completes
/// (the engine must not silently drop it before the leader commits in its
/// term).
pub async fn read_right_after_an_election_completes<F: Factory>(factory: F) {
    let c = Cluster::start(factory, 3).await;
    let old = c.wait_leader().await;
    c.engine(old).propose(put("r", "1")).await.expect("put");
    c.stop(old).await;
    let e = wait_for("a new leader", || async {
        (0..3)
            .filter(|i| *i != old)
            .find(|i| c.engine(*i).state() == State::Leader)
            .map(|i| c.engine(i).clone())
    })
    .await;
    let idx = tokio::time::timeout(crate::harness::WAIT, e.linearizable_read())
        .await
        .expect("read right after the election hung")
        .expect("read right after the election failed");
    assert!(idx >= 1);
    c.shutdown().await;
}

/// A follower behind a slow link (every byte delayed, nothing lost) does not
/// hold back commits: the leader commits with the other follower, and the
/// slow one catches up with the identical sequence once the link is fast.
pub async fn a_slow_follower_does_not_stall_commits<F: Factory>(factory: F) {
    let c = Cluster::start(factory, 3).await;
    let l = c.wait_leader().await;
    let f = c.other_than(l);
    c.net.slow(f, 0..3, Duration::from_millis(300));
    let mut last = 0;
    for i in 0..30 {
        last = c
            .engine(l)
            .propose(put(format!("slow{i}"), "v"))
            .await
            .expect("a write while one follower is slow")
            .commit_index;
    }
    c.heal();
    c.wait_applied(f, last).await;
    let reference = c.nodes[l].kv.lock().applied.clone();
    let log = c.nodes[f].kv.lock().applied.clone();
    assert_eq!(
        log[..],
        reference[..log.len()],
        "the slow follower diverged"
    );
    c.shutdown().await;
}

/// Transfer to a reachable voter that lags behind a slow link: the call
/// resolves (the target leads, or the transfer is reported aborted), never
/// hangs, and the cluster keeps accepting writes afterwards.
pub async fn transfer_to_a_lagging_target_resolves<F: Factory>(factory: F) {
    let c = Cluster::start(factory, 3).await;
    let l = c.wait_leader().await;
    let t = c.other_than(l);
    c.net.slow(t, 0..3, Duration::from_millis(300));
    for i in 0..10 {
        c.engine(l)
            .propose(put(format!("lag{i}"), "v"))
            .await
            .expect("write while the target lags");
    }
    let target = c.nodes[t].id.clone();
    let leader = c.engine(l);
    let transfer = leader.transfer_leadership(raftengine::TransferTarget::Server(target));
    match tokio::time::timeout(crate::harness::WAIT, transfer).await {
        Ok(Ok(())) => assert_eq!(
            c.engine(t).state(),
            State::Leader,
            "transfer reported success before the target led"
        ),
        Ok(Err(
            Error::TransferAborted { .. } | Error::NotLeader { .. } | Error::LeadershipLost,
        )) => {}
        Ok(Err(other)) => panic!("unexpected transfer error: {other}"),
        Err(_) => panic!("the transfer to a lagging target never resolved"),
    }
    c.heal();
    let n = c.wait_leader().await;
    let e = c.engine(n).clone();
    wait_for("a write after the transfer attempt", || async {
        e.propose(put("after", "1")).await.ok()
    })
    .await;
    c.shutdown().await;
}
