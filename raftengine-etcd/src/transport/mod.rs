//! The gRPC transport: an inbound tonic service and one sender per peer.
//!
//! Each peer gets two lanes, each with its own HTTP/2 connection, bounded
//! queue and task: the **control** lane (heartbeats, votes, responses,
//! ReadIndex) and the **bulk** lane (appends). A big append batch therefore
//! never delays a heartbeat, which the lease depends on. Each lane drains its
//! queue into one `Send` call per round (many raft messages per frame) with a
//! deadline. A failed send reports the peer unreachable to raft-rs, which then
//! probes instead of streaming; a full queue drops the message (Raft tolerates
//! loss and retransmits) and reports the same.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::transport::Endpoint;
use tonic::{Request, Response, Status};

use raftengine_kit::SnapshotDir;
use raftengine_kit::peer::PeerChannel;

#[allow(missing_docs, unreachable_pub, clippy::all)]
pub(crate) mod pb {
    tonic::include_proto!("raftengine.etcd.v1");
}

use pb::raft_transport_client::RaftTransportClient;
use pb::raft_transport_server::{RaftTransport, RaftTransportServer};
use pb::{BatchAck, MessageBatch, RemovedNotice, SendReply, SnapshotChunk, SnapshotHeader};
use tokio_stream::wrappers::ReceiverStream;

/// Most messages one lane packs into one call.
const MAX_BATCH_MESSAGES: usize = 512;
/// Most bytes one lane packs into one call (a lone larger message still goes).
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Queue depth per lane.
const LANE_QUEUE: usize = 4096;
/// Batches a lane may have sent but not yet seen acknowledged; beyond this
/// the lane stops taking messages (its queue fills, then drops).
const MAX_IN_FLIGHT: usize = 64;

/// The largest frame a lane sends: a full batch plus one message of at
/// most `largest` bytes (a lone append may exceed the batch size), with
/// room for framing. `PeerLimits::max_message_bytes` must hold it.
pub(crate) fn largest_frame(largest: usize) -> usize {
    MAX_BATCH_BYTES.saturating_add(largest.saturating_mul(2))
}

mod inbound;
mod outbound;
mod snapshot;

pub(crate) use inbound::{Inbound, PeerInput};
pub(crate) use outbound::{Outbound, SendFailure};

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn undecodable_messages_and_missing_snapshots_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, mut rx) = mpsc::channel::<PeerInput>(8);
        let inbound = Inbound::new(
            gate(false, dir.path()),
            tx,
            Duration::from_secs(1),
            SnapshotDir::new(dir.path()).unwrap(),
            Arc::new(|| Some("n2".to_owned())),
            &raftengine::tls::PeerLimits::default(),
        );
        let garbage = MessageBatch {
            from_id: "n2".into(),
            from_address: "127.0.0.1:1".into(),
            messages: vec![Bytes::from_static(b"\xff\xff\xff\xff\xff not protobuf")],
            seq: 0,
        };
        let err = inbound
            .send(for_n1(Request::new(garbage)))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);

        let anonymous = MessageBatch {
            from_id: String::new(),
            from_address: String::new(),
            messages: vec![],
            seq: 0,
        };
        let err = inbound
            .send(for_n1(Request::new(anonymous)))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);

        let mut snap = Message::default();
        snap.set_msg_type(MessageType::MsgSnapshot);
        snap.mut_snapshot().mut_metadata().index = 9;
        let batch = MessageBatch {
            from_id: "n2".into(),
            from_address: "127.0.0.1:1".into(),
            messages: vec![Bytes::from(snap.write_to_bytes().unwrap())],
            seq: 0,
        };
        let err = inbound.send(for_n1(Request::new(batch))).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        assert!(rx.try_recv().is_err(), "nothing reached the raft loop");
    }

    /// With TLS a batch may speak only as the node its certificate names,
    /// in its header and in every message; nothing of a refused batch
    /// reaches the raft loop.
    #[tokio::test]
    async fn with_tls_a_batch_speaks_only_as_its_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, mut rx) = mpsc::channel::<PeerInput>(8);
        let inbound = Inbound::new(
            gate(true, dir.path()),
            tx,
            Duration::from_secs(1),
            SnapshotDir::new(dir.path()).unwrap(),
            Arc::new(|| Some("n2".to_owned())),
            &raftengine::tls::PeerLimits::default(),
        );
        let batch = |from_id: &str, from: &str| {
            let mut m = heartbeat(raftengine::numeric_id("n1"));
            m.from = raftengine::numeric_id(from);
            MessageBatch {
                from_id: from_id.into(),
                from_address: "127.0.0.1:1".into(),
                messages: vec![Bytes::from(m.write_to_bytes().unwrap())],
                seq: 0,
            }
        };
        let over = |cert: Option<&str>, b: MessageBatch| {
            let mut r = for_n1(Request::new(b));
            r.extensions_mut().insert(raftengine::tls::PeerInfo::new(
                None,
                cert.map(str::to_owned),
                true,
            ));
            r
        };
        let refused = [
            (
                "a header claiming n2",
                over(Some("n3"), batch("n2", "n3")),
                tonic::Code::PermissionDenied,
            ),
            (
                "a message from n2",
                over(Some("n3"), batch("n3", "n2")),
                tonic::Code::PermissionDenied,
            ),
            (
                "no node id in the certificate",
                over(None, batch("n3", "n3")),
                tonic::Code::Unauthenticated,
            ),
            (
                "no verified connection",
                for_n1(Request::new(batch("n3", "n3"))),
                tonic::Code::Unauthenticated,
            ),
        ];
        for (what, request, code) in refused {
            let err = inbound.send(request).await.unwrap_err();
            assert_eq!(err.code(), code, "{what}: {err}");
            assert!(
                rx.try_recv().is_err(),
                "{what}: a message reached the raft loop"
            );
        }
        inbound
            .send(over(Some("n3"), batch("n3", "n3")))
            .await
            .expect("a batch as the certificate's own node");
        assert!(
            rx.try_recv().is_ok(),
            "the honest batch did not reach the raft loop"
        );
    }

    /// The gate of node n1, which knows no cluster id yet (so it takes
    /// calls that carry none, as a joiner does).
    fn gate(tls: bool, dir: &std::path::Path) -> raftengine_kit::peer::PeerGate {
        let cluster = raftengine_kit::cluster_id::ClusterId::open(dir, None).unwrap();
        raftengine_kit::peer::PeerGate::new("n1", tls, cluster)
    }

    /// A plaintext dialer that knows no cluster id (like [`gate`]'s node).
    fn dialer(dir: &std::path::Path) -> raftengine_kit::peer::Dialer {
        let cluster = raftengine_kit::cluster_id::ClusterId::open(dir, None).unwrap();
        raftengine_kit::peer::Dialer::new(None, None, Duration::from_secs(1), cluster)
    }

    /// n1's numeric id, the `to` of every message these tests send.
    fn n1() -> u64 {
        raftengine::numeric_id("n1")
    }

    /// `request` addressed to n1, as a `Dialer` channel stamps it.
    fn for_n1<T>(mut request: Request<T>) -> Request<T> {
        request
            .metadata_mut()
            .insert(raftengine_kit::cluster_id::TARGET_HEADER, n1().into());
        request
    }

    fn heartbeat(to: u64) -> Message {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgHeartbeat);
        m.to = to;
        m.from = 2;
        m
    }

    /// A real server on a loopback port around an `Inbound`.
    async fn serve(
        dir: &std::path::Path,
    ) -> (
        String,
        mpsc::Receiver<PeerInput>,
        tokio::task::JoinHandle<()>,
    ) {
        let (tx, rx) = mpsc::channel::<PeerInput>(64);
        let inbound = Inbound::new(
            gate(false, dir),
            tx,
            Duration::from_secs(1),
            SnapshotDir::new(dir).unwrap(),
            Arc::new(|| Some("n2".to_owned())),
            &raftengine::tls::PeerLimits::default(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(inbound.into_service())
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        (address, rx, server)
    }

    async fn next_inbound(rx: &mut mpsc::Receiver<PeerInput>) -> Vec<Message> {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some(PeerInput::Messages { messages, .. })) => messages,
            Ok(Some(_)) => panic!("unexpected event"),
            Ok(None) | Err(_) => panic!("no inbound batch"),
        }
    }

    #[tokio::test]
    async fn a_stream_acknowledges_batches_and_ends_on_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let (address, mut rx, _server) = serve(dir.path()).await;
        let mut client = RaftTransportClient::new(dialer(dir.path()).channel(
            raftengine_kit::peer::endpoint(&address, Duration::from_secs(1), None).unwrap(),
            n1(),
        ));
        let (batches, brx) = mpsc::channel(4);
        let mut acks = client
            .stream(ReceiverStream::new(brx))
            .await
            .unwrap()
            .into_inner();
        let good = |seq| MessageBatch {
            from_id: "n2".into(),
            from_address: "127.0.0.1:1".into(),
            messages: vec![Bytes::from(heartbeat(n1()).write_to_bytes().unwrap())],
            seq,
        };
        batches.send(good(1)).await.unwrap();
        batches.send(good(2)).await.unwrap();
        assert_eq!(acks.message().await.unwrap().unwrap().seq, 1);
        assert_eq!(acks.message().await.unwrap().unwrap().seq, 2);
        assert_eq!(next_inbound(&mut rx).await.len(), 1);
        assert_eq!(next_inbound(&mut rx).await.len(), 1);

        batches
            .send(MessageBatch {
                messages: vec![Bytes::from_static(b"\x0a\xff garbage")],
                ..good(3)
            })
            .await
            .unwrap();
        let err = acks.message().await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(
            rx.try_recv().is_err(),
            "the bad batch never reached the loop"
        );
        // The server survives and serves a new stream.
        let (batches, brx) = mpsc::channel(4);
        let mut acks = client
            .stream(ReceiverStream::new(brx))
            .await
            .unwrap()
            .into_inner();
        batches.send(good(1)).await.unwrap();
        assert_eq!(acks.message().await.unwrap().unwrap().seq, 1);
    }

    #[tokio::test]
    async fn a_lane_delivers_in_order_and_recovers_from_cut_and_blackholed_links() {
        use raftengine_conformance::{Link, Network, Proxy, node_ip};
        let dir = tempfile::tempdir().unwrap();
        let (backend, mut rx, _server) = serve(dir.path()).await;
        let network = Network::default();
        network.set_backend(1, backend.parse().unwrap());
        let proxy = Proxy::start(network.clone(), 1).await.unwrap();
        let address = proxy.address.to_string();
        let (failures, mut failed) = mpsc::channel(64);
        let outbound = Outbound::new(
            SnapshotDir::new(dir.path()).unwrap(),
            raftengine_kit::peer::Dialer::new(
                None,
                Some(node_ip(0)),
                Duration::from_millis(500),
                raftengine_kit::cluster_id::ClusterId::open(dir.path(), None).unwrap(),
            ),
            "n2".into(),
            node_ip(0).to_string(),
            Duration::from_millis(500),
            Handle::current(),
            failures,
            raftengine::tls::PeerLimits::default().max_message_bytes,
        );
        let send = |commit: u64| {
            let mut m = heartbeat(n1());
            m.commit = commit;
            outbound.send(m, &address);
        };
        for commit in 1..=100u64 {
            send(commit);
        }
        let mut seen = Vec::new();
        while seen.len() < 100 {
            seen.extend(next_inbound(&mut rx).await.iter().map(|m| m.commit));
        }
        assert_eq!(
            seen,
            (1..=100).collect::<Vec<_>>(),
            "one stream keeps order"
        );

        for fault in [Link::Cut, Link::Blackhole] {
            network.set(0, 1, fault);
            // Sends on a dead link are reported unreachable within the
            // deadline, never hung.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            let mut reported = false;
            while !reported {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{fault:?}: no report"
                );
                send(0);
                if let Ok(Some(SendFailure::Unreachable(to))) =
                    tokio::time::timeout(Duration::from_millis(100), failed.recv()).await
                {
                    reported = to == n1();
                }
            }
            network.heal_all();
            while failed.try_recv().is_ok() {}
            // The lane reconnects by itself once the link is back.
            let marker = 1000 + seen.len() as u64;
            seen.push(marker);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            'delivered: loop {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{fault:?}: never reconnected"
                );
                send(marker);
                while let Ok(Some(PeerInput::Messages { messages, .. })) =
                    tokio::time::timeout(Duration::from_millis(100), rx.recv()).await
                {
                    if messages.iter().any(|m| m.commit == marker) {
                        break 'delivered;
                    }
                }
            }
        }
        outbound.close();
    }

    struct Bytes9(Vec<u8>);

    impl raftengine::Snapshot for Bytes9 {
        fn write_to(&mut self, w: &mut dyn std::io::Write) -> std::io::Result<u64> {
            w.write_all(&self.0)?;
            Ok(self.0.len() as u64)
        }
    }

    #[tokio::test]
    async fn a_damaged_local_copy_of_a_snapshot_is_received_again() {
        // The sender's copy of snapshot 9/2.
        let sender = tempfile::tempdir().unwrap();
        let theirs = SnapshotDir::new(sender.path()).unwrap();
        theirs.write(9, 2, &mut Bytes9(vec![7u8; 5000])).unwrap();
        let good = std::fs::read(theirs.path(9, 2)).unwrap();
        // The receiver holds the same file, damaged by its disk.
        let dir = tempfile::tempdir().unwrap();
        let ours = SnapshotDir::new(dir.path()).unwrap();
        std::fs::write(ours.path(9, 2), &good[..good.len() / 2]).unwrap();
        assert!(raftengine_kit::snapshot_dir::verify(&ours.path(9, 2)).is_err());

        let (address, _rx, _server) = serve(dir.path()).await;
        let mut client = RaftTransportClient::new(dialer(dir.path()).channel(
            raftengine_kit::peer::endpoint(&address, Duration::from_secs(1), None).unwrap(),
            n1(),
        ));
        let header = SnapshotHeader {
            from_id: "n2".into(),
            index: 9,
            term: 2,
            size: good.len() as u64,
        };
        let chunks = vec![SnapshotChunk {
            header: Some(header),
            data: Bytes::from(good.clone()),
        }];
        client
            .install_snapshot(tokio_stream::iter(chunks))
            .await
            .expect("the damaged copy is replaced, not trusted");
        assert_eq!(std::fs::read(ours.path(9, 2)).unwrap(), good);
        assert!(raftengine_kit::snapshot_dir::verify(&ours.path(9, 2)).is_ok());
    }
}
