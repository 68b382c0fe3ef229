//! Three `kv serve` processes per engine on loopback: writes under load,
//! SIGKILL of the leader, writes through the new leader, restart of the
//! killed process on its data dir; no acknowledged write may be lost and all
//! replicas must converge. The peers run mutual TLS with certificates
//! from `kv gen-certs`; clients use each node's separate API port, with
//! mutual TLS too (`--api-tls`).

#![allow(clippy::unwrap_used, clippy::expect_used)]
// Every case runs an engine; a build with none has nothing to run here.
#![cfg(any(feature = "etcd", feature = "openraft"))]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use raftengine::tls::{PeerCredentials, PeerTls};
use raftengine_conformance::{Answer, Forge, Forger, Forgery};
use raftengine_examples::api::kv_client::KvClient;
use raftengine_examples::api::{Empty, GetRequest, PutRequest, ReadMode};
use tokio::time::Instant;
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(60);

struct Node {
    id: String,
    /// The client API's address.
    addr: String,
    /// The Raft transport's address (peers only, TLS).
    raft: String,
    child: Option<Child>,
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The certificates of both tests' nodes and of their client, issued once
/// with `kv gen-certs` (one CA; each test's cluster has its own cluster
/// id).
fn certs() -> &'static Path {
    static CERTS: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    CERTS
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            gen_certs(dir.path(), &["n1", "n2", "n3", "client"]);
            dir
        })
        .path()
}

/// The client's credentials for the API ports (`kv serve --api-tls`).
async fn client_credentials() -> &'static PeerCredentials {
    static CLIENT: tokio::sync::OnceCell<PeerCredentials> = tokio::sync::OnceCell::const_new();
    CLIENT
        .get_or_init(|| async {
            let certs = certs().join("certs");
            let tls = PeerTls::new(
                certs.join("ca.pem"),
                certs.join("client.pem"),
                certs.join("client.key"),
            );
            PeerCredentials::load(&tls, "client").await.unwrap()
        })
        .await
}

/// The `kv` client flags that use those credentials.
fn client_flags() -> Vec<String> {
    let certs = certs().join("certs");
    let path = |f: &str| certs.join(f).display().to_string();
    vec![
        "--client-id".into(),
        "client".into(),
        "--client-ca".into(),
        path("ca.pem"),
        "--client-cert".into(),
        path("client.pem"),
        "--client-key".into(),
        path("client.key"),
    ]
}

/// Issues certificates with `kv gen-certs`, as an operator trying the
/// README would.
fn gen_certs(dir: &Path, ids: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_kv"))
        .arg("gen-certs")
        .arg("--out")
        .arg(dir.join("certs"))
        .args(ids)
        .output()
        .expect("run kv gen-certs");
    assert!(
        out.status.success(),
        "kv gen-certs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes an admin token with `kv gen-token`.
fn gen_token(path: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_kv"))
        .arg("gen-token")
        .arg("--out")
        .arg(path)
        .output()
        .expect("run kv gen-token");
    assert!(
        out.status.success(),
        "kv gen-token: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn spawn(engine: &str, node: &Node, peers: &str, dir: &Path) -> Child {
    let (id, certs) = (node.id.as_str(), certs().join("certs"));
    Command::new(env!("CARGO_BIN_EXE_kv"))
        .args([
            "serve",
            "--id",
            id,
            "--listen",
            &node.raft,
            "--api",
            &node.addr,
            "--peers",
            peers,
            "--bootstrap",
        ])
        .arg("--peer-ca")
        .arg(certs.join("ca.pem"))
        .arg("--peer-cert")
        .arg(certs.join(format!("{id}.pem")))
        .arg("--peer-key")
        .arg(certs.join(format!("{id}.key")))
        .arg("--data-dir")
        .arg(dir.join(id))
        .arg("--admin-token-file")
        .arg(dir.join("admin-token"))
        .arg("--api-tls")
        .args(["--engine", engine])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn kv serve")
}

async fn client(addr: &str) -> Option<KvClient<Channel>> {
    raftengine_examples::api_tls::connect(
        addr,
        Some(client_credentials().await),
        Duration::from_millis(500),
        Duration::from_secs(5),
    )
    .await
    .ok()
    .map(KvClient::new)
}

/// The index of the node that reports itself leader, polling with a deadline.
async fn leader(nodes: &[Node]) -> usize {
    let deadline = Instant::now() + WAIT;
    loop {
        for (i, n) in nodes.iter().enumerate() {
            if n.child.is_none() {
                continue;
            }
            if let Some(mut c) = client(&n.addr).await {
                if let Ok(s) = c.status(Empty {}).await {
                    if s.get_ref().state == "leader" {
                        return i;
                    }
                }
            }
        }
        assert!(Instant::now() < deadline, "no leader within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes `key` until one node acknowledges it; returns false if the
/// deadline passed. Unknown outcomes are retried (the value is the same).
async fn write(nodes: &[Node], key: &str) -> bool {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        for n in nodes.iter().filter(|n| n.child.is_some()) {
            let Some(mut c) = client(&n.addr).await else {
                continue;
            };
            let req = PutRequest {
                key: key.as_bytes().to_vec().into(),
                value: format!("v-{key}").into_bytes().into(),
            };
            if c.put(req).await.is_ok() {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

async fn read(addr: &str, key: &str, mode: ReadMode) -> Option<Option<Vec<u8>>> {
    let mut c = client(addr).await?;
    let r = c
        .get(GetRequest {
            key: key.as_bytes().to_vec().into(),
            mode: mode as i32,
        })
        .await
        .ok()?
        .into_inner();
    Some(r.found.then(|| r.value.to_vec()))
}

async fn run(engine: &str) {
    let dir = tempfile::tempdir().unwrap();
    let ids = ["n1", "n2", "n3"];
    gen_token(&dir.path().join("admin-token"));
    let mut nodes: Vec<Node> = ids
        .iter()
        .map(|id| Node {
            id: (*id).to_owned(),
            addr: format!("127.0.0.1:{}", free_port()),
            raft: format!("127.0.0.1:{}", free_port()),
            child: None,
        })
        .collect();
    let peers = nodes
        .iter()
        .map(|n| format!("{}={}", n.id, n.raft))
        .collect::<Vec<_>>()
        .join(",");
    for n in &mut nodes {
        n.child = Some(spawn(engine, n, &peers, dir.path()));
    }

    let mut acked = BTreeMap::new();
    let first = leader(&nodes).await;
    // Load: 8 concurrent writers, each cycling through the nodes until one
    // acknowledges; the leader is killed while they run.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut batch = Vec::new();
    for w in 0..8 {
        let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
        let stop = stop.clone();
        batch.push(tokio::spawn(async move {
            let mut done = Vec::new();
            let mut k = 0;
            let mut at = w % addrs.len();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let key = format!("w{w}-k{k}");
                let req = PutRequest {
                    key: key.as_bytes().to_vec().into(),
                    value: format!("v-{key}").into_bytes().into(),
                };
                let ok = match client(&addrs[at]).await {
                    Some(mut c) => c.put(req).await.is_ok(),
                    None => false,
                };
                if ok {
                    done.push(key);
                    k += 1;
                } else {
                    at = (at + 1) % addrs.len();
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            done
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed = first;
    if let Some(mut c) = nodes[killed].child.take() {
        c.kill().unwrap(); // SIGKILL
        c.wait().unwrap();
    }
    tokio::time::sleep(Duration::from_millis(4000)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for h in batch {
        for k in h.await.unwrap() {
            acked.insert(k.clone(), format!("v-{k}"));
        }
    }
    assert!(acked.len() > 50, "too little load: {} writes", acked.len());
    // Through the new leader.
    let second = leader(&nodes).await;
    assert_ne!(second, killed);
    for k in 0..30 {
        let key = format!("after-{k}");
        assert!(
            write(&nodes, &key).await,
            "write {key} through the new leader failed"
        );
        acked.insert(key.clone(), format!("v-{key}"));
    }
    // Restart the killed process on its data dir.
    nodes[killed].child = Some(spawn(engine, &nodes[killed], &peers, dir.path()));
    let marker = "final-marker";
    assert!(write(&nodes, marker).await);
    acked.insert(marker.to_owned(), format!("v-{marker}"));

    // No acknowledged write lost (linearizable reads), and every replica,
    // including the restarted one, converges (local reads).
    for (k, v) in &acked {
        // A read can fail while leadership moves; only a successful read
        // that misses the value is a lost write.
        let deadline = Instant::now() + WAIT;
        let got = loop {
            let l = leader(&nodes).await;
            if let Some(got) = read(&nodes[l].addr, k, ReadMode::Linearizable).await {
                break got;
            }
            assert!(
                Instant::now() < deadline,
                "no linearizable read of {k} succeeded"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(got, Some(v.clone().into_bytes()), "acknowledged {k} lost");
    }
    cli_follows_hints_and_reads_cleanly(&nodes, marker, dir.path()).await;
    for key in forgeries_from_outside_change_nothing(engine, &mut nodes, dir.path()).await {
        acked.insert(key.clone(), format!("v-{key}"));
    }
    for n in &nodes {
        let deadline = Instant::now() + WAIT;
        loop {
            let mut all = true;
            for (k, v) in &acked {
                if read(&n.addr, k, ReadMode::Local).await != Some(Some(v.clone().into_bytes())) {
                    all = false;
                    break;
                }
            }
            if all {
                break;
            }
            assert!(Instant::now() < deadline, "{} did not converge", n.id);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The node's status through its API.
async fn status(n: &Node) -> Option<raftengine_examples::api::StatusReply> {
    let mut c = client(&n.addr).await?;
    c.status(Empty {}).await.ok().map(|r| r.into_inner())
}

/// Sends `forgery` with the forger of `engine`'s wire format.
async fn send_forgery(engine: &str, forgery: Forgery, forge: &Forge) -> Result<Answer, String> {
    match engine {
        "etcd" => {
            raftengine_etcd::forge::EtcdForger
                .send(forgery, forge)
                .await
        }
        "openraft" => {
            raftengine_openraft::forge::OpenraftForger
                .send(forgery, forge)
                .await
        }
        other => panic!("no forger for engine {other:?}"),
    }
}

/// The suite's forgeries (`raftengine_conformance::cases::forged`), this
/// time from another process against real `kv serve` processes: each sent
/// three times as a real member (its certificate, its cluster id), to a
/// follower from the other follower (the address forgery to the leader).
/// Afterwards every process still runs, every term stays below 2^48, no
/// node dialled the address a forged message gave, a snapshot from a
/// follower was refused, and writes still succeed (the keys returned,
/// which the caller then reads on every node).
async fn forgeries_from_outside_change_nothing(
    engine: &str,
    nodes: &mut [Node],
    dir: &Path,
) -> Vec<String> {
    let mut written = Vec::new();
    let trap = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let trap_address = trap.local_addr().unwrap().to_string();
    let dialled = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = dialled.clone();
    let trap_task = tokio::spawn(async move {
        while let Ok((conn, _)) = trap.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(conn);
        }
    });
    let certs = certs().join("certs");
    for forgery in [
        Forgery::HugeTerm,
        Forgery::CommitBeyondLog,
        Forgery::RemovedNotice,
        Forgery::PoisonedAddress,
        Forgery::SnapshotFromFollower,
    ] {
        let l = leader(nodes).await;
        let (f, third) = ((l + 1) % 3, (l + 2) % 3);
        let (target, sender) = match forgery {
            Forgery::PoisonedAddress => (l, f),
            _ => (f, third),
        };
        let from = nodes[sender].id.clone();
        let tls = PeerTls::new(
            certs.join("ca.pem"),
            certs.join(format!("{from}.pem")),
            certs.join(format!("{from}.key")),
        );
        let s = status(&nodes[target]).await.expect("target status");
        let forge = Forge {
            from: from.clone(),
            credentials: PeerCredentials::load(&tls, &from).await.unwrap(),
            from_dir: dir.join(&from),
            to: nodes[target].id.clone(),
            to_address: nodes[target].raft.clone(),
            term: match forgery {
                Forgery::HugeTerm => u64::MAX,
                _ => s.term,
            },
            commit: s.commit_index + 1_000_000,
            poison_address: trap_address.clone(),
            size: 0,
        };
        for _ in 0..3 {
            let answer = send_forgery(engine, forgery, &forge)
                .await
                .unwrap_or_else(|e| panic!("{forgery:?} could not be sent: {e}"));
            if forgery == Forgery::SnapshotFromFollower {
                assert!(
                    matches!(answer, Answer::Refused(..)),
                    "{} took a snapshot from {from}: {answer:?}",
                    forge.to
                );
            }
        }
        let key = format!("after-{forgery:?}");
        assert!(write(nodes, &key).await, "write {key} failed");
        written.push(key);
    }
    for n in nodes.iter_mut() {
        let exited = n.child.as_mut().map(|c| c.try_wait());
        assert!(
            matches!(exited, Some(Ok(None))),
            "{} exited after the forgeries: {exited:?}",
            n.id
        );
        let s = status(n).await.expect("status after the forgeries");
        assert!(s.term < 1 << 48, "{} took a forged term: {}", n.id, s.term);
    }
    assert_eq!(
        dialled.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "a node dialled the address a forged header gave"
    );
    trap_task.abort();
    written
}

/// Runs the `kv` client with `args`: (success, stdout, stderr).
async fn cli(args: Vec<String>) -> (bool, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_kv"))
            .args(client_flags())
            .args(&args)
            .output()
            .expect("run kv");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

/// The client as a user runs it (issue #13, item 12): given only a
/// follower, a lease or linearizable `get` follows the leader hint; given a
/// dead address first, it falls back to the others; a refused admin call
/// prints one clean line and exits non-zero. Admin calls without the
/// cluster's token, or with another, are refused.
async fn cli_follows_hints_and_reads_cleanly(nodes: &[Node], key: &str, dir: &Path) {
    let l = leader(nodes).await;
    let follower = (l + 1) % nodes.len();
    let dead = format!("127.0.0.1:{}", free_port());
    for (mode, addr) in [
        ("lease", nodes[follower].addr.clone()),
        ("linearizable", nodes[follower].addr.clone()),
        ("lease", format!("{dead},{}", nodes[follower].addr)),
    ] {
        let args = vec![
            "get".into(),
            "--mode".into(),
            mode.into(),
            "--addr".into(),
            addr.clone(),
            key.into(),
        ];
        let (ok, out, err) = cli(args).await;
        assert!(ok, "kv get --mode {mode} --addr {addr}: {err}");
        assert_eq!(
            out.trim(),
            format!("v-{key}"),
            "kv get --mode {mode} --addr {addr}"
        );
    }
    let token = dir.join("admin-token");
    let other = dir.join("another-token");
    gen_token(&other);
    for (file, refusal) in [
        (None, "admin calls need a bearer token"),
        (Some(&other), "wrong admin token"),
    ] {
        let mut args: Vec<String> = vec!["transfer".into(), "--addr".into(), nodes[l].addr.clone()];
        if let Some(file) = file {
            args.push("--token-file".into());
            args.push(file.display().to_string());
        }
        let (ok, _, err) = cli(args).await;
        assert!(
            !ok && err.contains(refusal),
            "transfer with token {file:?}: {err:?}"
        );
    }
    let args = vec![
        "promote".into(),
        "--addr".into(),
        nodes[l].addr.clone(),
        "--token-file".into(),
        token.display().to_string(),
        "no-such-node".into(),
    ];
    let (ok, _, err) = cli(args).await;
    assert!(!ok, "promoting an unknown node succeeded");
    assert!(
        err.starts_with("kv: ") && !err.contains("error: error") && err.trim().lines().count() == 1,
        "the refusal does not read cleanly: {err:?}"
    );
}

#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_processes_survive_a_killed_leader() {
    run("etcd").await;
}

#[cfg(feature = "openraft")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_processes_survive_a_killed_leader() {
    run("openraft").await;
}
