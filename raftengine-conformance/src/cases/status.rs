//! Status, configuration and health readers.

use raftengine::{Error, Factory, State, Suffrage};

use crate::harness::{Cluster, wait_for};
use crate::kv::put;

/// The leader's status names itself, its term and indexes; followers track
/// the leader and its contact time.
pub async fn status_reports_leader_and_follower_fields<F: Factory>(factory: F) {
    let c = Cluster::start(factory, 3).await;
    let l = c.wait_leader().await;
    let r = c.engine(l).propose(put("s", "1")).await.expect("put");
    let st = c.engine(l).status();
    assert_eq!(st.state, State::Leader);
    assert_eq!(
        st.leader.as_ref().map(|x| x.id.as_str()),
        Some(c.nodes[l].id.as_str())
    );
    assert!(st.term >= 1);
    assert!(st.commit_index >= r.commit_index);
    assert!(st.applied_index >= r.commit_index);
    assert!(st.last_log_index >= r.commit_index);
    assert_eq!(st.num_peers, 2);
    assert_eq!(st.last_contact, Some(std::time::Duration::ZERO));
    let f = c.other_than(l);
    let fe = c.engine(f).clone();
    let leader_id = c.nodes[l].id.clone();
    wait_for("the follower to report leader contact", || async {
        let s = fe.status();
        (s.state == State::Follower
            && s.leader.as_ref().is_some_and(|x| x.id == leader_id)
            && s.last_contact.is_some())
        .then_some(())
    })
    .await;
    c.shutdown().await;
}

/// The configuration lists every voter with its address, sorted by id.
pub async fn configuration_lists_voters_with_addresses<F: Factory>(factory: F) {
    let c = Cluster::start(factory, 3).await;
    let l = c.wait_leader().await;
    let conf = c.engine(l).configuration().await.expect("configuration");
    assert_eq!(conf.servers.len(), 3);
    let ids: Vec<&str> = conf.servers.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        ids,
        ["n1", "n2", "n3"],
        "Configuration::servers must be sorted by id"
    );
    for n in &c.nodes {
        let s = conf
            .server(&n.id)
            .unwrap_or_else(|| panic!("{} missing from {conf:?}", n.id));
        assert_eq!(s.suffrage, Suffrage::Voter);
        assert_eq!(s.address, n.address);
    }
    c.shutdown().await;
}

/// `check_serving` succeeds on the leader only.
pub async fn check_serving_only_on_the_leader<F: Factory>(factory: F) {
    let c = Cluster::start(factory, 3).await;
    let l = c.wait_leader().await;
    c.engine(l).check_serving().await.expect("leader serves");
    let f = c.other_than(l);
    match c.engine(f).check_serving().await {
        Err(Error::NotLeader { .. }) => {}
        other => panic!("follower check_serving: expected NotLeader, got {other:?}"),
    }
    c.shutdown().await;
}

/// What a node reports before the first election and before it is added
/// (issue #13, item 5):
///
/// 1. A bootstrap voter reports `Follower`, `Candidate` or `Leader` from the
///    moment `create` returns — never `Learner` or `Unknown`.
/// 2. Before any membership change every node reports configuration index
///    0 (the bootstrap configuration, `Configuration::index`).
/// 3. A joiner nobody has added yet reports `Unknown`; once added as a
///    learner, `Learner`; once promoted, `Follower` (or a leading role).
pub async fn roles_before_the_first_election_and_before_being_added<F: Factory>(factory: F) {
    use raftengine::CatchUp;
    let mut c = Cluster::start(factory, 3).await;
    // 1.
    for (i, n) in c.nodes.iter().enumerate() {
        let s = c.engine(i).state();
        assert!(
            matches!(s, State::Follower | State::Candidate | State::Leader),
            "bootstrap voter {} reports {s:?}",
            n.id
        );
    }
    // 2.
    for (i, n) in c.nodes.iter().enumerate() {
        let conf = c.engine(i).configuration().await.expect("configuration");
        assert_eq!(conf.index, 0, "{}: bootstrap configuration index", n.id);
    }
    let l = c.wait_leader().await;
    let conf = c.engine(l).configuration().await.expect("configuration");
    assert_eq!(
        conf.index, 0,
        "the first leader changed the configuration index"
    );
    // 3.
    let j = c.spawn_joiner("n4", false).await;
    assert_eq!(c.engine(j).state(), State::Unknown, "a joiner nobody added");
    let address = c.nodes[j].address.clone();
    let e = c.engine(l).clone();
    wait_for("the leader to add learner n4", || async {
        match e.add_learner("n4", &address, Some(0)).await {
            Ok(i) => Some(i),
            Err(Error::ConfChangePending) => None,
            Err(other) => panic!("add learner n4: {other}"),
        }
    })
    .await;
    let je = c.engine(j).clone();
    wait_for("n4 to report Learner", || async {
        (je.state() == State::Learner).then_some(())
    })
    .await;
    let w = e.propose(put("roles", "1")).await.expect("put");
    wait_for("the promotion of n4", || async {
        match e
            .promote_learner(
                "n4",
                None,
                CatchUp::at_least(w.commit_index).expect("nonzero"),
            )
            .await
        {
            Ok(i) => Some(i),
            Err(Error::FailedPrecondition { .. } | Error::ConfChangePending) => None,
            Err(other) => panic!("promote n4: {other}"),
        }
    })
    .await;
    wait_for("n4 to report a voter's role", || async {
        matches!(
            je.state(),
            State::Follower | State::Candidate | State::Leader
        )
        .then_some(())
    })
    .await;
    c.shutdown().await;
}
