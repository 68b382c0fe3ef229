//! A cluster of real nodes in one process: each has its own tonic server on
//! a loopback port chosen by the OS, its own temporary data dir, and the
//! reference state machine.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use raftengine::tls::PeerSecurity;
use raftengine::{Engine, Error, Factory, FactoryConfig, Server, State, TransportServer};

use crate::TestPki;
use tempfile::TempDir;
use tokio::time::Instant;

use crate::disk::{Disk, TailLoss};
use crate::faults::{Network, Proxy, node_ip};
use crate::kv::{KvHandle, KvResponse, KvStateMachine};

/// The engine type every case works with.
pub type KvEngine = Arc<dyn Engine<KvResponse>>;

/// How long a wait may take before the case fails. Generous: the cases check
/// that things happen, not how fast (the bench measures speed).
pub const WAIT: Duration = Duration::from_secs(30);

/// Narrates one step of a case: `--- what` at info level, target
/// `raftengine_conformance::step`. The harness narrates its own actions
/// (isolate, heal, stop, restart, wipe, power cut, joiners, the leader it
/// found) this way, so a case's log reads the same in every file; a case
/// calls it for steps of its own. `RUST_LOG=raftengine_conformance::step=info`
/// shows only the narration.
pub fn step(what: impl std::fmt::Display) {
    tracing::info!(target: "raftengine_conformance::step", "--- {what}");
}

/// Polls `cond` every 20 ms until it returns `Some`, or panics after
/// [`WAIT`] saying what never happened.
pub async fn wait_for<T, Fut>(what: &str, cond: impl FnMut() -> Fut) -> T
where
    Fut: Future<Output = Option<T>>,
{
    wait_for_explained(what, cond, String::new).await
}

/// [`wait_for`] that, on timeout, adds what `explain` says about the state
/// it gave up in (so a flake tells more than that it timed out).
pub(crate) async fn wait_for_explained<T, Fut>(
    what: &str,
    mut cond: impl FnMut() -> Fut,
    explain: impl Fn() -> String,
) -> T
where
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = cond().await {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {WAIT:?} waiting for: {what}{}", explain());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The sockets of one node: its own listener and the proxy in front of it.
struct Slot {
    listener: tokio::net::TcpListener,
    backend: std::net::SocketAddr,
    proxy: Arc<Proxy>,
}

impl Slot {
    async fn new(net: &Network, i: usize) -> Slot {
        let listener = bind(&std::net::SocketAddr::new(node_ip(i), 0).to_string()).await;
        let backend = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => panic!("local_addr: {e}"),
        };
        net.set_backend(i, backend);
        let proxy = match Proxy::start(net.clone(), i).await {
            Ok(p) => Arc::new(p),
            Err(e) => panic!("proxy for node {i}: {e}"),
        };
        Slot {
            listener,
            backend,
            proxy,
        }
    }
}

/// A running node's engine and transport server.
struct Running {
    engine: KvEngine,
    server: TransportServer,
}

/// One node of a [`Cluster`].
pub struct Node {
    /// The node id.
    pub id: String,
    /// Its advertised transport address: its proxy's.
    pub address: String,
    /// Where the node itself listens, behind the proxy.
    pub backend: std::net::SocketAddr,
    _proxy: Arc<Proxy>,
    /// Its data dir.
    pub dir: PathBuf,
    /// The state of its current state machine. The handle stays the same
    /// across restarts; a restart empties it (a fresh state machine).
    pub kv: KvHandle,
    /// The `join_as_learner` flag it was started with (kept on restart, as
    /// an operator's command line would).
    join_as_learner: bool,
    /// `None` while stopped. Behind a lock so that a shared cluster (e.g.
    /// one a nemesis task restarts nodes in while clients run) can stop
    /// and restart nodes through `&self`.
    running: std::sync::Mutex<Option<Running>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.id)
            .field("address", &self.address)
            .field("running", &self.is_running())
            .finish_non_exhaustive()
    }
}

impl Node {
    fn lock_running(&self) -> std::sync::MutexGuard<'_, Option<Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The running engine.
    ///
    /// # Panics
    ///
    /// If the node is stopped.
    pub fn engine(&self) -> KvEngine {
        match &*self.lock_running() {
            Some(r) => r.engine.clone(),
            None => panic!("node {} is stopped", self.id),
        }
    }

    /// The engine if the node runs.
    pub fn try_engine(&self) -> Option<KvEngine> {
        self.lock_running().as_ref().map(|r| r.engine.clone())
    }

    /// True while the node runs.
    pub fn is_running(&self) -> bool {
        self.lock_running().is_some()
    }
}

/// N nodes on loopback.
#[derive(Debug)]
pub struct Cluster<F: Factory> {
    factory: F,
    _root: TempDir,
    root_path: PathBuf,
    /// The nodes, in creation order.
    pub nodes: Vec<Node>,
    /// The links between the nodes' proxies.
    pub net: Network,
    /// The cluster's CA; every node runs with mutual TLS and a
    /// certificate from it.
    pub pki: TestPki,
    /// With [`Cluster::start_on_disks`]: node `i`'s data dir lives on
    /// `disks[i]`. Declared after `nodes`, so engines are dropped before
    /// their disks unmount.
    disks: Vec<Disk>,
    /// What every node's peer port admits ([`Cluster::start_with_limits`];
    /// the defaults otherwise).
    pub limits: raftengine::tls::PeerLimits,
}

async fn bind(address: &str) -> tokio::net::TcpListener {
    // A restarted node reuses its address; the port may take a moment to be
    // free again after the old server closed.
    wait_for(&format!("binding {address}"), || async {
        tokio::net::TcpListener::bind(address).await.ok()
    })
    .await
}

impl<F: Factory> Cluster<F> {
    /// Starts `n` voters that bootstrap one cluster together.
    pub async fn start(factory: F, n: usize) -> Self {
        let pki = TestPki::new("raftengine conformance CA");
        Self::start_with(factory, n, Vec::new(), pki).await
    }

    /// Starts `n` voters like [`Cluster::start`], with certificates from
    /// `pki` (e.g. [`TestPki::sharing_ca_of`] another cluster's).
    pub async fn start_with_pki(factory: F, n: usize, pki: TestPki) -> Self {
        Self::start_with(factory, n, Vec::new(), pki).await
    }

    /// [`Cluster::start`], every node's peer port admitting `limits`.
    pub async fn start_with_limits(
        factory: F,
        n: usize,
        limits: raftengine::tls::PeerLimits,
    ) -> Self {
        let pki = TestPki::new("raftengine conformance CA");
        Self::start_with_options(factory, n, Vec::new(), pki, limits).await
    }

    /// Starts `n` voters like [`Cluster::start`], each with its data dir on
    /// a power-cut disk of its own ([`crate::disk`]): see
    /// [`Cluster::power_cycle`] and [`Cluster::disk`].
    ///
    /// # Panics
    ///
    /// If a disk cannot be mounted (no `/dev/fuse`, no right to mount): the
    /// case fails loudly rather than skip.
    pub async fn start_on_disks(factory: F, n: usize) -> Self {
        let disks = (0..n)
            .map(|i| Disk::mount().unwrap_or_else(|e| panic!("disk of node n{}: {e}", i + 1)))
            .collect();
        let pki = TestPki::new("raftengine conformance CA");
        Self::start_with(factory, n, disks, pki).await
    }

    async fn start_with(factory: F, n: usize, disks: Vec<Disk>, pki: TestPki) -> Self {
        let limits = raftengine::tls::PeerLimits::default();
        Self::start_with_options(factory, n, disks, pki, limits).await
    }

    async fn start_with_options(
        factory: F,
        n: usize,
        disks: Vec<Disk>,
        pki: TestPki,
        limits: raftengine::tls::PeerLimits,
    ) -> Self {
        // Logs go to the test output when RUST_LOG is set (e.g. `info`).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let root = match tempfile::Builder::new().prefix("raftengine-").tempdir() {
            Ok(d) => d,
            Err(e) => panic!("cannot create a temporary dir: {e}"),
        };
        let root_path = root.path().to_path_buf();
        let net = Network::default();
        let mut slots = Vec::new();
        let mut peers = Vec::new();
        for i in 0..n {
            let slot = Slot::new(&net, i).await;
            peers.push(Server::voter(
                format!("n{}", i + 1),
                slot.proxy.address.to_string(),
            ));
            slots.push(slot);
        }
        let mut cluster = Cluster {
            factory,
            _root: root,
            root_path,
            nodes: Vec::new(),
            net,
            pki,
            disks,
            limits,
        };
        for (i, slot) in slots.into_iter().enumerate() {
            let id = peers[i].id.clone();
            let node = cluster
                .launch(i, id, slot, peers.clone(), true, false)
                .await
                .unwrap_or_else(|e| panic!("node n{} failed to start: {e}", i + 1));
            cluster.nodes.push(node);
        }
        cluster
    }

    async fn launch(
        &self,
        i: usize,
        id: String,
        slot: Slot,
        peers: Vec<Server>,
        bootstrap: bool,
        join_as_learner: bool,
    ) -> raftengine::Result<Node> {
        let dir = match self.disks.get(i) {
            Some(disk) => disk.path().join(&id),
            None => self.root_path.join(&id),
        };
        let address = slot.proxy.address.to_string();
        let kv = KvHandle::default();
        let running = self
            .start_node(
                &id,
                &address,
                &dir,
                slot.listener,
                &kv,
                peers,
                bootstrap,
                join_as_learner,
            )
            .await?;
        Ok(Node {
            id,
            address,
            backend: slot.backend,
            _proxy: slot.proxy,
            dir,
            kv,
            join_as_learner,
            running: std::sync::Mutex::new(Some(running)),
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn start_node(
        &self,
        id: &str,
        address: &str,
        dir: &std::path::Path,
        listener: tokio::net::TcpListener,
        kv: &KvHandle,
        peers: Vec<Server>,
        bootstrap: bool,
        join_as_learner: bool,
    ) -> raftengine::Result<Running> {
        let sm = KvStateMachine::attached(kv);
        let config = FactoryConfig::new(id, address, dir, sm)
            .with_peers(peers)
            .with_bootstrap(bootstrap)
            .with_join_as_learner(join_as_learner)
            // The fault proxy tells links apart by their source IP.
            .with_bind_outbound_to_local_ip(true)
            // A certificate issued at every start: restarts also rotate.
            .with_peer_security(PeerSecurity::Tls(self.pki.node(id)))
            .with_peer_limits(self.limits);
        let created = self.factory.create(config).await?;
        let server = created.serve(listener)?;
        Ok(Running {
            engine: created.engine,
            server,
        })
    }

    /// Starts the stopped node `i` again on its dir, address and state
    /// handle (emptied: a fresh state machine).
    async fn start_existing(
        &self,
        i: usize,
        peers: Vec<Server>,
        bootstrap: bool,
    ) -> raftengine::Result<()> {
        let slot = self.slot_again(i).await;
        let node = &self.nodes[i];
        let running = self
            .start_node(
                &node.id,
                &node.address,
                &node.dir,
                slot.listener,
                &node.kv,
                peers,
                bootstrap,
                node.join_as_learner,
            )
            .await?;
        *node.lock_running() = Some(running);
        Ok(())
    }

    async fn slot_again(&self, i: usize) -> Slot {
        let node = &self.nodes[i];
        Slot {
            listener: bind(&node.backend.to_string()).await,
            backend: node.backend,
            proxy: node._proxy.clone(),
        }
    }

    /// Isolates node `i` from every other node (both directions).
    pub fn isolate(&self, i: usize) {
        step(format_args!("isolate {}", self.nodes[i].id));
        self.net.isolate(i, 0..self.nodes.len());
    }

    /// Restores every link.
    pub fn heal(&self) {
        step("heal every link");
        self.net.heal_all();
    }

    /// The engine of node `i`.
    ///
    /// # Panics
    ///
    /// If node `i` is stopped.
    pub fn engine(&self, i: usize) -> KvEngine {
        self.nodes[i].engine()
    }

    /// The members as `Server`s (all voters, as bootstrapped).
    pub fn peers(&self) -> Vec<Server> {
        self.nodes
            .iter()
            .map(|n| Server::voter(n.id.clone(), n.address.clone()))
            .collect()
    }

    /// Waits until exactly one running node leads and every running voter
    /// names it; returns its position.
    pub async fn wait_leader(&self) -> usize {
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].is_running())
            .collect();
        let l = self.wait_leader_among(&running).await;
        step(format_args!("{} leads", self.nodes[l].id));
        l
    }

    /// Waits until exactly one of `group` leads and every member of `group`
    /// names it; returns its position.
    pub async fn wait_leader_among(&self, group: &[usize]) -> usize {
        wait_for_explained(
            &format!("one leader among {group:?} that they all know"),
            || async {
                let running: Vec<usize> = group.to_vec();
                let leaders: Vec<usize> = running
                    .iter()
                    .copied()
                    .filter(|i| self.engine(*i).state() == State::Leader)
                    .collect();
                if leaders.len() != 1 {
                    return None;
                }
                let leader_id = &self.nodes[leaders[0]].id;
                let all_agree = running
                    .iter()
                    .all(|i| self.engine(*i).leader().is_some_and(|l| &l.id == leader_id));
                all_agree.then_some(leaders[0])
            },
            || self.describe(group),
        )
        .await
    }

    /// One line per node of `group`: what its engine reports.
    pub fn describe(&self, group: &[usize]) -> String {
        let mut out = String::new();
        for &i in group {
            let line = match self.nodes[i].try_engine() {
                Some(e) => {
                    let s = e.status();
                    format!(
                        "{:?} term {} leader {:?} commit {} applied {} last log {} config {}",
                        s.state,
                        s.term,
                        s.leader.map(|l| l.id),
                        s.commit_index,
                        s.applied_index,
                        s.last_log_index,
                        s.configuration_index
                    )
                }
                None => "not running".to_owned(),
            };
            out.push_str(&format!("\n  {}: {line}", self.nodes[i].id));
        }
        out
    }

    /// Any running node other than `not`.
    pub fn other_than(&self, not: usize) -> usize {
        match (0..self.nodes.len()).find(|i| *i != not && self.nodes[*i].is_running()) {
            Some(i) => i,
            None => panic!("no running node other than {not}"),
        }
    }

    /// Waits until node `i`'s state machine applied `index`.
    pub async fn wait_applied(&self, i: usize, index: u64) {
        let node = &self.nodes[i];
        wait_for(&format!("{} to apply index {index}", node.id), || async {
            (node.kv.last_applied() >= index).then_some(())
        })
        .await
    }

    /// Makes `count` writes (keys `<tag><n>`) through the leader and waits
    /// until every node has applied them. A majority is enough to commit,
    /// so a follower that something broke would not show in the writes
    /// alone: this is the check that every node is still whole.
    pub async fn every_node_applies_new_writes(&self, tag: &str, count: usize) {
        let l = self.wait_leader().await;
        let mut last = 0;
        for i in 0..count {
            last = self
                .engine(l)
                .propose(crate::kv::put(format!("{tag}{i}"), "ok"))
                .await
                .unwrap_or_else(|e| panic!("write {tag}{i}: {e}"))
                .commit_index;
        }
        for i in 0..self.nodes.len() {
            self.wait_applied(i, last).await;
        }
    }

    /// Stops node `i` (graceful shutdown of engine and server).
    pub async fn stop(&self, i: usize) {
        let node = &self.nodes[i];
        let Some(running) = node.lock_running().take() else {
            return;
        };
        step(format_args!("stop {}", node.id));
        if let Err(e) = running.engine.shutdown().await {
            panic!("shutdown of {} failed: {e}", node.id);
        }
        let _ = running.server.shutdown().await;
    }

    /// Restarts node `i` on its data dir with a fresh state machine and the
    /// same address. `bootstrap`/peers are passed as at first start.
    pub async fn restart(&self, i: usize) -> raftengine::Result<()> {
        self.stop(i).await;
        step(format_args!("restart {} on its data dir", self.nodes[i].id));
        let peers = self.peers();
        self.start_existing(i, peers, !self.nodes[i].join_as_learner)
            .await
    }

    /// The power-cut disk node `i`'s data dir lives on.
    ///
    /// # Panics
    ///
    /// If the cluster was not started with [`Cluster::start_on_disks`].
    pub fn disk(&self, i: usize) -> &Disk {
        match self.disks.get(i) {
            Some(d) => d,
            None => panic!("node {i} has no power-cut disk (use Cluster::start_on_disks)"),
        }
    }

    /// Stops node `i` whose disk failed or lost power: its shutdown may
    /// fail (it cannot flush), but it must finish.
    pub async fn stop_failed(&self, i: usize) {
        let node = &self.nodes[i];
        let Some(running) = node.lock_running().take() else {
            return;
        };
        match tokio::time::timeout(WAIT, running.engine.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::info!(node = %node.id, error = %e, "shutdown after a disk failure")
            }
            Err(_) => panic!(
                "{} did not finish shutting down within {WAIT:?} after its disk failed",
                node.id
            ),
        }
        let _ = running.server.shutdown().await;
    }

    /// A power cut of `victims` at one instant, then a cold start: their
    /// disks lose power (every later I/O fails) and their links go down
    /// together; once stopped, each disk comes back holding what `loss`
    /// leaves of the writes no fsync covered, the links heal, and the nodes
    /// restart on their data dirs with fresh state machines.
    ///
    /// # Errors
    ///
    /// A node refused to start on what the cut left (the case decides
    /// whether that is a failure; for a correct backend it is).
    pub async fn power_cycle(&self, victims: &[usize], loss: TailLoss) -> raftengine::Result<()> {
        for &i in victims {
            self.disk(i).cut();
        }
        for &i in victims {
            self.isolate(i);
        }
        for &i in victims {
            self.stop_failed(i).await;
        }
        // A process that loses power leaves nothing running. In-process,
        // a stopped engine's threads may still hold its files for a moment;
        // the disk must not come back while they do (they would write into
        // it, and raft-engine's lock file may be one of the names the cut
        // took, so a new instance would not even be kept out).
        for &i in victims {
            let disk = self.disk(i);
            wait_for(
                &format!("{} to close every file after it stopped", self.nodes[i].id),
                || async { (disk.stats().open_files == 0).then_some(()) },
            )
            .await;
        }
        for &i in victims {
            let loss = match loss {
                TailLoss::All => TailLoss::All,
                // Each disk cuts at its own points.
                TailLoss::RandomCut { seed } => TailLoss::RandomCut {
                    seed: seed ^ (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                },
            };
            self.disk(i).power_on(loss);
        }
        self.heal();
        for &i in victims {
            let bootstrap = !self.nodes[i].join_as_learner;
            self.start_existing(i, self.peers(), bootstrap).await?;
        }
        Ok(())
    }

    /// Stops node `i` and deletes its data dir.
    pub async fn wipe(&self, i: usize) {
        self.stop(i).await;
        step(format_args!("wipe the data dir of {}", self.nodes[i].id));
        let dir = self.nodes[i].dir.clone();
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            panic!("wipe {}: {e}", dir.display());
        }
    }

    /// Starts node `i` again on its (possibly wiped) dir with an explicit
    /// bootstrap flag and peer list.
    pub async fn start_again(
        &self,
        i: usize,
        bootstrap: bool,
        peers: Vec<Server>,
    ) -> raftengine::Result<()> {
        self.stop(i).await;
        step(format_args!(
            "start {} again (bootstrap {bootstrap}, {} peers)",
            self.nodes[i].id,
            peers.len()
        ));
        self.start_existing(i, peers, bootstrap).await
    }

    /// Starts a new, empty node that waits to be added; returns its position.
    pub async fn spawn_joiner(&mut self, id: &str, join_as_learner: bool) -> usize {
        step(format_args!(
            "start joiner {id} ({})",
            if join_as_learner {
                "as a learner"
            } else {
                "as a voter"
            }
        ));
        let slot = Slot::new(&self.net, self.nodes.len()).await;
        let peers = self.peers();
        let node = self
            .launch(
                self.nodes.len(),
                id.to_owned(),
                slot,
                peers,
                false,
                join_as_learner,
            )
            .await
            .unwrap_or_else(|e| panic!("joiner {id} failed to start: {e}"));
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// Starts a new node `id` and has the leader at `leader` add it as a
    /// learner; returns its position and the new configuration index.
    ///
    /// # Panics
    ///
    /// If the node cannot start or the leader refuses the change with
    /// anything but `ConfChangePending` (retried until the deadline).
    pub async fn add_learner_node(&mut self, leader: usize, id: &str) -> (usize, u64) {
        let j = self.spawn_joiner(id, true).await;
        let address = self.nodes[j].address.clone();
        let e = self.engine(leader);
        // A leader elected a moment ago may not have committed the
        // configuration it inherited yet; it says so with the retryable
        // `ConfChangePending`.
        let index = wait_for(&format!("the leader to accept learner {id}"), || async {
            match e.add_learner(id, &address, None).await {
                Ok(index) => Some(index),
                Err(Error::ConfChangePending) => None,
                Err(other) => panic!("add learner {id}: {other}"),
            }
        })
        .await;
        (j, index)
    }

    /// Shuts every node down (call at the end of a case).
    pub async fn shutdown(self) {
        for i in 0..self.nodes.len() {
            self.stop(i).await;
        }
    }
}
