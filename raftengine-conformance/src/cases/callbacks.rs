//! The leadership-callback contract through a real engine: exactly once per
//! edge, a panicking callback contained, deregistration idempotent.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use raftengine::{Factory, State, TransferTarget};

use crate::harness::{Cluster, wait_for};
use crate::kv::put;

/// Two transfers (there and back): the acquired callback on the target
/// runs exactly once per acquisition, a panicking callback registered
/// before it neither stops it nor the engine, and after a (double)
/// deregistration the callback does not run again.
pub async fn leadership_callbacks_are_exact_contained_and_deregistrable<F: Factory>(factory: F) {
    let c = Cluster::start(factory, 3).await;
    let l = c.wait_leader().await;
    c.engine(l).propose(put("cb", "1")).await.expect("put");
    let t = c.other_than(l);
    let gained = Arc::new(AtomicUsize::new(0));
    let lost = Arc::new(AtomicUsize::new(0));
    let panicked = Arc::new(AtomicUsize::new(0));
    let p = panicked.clone();
    let bomb = c
        .engine(t)
        .register_leader_acquired_callback(Arc::new(move || {
            p.fetch_add(1, Ordering::SeqCst);
            panic!("a callback that panics (expected by the test)");
        }));
    let g = gained.clone();
    let acquired = c
        .engine(t)
        .register_leader_acquired_callback(Arc::new(move || {
            g.fetch_add(1, Ordering::SeqCst);
        }));
    let lo = lost.clone();
    let loss = c.engine(t).register_leader_loss_callback(Arc::new(move || {
        lo.fetch_add(1, Ordering::SeqCst);
    }));

    let target = c.nodes[t].id.clone();
    c.engine(l)
        .transfer_leadership(TransferTarget::Server(target))
        .await
        .expect("transfer there");
    wait_for("the acquired callbacks on the new leader", || async {
        (gained.load(Ordering::SeqCst) == 1 && panicked.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    // The panic was contained: the engine still leads and commits.
    assert_eq!(c.engine(t).state(), State::Leader);
    c.engine(t)
        .propose(put("cb", "2"))
        .await
        .expect("write after a panicking callback");

    acquired.deregister();
    acquired.deregister();
    bomb.deregister();
    assert!(!acquired.is_active());
    // Registered after the deregistrations: once it has run for the next
    // acquisition, the registry dispatched that edge, so a deregistered
    // callback would have run by then too.
    let witness_hits = Arc::new(AtomicUsize::new(0));
    let w = witness_hits.clone();
    let witness = c
        .engine(t)
        .register_leader_acquired_callback(Arc::new(move || {
            w.fetch_add(1, Ordering::SeqCst);
        }));
    let back = c.nodes[l].id.clone();
    c.engine(t)
        .transfer_leadership(TransferTarget::Server(back))
        .await
        .expect("transfer back");
    wait_for("the loss callback on the old target", || async {
        (lost.load(Ordering::SeqCst) >= 1).then_some(())
    })
    .await;
    assert_eq!(lost.load(Ordering::SeqCst), 1, "one loss edge, one call");
    let target = c.nodes[t].id.clone();
    c.engine(l)
        .transfer_leadership(TransferTarget::Server(target))
        .await
        .expect("transfer there again");
    wait_for("the witness callback on the second acquisition", || async {
        (witness_hits.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    assert_eq!(
        gained.load(Ordering::SeqCst),
        1,
        "a deregistered callback ran"
    );
    assert_eq!(
        panicked.load(Ordering::SeqCst),
        1,
        "a deregistered callback ran"
    );
    c.engine(t)
        .propose(put("cb", "3"))
        .await
        .expect("write after the second acquisition");
    witness.deregister();
    loss.deregister();
    c.shutdown().await;
}
