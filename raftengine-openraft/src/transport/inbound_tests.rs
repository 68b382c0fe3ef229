//! Hostile input on each RPC of the transport service: well-formed gRPC
//! carrying garbage gets `InvalidArgument`, and the node keeps working.

use std::io::{Read, Write};

use raftengine::{Factory, FactoryConfig};

use crate::pb::raft_network_client::RaftNetworkClient;
use crate::pb::{Frame, SnapshotChunk};
use crate::{OpenraftConfig, OpenraftFactory};

struct Echo;
struct NoSnapshot;

impl raftengine::Snapshot for NoSnapshot {
    fn write_to(&mut self, _w: &mut dyn Write) -> std::io::Result<u64> {
        Ok(0)
    }
}

impl raftengine::StateMachine for Echo {
    type Response = usize;
    type Snapshot = NoSnapshot;
    fn apply(&mut self, _index: u64, data: &[u8]) -> usize {
        data.len()
    }
    fn snapshot(&mut self) -> std::io::Result<NoSnapshot> {
        Ok(NoSnapshot)
    }
    fn restore(&mut self, _r: &mut dyn Read) -> std::io::Result<()> {
        Ok(())
    }
}

/// A dialer of the cluster that n1 founded alone at `address` (it derives
/// the same cluster id n1 did), with `credentials` (`None`: plaintext).
fn member_dialer(
    credentials: Option<raftengine::tls::PeerCredentials>,
    address: &str,
) -> raftengine_kit::peer::Dialer {
    let dir = tempfile::tempdir().unwrap();
    let founders = [raftengine::Server::voter("n1", address)];
    let cluster = raftengine_kit::cluster_id::ClusterId::open(dir.path(), Some(&founders)).unwrap();
    raftengine_kit::peer::Dialer::new(
        credentials,
        None,
        std::time::Duration::from_secs(5),
        cluster,
    )
}

fn garbage() -> Frame {
    Frame {
        payload: vec![0xff, 0x13, 0x37, 0x00, 0xfe, 0xfe, 0xfe, 0xfe, 0x01].into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_in_every_rpc_is_invalid_argument_and_harmless() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let created = OpenraftFactory::new(OpenraftConfig::default())
        .create(
            FactoryConfig::new("n1", address.clone(), dir.path(), Echo)
                .with_bootstrap(true)
                // The decoder is what is under test, not the caller check.
                .with_peer_security(raftengine::tls::PeerSecurity::Plaintext),
        )
        .await
        .unwrap();
    let server = created.serve(listener).unwrap();
    let engine = created.engine;

    let mut client = RaftNetworkClient::new(member_dialer(None, &address).channel(
        raftengine_kit::peer::endpoint(&address, std::time::Duration::from_secs(1), None).unwrap(),
        raftengine::numeric_id("n1"),
    ));
    let invalid = |r: Result<tonic::Response<Frame>, tonic::Status>, what: &str| match r {
        Err(s) => assert_eq!(s.code(), tonic::Code::InvalidArgument, "{what}: {s}"),
        Ok(_) => panic!("{what}: garbage was accepted"),
    };
    invalid(client.append(garbage()).await, "append");
    invalid(client.vote(garbage()).await, "vote");
    invalid(client.pre_vote(garbage()).await, "pre_vote");
    invalid(client.transfer_leader(garbage()).await, "transfer_leader");

    let chunks = vec![SnapshotChunk {
        header: vec![1, 2, 3].into(),
        data: vec![0; 16].into(),
    }];
    match client.install_snapshot(futures::stream::iter(chunks)).await {
        Err(s) => assert_eq!(
            s.code(),
            tonic::Code::InvalidArgument,
            "install_snapshot: {s}"
        ),
        Ok(_) => panic!("install_snapshot: garbage header was accepted"),
    }

    let mut stream = client
        .stream_append(futures::stream::iter(vec![garbage()]))
        .await
        .unwrap()
        .into_inner();
    match stream.message().await {
        Err(s) => assert_eq!(s.code(), tonic::Code::InvalidArgument, "stream_append: {s}"),
        Ok(m) => panic!("stream_append: expected an error, got {m:?}"),
    }

    // The node still serves.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match engine.propose(bytes::Bytes::from_static(b"abc")).await {
            Ok(r) => {
                assert_eq!(r.response, 3);
                break;
            }
            Err(e) if tokio::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(e) => panic!("the node stopped serving: {e}"),
        }
    }
    engine.shutdown().await.unwrap();
    server.shutdown().await.unwrap();
}

/// With TLS, a call may speak only as the node its certificate names: a
/// pre-vote whose candidate is n2, sent over n3's certificate, is refused
/// with `PermissionDenied` before openraft sees it; the same pre-vote as
/// n3 reaches openraft and is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_may_speak_only_as_its_certificate() {
    use openraft::raft::VoteRequest;
    use raftengine::numeric_id;
    use raftengine::tls::{PeerCredentials, PeerSecurity};

    let pki = raftengine_conformance::TestPki::new("binding test CA");
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let created = OpenraftFactory::new(OpenraftConfig::default())
        .create(
            FactoryConfig::new("n1", address.clone(), dir.path(), Echo)
                .with_bootstrap(true)
                .with_peer_security(PeerSecurity::Tls(pki.node("n1"))),
        )
        .await
        .unwrap();
    let server = created.serve(listener).unwrap();
    let engine = created.engine;

    let n3 = PeerCredentials::load(&pki.node("n3"), "n3").await.unwrap();
    let dialer = member_dialer(Some(n3), &address);
    let channel = dialer.channel(dialer.endpoint(&address).unwrap(), numeric_id("n1"));
    let mut client = RaftNetworkClient::new(channel);
    let pre_vote_as = |id: &str| {
        let rpc = VoteRequest::<crate::types::TypeConfig>::new(
            crate::types::Vote::new(1, numeric_id(id)),
            None,
        );
        Frame {
            payload: crate::codec::encode(&rpc).unwrap().into(),
        }
    };
    match client.pre_vote(pre_vote_as("n2")).await {
        Err(s) => assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s}"),
        Ok(_) => panic!("a pre-vote claiming n2 over n3's certificate was answered"),
    }
    client
        .pre_vote(pre_vote_as("n3"))
        .await
        .expect("a pre-vote as the certificate's own node is answered");
    engine.shutdown().await.unwrap();
    server.shutdown().await.unwrap();
}
