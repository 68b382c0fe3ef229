//! Power loss and disk faults (DESIGN §4 item 2: nothing is acknowledged before
//! the fsync that covers it; a failed fsync or write stops the node).
//!
//! The nodes' data dirs live on power-cut disks ([`crate::disk`]): what no
//! completed fsync covered — bytes and directory entries — is gone after a
//! cut. Killing a process keeps the page cache, so only a disk like this can
//! see a missing fsync.
//!
//! Each case runs seeded rounds and prints its seed;
//! `RAFTENGINE_POWER_SEED` replays one. `RAFTENGINE_POWER_ROUNDS` sets the
//! rounds that drop every unsynced byte, `RAFTENGINE_POWER_TORN_ROUNDS` the
//! stricter ones that keep a random torn prefix of it
//! (`TailLoss::RandomCut`); 20 of each by default. The torn rounds found
//! that raft-engine caches decoded blocks per thread rather than per log,
//! so a node could read another node's entries after a restart
//! (`raftengine_kit::read_thread`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raftengine::{Error, Factory, State, StopReason};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom as _;
use rand::{Rng as _, SeedableRng as _};
use tokio::time::Instant;

use crate::disk::{Fault, TailLoss};
use crate::harness::{Cluster, KvEngine, WAIT, step, wait_for};
use crate::kv::put;

/// Which nodes lose power together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerCut {
    /// One node of three (the leader about a third of the time).
    OneNode,
    /// Two nodes of five.
    Minority,
    /// Every node of three at the same instant.
    EveryNode,
}

/// Rounds dropping every unsynced byte: `RAFTENGINE_POWER_ROUNDS`, 20 by
/// default.
fn rounds() -> u64 {
    std::env::var("RAFTENGINE_POWER_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

/// Rounds with a random torn tail: `RAFTENGINE_POWER_TORN_ROUNDS`, 20 by
/// default.
fn torn_rounds() -> u64 {
    std::env::var("RAFTENGINE_POWER_TORN_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

/// The case's seed: `RAFTENGINE_POWER_SEED`, or a fresh one.
fn seed() -> u64 {
    std::env::var("RAFTENGINE_POWER_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random)
}

/// What the clients and the monitor saw.
#[derive(Debug, Default)]
struct Observed {
    /// Acknowledged writes: key → value.
    acked: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Every node seen leading, per term.
    leaders: BTreeMap<u64, BTreeSet<String>>,
}

fn lock(o: &Mutex<Observed>) -> std::sync::MutexGuard<'_, Observed> {
    o.lock().unwrap_or_else(|p| p.into_inner())
}

/// An error with its sources, for a message that says what really failed.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(&format!(": {s}"));
        source = s.source();
    }
    out
}

/// Writes `key` through node `l` (retrying each attempt for at most 5 s,
/// until the deadline) and returns its commit index.
async fn write_through<F: Factory>(c: &Cluster<F>, l: usize, key: &str) -> u64 {
    wait_for(
        &format!("the write {key} through {}", c.nodes[l].id),
        || async {
            let e = c.nodes[l].try_engine()?;
            let write = e.propose(put(key, "v"));
            tokio::time::timeout(Duration::from_secs(5), write)
                .await
                .ok()?
                .ok()
        },
    )
    .await
    .commit_index
}

fn leader_engine<F: Factory>(c: &Cluster<F>) -> Option<KvEngine> {
    c.nodes
        .iter()
        .filter_map(|n| n.try_engine())
        .find(|e| e.state() == State::Leader)
}

/// Acknowledged writes survive power cuts of one node, a minority, or
/// every node at once: each round cuts the power at a random instant under
/// a steady write load, drops what no fsync covered (every unsynced byte
/// and name; in the torn-tail rounds, a random prefix of it torn
/// at a sector), and restarts the nodes on what is left. At the end: no
/// acknowledged write is lost, no two nodes led in one term (no vote was
/// forgotten), the replicas converge, and no entry was applied twice.
pub async fn acknowledged_writes_survive_power_cuts<F: Factory>(factory: F, cut: PowerCut) {
    let seed = seed();
    let (rounds, torn) = (rounds(), torn_rounds());
    println!(
        "power cut {cut:?}: seed {seed} (RAFTENGINE_POWER_SEED={seed} replays), {rounds} rounds \
         losing every unsynced byte, {torn} with a torn tail"
    );
    let n = if cut == PowerCut::Minority { 5 } else { 3 };
    let c = Arc::new(Cluster::start_on_disks(factory, n).await);
    c.wait_leader().await;
    let observed = Arc::new(Mutex::new(Observed::default()));
    let stop = Arc::new(AtomicBool::new(false));

    let mut tasks = Vec::new();
    for w in 0..4u32 {
        let (c, observed, stop) = (c.clone(), observed.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let Some(e) = leader_engine(&c) else {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                seq += 1;
                let (key, value) = (format!("w{w}-{seq}"), seq.to_string());
                let r = tokio::time::timeout(Duration::from_secs(5), e.propose(put(&key, &value)))
                    .await;
                match r {
                    Ok(Ok(_)) => {
                        lock(&observed)
                            .acked
                            .insert(key.into_bytes(), value.into_bytes());
                    }
                    // Not acknowledged: the key is never reused.
                    _ => tokio::time::sleep(Duration::from_millis(2)).await,
                }
            }
        }));
    }
    let monitor = {
        let (c, observed, stop) = (c.clone(), observed.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                for node in &c.nodes {
                    if let Some(e) = node.try_engine() {
                        let s = e.status();
                        if s.state == State::Leader {
                            lock(&observed)
                                .leaders
                                .entry(s.term)
                                .or_default()
                                .insert(node.id.clone());
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };

    for round in 0..rounds + torn {
        let loss = if round < rounds {
            TailLoss::All
        } else {
            TailLoss::RandomCut {
                seed: seed.wrapping_add(round),
            }
        };
        let mut rng = StdRng::seed_from_u64(seed.wrapping_add(round).wrapping_mul(31));
        // Let writes flow, then cut at a random instant.
        tokio::time::sleep(Duration::from_millis(rng.random_range(30..200))).await;
        let all: Vec<usize> = (0..n).collect();
        let victims: Vec<usize> = match cut {
            PowerCut::OneNode => vec![*all.choose(&mut rng).unwrap_or(&0)],
            PowerCut::Minority => all.choose_multiple(&mut rng, 2).copied().collect(),
            PowerCut::EveryNode => all,
        };
        step(format_args!(
            "power cut {round}: nodes {victims:?}, {loss:?}"
        ));
        let acked_at_cut = lock(&observed).acked.clone();
        if let Err(e) = c.power_cycle(&victims, loss).await {
            panic!(
                "seed {seed}, round {round}: a node refused to start after a power cut of \
                 {victims:?} ({loss:?}): {}",
                chain(&e)
            );
        }
        // The cluster must serve writes again before the next cut.
        let before = lock(&observed).acked.len();
        wait_for(
            &format!("seed {seed}, round {round}: writes acknowledged again after the cut"),
            || async { (lock(&observed).acked.len() > before + 3).then_some(()) },
        )
        .await;
        // Every write acknowledged before the cut is still there: read
        // through the leader's state once it applied a write of its own.
        let l = c.wait_leader().await;
        let index = write_through(&c, l, &format!("round-{round}")).await;
        c.wait_applied(l, index).await;
        let state = c.nodes[l].kv.lock();
        let lost: Vec<String> = acked_at_cut
            .iter()
            .filter(|(k, v)| state.map.get(*k) != Some(*v))
            .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
            .collect();
        assert!(
            lost.is_empty(),
            "seed {seed}, round {round}: after a power cut of {victims:?} ({loss:?}) the leader \
             {} lacks {} of {} acknowledged writes, e.g. {:?}",
            c.nodes[l].id,
            lost.len(),
            acked_at_cut.len(),
            &lost[..lost.len().min(5)]
        );
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("writer task");
    }
    monitor.await.expect("monitor task");

    // Converge: one more write, applied everywhere.
    let l = c.wait_leader().await;
    let last = write_through(&c, l, "final").await;
    for i in 0..n {
        c.wait_applied(i, last).await;
    }

    let observed = std::mem::take(&mut *lock(&observed));
    assert!(
        observed.acked.len() as u64 >= 4 * rounds,
        "seed {seed}: too few writes were acknowledged to test anything: {}",
        observed.acked.len()
    );
    for (term, leaders) in &observed.leaders {
        assert!(
            leaders.len() <= 1,
            "seed {seed}: two leaders in term {term}: {leaders:?} (a vote was forgotten)"
        );
    }
    let reference = c.nodes[0].kv.lock().map.clone();
    for node in &c.nodes {
        let state = node.kv.lock();
        for (k, v) in &observed.acked {
            assert_eq!(
                state.map.get(k),
                Some(v),
                "seed {seed}: {} lost the acknowledged write {}",
                node.id,
                String::from_utf8_lossy(k)
            );
        }
        assert!(
            state.map == reference,
            "seed {seed}: {} diverged from {}",
            node.id,
            c.nodes[0].id
        );
        let mut payloads = BTreeSet::new();
        let mut prev = 0;
        for (index, payload) in &state.applied {
            assert!(
                *index > prev,
                "seed {seed}: {} applied index {index} after {prev}",
                node.id
            );
            prev = *index;
            assert!(
                payloads.insert(payload.clone()),
                "seed {seed}: {} applied one write twice (index {index})",
                node.id
            );
        }
    }
    println!(
        "power cut {cut:?}: {} writes acknowledged and kept over {} rounds, {} terms with a leader",
        observed.acked.len(),
        rounds + torn,
        observed.leaders.len()
    );
    match Arc::try_unwrap(c) {
        Ok(c) => c.shutdown().await,
        Err(_) => panic!("cluster still shared after the tasks ended"),
    }
}

/// A disk that fails (`fsync` returns `EIO`, a write returns `EIO`, or the
/// disk is full) stops the node closed: it stops with
/// `StopReason::Fatal`, every proposal caught by the failure gets
/// `OutcomeUnknown` (it may have been appended) or `Shutdown` (it was not),
/// nothing issued after the disk first refused an I/O is acknowledged (on a
/// full disk, at most three writes already queued when a file beside the
/// log was refused), later calls get `Shutdown`, and after a power cycle (the failed writes
/// never reached the disk) the node restarts with every write it had
/// acknowledged. One node, so that its own disk is the only way to commit.
pub async fn disk_faults_stop_the_node_closed<F: Factory>(factory: F, fault: Fault) {
    let c = Cluster::start_on_disks(factory, 1).await;
    c.wait_leader().await;
    let e = c.engine(0);
    let mut acked = Vec::new();
    for i in 0..20 {
        e.propose(put(format!("before-{i}"), "v"))
            .await
            .expect("write before the fault");
        acked.push(format!("before-{i}"));
    }
    c.disk(0).inject(fault);
    // A full disk refuses only what needs new space (a log file grows in
    // preallocated steps), so keep writing until the node stops.
    let deadline = Instant::now() + WAIT;
    let mut seq = 0u64;
    // With a failing fsync or write, every write after the first refusal
    // fails too, so nothing issued after it can be acknowledged. A full
    // disk refuses only what needs new space: the refused write may be a
    // snapshot file's, written beside the log, and the node learns of it
    // a moment later; the log's own writes into preallocated space still
    // succeed meanwhile. So the node may acknowledge a few writes it had
    // already queued, not more (a backend that kept going would run on
    // until the log itself had to grow: thousands of writes).
    let slack = if fault == Fault::DiskFull { 3 } else { 0 };
    let mut acked_after_refusal = 0u32;
    let reason = loop {
        if let Ok(reason) = tokio::time::timeout(Duration::ZERO, e.stopped()).await {
            break reason;
        }
        assert!(
            Instant::now() < deadline,
            "{fault:?}: the node did not stop within {WAIT:?} of a disk fault (refused I/O: {})",
            c.disk(0).stats().refused
        );
        let refused_before = c.disk(0).stats().refused;
        seq += 1;
        let key = format!("after-{seq}");
        match tokio::time::timeout(WAIT, e.propose(put(&key, "v"))).await {
            Ok(Ok(_)) => {
                if refused_before > 0 {
                    acked_after_refusal += 1;
                }
                assert!(
                    acked_after_refusal <= slack,
                    "{fault:?}: {key} was acknowledged although the disk had already refused \
                     {refused_before} I/O calls ({acked_after_refusal} acknowledged since; \
                     nothing may be acknowledged after a failed write or fsync)"
                );
                acked.push(key);
            }
            Ok(Err(Error::OutcomeUnknown { .. } | Error::Shutdown)) => {}
            Ok(Err(other)) => panic!(
                "{fault:?}: a proposal caught by a disk fault must fail with OutcomeUnknown \
                 or Shutdown, not: {other}"
            ),
            Err(_) => panic!("{fault:?}: a proposal hung after a disk fault"),
        }
    };
    assert!(
        matches!(reason, StopReason::Fatal(_)),
        "{fault:?}: the node must stop with StopReason::Fatal, got {reason:?}"
    );
    assert!(
        c.disk(0).stats().refused > 0,
        "{fault:?}: the disk never refused anything"
    );
    match e.propose(put("late", "v")).await {
        Err(Error::Shutdown) => {}
        other => panic!("{fault:?}: a call after the fatal stop must be Shutdown, got {other:?}"),
    }
    // The page cache is not to be trusted after the failure: power cycle.
    drop(e);
    c.power_cycle(&[0], TailLoss::All)
        .await
        .unwrap_or_else(|err| panic!("{fault:?}: restart after the disk fault: {}", chain(&err)));
    let l = c.wait_leader().await;
    let index = write_through(&c, l, "restarted").await;
    c.wait_applied(0, index).await;
    for key in &acked {
        assert_eq!(
            c.nodes[0].kv.get(key.as_bytes()),
            Some(b"v".to_vec()),
            "{fault:?}: the acknowledged write {key} was lost"
        );
    }
    c.shutdown().await;
}
