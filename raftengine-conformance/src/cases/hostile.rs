//! Bad input on the transport port (DESIGN §4 item 8).

use raftengine::Factory;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::Cluster;
use crate::kv::put;

/// Garbage bytes, a bogus HTTP/1 request and a bogus HTTP/2 preface sent to
/// every node's transport port are refused without harming the node: the
/// cluster keeps committing afterwards.
pub async fn garbage_on_the_transport_port_is_harmless<F: Factory>(factory: F) {
    let c = Cluster::start(factory, 3).await;
    c.wait_leader().await;
    let payloads: [&[u8]; 4] = [
        b"\x00\xff\x13\x37garbage garbage garbage\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00\x00\x00\x00\x00\xff\xff\xff\xff\xff\xff",
        &[0xAB; 70_000],
    ];
    for n in &c.nodes {
        // Straight at the node's own listener, bypassing the proxy.
        for p in payloads {
            if let Ok(mut s) = tokio::net::TcpStream::connect(n.backend).await {
                let _ = s.write_all(p).await;
                let mut buf = [0u8; 256];
                let _ =
                    tokio::time::timeout(std::time::Duration::from_millis(500), s.read(&mut buf))
                        .await;
            }
        }
    }
    c.every_node_applies_new_writes("after-garbage", 10).await;
    c.shutdown().await;
}

/// Invalid factory configurations are refused with `InvalidConfig` before
/// anything starts (DESIGN §4 item 8).
pub async fn invalid_factory_configs_are_refused<F: Factory>(factory: F) {
    use raftengine::tls::PeerSecurity;
    use raftengine::{Error, FactoryConfig, Server};
    let dir = tempfile::tempdir().expect("temp dir");
    // Plaintext here so that each case is refused for its own reason, not
    // for a missing security choice (which has a case of its own below).
    let bare = |id: &str| {
        let (sm, _) = crate::kv::KvStateMachine::new();
        FactoryConfig::new(id, "127.0.0.1:1", dir.path().join(id), sm)
    };
    let make = |id: &str| bare(id).with_peer_security(PeerSecurity::Plaintext);
    let cases = vec![
        ("an empty id", make("").with_bootstrap(true)),
        (
            "duplicate peer ids",
            make("a").with_bootstrap(true).with_peers(vec![
                Server::voter("a", "127.0.0.1:1"),
                Server::voter("b", "127.0.0.1:2"),
                Server::voter("b", "127.0.0.1:3"),
            ]),
        ),
        (
            "bootstrap without the local node among the peers",
            make("a")
                .with_bootstrap(true)
                .with_peers(vec![Server::voter("b", "127.0.0.1:2")]),
        ),
        (
            "bootstrap together with join_as_learner",
            make("a").with_bootstrap(true).with_join_as_learner(true),
        ),
        ("a fresh node with neither bootstrap nor peers", make("a")),
    ];
    let mut cases = cases;
    // Addresses that are not host:port (issue #13, item 1).
    let at = |address: &str| {
        let (sm, _) = crate::kv::KvStateMachine::new();
        FactoryConfig::new("a", address, dir.path().join("a"), sm)
            .with_bootstrap(true)
            .with_peer_security(PeerSecurity::Plaintext)
    };
    for bad in [
        "not-an-address",
        "127.0.0.1",
        "127.0.0.1:99999",
        "127.0.0.1:0",
        "",
    ] {
        cases.push(("a local address that is not host:port", at(bad)));
    }
    let (first, second) = crate::cases::membership::COLLIDING_IDS;
    cases.push((
        "two peer ids with the same numeric id",
        make("a").with_bootstrap(true).with_peers(vec![
            Server::voter("a", "127.0.0.1:1"),
            Server::voter(first, "127.0.0.1:2"),
            Server::voter(second, "127.0.0.1:3"),
        ]),
    ));
    cases.push((
        "a peer at an address that is not host:port",
        make("a").with_bootstrap(true).with_peers(vec![
            Server::voter("a", "127.0.0.1:1"),
            Server::voter("b", "garbage"),
        ]),
    ));
    let mut cases: Vec<_> = cases
        .into_iter()
        .map(|(what, cfg)| (what, cfg, ""))
        .collect();
    // A message limit no backend's largest proposal fits in.
    cases.push((
        "a peer message limit below the largest proposal",
        make("a")
            .with_bootstrap(true)
            .with_peer_limits(raftengine::tls::PeerLimits::default().with_max_message_bytes(1024)),
        "max_message_bytes",
    ));
    // Peer security (issue #15): no choice made, and TLS files that do not
    // pass the checks. Each must name what is wrong.
    let pki = crate::TestPki::new("invalid-config CA");
    let other_ca = crate::TestPki::new("another CA");
    let tls = |tls: raftengine::tls::PeerTls| {
        make("a")
            .with_bootstrap(true)
            .with_peer_security(PeerSecurity::Tls(tls))
    };
    let good = pki.node("a");
    // Outside `dir`: the empty-id case's data dir is `dir` itself.
    let files = tempfile::tempdir().expect("temp dir");
    let not_pem = files.path().join("not-pem");
    std::fs::write(&not_pem, b"hello").expect("write");
    let mut mismatched_key = good.clone();
    mismatched_key.key_file = pki.issue("a-other-key", Some("a")).key_file;
    let mut foreign = other_ca.node("a");
    foreign.ca_file = good.ca_file.clone();
    let mut missing = good.clone();
    missing.ca_file = files.path().join("no-such-ca.pem");
    let mut garbage_cert = good.clone();
    garbage_cert.cert_file = not_pem.clone();
    cases.extend([
        (
            "no peer security chosen",
            bare("a").with_bootstrap(true),
            "no peer security",
        ),
        (
            "a CA file that does not exist",
            tls(missing),
            "no-such-ca.pem",
        ),
        (
            "a certificate file that is not PEM",
            tls(garbage_cert),
            "holds no certificate",
        ),
        (
            "a certificate for another node",
            tls(pki.node("b")),
            "is for node \"b\"",
        ),
        (
            "a certificate that names no node id",
            tls(pki.issue("anon", None)),
            "names no node id",
        ),
        (
            "a certificate from another CA",
            tls(foreign),
            "does not verify against the CA",
        ),
        (
            "a key that does not fit the certificate",
            tls(mismatched_key),
            "does not fit",
        ),
    ]);
    for (what, cfg, names) in cases {
        let data_dir = cfg.data_dir.clone();
        let address = cfg.local_address.clone();
        match factory.create(cfg).await {
            Err(Error::InvalidConfig(message)) => assert!(
                message.contains(names),
                "{what}: InvalidConfig should say {names:?}, said {message:?}"
            ),
            Err(other) => panic!("{what} ({address:?}): expected InvalidConfig, got {other}"),
            Ok(created) => {
                let _ = created.engine.shutdown().await;
                panic!("{what} ({address:?}): the engine started");
            }
        }
        // A refused start leaves the data dir as it found it (here: absent
        // or empty), so a corrected retry starts clean.
        let left: Vec<_> = std::fs::read_dir(&data_dir)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(
            left.is_empty(),
            "{what}: the refused start left files in {}: {left:?}",
            data_dir.display()
        );
    }
}

/// A corrupt snapshot file in a data dir is a clear error at start, not a
/// silently different state (DESIGN §4 item 8). Applies to backends that keep
/// snapshots as `*.snap` files (`raftengine_kit::SnapshotDir`).
pub async fn corrupt_snapshot_file_is_an_error_at_start<F: Factory>(factory: F) {
    use raftengine::Error;
    let c = Cluster::start(factory, 3).await;
    let l = c.wait_leader().await;
    let f = c.other_than(l);
    let e = c.engine(l);
    let mut n = 0;
    while c.engine(f).status().last_snapshot_index == 0 {
        assert!(n < 20_000, "no snapshot on the follower after {n} writes");
        e.propose(put(format!("c{n}"), "v")).await.expect("put");
        n += 1;
    }
    c.stop(f).await;
    let mut damaged = 0;
    let mut stack = vec![c.nodes[f].dir.clone()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read data dir").flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "snap") {
                let mut bytes = std::fs::read(&p).expect("read snapshot");
                let mid = bytes.len() / 2;
                bytes[mid] ^= 0x5a;
                std::fs::write(&p, &bytes).expect("write snapshot");
                damaged += 1;
            }
        }
    }
    assert!(
        damaged > 0,
        "no *.snap file found in the follower's data dir"
    );
    match c.restart(f).await {
        Err(Error::Storage { .. } | Error::StateMachine { .. }) => {}
        Err(other) => panic!("expected a storage error, got {other}"),
        Ok(()) => panic!("a node with a corrupt snapshot started"),
    }
    c.shutdown().await;
}

/// Cuts every file under `dir` at three quarters of its data (files that
/// preallocate end in zeros, so "data" ends at the last non-zero byte).
fn truncate_every_file(dir: &std::path::Path) -> usize {
    let mut cut = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read data dir").flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let bytes = std::fs::read(&p).expect("read data file");
            let Some(last) = bytes.iter().rposition(|b| *b != 0) else {
                continue;
            };
            let keep = (last as u64 + 1) * 3 / 4;
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&p)
                .expect("open data file");
            f.set_len(keep).expect("truncate data file");
            cut += 1;
        }
    }
    cut
}

/// A follower whose files all lost their tails (a disk that dropped
/// acknowledged writes) either refuses to start with a typed error or
/// starts and converges to the leader's exact sequence; it never panics,
/// never applies an entry twice and never diverges.
pub async fn truncated_data_files_are_an_error_or_recovered<F: Factory>(factory: F) {
    use raftengine::Error;
    let c = Cluster::start(factory, 3).await;
    let l = c.wait_leader().await;
    let f = c.other_than(l);
    let mut last = 0;
    for i in 0..200 {
        last = c
            .engine(l)
            .propose(put(format!("t{i}"), "v"))
            .await
            .expect("put")
            .commit_index;
    }
    c.wait_applied(f, last).await;
    c.stop(f).await;
    let cut = truncate_every_file(&c.nodes[f].dir);
    assert!(cut > 0, "the follower's data dir holds no data");
    match c.restart(f).await {
        // Damaged files are a storage outcome; `InvalidConfig` would
        // misreport them as the caller's mistake.
        Err(Error::Storage { .. } | Error::StateMachine { .. }) => {
            tracing::info!("truncated data dir refused with a typed error");
        }
        Err(other) => panic!("expected a typed storage error, got {other}"),
        Ok(()) => {
            tracing::info!("truncated data dir recovered; checking convergence");
            let w = c
                .engine(l)
                .propose(put("after-cut", "v"))
                .await
                .expect("put after the restart");
            c.wait_applied(f, w.commit_index).await;
            let reference = c.nodes[l].kv.lock().applied.clone();
            let log = c.nodes[f].kv.lock().applied.clone();
            let start = reference
                .iter()
                .position(|a| log.first() == Some(a))
                .expect("the follower applied something the leader never did");
            assert_eq!(
                log[..],
                reference[start..start + log.len()],
                "the recovered follower diverged or applied an entry twice"
            );
        }
    }
    c.shutdown().await;
}
