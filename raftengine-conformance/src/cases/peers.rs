//! Peer authentication (issue #15): what a node's peer port lets through
//! before any message reaches its Raft engine.
//!
//! The cases talk to each node's own listener (not through the fault
//! proxy) with [`probe`], which opens a connection the way an outsider
//! would and reports whether the node spoke HTTP/2 (gRPC) on it.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use raftengine::Factory;
use raftengine::tls::{PeerCredentials, PeerTls};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::TestPki;
use crate::harness::{Cluster, step};

/// How long a probe waits for an answer before it counts as none.
const PROBE_WAIT: Duration = Duration::from_secs(5);

/// What a node's peer port did with one probe connection.
#[derive(Debug)]
pub struct Answer {
    /// The certificate the node presented, if the TLS handshake got that
    /// far (always `None` for a plaintext probe).
    pub presented: Option<Vec<u8>>,
    /// The node answered the HTTP/2 connection preface with a SETTINGS
    /// frame: it would serve gRPC calls on this connection.
    pub speaks_h2: bool,
    /// The settings (identifier, value) of that frame.
    pub settings: Vec<(u16, u32)>,
}

/// Connects to `addr` as an outsider would: in plaintext (`None`) or with
/// TLS and the given credentials (whose CA file decides which node
/// certificates the probe itself accepts). Then sends the HTTP/2
/// preface and waits for the node's SETTINGS frame.
pub async fn probe(addr: SocketAddr, credentials: Option<&PeerCredentials>) -> Answer {
    let tcp = match tokio::net::TcpStream::connect(addr).await {
        Ok(tcp) => tcp,
        Err(_) => {
            return Answer::none(None);
        }
    };
    let Some(credentials) = credentials else {
        return Answer::from_settings(None, h2_settings(tcp).await);
    };
    let config = credentials
        .client_config(|_| true)
        .await
        .expect("probe client config");
    let connector = tokio_rustls::TlsConnector::from(config);
    let name = rustls::pki_types::ServerName::try_from("peer").expect("server name");
    match tokio::time::timeout(PROBE_WAIT, connector.connect(name, tcp)).await {
        Ok(Ok(tls)) => {
            let presented = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.as_ref().to_vec());
            Answer::from_settings(presented, h2_settings(tls).await)
        }
        _ => Answer::none(None),
    }
}

impl Answer {
    fn none(presented: Option<Vec<u8>>) -> Self {
        Answer {
            presented,
            speaks_h2: false,
            settings: Vec::new(),
        }
    }

    fn from_settings(presented: Option<Vec<u8>>, settings: Option<Vec<(u16, u32)>>) -> Self {
        match settings {
            Some(settings) => Answer {
                presented,
                speaks_h2: true,
                settings,
            },
            None => Answer::none(presented),
        }
    }

    /// The value of HTTP/2 setting `id`, if the node sent it.
    pub fn setting(&self, id: u16) -> Option<u32> {
        self.settings
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, v)| *v)
    }
}

/// Sends the HTTP/2 client preface and an empty SETTINGS frame; the
/// settings of the first frame back if it is a SETTINGS frame. (In TLS 1.3 the server checks
/// the client's certificate after the client's handshake has finished, so
/// a refused certificate shows here, as an alert or a closed connection.)
async fn h2_settings(mut io: impl AsyncRead + AsyncWrite + Unpin) -> Option<Vec<(u16, u32)>> {
    read_settings(&mut io).await
}

/// [`h2_settings`] on a connection the caller keeps.
async fn read_settings(io: &mut (impl AsyncRead + AsyncWrite + Unpin)) -> Option<Vec<(u16, u32)>> {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
    io.write_all(PREFACE).await.ok()?;
    io.flush().await.ok()?;
    let mut header = [0u8; 9];
    tokio::time::timeout(PROBE_WAIT, io.read_exact(&mut header))
        .await
        .ok()?
        .ok()?;
    // A frame header: 24-bit length, type (4 = SETTINGS), flags, stream 0.
    if header[3] != 0x04 || header[5..9] != [0, 0, 0, 0] {
        return None;
    }
    let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
    if len % 6 != 0 || len > 6 * 64 {
        return None;
    }
    let mut body = vec![0u8; len];
    tokio::time::timeout(PROBE_WAIT, io.read_exact(&mut body))
        .await
        .ok()?
        .ok()?;
    Some(
        body.chunks(6)
            .map(|c| {
                (
                    u16::from_be_bytes([c[0], c[1]]),
                    u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
                )
            })
            .collect(),
    )
}

/// The certificate (DER) in a PEM file.
fn certificate_in(file: &Path) -> Vec<u8> {
    CertificateDer::from_pem_file(file)
        .unwrap_or_else(|e| panic!("read {}: {e}", file.display()))
        .as_ref()
        .to_vec()
}

/// Credentials a probe presents: a certificate from `pki` for `id`,
/// trusting `ca_files` (concatenated into one file next to it).
async fn probe_credentials(
    pki: &TestPki,
    stem: &str,
    id: &str,
    ca_files: &[&Path],
) -> PeerCredentials {
    let issued = pki.issue(stem, Some(id));
    let mut cas = Vec::new();
    for f in ca_files {
        cas.extend(std::fs::read(f).expect("read CA"));
    }
    let ca_file = issued.cert_file.with_extension("cas.pem");
    std::fs::write(&ca_file, cas).expect("write CA bundle");
    let tls = PeerTls::new(ca_file, issued.cert_file, issued.key_file);
    PeerCredentials::load(&tls, id)
        .await
        .expect("probe credentials load")
}

/// A TLS node serves only peers whose certificate chains to the cluster
/// CA: a plaintext connection and a certificate from another CA (naming
/// a member's id) get no HTTP/2 answer, while a certificate from the
/// cluster CA does (the positive control: the probe can tell).
pub async fn peers_need_a_certificate_from_the_cluster_ca<F: Factory>(factory: F) {
    let c = Cluster::start(factory, 3).await;
    c.wait_leader().await;
    let other_ca = TestPki::new("another cluster's CA");
    let member = c.nodes[1].id.clone();
    let ours = probe_credentials(&c.pki, "probe-ours", &member, &[c.pki.ca_file()]).await;
    // The foreign probe trusts both CAs, so that what fails is the
    // node's check of the probe, not the probe's check of the node.
    let foreign = probe_credentials(
        &other_ca,
        "probe-foreign",
        &member,
        &[c.pki.ca_file(), other_ca.ca_file()],
    )
    .await;
    for n in &c.nodes {
        step(format_args!("probe {} in plaintext", n.id));
        let answer = probe(n.backend, None).await;
        assert!(
            !answer.speaks_h2,
            "{}: a plaintext connection was served",
            n.id
        );
        step(format_args!(
            "probe {} with another CA's certificate for {member}",
            n.id
        ));
        let answer = probe(n.backend, Some(&foreign)).await;
        assert!(
            !answer.speaks_h2,
            "{}: a certificate from another CA was served",
            n.id
        );
        step(format_args!("probe {} with a cluster certificate", n.id));
        let answer = probe(n.backend, Some(&ours)).await;
        assert!(
            answer.speaks_h2,
            "{}: a certificate from the cluster CA got no HTTP/2 answer ({answer:?}): the probe cannot tell",
            n.id
        );
    }
    c.every_node_applies_new_writes("after-probes", 5).await;
    c.shutdown().await;
}

/// A node reads its certificate and key again for each new connection:
/// after a rotation the next connection sees the new certificate, with
/// no restart; a rotation to files that do not pass the checks leaves
/// the last good certificate in use, and the cluster keeps committing.
pub async fn certificates_rotate_without_a_restart<F: Factory>(factory: F) {
    let c = Cluster::start(factory, 3).await;
    c.wait_leader().await;
    let node = &c.nodes[0];
    let cert_file = c.pki.node_cert_file(&node.id);
    let probe_as = c.nodes[1].id.clone();
    let prober = probe_credentials(&c.pki, "probe-rotation", &probe_as, &[c.pki.ca_file()]).await;
    let presented = || async {
        probe(node.backend, Some(&prober))
            .await
            .presented
            .unwrap_or_else(|| panic!("{}: no TLS handshake", node.id))
    };

    step("the node presents the certificate it started with");
    let first = certificate_in(&cert_file);
    assert_eq!(
        presented().await,
        first,
        "not the certificate in {}",
        cert_file.display()
    );

    step("rotate: a new certificate and key, written over the old files");
    c.pki.node(&node.id);
    let second = certificate_in(&cert_file);
    assert_ne!(
        first, second,
        "the test PKI issued the same certificate twice"
    );
    assert_eq!(
        presented().await,
        second,
        "the next connection did not see the rotated certificate"
    );

    step("a broken rotation (garbage in the certificate file) is refused");
    std::fs::write(&cert_file, b"-----BEGIN CERTIFICATE-----\ngarbage\n").expect("write garbage");
    assert_eq!(
        presented().await,
        second,
        "a broken rotation replaced the last good certificate"
    );

    step("a rotation to a certificate for another node is refused");
    let stolen = c.pki.issue("rotation-other", Some(&probe_as));
    std::fs::copy(&stolen.cert_file, &cert_file).expect("copy certificate");
    std::fs::copy(&stolen.key_file, c.pki.node_key_file(&node.id)).expect("copy key");
    assert_eq!(
        presented().await,
        second,
        "a certificate for another node was taken into use"
    );

    step("rotate again to a good certificate");
    c.pki.node(&node.id);
    let third = certificate_in(&cert_file);
    assert_eq!(
        presented().await,
        third,
        "the good rotation after a bad one was not taken"
    );
    c.every_node_applies_new_writes("after-rotation", 5).await;
    c.shutdown().await;
}

/// HTTP/2's `SETTINGS_MAX_CONCURRENT_STREAMS`.
const MAX_CONCURRENT_STREAMS: u16 = 0x3;

/// A flood of connections from one address is bounded: of many silent
/// connections (no TLS handshake) from one loopback address, at most
/// `MAX_PENDING_HANDSHAKES_PER_IP` stay open and the rest are closed at
/// once, while a peer from another address still connects and the
/// cluster keeps committing. Each connection advertises a cap on
/// concurrent calls (`SETTINGS_MAX_CONCURRENT_STREAMS` =
/// `PeerLimits::max_concurrent_streams`), which HTTP/2 enforces.
pub async fn connection_floods_are_bounded<F: Factory>(factory: F) {
    use raftengine::tls::{MAX_PENDING_HANDSHAKES_PER_IP, PeerLimits};
    const FLOOD: usize = 200;
    let c = Cluster::start(factory, 3).await;
    c.wait_leader().await;
    let node = &c.nodes[0];
    let prober = probe_credentials(&c.pki, "probe-flood", &c.nodes[1].id, &[c.pki.ca_file()]).await;

    step("each connection caps its concurrent calls");
    let answer = probe(node.backend, Some(&prober)).await;
    assert_eq!(
        answer.setting(MAX_CONCURRENT_STREAMS),
        Some(PeerLimits::default().max_concurrent_streams),
        "{}: SETTINGS_MAX_CONCURRENT_STREAMS (settings sent: {:?})",
        node.id,
        answer.settings
    );

    step(format_args!("{FLOOD} silent connections from 127.0.0.250"));
    let flooder: std::net::IpAddr = [127, 0, 0, 250].into();
    let mut flood = Vec::new();
    for _ in 0..FLOOD {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::new(flooder, 0))
            .expect("bind 127.0.0.250");
        if let Ok(s) = socket.connect(node.backend).await {
            flood.push(s);
        }
    }
    assert_eq!(flood.len(), FLOOD, "the kernel refused the flood itself");
    // A refused connection is closed at once; one the node kept waits
    // (for a handshake that never comes) until HANDSHAKE_TIMEOUT. All are
    // watched at once, well inside that timeout.
    let mut watching = tokio::task::JoinSet::new();
    for mut s in flood {
        watching.spawn(async move {
            let mut byte = [0u8; 1];
            let waited = tokio::time::timeout(Duration::from_millis(500), s.read(&mut byte)).await;
            (s, waited.is_err())
        });
    }
    let mut flood = Vec::new();
    let mut open = 0;
    while let Some(watched) = watching.join_next().await {
        let (s, kept) = watched.expect("watch task");
        open += usize::from(kept);
        flood.push(s);
    }
    assert!(
        open <= MAX_PENDING_HANDSHAKES_PER_IP,
        "{open} of {FLOOD} silent connections from one address were kept open (limit {MAX_PENDING_HANDSHAKES_PER_IP})"
    );
    assert!(
        open > 0,
        "no connection was kept at all: the probe cannot tell"
    );

    step("connections that complete TLS are bounded per address too");
    let member: std::net::IpAddr = [127, 0, 0, 251].into();
    let limit = PeerLimits::default().max_connections_per_ip;
    let mut held = Vec::new();
    let mut served = 0;
    for _ in 0..limit + 16 {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::new(member, 0))
            .expect("bind 127.0.0.251");
        let Ok(tcp) = socket.connect(node.backend).await else {
            continue;
        };
        let config = prober.client_config(|_| true).await.expect("client config");
        let name = rustls::pki_types::ServerName::try_from("peer").expect("server name");
        let connecting = tokio_rustls::TlsConnector::from(config).connect(name, tcp);
        if let Ok(Ok(mut tls)) = tokio::time::timeout(PROBE_WAIT, connecting).await {
            if read_settings(&mut tls).await.is_some() {
                served += 1;
                held.push(tls);
            }
        }
    }
    assert!(
        served <= limit,
        "{served} authenticated connections from one address were served (limit {limit})"
    );
    assert!(
        served > 0,
        "no authenticated connection was served: the probe cannot tell"
    );

    step("while the flood holds, a peer from another address connects");
    let answer = probe(node.backend, Some(&prober)).await;
    assert!(
        answer.speaks_h2,
        "{}: starved by the flood ({answer:?})",
        node.id
    );
    c.every_node_applies_new_writes("during-flood", 5).await;
    drop((flood, held));
    c.shutdown().await;
}

/// Two clusters whose certificates come from one CA stay apart: every
/// call carries the sender's cluster id, and a node refuses calls from
/// another cluster before its engine sees them. Cluster B (one node, n1)
/// adds cluster A's n2 as a learner, so B's leader (whose certificate for
/// "n1" is as valid as A's n1's) sends appends to A's n2. A's term is
/// raised above B's first, so that without the check B's leader would see
/// A's higher term in n2's answer and step down (and A's n2 would take B's
/// n1 for A's). For a while after, both clusters keep their leaders and
/// terms, and both commit.
pub async fn another_cluster_is_refused_despite_a_valid_certificate<F: Factory>(factory: F) {
    use std::sync::Arc;
    let factory = Arc::new(factory);
    let a = Cluster::start(factory.clone(), 3).await;
    step("raise A's term with two transfers");
    for _ in 0..2 {
        let l = a.wait_leader().await;
        a.engine(l)
            .transfer_leadership(raftengine::TransferTarget::Any)
            .await
            .expect("transfer in A");
        let others: Vec<usize> = (0..3).filter(|i| *i != l).collect();
        a.wait_leader_among(&others).await;
    }
    let b = Cluster::start_with_pki(factory.clone(), 1, TestPki::sharing_ca_of(&a.pki)).await;
    b.wait_leader().await;
    let la = a.wait_leader().await;
    let a_before: Vec<_> = (0..3).map(|i| a.engine(i).status()).collect();
    let b_before = b.engine(0).status();
    assert!(
        a_before[la].term > b_before.term,
        "A's term {} is not above B's {}: the case cannot tell",
        a_before[la].term,
        b_before.term
    );

    step(format_args!(
        "B adds A's n2 ({}) as a learner",
        a.nodes[1].address
    ));
    let eb = b.engine(0);
    let learner_address = a.nodes[1].address.clone();
    crate::harness::wait_for("B to add the learner", || {
        let (eb, address) = (eb.clone(), learner_address.clone());
        async move {
            match eb.add_learner("n2", &address, None).await {
                Ok(index) => Some(index),
                // B's own founding configuration may still be settling.
                Err(raftengine::Error::ConfChangePending) => None,
                Err(e) => panic!("B adds the learner: {e}"),
            }
        }
    })
    .await;

    step("both clusters keep their leaders and terms for 3 s");
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < until {
        let bs = b.engine(0).status();
        assert_eq!(
            (bs.state, bs.term),
            (raftengine::State::Leader, b_before.term),
            "B's leader was disturbed by cluster A: {bs:?}"
        );
        for (i, before) in a_before.iter().enumerate() {
            let s = a.engine(i).status();
            assert_eq!(
                (s.term, s.leader.as_ref().map(|l| l.id.clone())),
                (before.term, before.leader.as_ref().map(|l| l.id.clone())),
                "A's {} was disturbed by cluster B: {s:?}",
                a.nodes[i].id
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.every_node_applies_new_writes("a-after-b", 5).await;
    b.every_node_applies_new_writes("b-after-a", 5).await;
    b.shutdown().await;
    a.shutdown().await;
}
