//! The engine comparison: `cargo run --release -p raftengine-examples --bin bench`.
//!
//! Runs every compiled-in engine through the same workloads on a cluster in
//! this process (loopback gRPC, durable data dirs, fsync on) and prints a
//! Markdown table; `--json PATH` also writes the results as JSON. The
//! machine's own limits (fdatasync and loopback round trip) are measured in
//! the same run so each write row can be read against them.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a benchmark binary: failing loudly is right

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use raftengine::tls::PeerSecurity;
use raftengine::{Engine, Factory, FactoryConfig, Server, State, TransportServer};
use raftengine_conformance::TestPki;
use raftengine_examples::engines::{self, WithFactory};
use raftengine_examples::{KvMachine, Map, put};
use serde::{Deserialize, Serialize};

/// Compare raftengine backends side by side.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Concurrent clients for the write workload (comma separated).
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    clients: Vec<usize>,
    /// Clients for the read workloads and the 1-node row.
    #[arg(long, default_value_t = 256)]
    read_clients: usize,
    /// Seconds per workload.
    #[arg(long, default_value_t = 5)]
    duration: u64,
    /// Payload bytes per write.
    #[arg(long, default_value_t = 128)]
    payload: usize,
    /// Nodes in the replicated cluster.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Engines to run (comma separated); default: every compiled-in engine.
    #[arg(long, value_delimiter = ',')]
    engines: Vec<String>,
    /// Where data dirs go (e.g. /dev/shm to compare with tmpfs).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Failover repetitions (median reported).
    #[arg(long, default_value_t = 3)]
    failovers: usize,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Where the SVG chart (write throughput vs clients, one line per
    /// engine) goes.
    #[arg(long, default_value = "target/bench-writes.svg")]
    chart: PathBuf,
    /// Internal: run the one engine named by `--engines` and write its rows
    /// here (the parent runs each engine in its own process, so each
    /// engine's peak RSS is its own).
    #[arg(long, hide = true)]
    child_rows: Option<PathBuf>,
    /// Internal: the parent's machine measurements, `fsync_us,rtt_us`.
    #[arg(long, hide = true, value_delimiter = ',')]
    child_machine: Vec<f64>,
}

#[derive(Debug, Serialize)]
struct Machine {
    cores: usize,
    fsync_p50_us: f64,
    loopback_rtt_p50_us: f64,
}

#[derive(Debug, Serialize, Deserialize, Clone)]
struct Row {
    engine: String,
    workload: String,
    nodes: usize,
    clients: usize,
    payload_bytes: usize,
    durable: bool,
    ops_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    /// Throughput / (clients / (fsync p50 + RTT p50)), write rows only.
    #[serde(skip_serializing_if = "Option::is_none")]
    ratio_to_physical_limit: Option<f64>,
    /// CPU time of the whole bench process (nodes, clients, gRPC, snapshot
    /// threads) per completed operation, in µs; load rows only. Unlike
    /// ops/s it does not depend on how many cores the nodes share, so it
    /// compares engines' efficiency and shows what replication costs.
    #[serde(skip_serializing_if = "Option::is_none")]
    cpu_us_per_op: Option<f64>,
    /// Log fsyncs per acknowledged write per replica, write rows only:
    /// the growth of every node's `Status::log_syncs` (counted where the
    /// backend calls fdatasync) divided by writes × nodes. At most 1 at
    /// one client; well under 1 when group commit batches; 0 would mean
    /// writes acknowledged without an fsync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fsyncs_per_write: Option<f64>,
    peak_rss_mib: f64,
    /// Keys in the state a new learner had to catch up on
    /// (`learner_catch_up` rows; their ops/s is keys per second and p50 the
    /// time from `add_learner` to the learner having applied the commit
    /// index of that moment).
    #[serde(skip_serializing_if = "Option::is_none")]
    state_keys: Option<usize>,
}

#[derive(Debug, Serialize)]
struct Report {
    machine: Machine,
    results: Vec<Row>,
    not_run: Vec<String>,
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    values[((values.len() - 1) as f64 * p) as usize]
}

/// fdatasync latency of a 4 KiB append on the data-dir disk.
fn measure_fsync(dir: &Path) -> f64 {
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path).expect("create fsync probe");
    let block = [7u8; 4096];
    let mut samples = Vec::new();
    for _ in 0..200 {
        f.write_all(&block).expect("write probe");
        let t = Instant::now();
        f.sync_data().expect("fdatasync");
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let _ = std::fs::remove_file(&path);
    percentile(&mut samples, 0.5)
}

/// Round trip of a 64-byte ping over a loopback TCP connection.
fn measure_rtt() -> f64 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let echo = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let _ = s.set_nodelay(true);
        let mut buf = [0u8; 64];
        while s.read_exact(&mut buf).is_ok() {
            if s.write_all(&buf).is_err() {
                break;
            }
        }
    });
    let mut c = std::net::TcpStream::connect(addr).expect("connect");
    c.set_nodelay(true).expect("nodelay");
    let mut buf = [1u8; 64];
    let mut samples = Vec::new();
    for _ in 0..2000 {
        let t = Instant::now();
        c.write_all(&buf).expect("ping");
        c.read_exact(&mut buf).expect("pong");
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    drop(c);
    let _ = echo.join();
    percentile(&mut samples, 0.5)
}

/// CPU time (user + system) the process has used so far, in µs, from
/// `/proc/self/stat` (it includes threads that already exited, such as
/// snapshot writers). Its unit is USER_HZ, 100 per second on every Linux
/// architecture this runs on. `None` where it cannot be read.
fn process_cpu_us() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces; the rest follows ") ".
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks * 10_000.0)
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

type KvEngine = Arc<dyn Engine<u64>>;

struct Node {
    id: String,
    address: String,
    dir: PathBuf,
    map: Map,
    engine: Option<KvEngine>,
    server: Option<TransportServer>,
}

struct Cluster<F: Factory> {
    factory: F,
    nodes: Vec<Node>,
    peers: Vec<Server>,
    /// With mutual TLS between peers (certificates from this CA); without,
    /// plaintext.
    pki: Option<TestPki>,
}

impl<F: Factory> Cluster<F> {
    /// Log fsyncs of every running node so far (`Status::log_syncs`).
    fn log_syncs(&self) -> u64 {
        self.nodes
            .iter()
            .filter_map(|n| n.engine.as_ref())
            .map(|e| e.status().log_syncs)
            .sum()
    }

    async fn start(factory: F, n: usize, root: &Path, tls: bool) -> Self {
        let mut listeners = Vec::new();
        let mut peers = Vec::new();
        for i in 0..n {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            peers.push(Server::voter(
                format!("n{}", i + 1),
                l.local_addr().expect("addr").to_string(),
            ));
            listeners.push(l);
        }
        let mut c = Cluster {
            factory,
            nodes: Vec::new(),
            peers: peers.clone(),
            pki: tls.then(|| TestPki::new("bench CA")),
        };
        for (i, l) in listeners.into_iter().enumerate() {
            let node = c
                .launch(&peers[i].id, &peers[i].address, root.join(&peers[i].id), l)
                .await;
            c.nodes.push(node);
        }
        c
    }

    async fn launch(
        &self,
        id: &str,
        address: &str,
        dir: PathBuf,
        l: tokio::net::TcpListener,
    ) -> Node {
        let sm = KvMachine::default();
        let map = sm.map.clone();
        let cfg = FactoryConfig::new(id, address, dir.clone(), sm)
            .with_peers(self.peers.clone())
            .with_bootstrap(true)
            .with_peer_security(self.security(id));
        let created = self.factory.create(cfg).await.expect("create engine");
        let server = created.serve(l).expect("serve");
        Node {
            id: id.to_owned(),
            address: address.to_owned(),
            dir,
            map,
            engine: Some(created.engine),
            server: Some(server),
        }
    }

    fn security(&self, id: &str) -> PeerSecurity {
        match &self.pki {
            Some(pki) => PeerSecurity::Tls(pki.node(id)),
            None => PeerSecurity::Plaintext,
        }
    }

    async fn leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            for (i, n) in self.nodes.iter().enumerate() {
                if let Some(e) = &n.engine {
                    if e.state() == State::Leader && e.check_serving().await.is_ok() {
                        return i;
                    }
                }
            }
            assert!(Instant::now() < deadline, "no leader within 30 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn engine(&self, i: usize) -> KvEngine {
        self.nodes[i].engine.clone().expect("node running")
    }

    async fn stop(&mut self, i: usize) {
        if let Some(e) = self.nodes[i].engine.take() {
            let _ = e.shutdown().await;
        }
        if let Some(s) = self.nodes[i].server.take() {
            let _ = s.shutdown().await;
        }
    }

    async fn restart(&mut self, i: usize) {
        self.stop(i).await;
        let (id, address, dir) = (
            self.nodes[i].id.clone(),
            self.nodes[i].address.clone(),
            self.nodes[i].dir.clone(),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        let l = loop {
            match tokio::net::TcpListener::bind(&address).await {
                Ok(l) => break l,
                Err(e) => {
                    assert!(Instant::now() < deadline, "rebind {address}: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        self.nodes[i] = self.launch(&id, &address, dir, l).await;
    }

    /// Adds a fresh learner, waits until it applied the commit index of the
    /// moment it was added; returns (seconds, keys in the state).
    async fn learner_catch_up(&self, dir: &Path) -> (f64, usize) {
        let l = self.leader().await;
        let e = self.engine(l);
        let keys = self.nodes[l]
            .map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .len();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("addr").to_string();
        let cfg = FactoryConfig::new("learner", address.clone(), dir, KvMachine::default())
            .with_peers(self.peers.clone())
            .with_join_as_learner(true)
            .with_peer_security(self.security("learner"));
        let created = self.factory.create(cfg).await.expect("create learner");
        let server = created.serve(listener).expect("serve learner");
        let learner = created.engine;
        let target = e.status().commit_index;
        let t = Instant::now();
        e.add_learner("learner", &address, None)
            .await
            .expect("add learner");
        while learner.status().applied_index < target {
            assert!(
                t.elapsed() < Duration::from_secs(120),
                "learner did not catch up within 120 s"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let secs = t.elapsed().as_secs_f64();
        let _ = e.remove_server("learner", None).await;
        let _ = learner.shutdown().await;
        let _ = server.shutdown().await;
        (secs, keys)
    }

    async fn shutdown(mut self) {
        for i in 0..self.nodes.len() {
            self.stop(i).await;
        }
    }
}

/// What one load row measured.
struct Measured {
    /// Operations that completed successfully.
    completed: u64,
    ops_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    cpu_us_per_op: Option<f64>,
}

/// Runs `clients` loops of `op` for `duration` and measures them.
async fn load<Op, Fut>(clients: usize, duration: Duration, op: Op) -> Measured
where
    Op: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let op = Arc::new(op);
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let op = op.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                if op(c, n).await {
                    let _ = h.record(t.elapsed().as_micros().max(1) as u64);
                }
                n += 1;
            }
            h
        }));
    }
    let started = Instant::now();
    let cpu_before = process_cpu_us();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let cpu_after = process_cpu_us();
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    for t in tasks {
        all.add(t.await.expect("client")).expect("merge");
    }
    let secs = started.elapsed().as_secs_f64();
    let completed = all.len();
    Measured {
        completed,
        ops_per_sec: completed as f64 / secs,
        p50_us: all.value_at_quantile(0.5) as f64,
        p99_us: all.value_at_quantile(0.99) as f64,
        cpu_us_per_op: match (cpu_before, cpu_after) {
            (Some(b), Some(a)) if completed > 0 => Some((a - b) / completed as f64),
            _ => None,
        },
    }
}

struct Ctx<'a> {
    args: &'a Args,
    machine: &'a Machine,
    root: PathBuf,
    progress: indicatif::ProgressBar,
}

impl Ctx<'_> {
    /// Starts the next step: advances the bar, or logs a line when stderr is
    /// not a terminal (the bar hides itself there).
    fn step(&self, msg: String) {
        self.progress.inc(1);
        if self.progress.is_hidden() {
            eprintln!("{msg}");
        }
        self.progress.set_message(msg);
    }

    /// Steps per engine: each write row, two read rows, the failovers, the
    /// learner catch-up, the 1-node row and the cluster start.
    fn steps_per_engine(args: &Args) -> u64 {
        (args.clients.len() + 2 + args.failovers + 3) as u64
    }
}

/// Every row of one engine, appended to `rows`.
struct EngineRows<'a, 'c> {
    ctx: &'a Ctx<'c>,
    rows: &'a mut Vec<Row>,
}

impl WithFactory for EngineRows<'_, '_> {
    type Output = ();

    async fn run<F: Factory + Clone>(self, name: &'static str, factory: F) {
        run_engine(name, factory, self.ctx, self.rows).await;
    }
}

async fn run_engine<F: Factory + Clone>(
    name: &str,
    factory: F,
    ctx: &Ctx<'_>,
    rows: &mut Vec<Row>,
) {
    let args = ctx.args;
    let dur = Duration::from_secs(args.duration);
    let limit = |clients: usize| {
        clients as f64 / ((ctx.machine.fsync_p50_us + ctx.machine.loopback_rtt_p50_us) / 1e6)
    };
    let row = |workload: &str,
               nodes: usize,
               clients: usize,
               (ops, p50, p99): (f64, f64, f64),
               write: bool| Row {
        engine: name.to_owned(),
        workload: workload.to_owned(),
        nodes,
        clients,
        payload_bytes: if write { args.payload } else { 0 },
        durable: true,
        ops_per_sec: ops,
        p50_us: p50,
        p99_us: p99,
        ratio_to_physical_limit: write.then(|| ops / limit(clients)),
        cpu_us_per_op: None,
        fsyncs_per_write: None,
        peak_rss_mib: peak_rss_mib(),
        state_keys: None,
    };
    let measured = |workload: &str, nodes: usize, clients: usize, m: Measured, write: bool| {
        let mut r = row(
            workload,
            nodes,
            clients,
            (m.ops_per_sec, m.p50_us, m.p99_us),
            write,
        );
        r.cpu_us_per_op = m.cpu_us_per_op;
        r
    };
    let payload = vec![b'x'; args.payload];

    ctx.step(format!("[{name}] starting {} nodes", args.nodes));
    let mut cluster = Cluster::start(
        factory.clone(),
        args.nodes,
        &ctx.root.join(format!("{name}-{}", args.nodes)),
        false,
    )
    .await;
    let l = cluster.leader().await;
    let e = cluster.engine(l);
    for &clients in &args.clients {
        ctx.step(format!("[{name}] write, {clients} clients"));
        let (e2, p) = (e.clone(), payload.clone());
        let syncs = cluster.log_syncs();
        let r = load(clients, dur, move |c, n| {
            let (e, data) = (e2.clone(), put(format!("k{c}-{}", n % 1024).as_bytes(), &p));
            async move { e.propose(data).await.is_ok() }
        })
        .await;
        let per_write = fsyncs_per_write(cluster.log_syncs() - syncs, r.completed, args.nodes);
        let mut row = measured("write", args.nodes, clients, r, true);
        row.fsyncs_per_write = per_write;
        rows.push(row);
    }
    ctx.step(format!(
        "[{name}] linearizable reads, {} clients",
        args.read_clients
    ));
    let e2 = e.clone();
    let r = load(args.read_clients, dur, move |_, _| {
        let e = e2.clone();
        async move { e.linearizable_read().await.is_ok() }
    })
    .await;
    rows.push(measured(
        "linearizable_read",
        args.nodes,
        args.read_clients,
        r,
        false,
    ));
    ctx.step(format!(
        "[{name}] lease reads, {} clients",
        args.read_clients
    ));
    let (e2, map) = (e.clone(), cluster.nodes[l].map.clone());
    let r = load(args.read_clients, dur, move |c, _| {
        let (e, map) = (e2.clone(), map.clone());
        async move {
            // A lease read: the lease check, then a local lookup.
            let ok = e.check_lease().is_ok();
            if ok {
                let m = map.read().unwrap_or_else(|p| p.into_inner());
                std::hint::black_box(m.get(format!("k{c}-0").as_bytes()));
            } else {
                tokio::task::yield_now().await;
            }
            ok
        }
    })
    .await;
    rows.push(measured(
        "lease_read",
        args.nodes,
        args.read_clients,
        r,
        false,
    ));

    // Failover: stop the leader, time until a write commits on the new one.
    let mut samples = Vec::new();
    for round in 0..args.failovers {
        ctx.step(format!(
            "[{name}] failover {}/{}",
            round + 1,
            args.failovers
        ));
        let old = cluster.leader().await;
        let t = Instant::now();
        cluster.stop(old).await;
        loop {
            let mut done = false;
            for i in 0..cluster.nodes.len() {
                if let Some(e) = &cluster.nodes[i].engine {
                    if e.state() == State::Leader {
                        if let Ok(Ok(_)) = tokio::time::timeout(
                            Duration::from_millis(500),
                            e.propose(put(b"failover", b"1")),
                        )
                        .await
                        {
                            done = true;
                        }
                    }
                }
            }
            if done {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "no write committed after failover"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        samples.push(t.elapsed().as_secs_f64() * 1e6);
        cluster.restart(old).await;
        cluster.leader().await;
    }
    let median = percentile(&mut samples.clone(), 0.5);
    let worst = percentile(&mut samples, 1.0);
    rows.push(row(
        "failover",
        args.nodes,
        1,
        (1e6 / median.max(1.0), median, worst),
        false,
    ));

    ctx.step(format!("[{name}] learner catch-up"));
    let (secs, keys) = cluster
        .learner_catch_up(&ctx.root.join(format!("{name}-learner")))
        .await;
    let mut r = row(
        "learner_catch_up",
        args.nodes,
        1,
        (keys as f64 / secs, secs * 1e6, secs * 1e6),
        false,
    );
    r.state_keys = Some(keys);
    rows.push(r);
    cluster.shutdown().await;

    ctx.step(format!(
        "[{name}] 1 node, write, {} clients",
        args.read_clients
    ));
    let single = Cluster::start(
        factory.clone(),
        1,
        &ctx.root.join(format!("{name}-1")),
        false,
    )
    .await;
    let e = single.engine(single.leader().await);
    let p = payload.clone();
    let syncs = single.log_syncs();
    let r = load(args.read_clients, dur, move |c, n| {
        let (e, data) = (e.clone(), put(format!("k{c}-{}", n % 1024).as_bytes(), &p));
        async move { e.propose(data).await.is_ok() }
    })
    .await;
    let per_write = fsyncs_per_write(single.log_syncs() - syncs, r.completed, 1);
    let mut row = measured("write", 1, args.read_clients, r, true);
    row.fsyncs_per_write = per_write;
    rows.push(row);
    single.shutdown().await;

    // The same write load with mutual TLS between the peers: what TLS costs.
    ctx.step(format!(
        "[{name}] write with peer TLS, {} clients",
        args.read_clients
    ));
    let secured = Cluster::start(
        factory,
        args.nodes,
        &ctx.root.join(format!("{name}-{}-tls", args.nodes)),
        true,
    )
    .await;
    let e = secured.engine(secured.leader().await);
    let syncs = secured.log_syncs();
    let r = load(args.read_clients, dur, move |c, n| {
        let (e, data) = (
            e.clone(),
            put(format!("k{c}-{}", n % 1024).as_bytes(), &payload),
        );
        async move { e.propose(data).await.is_ok() }
    })
    .await;
    let per_write = fsyncs_per_write(secured.log_syncs() - syncs, r.completed, args.nodes);
    let mut row = measured("write_tls", args.nodes, args.read_clients, r, true);
    row.fsyncs_per_write = per_write;
    rows.push(row);
    secured.shutdown().await;
}

/// Log fsyncs per acknowledged write per replica (see `Row`).
fn fsyncs_per_write(syncs: u64, writes: u64, nodes: usize) -> Option<f64> {
    (writes > 0).then(|| syncs as f64 / (writes as f64 * nodes as f64))
}

/// Draws write throughput against clients, one line per engine.
fn write_chart(path: &Path, rows: &[Row], nodes: usize) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let writes: Vec<&Row> = rows
        .iter()
        .filter(|r| r.workload == "write" && r.nodes == nodes)
        .collect();
    if writes.is_empty() {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let max_y = writes.iter().map(|r| r.ops_per_sec).fold(1.0, f64::max) * 1.15;
    let max_x = writes.iter().map(|r| r.clients).max().unwrap_or(1) as f64 * 1.3;
    let root = SVGBackend::new(path, (820, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("durable {nodes}-node writes, loopback gRPC, fsync on"),
            ("sans-serif", 22),
        )
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d((1f64..max_x).log_scale(), 0f64..max_y)?;
    chart
        .configure_mesh()
        .x_desc("concurrent clients")
        .y_desc("writes / s")
        .draw()?;
    let mut engines: Vec<&str> = writes.iter().map(|r| r.engine.as_str()).collect();
    engines.dedup();
    for (i, engine) in engines.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let points: Vec<(f64, f64)> = writes
            .iter()
            .filter(|r| r.engine == *engine)
            .map(|r| (r.clients as f64, r.ops_per_sec))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(*engine)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(points.iter().map(|p| Circle::new(*p, 4, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()?;
    root.present()?;
    Ok(())
}

fn print_table(machine: &Machine, rows: &[Row], not_run: &[String]) {
    println!(
        "\nmachine: {} cores, fdatasync p50 {:.0} µs, loopback RTT p50 {:.0} µs\n",
        machine.cores, machine.fsync_p50_us, machine.loopback_rtt_p50_us
    );
    println!(
        "| engine | workload | nodes | clients | ops/s | p50 µs | p99 µs | vs physical limit | CPU µs/op | fsyncs/write | peak RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {} | {} | {} | {:.0} |",
            r.engine,
            r.workload,
            r.nodes,
            r.clients,
            r.ops_per_sec,
            r.p50_us,
            r.p99_us,
            r.ratio_to_physical_limit
                .map(|x| format!("{x:.2}"))
                .unwrap_or_else(|| "-".into()),
            r.cpu_us_per_op
                .map(|x| format!("{x:.1}"))
                .unwrap_or_else(|| "-".into()),
            r.fsyncs_per_write
                .map(|x| format!("{x:.3}"))
                .unwrap_or_else(|| "-".into()),
            r.peak_rss_mib
        );
    }
    for n in not_run {
        println!("\nnot run: {n}");
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let base = args.data_dir.clone().unwrap_or_else(std::env::temp_dir);
    let root = tempfile::Builder::new()
        .prefix("raftengine-bench-")
        .tempdir_in(&base)
        .expect("temp dir");
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let machine = match args.child_machine[..] {
        [fsync, rtt] => Machine {
            cores,
            fsync_p50_us: fsync,
            loopback_rtt_p50_us: rtt,
        },
        _ => Machine {
            cores,
            fsync_p50_us: measure_fsync(root.path()),
            loopback_rtt_p50_us: measure_rtt(),
        },
    };
    let wanted = |name: &str| args.engines.is_empty() || args.engines.iter().any(|e| e == name);
    let compiled: Vec<&str> = engines::COMPILED
        .iter()
        .copied()
        .filter(|name| wanted(name))
        .collect();
    if args.child_rows.is_none() && compiled.len() > 1 {
        run_in_children(&args, &machine, &compiled, root.path());
        return;
    }
    let mut rows = Vec::new();
    let mut not_run = Vec::new();
    let chosen: Vec<&str> = engines::KNOWN
        .iter()
        .copied()
        .filter(|name| wanted(name))
        .collect();
    let progress = indicatif::ProgressBar::new(chosen.len() as u64 * Ctx::steps_per_engine(&args));
    progress.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let ctx = Ctx {
        args: &args,
        machine: &machine,
        root: root.path().to_path_buf(),
        progress,
    };
    for name in chosen {
        let job = EngineRows {
            ctx: &ctx,
            rows: &mut rows,
        };
        if let Err(why) = engines::with_factory(name, job).await {
            not_run.push(format!("{name}: {why}"));
        }
    }
    ctx.progress.finish_and_clear();
    if let Some(path) = &args.child_rows {
        let json = serde_json::to_string(&rows).expect("serialize rows");
        std::fs::write(path, json).expect("write rows");
        return;
    }
    report(&args, machine, rows, not_run);
}

/// Runs each engine in its own child process (this binary, with the same
/// options) and reports their rows together.
fn run_in_children(args: &Args, machine: &Machine, engines: &[&str], root: &Path) {
    let mut rows = Vec::new();
    let mut not_run = Vec::new();
    let exe = std::env::current_exe().expect("path of the bench binary");
    for engine in engines {
        let out = root.join(format!("rows-{engine}.json"));
        let mut child = std::process::Command::new(&exe);
        child
            .args(["--clients", &join(&args.clients)])
            .args(["--read-clients", &args.read_clients.to_string()])
            .args(["--duration", &args.duration.to_string()])
            .args(["--payload", &args.payload.to_string()])
            .args(["--nodes", &args.nodes.to_string()])
            .args(["--failovers", &args.failovers.to_string()])
            .args(["--engines", engine])
            .arg("--child-rows")
            .arg(&out)
            .arg("--child-machine")
            .arg(format!(
                "{},{}",
                machine.fsync_p50_us, machine.loopback_rtt_p50_us
            ));
        if let Some(d) = &args.data_dir {
            child.arg("--data-dir").arg(d);
        }
        match child.status() {
            Ok(status) if status.success() => {
                let raw = std::fs::read_to_string(&out).expect("read child rows");
                let mut got: Vec<Row> = serde_json::from_str(&raw).expect("parse child rows");
                rows.append(&mut got);
            }
            Ok(status) => not_run.push(format!("{engine}: bench process failed ({status})")),
            Err(e) => not_run.push(format!("{engine}: could not start bench process: {e}")),
        }
    }
    report(
        args,
        Machine {
            cores: machine.cores,
            fsync_p50_us: machine.fsync_p50_us,
            loopback_rtt_p50_us: machine.loopback_rtt_p50_us,
        },
        rows,
        not_run,
    );
}

fn join(values: &[usize]) -> String {
    values
        .iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn report(args: &Args, machine: Machine, rows: Vec<Row>, not_run: Vec<String>) {
    print_table(&machine, &rows, &not_run);
    match write_chart(&args.chart, &rows, args.nodes) {
        Ok(()) => eprintln!("wrote {}", args.chart.display()),
        Err(e) => eprintln!("could not draw {}: {e}", args.chart.display()),
    }
    if let Some(path) = &args.json {
        let report = Report {
            machine,
            results: rows,
            not_run,
        };
        let json = serde_json::to_string_pretty(&report).expect("serialize");
        std::fs::write(path, json).expect("write json");
        eprintln!("wrote {}", path.display());
    }
}
