//! Linearizability of writes and reads while leaders are isolated, leadership
//! moves, or nodes restart (DESIGN §4 item 3; checked with stateright's
//! `LinearizabilityTester`).
//!
//! Clients record every operation with its invocation and return times.
//! Operations that certainly did not happen (`NotLeader`,
//! `TransferInProgress`, failed reads) are left out; a write whose outcome is
//! unknown (`OutcomeUnknown`, a timeout, any other error) stays in flight
//! forever, so the checker may place it anywhere after its invocation, or
//! nowhere; the client then continues under a new id (an id with an
//! operation in flight cannot start another). Histories are bounded
//! (150 operations per client) so checking stays fast.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use raftengine::{Error, Factory, State};
use stateright::semantics::register::{Register, RegisterOp, RegisterRet};
use stateright::semantics::{ConsistencyTester, LinearizabilityTester};
use tokio::time::Instant;

use crate::harness::{Cluster, step};
use crate::kv::put;

/// How long clients run; `RAFTENGINE_SOAK_SECS` lengthens it for soak runs.
fn run_time() -> Duration {
    let secs = std::env::var("RAFTENGINE_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7u64);
    Duration::from_secs(secs)
}

/// Most operations one client records.
const OPS_PER_CLIENT: usize = 150;
/// Longest the checker may search.
const CHECK_TIME: Duration = Duration::from_secs(90);

#[derive(Debug, Clone)]
struct Recorded {
    /// The client id the checker sees.
    thread: usize,
    invoked: Instant,
    /// `None`: outcome unknown (never returns).
    returned: Option<(Instant, RegisterRet<u64>)>,
    op: RegisterOp<u64>,
}

fn decode_value(raw: Option<Vec<u8>>) -> u64 {
    raw.and_then(|v| String::from_utf8(v).ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// What the nemesis does to the cluster while clients run.
#[derive(Debug, Clone, Copy)]
enum Nemesis {
    /// Cut the leader off from everyone, then heal.
    IsolateLeader,
    /// Hand leadership to another voter.
    TransferLeadership,
    /// Stop a node (the leader every other time), restart it on its data
    /// dir with a fresh state machine a moment later.
    RestartNode,
}

/// Concurrent writers and readers on one register while a nemesis isolates
/// the leader again and again: the history must be linearizable.
pub async fn history_is_linearizable_under_leader_isolation<F: Factory>(factory: F) {
    check_history(factory, Nemesis::IsolateLeader).await;
}

/// Concurrent writers and readers on one register while leadership is
/// transferred again and again: the history must be linearizable.
pub async fn history_is_linearizable_under_leadership_transfers<F: Factory>(factory: F) {
    check_history(factory, Nemesis::TransferLeadership).await;
}

/// Concurrent writers and readers on one register while nodes (the leader
/// every other time) are stopped and restarted on their data dirs with
/// fresh state machines: the history must be linearizable.
pub async fn history_is_linearizable_under_restarts<F: Factory>(factory: F) {
    check_history(factory, Nemesis::RestartNode).await;
}

async fn check_history<F: Factory>(factory: F, kind: Nemesis) {
    let c = Arc::new(Cluster::start(factory, 3).await);
    c.wait_leader().await;
    let history: Arc<Mutex<Vec<Recorded>>> = Arc::default();
    let deadline = Instant::now() + run_time();

    let nemesis = {
        let c = c.clone();
        tokio::spawn(async move {
            let mut round = 0usize;
            while Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(700)).await;
                round += 1;
                let leader = (0..c.nodes.len()).find(|i| {
                    c.nodes[*i]
                        .try_engine()
                        .is_some_and(|e| e.state() == State::Leader)
                });
                let Some(l) = leader else { continue };
                match kind {
                    Nemesis::IsolateLeader => {
                        step("nemesis: isolate the leader");
                        c.isolate(l);
                        // Longer than the election timeouts of both backends,
                        // so a new leader emerges while the old one is cut off.
                        tokio::time::sleep(Duration::from_millis(3000)).await;
                        c.heal();
                    }
                    Nemesis::RestartNode => {
                        let victim = if round % 2 == 1 {
                            l
                        } else {
                            (l + 1 + round / 2 % 2) % c.nodes.len()
                        };
                        step(format_args!("nemesis: restart node {victim}"));
                        c.stop(victim).await;
                        // Down for longer than an election timeout, so a
                        // stopped leader is replaced meanwhile.
                        tokio::time::sleep(Duration::from_millis(1500)).await;
                        c.restart(victim).await.expect("restart");
                    }
                    Nemesis::TransferLeadership => {
                        step("nemesis: transfer leadership");
                        let _ = tokio::time::timeout(
                            Duration::from_secs(5),
                            c.engine(l)
                                .transfer_leadership(raftengine::TransferTarget::Any),
                        )
                        .await;
                    }
                }
            }
        })
    };

    let mut clients = Vec::new();
    // Clients 0-3 alternate writes and reads; 4 and 5 only read, so they
    // keep reading from whichever node they last found leading.
    for client in 0..6usize {
        let c = c.clone();
        let history = history.clone();
        clients.push(tokio::spawn(async move {
            let mut seq = 0u64;
            let mut thread = client;
            let mut recorded = 0;
            // Like a real client, keep using the node that last acted as
            // leader until it fails, instead of asking every node each time:
            // a stale leader then gets traffic and must refuse it.
            let mut sticky: Option<usize> = None;
            while Instant::now() < deadline && recorded < OPS_PER_CLIENT {
                seq += 1;
                // Spread each client's bounded history over the whole run,
                // so every phase of the nemesis gets operations.
                tokio::time::sleep(Duration::from_millis(40)).await;
                let found = sticky.or_else(|| {
                    (0..c.nodes.len()).find(|i| {
                        c.nodes[*i]
                            .try_engine()
                            .is_some_and(|e| e.state() == State::Leader)
                    })
                });
                let Some((node, e)) = found.and_then(|n| c.nodes[n].try_engine().map(|e| (n, e)))
                else {
                    sticky = None;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                sticky = Some(node);
                let write = client < 4 && (seq + client as u64) % 2 == 0;
                let invoked = Instant::now();
                if write {
                    let value = client as u64 * 1_000_000 + seq;
                    let op = RegisterOp::Write(value);
                    let outcome = tokio::time::timeout(
                        Duration::from_secs(3),
                        e.propose(put("reg", value.to_string())),
                    )
                    .await;
                    if !matches!(outcome, Ok(Ok(_))) {
                        sticky = None;
                    }
                    let returned = match outcome {
                        Ok(Ok(_)) => Some(Some((Instant::now(), RegisterRet::WriteOk))),
                        // Never appended: the write did not happen.
                        Ok(Err(Error::NotLeader { .. } | Error::TransferInProgress)) => None,
                        // Anything else may have committed.
                        Ok(Err(_)) | Err(_) => Some(None),
                    };
                    if let Some(returned) = returned {
                        let unknown = returned.is_none();
                        history.lock().unwrap().push(Recorded {
                            thread,
                            invoked,
                            returned,
                            op,
                        });
                        recorded += 1;
                        if unknown {
                            thread += 1000;
                        }
                    }
                } else {
                    let incarnation = c.nodes[node].kv.lock().incarnation;
                    let read =
                        tokio::time::timeout(Duration::from_secs(3), e.linearizable_read()).await;
                    if !matches!(read, Ok(Ok(_))) {
                        sticky = None;
                    }
                    // A restart between the read and looking at the state
                    // replaced the state machine: that read is not usable.
                    let sample = {
                        let state = c.nodes[node].kv.lock();
                        (state.incarnation == incarnation)
                            .then(|| state.map.get(&b"reg"[..]).cloned())
                    };
                    if let (Ok(Ok(_)), Some(raw)) = (read, sample) {
                        let value = decode_value(raw);
                        history.lock().unwrap().push(Recorded {
                            thread,
                            invoked,
                            returned: Some((Instant::now(), RegisterRet::ReadOk(value))),
                            op: RegisterOp::Read,
                        });
                        recorded += 1;
                    }
                }
            }
        }));
    }
    for t in clients {
        t.await.expect("client task");
    }
    nemesis.await.expect("nemesis task");
    c.heal();

    let history = history.lock().unwrap().clone();
    // Values are unique, so an unknown-outcome write no read returned can
    // be left out without changing the verdict: in any linearization that
    // holds it, no read sits between it and the next write (that read
    // would have returned its value), so the same order without it is
    // valid too. Each one left in could go anywhere after its invocation
    // or nowhere, which is what makes the search explode: one run with
    // many of them (a loaded machine times writes out) went past the
    // checker's budget.
    let observed: std::collections::HashSet<u64> = history
        .iter()
        .filter_map(|r| match &r.returned {
            Some((_, RegisterRet::ReadOk(v))) => Some(*v),
            _ => None,
        })
        .collect();
    let before = history.len();
    let history: Vec<Recorded> = history
        .into_iter()
        .filter(|r| match (&r.op, &r.returned) {
            (RegisterOp::Write(v), None) => observed.contains(v),
            _ => true,
        })
        .collect();
    step(format_args!(
        "{} unknown-outcome writes no read observed left out of {before} operations",
        before - history.len()
    ));
    let completed_writes = history
        .iter()
        .filter(|r| matches!(r.returned, Some((_, RegisterRet::WriteOk))))
        .count();
    let reads = history.iter().filter(|r| r.op == RegisterOp::Read).count();
    assert!(
        completed_writes >= 5,
        "too few writes completed ({completed_writes}) to check anything"
    );
    assert!(
        reads >= 5,
        "too few reads completed ({reads}) to check anything"
    );

    // Replay invocations and returns in time order.
    enum Ev {
        Invoke(usize),
        Return(usize),
    }
    let mut events: Vec<(Instant, u8, Ev)> = Vec::new();
    for (i, r) in history.iter().enumerate() {
        events.push((r.invoked, 0, Ev::Invoke(i)));
        if let Some((t, _)) = &r.returned {
            events.push((*t, 1, Ev::Return(i)));
        }
    }
    events.sort_by_key(|e| (e.0, e.1));
    let total = history.len();
    // The search is exponential in the worst case (a broken backend can make
    // it so); bound it, and count "undecided" as a failure.
    let check = tokio::task::spawn_blocking(move || {
        let mut tester = LinearizabilityTester::new(Register(0u64));
        for (_, _, ev) in events {
            match ev {
                Ev::Invoke(i) => {
                    tester
                        .on_invoke(history[i].thread, history[i].op.clone())
                        .expect("well-formed history");
                }
                Ev::Return(i) => {
                    let ret = history[i]
                        .returned
                        .as_ref()
                        .map(|(_, r)| r.clone())
                        .expect("returned");
                    tester
                        .on_return(history[i].thread, ret)
                        .expect("well-formed history");
                }
            }
        }
        tester.is_consistent()
    });
    let consistent = tokio::time::timeout(CHECK_TIME, check)
        .await
        .unwrap_or_else(|_| panic!("the checker could not decide within {CHECK_TIME:?}"))
        .expect("checker task");
    assert!(
        consistent,
        "history of {total} operations ({completed_writes} acknowledged writes, {reads} reads) is not linearizable"
    );
    match Arc::try_unwrap(c) {
        Ok(c) => c.shutdown().await,
        Err(_) => panic!("cluster still shared after the clients finished"),
    }
}
