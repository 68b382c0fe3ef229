//! Membership changes (DESIGN §4 item 4, Raft thesis §4).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use raftengine::{CatchUp, Error, Factory, State, Suffrage};

use crate::harness::{Cluster, wait_for};
use crate::kv::put;

/// A learner added to a running cluster catches up, refuses proposals and
/// reads, is listed as a learner, and after promotion is a voter.
pub async fn learner_catches_up_and_is_promoted<F: Factory>(factory: F) {
    let mut c = Cluster::start(factory, 3).await;
    let l = c.wait_leader().await;
    let mut last = 0;
    for i in 0..20 {
        last = c
            .engine(l)
            .propose(put(format!("k{i}"), "v"))
            .await
            .expect("put")
            .commit_index;
    }
    let (j, conf_index) = c.add_learner_node(l, "n4").await;
    let conf = c.engine(l).configuration().await.expect("configuration");
    assert_eq!(conf.index, conf_index);
    assert_eq!(
        conf.server("n4").map(|s| s.suffrage),
        Some(Suffrage::Learner)
    );
    c.wait_applied(j, last).await;
    let learner_log = c.nodes[j].kv.lock().applied.clone();
    let leader_log = c.nodes[l].kv.lock().applied.clone();
    assert_eq!(learner_log[..], leader_log[..learner_log.len()]);
    match c.engine(j).propose(put("no", "x")).await {
        Err(Error::NotLeader { .. }) => {}
        other => panic!(
            "learner propose: expected NotLeader, got {:?}",
            other.map(|r| r.commit_index)
        ),
    }
    match c.engine(j).linearizable_read().await {
        Err(Error::NotLeader { .. }) => {}
        other => panic!("learner read: expected NotLeader, got {other:?}"),
    }
    let e = c.engine(l).clone();
    let promoted = wait_for("the learner to be promotable", || async {
        match e
            .promote_learner(
                "n4",
                Some(conf_index),
                CatchUp::at_least(last).expect("nonzero"),
            )
            .await
        {
            Ok(i) => Some(i),
            Err(Error::FailedPrecondition { .. }) => None,
            Err(other) => panic!("promote failed: {other}"),
        }
    })
    .await;
    assert!(promoted > conf_index);
    let conf = c.engine(l).configuration().await.expect("configuration");
    assert_eq!(conf.server("n4").map(|s| s.suffrage), Some(Suffrage::Voter));
    assert_eq!(conf.index, promoted);
    c.shutdown().await;
}

/// Promotion is refused for a node that is not a learner, and a catch-up
/// requirement beyond the learner's log fails with `FailedPrecondition`.
pub async fn promote_preconditions_are_enforced<F: Factory>(factory: F) {
    let mut c = Cluster::start(factory, 3).await;
    // Right after the election the leader may still report its inherited
    // configuration as pending, and under load leadership may move: both
    // are retryable answers. The first definite answer must be the refusal.
    let (voter, refused) = wait_for("a definite answer to promoting a voter", || async {
        let l = c.wait_leader().await;
        let voter = c.nodes[c.other_than(l)].id.clone();
        match c
            .engine(l)
            .promote_learner(&voter, None, CatchUp::Unchecked)
            .await
        {
            Err(Error::ConfChangePending | Error::NotLeader { .. }) => None,
            other => Some((voter, other)),
        }
    })
    .await;
    assert!(
        matches!(refused, Err(Error::FailedPrecondition { .. })),
        "promoting voter {voter}: expected FailedPrecondition, got {refused:?}"
    );
    let l = c.wait_leader().await;
    assert!(matches!(
        CatchUp::at_least(0),
        Err(Error::FailedPrecondition { .. })
    ));
    let (_, idx) = c.add_learner_node(l, "n4").await;
    let far = c.engine(l).status().last_log_index + 1_000_000;
    match c
        .engine(l)
        .promote_learner("n4", Some(idx), CatchUp::at_least(far).expect("nonzero"))
        .await
    {
        Err(Error::FailedPrecondition { .. }) => {}
        other => {
            panic!("expected FailedPrecondition for an unreachable catch-up index, got {other:?}")
        }
    }
    c.shutdown().await;
}

/// A membership change conditional on a stale configuration index fails
/// with `ConfigIndexMismatch`.
pub async fn stale_prev_index_is_refused<F: Factory>(factory: F) {
    let mut c = Cluster::start(factory, 3).await;
    let l = c.wait_leader().await;
    let (_, idx) = c.add_learner_node(l, "n4").await;
    match c.engine(l).remove_server("n4", Some(idx + 1000)).await {
        Err(Error::ConfigIndexMismatch { expected, actual }) => {
            assert_eq!(expected, idx + 1000);
            assert_eq!(actual, idx);
        }
        other => panic!("expected ConfigIndexMismatch, got {other:?}"),
    }
    c.engine(l)
        .remove_server("n4", Some(idx))
        .await
        .expect("remove with the right index");
    let conf = c.engine(l).configuration().await.expect("configuration");
    assert!(conf.server("n4").is_none());
    c.shutdown().await;
}

/// Two membership changes at once: one goes through, the other gets
/// `ConfChangePending`, never a silent no-op.
pub async fn concurrent_membership_changes_are_fenced<F: Factory>(factory: F) {
    let mut c = Cluster::start(factory, 3).await;
    let l = c.wait_leader().await;
    let a = c.spawn_joiner("n4", true).await;
    let b = c.spawn_joiner("n5", true).await;
    let (addr_a, addr_b) = (c.nodes[a].address.clone(), c.nodes[b].address.clone());
    let e = c.engine(l).clone();
    let (ra, rb) = tokio::join!(
        e.add_learner("n4", &addr_a, None),
        e.add_learner("n5", &addr_b, None)
    );
    let oks = [ra.is_ok(), rb.is_ok()].iter().filter(|x| **x).count();
    assert!(oks >= 1, "neither change went through: {ra:?} {rb:?}");
    for r in [&ra, &rb] {
        if let Err(err) = r {
            assert!(
                matches!(err, Error::ConfChangePending),
                "unexpected error {err}"
            );
        }
    }
    let conf = e.configuration().await.expect("configuration");
    assert_eq!(conf.server("n4").is_some(), ra.is_ok());
    assert_eq!(conf.server("n5").is_some(), rb.is_ok());
    c.shutdown().await;
}

/// Transfer to a named voter succeeds only once it leads, and fires the
/// leadership callbacks on both sides.
pub async fn transfer_to_a_named_voter<F: Factory>(factory: F) {
    let c = Cluster::start(factory, 3).await;
    let l = c.wait_leader().await;
    c.engine(l).propose(put("t", "1")).await.expect("put");
    let t = c.other_than(l);
    let lost = Arc::new(AtomicUsize::new(0));
    let gained = Arc::new(AtomicUsize::new(0));
    let lo = lost.clone();
    let ga = gained.clone();
    let r1 = c.engine(l).register_leader_loss_callback(Arc::new(move || {
        lo.fetch_add(1, Ordering::SeqCst);
    }));
    let r2 = c
        .engine(t)
        .register_leader_acquired_callback(Arc::new(move || {
            ga.fetch_add(1, Ordering::SeqCst);
        }));
    let target = c.nodes[t].id.clone();
    c.engine(l)
        .transfer_leadership(raftengine::TransferTarget::Server(target))
        .await
        .expect("transfer");
    assert_eq!(
        c.engine(t).state(),
        State::Leader,
        "transfer reported success before the target led"
    );
    wait_for("leadership callbacks to fire", || async {
        (lost.load(Ordering::SeqCst) >= 1 && gained.load(Ordering::SeqCst) >= 1).then_some(())
    })
    .await;
    r1.deregister();
    r2.deregister();
    c.engine(t)
        .propose(put("t", "2"))
        .await
        .expect("new leader accepts writes");
    c.shutdown().await;
}

/// Transfers to the leader itself, to an unknown node and to a learner are
/// refused with `FailedPrecondition`.
pub async fn invalid_transfer_targets_are_refused<F: Factory>(factory: F) {
    let mut c = Cluster::start(factory, 3).await;
    let l = c.wait_leader().await;
    let me = c.nodes[l].id.clone();
    let e = c.engine(l).clone();
    for target in [me, "nobody".to_owned()] {
        match e
            .transfer_leadership(raftengine::TransferTarget::Server(target.clone()))
            .await
        {
            Err(Error::FailedPrecondition { .. }) => {}
            other => panic!("transfer to {target}: expected FailedPrecondition, got {other:?}"),
        }
    }
    c.add_learner_node(l, "n4").await;
    match e
        .transfer_leadership(raftengine::TransferTarget::Server("n4".into()))
        .await
    {
        Err(Error::FailedPrecondition { .. }) => {}
        other => panic!("transfer to a learner: expected FailedPrecondition, got {other:?}"),
    }
    assert_eq!(e.state(), State::Leader);
    c.shutdown().await;
}

/// Removing the current leader: the call answers `Ok(index)` once the
/// removal committed, the removed node stops with `Removed`, it leaves the
/// configuration, a remaining voter leads, and writes continue.
pub async fn removing_the_leader_hands_over<F: Factory>(factory: F) {
    let c = Cluster::start(factory, 3).await;
    let l = c.wait_leader().await;
    c.engine(l).propose(put("before", "1")).await.expect("put");
    let removed = c.nodes[l].id.clone();
    let old_leader = c.engine(l);
    // One answer on every engine (issue #13, item 8): the removal commits
    // and the call says so; the caller does not chase a hint.
    match c.engine(l).remove_server(&removed, None).await {
        Ok(_) => {}
        Err(other) => panic!("removing the leader: expected Ok(index), got {other:?}"),
    }
    let others: Vec<usize> = (0..3).filter(|i| *i != l).collect();
    let new = c.wait_leader_among(&others).await;
    let e = c.engine(new).clone();
    let r = removed.clone();
    wait_for("the removed leader to leave the configuration", || async {
        let conf = e.configuration().await.ok()?;
        (conf.server(&r).is_none() && conf.servers.len() == 2).then_some(())
    })
    .await;
    let e = c.engine(new).clone();
    wait_for("a write on the remaining voters", || async {
        e.propose(put("after", "1")).await.ok()
    })
    .await;
    let reason = tokio::time::timeout(crate::harness::WAIT, old_leader.stopped())
        .await
        .expect("the removed former leader kept running");
    assert_eq!(reason, raftengine::StopReason::Removed);
    c.shutdown().await;
}

/// `add_voter` adds a new node as a voter; it replicates the whole log
/// (DESIGN §4 item 4, Raft §6).
pub async fn add_voter_replicates<F: Factory>(factory: F) {
    let mut c = Cluster::start(factory, 3).await;
    let l = c.wait_leader().await;
    let mut last = 0;
    for i in 0..20 {
        last = c
            .engine(l)
            .propose(put(format!("av{i}"), "v"))
            .await
            .expect("put")
            .commit_index;
    }
    let j = c.spawn_joiner("n4", false).await;
    let address = c.nodes[j].address.clone();
    let index = c
        .engine(l)
        .add_voter("n4", &address, None)
        .await
        .expect("add voter");
    let conf = c.engine(l).configuration().await.expect("configuration");
    assert_eq!(conf.server("n4").map(|s| s.suffrage), Some(Suffrage::Voter));
    assert_eq!(
        conf.index, index,
        "the configuration is the one add_voter committed"
    );
    c.wait_applied(j, last).await;
    let w = c.engine(l).propose(put("after", "1")).await.expect("put");
    c.wait_applied(j, w.commit_index).await;
    assert_eq!(c.nodes[j].kv.get(b"after"), Some(b"1".to_vec()));
    c.shutdown().await;
}

/// Learners do not count toward the quorum: one voter plus a stopped learner
/// still commits (DESIGN §4 item 4).
pub async fn a_stopped_learner_does_not_block_commits<F: Factory>(factory: F) {
    let mut c = Cluster::start(factory, 1).await;
    let l = c.wait_leader().await;
    c.engine(l).propose(put("a", "1")).await.expect("put");
    let (j, _) = c.add_learner_node(l, "n2").await;
    c.stop(j).await;
    for i in 0..5 {
        c.engine(l)
            .propose(put(format!("b{i}"), "1"))
            .await
            .expect("a lone voter commits while its learner is down");
    }
    let e = c.engine(l);
    wait_for("the lone voter's lease", || async { e.check_lease().ok() }).await;
    c.shutdown().await;
}

/// A learner is still a learner after the whole cluster restarts
/// (DESIGN §4 item 4: suffrage is persisted).
pub async fn learner_suffrage_survives_restart<F: Factory>(factory: F) {
    let mut c = Cluster::start(factory, 3).await;
    let l = c.wait_leader().await;
    c.add_learner_node(l, "n4").await;
    for i in 0..3 {
        c.restart(i).await.expect("restart");
    }
    let l = c.wait_leader_among(&[0, 1, 2]).await;
    let e = c.engine(l);
    let conf = wait_for("the configuration after restart", || async {
        e.configuration()
            .await
            .ok()
            .filter(|c| c.server("n4").is_some())
    })
    .await;
    assert_eq!(
        conf.server("n4").map(|s| s.suffrage),
        Some(Suffrage::Learner)
    );
    assert_eq!(conf.voters().count(), 3);
    c.shutdown().await;
}

/// Transfer to "any" voter hands leadership to another voter and reports
/// success only once it leads (DESIGN §4 item 5).
pub async fn transfer_to_any_voter<F: Factory>(factory: F) {
    let c = Cluster::start(factory, 3).await;
    let l = c.wait_leader().await;
    c.engine(l).propose(put("t", "1")).await.expect("put");
    c.engine(l)
        .transfer_leadership(raftengine::TransferTarget::Any)
        .await
        .expect("transfer to any");
    let others: Vec<usize> = (0..3).filter(|i| *i != l).collect();
    let n = c.wait_leader_among(&others).await;
    let e = c.engine(n);
    wait_for("a write on the new leader", || async {
        e.propose(put("t", "2")).await.ok()
    })
    .await;
    c.shutdown().await;
}

/// The join-as-learner alarm: a node started with `join_as_learner` and
/// added as a voter raises `Status::join_role_violation` and keeps working
/// (and keeps it across a restart); one added as a learner does not, nor
/// after it is promoted, nor after a restart as a promoted voter.
pub async fn join_as_learner_alarm_fires_when_added_as_voter<F: Factory>(factory: F) {
    let mut c = Cluster::start(factory, 1).await;
    let l = c.wait_leader().await;
    let (ok, _) = c.add_learner_node(l, "n2").await;
    let bad = c.spawn_joiner("n3", true).await;
    let address = c.nodes[bad].address.clone();
    c.engine(l)
        .add_voter("n3", &address, None)
        .await
        .expect("add voter");
    wait_for("the join-as-learner alarm on n3", || async {
        c.engine(bad).status().join_role_violation.then_some(())
    })
    .await;
    assert!(
        !c.engine(ok).status().join_role_violation,
        "a node added as a learner raised the alarm"
    );
    assert!(!c.engine(l).status().join_role_violation);
    // The alarm does not stop the node: it takes part in commits.
    let w = c.engine(l).propose(put("alarm", "1")).await.expect("put");
    c.wait_applied(bad, w.commit_index).await;
    c.restart(bad).await.expect("restart");
    wait_for("the alarm after a restart", || async {
        c.engine(bad).status().join_role_violation.then_some(())
    })
    .await;

    // The documented sequence — join as learner, get added as one, get
    // promoted — is no alarm, before or after a restart (issue #13, item 3).
    let e = c.engine(l).clone();
    let caught_up = w.commit_index;
    wait_for("the promotion of learner n2", || async {
        match e
            .promote_learner("n2", None, CatchUp::at_least(caught_up).expect("nonzero"))
            .await
        {
            Ok(i) => Some(i),
            Err(Error::FailedPrecondition { .. } | Error::ConfChangePending) => None,
            Err(other) => panic!("promote n2: {other}"),
        }
    })
    .await;
    let w = c
        .engine(l)
        .propose(put("promoted", "1"))
        .await
        .expect("put");
    c.wait_applied(ok, w.commit_index).await;
    assert!(
        !c.engine(ok).status().join_role_violation,
        "a learner promoted the documented way raised the alarm"
    );
    c.restart(ok).await.expect("restart n2");
    c.wait_applied(ok, w.commit_index).await;
    let w = c.engine(l).propose(put("after", "1")).await.expect("put");
    c.wait_applied(ok, w.commit_index).await;
    assert!(
        !c.engine(ok).status().join_role_violation,
        "the promoted learner raised the alarm after a restart"
    );
    c.shutdown().await;
}

/// `remove_server` of a follower (cut off while it is removed) and of a
/// learner: the configuration drops them, each removed node stops itself
/// (`StopReason::Removed`, state `Shutdown`) although raft stops
/// replicating to it once the removal commits, and the rest keeps
/// committing. Restarted on their data dirs, both stop again with
/// `Removed`.
pub async fn removed_nodes_stop<F: Factory>(factory: F) {
    use raftengine::StopReason;
    let mut c = Cluster::start(factory, 3).await;
    let l = c.wait_leader().await;
    let (learner, _) = c.add_learner_node(l, "n4").await;
    let w = c.engine(l).propose(put("rm", "1")).await.expect("put");
    c.wait_applied(learner, w.commit_index).await;
    let f = c.other_than(l);
    for victim in [f, learner] {
        let id = c.nodes[victim].id.clone();
        let e = c.engine(victim);
        // The follower is cut off while it is removed, so it cannot learn
        // of its removal from the log; only the leader's notice (retried
        // after the heal) can tell it.
        if victim == f {
            c.isolate(f);
        }
        let index = c
            .engine(l)
            .remove_server(&id, None)
            .await
            .unwrap_or_else(|err| panic!("remove {id}: {err}"));
        c.heal();
        let conf = c.engine(l).configuration().await.expect("configuration");
        assert!(conf.server(&id).is_none(), "{id} still listed");
        assert!(conf.index >= index);
        let reason = tokio::time::timeout(crate::harness::WAIT, e.stopped())
            .await
            .unwrap_or_else(|_| panic!("removed node {id} kept running"));
        assert_eq!(
            reason,
            StopReason::Removed,
            "{id} stopped for another reason"
        );
        assert_eq!(e.status().state, State::Shutdown);
        assert!(matches!(
            e.propose(put("zombie", "1")).await,
            Err(Error::Shutdown)
        ));
    }
    let w = c
        .engine(l)
        .propose(put("rm", "2"))
        .await
        .expect("a write with the two remaining voters");
    let other = (0..3).find(|i| *i != l && *i != f).expect("third voter");
    c.wait_applied(other, w.commit_index).await;
    // Restarted on its data dir, a removed node stops again at once with
    // `Removed` — the follower that learned of it only from the notice
    // too (issue #13, item 4: openraft stayed up idle as a learner).
    for victim in [f, learner] {
        let id = c.nodes[victim].id.clone();
        c.restart(victim)
            .await
            .unwrap_or_else(|err| panic!("restart removed {id}: {err}"));
        let e = c.engine(victim);
        let reason = tokio::time::timeout(crate::harness::WAIT, e.stopped())
            .await
            .unwrap_or_else(|_| panic!("removed node {id}, restarted, kept running"));
        assert_eq!(
            reason,
            StopReason::Removed,
            "restarted {id} stopped for another reason"
        );
        assert_eq!(e.state(), State::Shutdown);
    }
    c.shutdown().await;
}

/// A membership change the engine has answered is visible to the very next
/// admin call: `pending_conf_change` is false, the configuration is at the
/// returned index, and a change conditioned on that index is not refused
/// with `ConfChangePending` or `ConfigIndexMismatch` (DESIGN §4 item 4; a flake
/// of issue #13: openraft's metrics could lag a change it had reported
/// committed).
pub async fn an_answered_change_is_visible_to_the_next_call<F: Factory>(factory: F) {
    let mut c = Cluster::start(factory, 3).await;
    for k in 0..5 {
        // Removed learners stop themselves: the voters are 0..3.
        let l = c.wait_leader_among(&[0, 1, 2]).await;
        let id = format!("l{k}");
        let (_, index) = c.add_learner_node(l, &id).await;
        let e = c.engine(l);
        let status = e.status();
        if status.state != State::Leader {
            continue; // leadership moved meanwhile: nothing to check
        }
        assert!(
            !status.pending_conf_change && status.configuration_index >= index,
            "right after add_learner({id}) answered {index}: pending_conf_change {}, \
             configuration index {}",
            status.pending_conf_change,
            status.configuration_index
        );
        match e.remove_server(&id, Some(index)).await {
            Ok(next) => assert!(next > index),
            Err(Error::NotLeader { .. } | Error::LeadershipLost) => {}
            Err(other) => {
                panic!("removing {id} right after its addition answered index {index}: {other}")
            }
        }
    }
    c.shutdown().await;
}

/// What an admin call names is checked before anything is proposed, and
/// re-adding a member as what it already is changes nothing (issue #13,
/// items 1, 6): a retry after `OutcomeUnknown` is safe.
///
/// 1. `add_learner` / `add_voter` with an empty id or an address that is
///    not `host:port` → `InvalidConfig`, configuration unchanged.
/// 2. `add_voter` of a voter, `add_learner` of a learner, at the address it
///    has → `Ok(current configuration index)`, nothing proposed.
/// 3. The same at another address → `FailedPrecondition`.
/// 4. `add_learner` of a voter → `FailedPrecondition` (no silent demotion).
/// 5. An id whose numeric id collides with a member's → `InvalidConfig`.
pub async fn re_adding_a_member_changes_nothing<F: Factory>(factory: F) {
    let mut c = Cluster::start(factory, 3).await;
    let l = c.wait_leader().await;
    let (j, learner_index) = c.add_learner_node(l, "n4").await;
    let learner_address = c.nodes[j].address.clone();
    let e = c.engine(l).clone();
    let index = || async { e.configuration().await.expect("configuration").index };
    let before = index().await;
    assert_eq!(before, learner_index);

    // 1.
    for (id, address) in [
        ("", ""),
        ("", "127.0.0.1:7009"),
        ("n9", ""),
        ("n9", "garbage"),
        ("n9", "127.0.0.1"),
        ("n9", "127.0.0.1:99999"),
    ] {
        for as_voter in [false, true] {
            let got = if as_voter {
                e.add_voter(id, address, None).await
            } else {
                e.add_learner(id, address, None).await
            };
            assert!(
                matches!(got, Err(Error::InvalidConfig(_))),
                "adding {id:?} at {address:?} (voter: {as_voter}): expected InvalidConfig, got {got:?}"
            );
        }
    }
    assert_eq!(
        index().await,
        before,
        "a refused call changed the configuration"
    );

    // 2.
    let voter = c.other_than(l);
    let (voter_id, voter_address) = (c.nodes[voter].id.clone(), c.nodes[voter].address.clone());
    let again = e.add_voter(&voter_id, &voter_address, None).await;
    assert_eq!(again.ok(), Some(before), "re-adding voter {voter_id}");
    let again = e.add_learner("n4", &learner_address, None).await;
    assert_eq!(again.ok(), Some(before), "re-adding learner n4");
    assert_eq!(
        index().await,
        before,
        "a no-op re-add changed the configuration"
    );

    // 3.
    let moved = e.add_voter(&voter_id, "127.0.0.1:7009", None).await;
    assert!(
        matches!(moved, Err(Error::FailedPrecondition { .. })),
        "re-adding voter {voter_id} at another address: {moved:?}"
    );
    let moved = e.add_learner("n4", "127.0.0.1:7009", None).await;
    assert!(
        matches!(moved, Err(Error::FailedPrecondition { .. })),
        "re-adding learner n4 at another address: {moved:?}"
    );

    // 4.
    let demoted = e.add_learner(&voter_id, &voter_address, None).await;
    assert!(
        matches!(demoted, Err(Error::FailedPrecondition { .. })),
        "add_learner of voter {voter_id}: {demoted:?}"
    );
    assert_eq!(index().await, before);

    // 5. An id that raftengine's numeric mapping merges with a member's is
    //    `InvalidConfig` on every engine (issue #13, item 7), so a cluster's
    //    ids stay valid whichever engine runs it.
    let (first, second) = COLLIDING_IDS;
    assert_eq!(
        raftengine::numeric_id(first),
        raftengine::numeric_id(second),
        "the pinned pair no longer collides"
    );
    let (_, with_first) = c.add_learner_node(l, first).await;
    let e = c.engine(l).clone();
    for as_voter in [false, true] {
        let got = if as_voter {
            e.add_voter(second, "127.0.0.1:7010", None).await
        } else {
            e.add_learner(second, "127.0.0.1:7010", None).await
        };
        assert!(
            matches!(got, Err(Error::InvalidConfig(_))),
            "adding {second} beside {first} (voter: {as_voter}): expected InvalidConfig, got {got:?}"
        );
    }
    let conf = e.configuration().await.expect("configuration");
    assert_eq!(
        conf.index, with_first,
        "a refused id changed the configuration"
    );
    c.shutdown().await;
}

/// Two node ids with the same FNV-1a 64 hash
/// ([`raftengine::numeric_id`]), found by a distinguished-point
/// collision search; both are valid ids on their own.
pub const COLLIDING_IDS: (&str, &str) = ("n-e3aa66b1beb61d74", "n-d6d8a48942f97c9d");

/// A node removed while cut off from the leader alone never gets the
/// leader's notice; the members it still reaches refuse its calls as
/// removed (etcd's 410), and once a majority of the voters it knows have,
/// it stops with `Removed` (issue #15, item 2). Five voters: the victim
/// keeps links to the three other followers, a majority of the five it
/// knows, while the leader's link stays cut to the end.
pub async fn a_removed_node_the_leader_cannot_reach_stops_on_its_peers_refusals<F: Factory>(
    factory: F,
) {
    use raftengine::StopReason;
    let c = Cluster::start(factory, 5).await;
    let l = c.wait_leader().await;
    let victim = c.other_than(l);
    let id = c.nodes[victim].id.clone();
    let e = c.engine(victim);
    crate::harness::step(format_args!("cut {id} off from the leader only"));
    c.net.isolate(victim, [l]);
    let leader = c.engine(l);
    let index = wait_for(&format!("the leader to remove {id}"), || {
        let (leader, id) = (leader.clone(), id.clone());
        async move {
            match leader.remove_server(&id, None).await {
                Ok(index) => Some(index),
                // The founding configuration may still be settling.
                Err(Error::ConfChangePending) => None,
                Err(err) => panic!("remove {id}: {err}"),
            }
        }
    })
    .await;
    let reason = tokio::time::timeout(crate::harness::WAIT, e.stopped())
        .await
        .unwrap_or_else(|_| panic!("removed node {id}, refused by its peers, kept running"));
    assert_eq!(
        reason,
        StopReason::Removed,
        "{id} stopped for another reason"
    );
    let w = c
        .engine(l)
        .propose(put("after-refusals", "1"))
        .await
        .expect("a write with the four remaining voters");
    assert!(w.commit_index > index);
    for i in (0..5).filter(|i| *i != victim) {
        c.wait_applied(i, w.commit_index).await;
    }
    c.heal();
    c.shutdown().await;
}
