//! Forged messages from an authenticated member (issue #15, item 3):
//! authentication says who sent a message, not that it is sane. Each
//! [`Forgery`] is written by the backend's [`Forger`] and sent with a real
//! member's certificate and cluster id, so it passes every check the peer
//! port makes; what the engine does with it is what this case checks.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use raftengine::tls::PeerCredentials;
use raftengine::{Factory, State};

use crate::forge::{Answer, Forge, Forger, Forgery};
use crate::harness::{Cluster, step};

/// What the nodes of these cases admit: the default message limit halved
/// (still above what either backend sends with its default proposal
/// limit), snapshots of 1 MiB.
pub fn limits() -> raftengine::tls::PeerLimits {
    raftengine::tls::PeerLimits::default()
        .with_max_message_bytes(32 * 1024 * 1024)
        .with_max_snapshot_bytes(1024 * 1024)
}

/// gRPC's status codes, as [`Answer::Refused`] carries them.
const INVALID_ARGUMENT: i32 = 3;
const OUT_OF_RANGE: i32 = 11;

/// Sends `forgery` three times to a node of a healthy 3-node cluster, as
/// another member, then checks that nothing changed:
///
/// * 20 new writes reach every node, and every node still runs;
/// * every term stays below `2^48` (a forged `u64::MAX` taken by any node
///   would show here, or as a panic in its loop);
/// * no node connected to the address a forged message gave;
/// * the target restarts on its data dir and keeps up;
/// * every replica holds the same map;
/// * a snapshot from a member that is not the leader is refused;
/// * a message above the message limit is refused with `OUT_OF_RANGE`
///   (gRPC's message-size refusal) before it is decoded, and a snapshot
///   above the snapshot limit with `INVALID_ARGUMENT` at its header.
///
/// The nodes run with [`limits`]. The target is a follower and the sender
/// the other follower, except for [`Forgery::PoisonedAddress`], sent to
/// the leader (whose address book decides where entries go), and
/// [`Forgery::OversizedSnapshot`], sent as the leader (the one member a
/// snapshot is taken from).
pub async fn forged_messages_change_nothing<F: Factory, G: Forger>(
    factory: F,
    forger: G,
    forgery: Forgery,
) {
    let c = Cluster::start_with_limits(factory, 3, limits()).await;
    let leader = c.wait_leader().await;
    c.every_node_applies_new_writes("before-forgery", 5).await;
    let follower = c.other_than(leader);
    let third = (0..3)
        .find(|i| *i != leader && *i != follower)
        .unwrap_or_else(|| panic!("a 3-node cluster has a third node"));
    let (target, sender) = match forgery {
        Forgery::PoisonedAddress => (leader, follower),
        Forgery::OversizedSnapshot => (follower, leader),
        _ => (follower, third),
    };

    // A listener no node has any reason to dial.
    let trap = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind the trap listener: {e}"));
    let trap_address = trap
        .local_addr()
        .unwrap_or_else(|e| panic!("trap address: {e}"))
        .to_string();
    let dialled = Arc::new(AtomicUsize::new(0));
    let counter = dialled.clone();
    let trap_task = tokio::spawn(async move {
        while let Ok((conn, _)) = trap.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(conn);
        }
    });

    let from = c.nodes[sender].id.clone();
    let credentials = PeerCredentials::load(&c.pki.node(&from), &from)
        .await
        .unwrap_or_else(|e| panic!("load {from}'s credentials: {e}"));
    let status = c.engine(target).status();
    let forge = Forge {
        from: from.clone(),
        credentials,
        from_dir: c.nodes[sender].dir.clone(),
        to: c.nodes[target].id.clone(),
        to_address: c.nodes[target].backend.to_string(),
        term: match forgery {
            Forgery::HugeTerm => u64::MAX,
            _ => status.term,
        },
        commit: status.commit_index + 1_000_000,
        poison_address: trap_address.clone(),
        size: match forgery {
            Forgery::OversizedSnapshot => limits().max_snapshot_bytes + 1,
            _ => limits().max_message_bytes as u64 + 1,
        },
    };
    for round in 1..=3 {
        let answer = forger
            .send(forgery, &forge)
            .await
            .unwrap_or_else(|e| panic!("{forgery:?} could not be sent at all: {e}"));
        step(format_args!(
            "{forgery:?} #{round} from {from} to {}: {answer:?}",
            forge.to
        ));
        match forgery {
            Forgery::SnapshotFromFollower => assert!(
                matches!(answer, Answer::Refused(..)),
                "{} took a snapshot from {from}, which does not lead it",
                forge.to
            ),
            Forgery::OversizedMessage => assert!(
                matches!(answer, Answer::Refused(OUT_OF_RANGE, _)),
                "{} did not refuse a message of {} bytes as too large: {answer:?}",
                forge.to,
                forge.size
            ),
            Forgery::OversizedSnapshot => assert!(
                matches!(answer, Answer::Refused(INVALID_ARGUMENT, _)),
                "{} did not refuse a snapshot of {} bytes at its header: {answer:?}",
                forge.to,
                forge.size
            ),
            _ => {}
        }
    }

    c.every_node_applies_new_writes("after-forgery", 20).await;
    for (i, node) in c.nodes.iter().enumerate() {
        let s = c.engine(i).status();
        assert_ne!(
            s.state,
            State::Shutdown,
            "{} stopped after {forgery:?}",
            node.id
        );
        assert!(
            s.term < 1 << 48,
            "{} took the forged term: {}",
            node.id,
            s.term
        );
    }
    assert_eq!(
        dialled.load(Ordering::SeqCst),
        0,
        "a node dialled the address a forged header gave ({trap_address})"
    );

    c.restart(target)
        .await
        .unwrap_or_else(|e| panic!("restart {} after {forgery:?}: {e}", forge.to));
    c.every_node_applies_new_writes("after-restart", 5).await;
    let maps: Vec<_> = c.nodes.iter().map(|n| n.kv.lock().map.clone()).collect();
    for (node, map) in c.nodes.iter().zip(&maps).skip(1) {
        assert!(
            *map == maps[0],
            "{} and {} hold different maps after {forgery:?}",
            node.id,
            c.nodes[0].id
        );
    }
    trap_task.abort();
    c.shutdown().await;
}
