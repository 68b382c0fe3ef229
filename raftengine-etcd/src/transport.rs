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
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use crate::driver::Event;
use raftengine::backend::SnapshotDir;

#[allow(missing_docs, unreachable_pub, clippy::all)]
pub(crate) mod pb {
    tonic::include_proto!("raftengine.etcd.v1");
}

use pb::raft_transport_client::RaftTransportClient;
use pb::raft_transport_server::{RaftTransport, RaftTransportServer};
use pb::{MessageBatch, SendReply, SnapshotChunk, SnapshotHeader};

/// Most messages one lane packs into one call.
const MAX_BATCH_MESSAGES: usize = 512;
/// Most bytes one lane packs into one call (a lone larger message still goes).
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Queue depth per lane.
const LANE_QUEUE: usize = 4096;
/// Largest frame accepted from a peer.
pub(crate) const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;
/// Bytes per snapshot chunk.
const SNAPSHOT_CHUNK: usize = 1024 * 1024;
/// Largest snapshot file accepted from a peer.
const MAX_SNAPSHOT_BYTES: u64 = 1 << 40;

/// Where inbound batches go: the Raft loop's event queue.
pub(crate) struct Inbound<R: Send + 'static> {
    events: mpsc::Sender<Event<R>>,
    enqueue_timeout: Duration,
    snapshots: SnapshotDir,
}

impl<R: Send + 'static> Clone for Inbound<R> {
    fn clone(&self) -> Self {
        Inbound {
            events: self.events.clone(),
            enqueue_timeout: self.enqueue_timeout,
            snapshots: self.snapshots.clone(),
        }
    }
}

impl<R: Send + 'static> Inbound<R> {
    pub(crate) fn new(
        events: mpsc::Sender<Event<R>>,
        enqueue_timeout: Duration,
        snapshots: SnapshotDir,
    ) -> Self {
        Inbound {
            events,
            enqueue_timeout,
            snapshots,
        }
    }

    /// The tonic service to mount.
    pub(crate) fn into_service(self) -> RaftTransportServer<Self> {
        RaftTransportServer::new(self)
            .max_decoding_message_size(MAX_FRAME_BYTES)
            .max_encoding_message_size(MAX_FRAME_BYTES)
    }
}

#[tonic::async_trait]
impl<R: Send + 'static> RaftTransport for Inbound<R> {
    async fn send(&self, request: Request<MessageBatch>) -> Result<Response<SendReply>, Status> {
        let batch = request.into_inner();
        if batch.from_id.is_empty() {
            return Err(Status::invalid_argument("batch without a sender id"));
        }
        let mut messages = Vec::with_capacity(batch.messages.len());
        for raw in &batch.messages {
            let m = Message::parse_from_bytes(raw)
                .map_err(|e| Status::invalid_argument(format!("undecodable raft message: {e}")))?;
            if m.get_msg_type() == MessageType::MsgSnapshot {
                // The state machine's bytes must have arrived (and verified)
                // through InstallSnapshot first.
                let meta = m.get_snapshot().get_metadata();
                if !self.snapshots.path(meta.index, meta.term).exists() {
                    return Err(Status::failed_precondition(format!(
                        "snapshot {}/{} was not transferred",
                        meta.index, meta.term
                    )));
                }
            }
            messages.push(m);
        }
        let event = Event::Inbound {
            from_id: batch.from_id,
            from_address: batch.from_address,
            messages,
        };
        match self.events.send_timeout(event, self.enqueue_timeout).await {
            Ok(()) => Ok(Response::new(SendReply {})),
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                Err(Status::resource_exhausted("raft loop is overloaded"))
            }
            Err(mpsc::error::SendTimeoutError::Closed(_)) => {
                Err(Status::unavailable("raft engine is shut down"))
            }
        }
    }

    async fn install_snapshot(
        &self,
        request: Request<tonic::Streaming<SnapshotChunk>>,
    ) -> Result<Response<SendReply>, Status> {
        let mut stream = request.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
        let Some(header) = first.header.clone() else {
            return Err(Status::invalid_argument("snapshot stream without a header"));
        };
        if header.size > MAX_SNAPSHOT_BYTES || header.index == 0 {
            return Err(Status::invalid_argument("implausible snapshot header"));
        }
        let final_path = self.snapshots.path(header.index, header.term);
        if final_path.exists() {
            return Ok(Response::new(SendReply {}));
        }
        let tmp = self
            .snapshots
            .receive_path(header.index, header.term, rand::random());
        let result = receive_file(&tmp, &header, first, &mut stream, self.enqueue_timeout).await;
        if let Err(status) = result {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(status);
        }
        let snapshots = self.snapshots.clone();
        let (index, term) = (header.index, header.term);
        let tmp2 = tmp.clone();
        let published =
            tokio::task::spawn_blocking(move || snapshots.publish(&tmp2, index, term)).await;
        match published {
            Ok(Ok(())) => Ok(Response::new(SendReply {})),
            Ok(Err(e)) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                Err(Status::data_loss(format!(
                    "received snapshot is invalid: {e}"
                )))
            }
            Err(e) => Err(Status::internal(format!("snapshot check failed: {e}"))),
        }
    }
}

/// Writes the streamed file to `tmp`, fsyncs it, and checks its size. Each
/// chunk must arrive within `progress_timeout` of the previous one.
async fn receive_file(
    tmp: &std::path::Path,
    header: &SnapshotHeader,
    first: SnapshotChunk,
    stream: &mut tonic::Streaming<SnapshotChunk>,
    progress_timeout: Duration,
) -> Result<(), Status> {
    use tokio::io::AsyncWriteExt as _;
    let io = |e: std::io::Error| Status::internal(format!("snapshot file: {e}"));
    let mut file = tokio::fs::File::create(tmp).await.map_err(io)?;
    let mut received = 0u64;
    let mut chunk = Some(first);
    loop {
        let Some(c) = chunk.take() else {
            break;
        };
        received += c.data.len() as u64;
        if received > header.size {
            return Err(Status::invalid_argument("snapshot larger than announced"));
        }
        file.write_all(&c.data).await.map_err(io)?;
        chunk = match tokio::time::timeout(progress_timeout, stream.message()).await {
            Ok(next) => next?,
            Err(_) => return Err(Status::deadline_exceeded("snapshot stream stalled")),
        };
    }
    if received != header.size {
        return Err(Status::invalid_argument("snapshot shorter than announced"));
    }
    file.sync_all().await.map_err(io)?;
    Ok(())
}

/// Feedback from the senders to the Raft loop.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SendFailure {
    /// The peer could not be reached.
    Unreachable(u64),
    /// A snapshot to the peer failed.
    Snapshot(u64),
    /// A snapshot reached the peer.
    SnapshotSent(u64),
}

struct Lane {
    queue: mpsc::Sender<Message>,
    task: JoinHandle<()>,
}

struct Peer {
    address: String,
    control: Lane,
    bulk: Lane,
    /// Snapshots use their own connection so a long transfer never shares
    /// flow control with appends or heartbeats.
    snapshot_channel: Channel,
    snapshot_task: Option<JoinHandle<()>>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.control.task.abort();
        self.bulk.task.abort();
        if let Some(t) = &self.snapshot_task {
            t.abort();
        }
    }
}

/// The outbound side: per-peer lanes, created on first use.
pub(crate) struct Outbound {
    snapshots: SnapshotDir,
    local_ip: Option<std::net::IpAddr>,
    local_id: String,
    local_address: String,
    rpc_timeout: Duration,
    runtime: Handle,
    failures: mpsc::Sender<SendFailure>,
    peers: Mutex<HashMap<u64, Peer>>,
}

impl Outbound {
    /// `failures` is bounded; when it is full the report is dropped, which
    /// only delays raft-rs's switch to probing.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        snapshots: SnapshotDir,
        local_ip: Option<std::net::IpAddr>,
        local_id: String,
        local_address: String,
        rpc_timeout: Duration,
        runtime: Handle,
        failures: mpsc::Sender<SendFailure>,
    ) -> Arc<Self> {
        Arc::new(Outbound {
            snapshots,
            local_ip,
            local_id,
            local_address,
            rpc_timeout,
            runtime,
            failures,
            peers: Mutex::new(HashMap::new()),
        })
    }

    /// Queues `msg` for its target at `address`. Never blocks.
    pub(crate) fn send(&self, msg: Message, address: &str) {
        let to = msg.to;
        let bulk = matches!(
            msg.get_msg_type(),
            MessageType::MsgAppend | MessageType::MsgSnapshot
        );
        let is_snapshot = msg.get_msg_type() == MessageType::MsgSnapshot;
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let stale = peers.get(&to).is_some_and(|p| p.address != address);
        if stale {
            peers.remove(&to);
        }
        let peer = match peers.get_mut(&to) {
            Some(p) => p,
            None => match self.connect(to, address) {
                Some(p) => peers.entry(to).or_insert(p),
                None => {
                    let _ = self.failures.try_send(SendFailure::Unreachable(to));
                    return;
                }
            },
        };
        if is_snapshot {
            let busy = peer
                .snapshot_task
                .as_ref()
                .is_some_and(|t| !t.is_finished());
            if busy {
                // raft-rs sends one snapshot per follower at a time; a second
                // one means the first is stale. Let raft-rs retry later.
                let _ = self.failures.try_send(SendFailure::Snapshot(to));
                return;
            }
            let task = self.runtime.spawn(send_snapshot(
                to,
                msg,
                self.snapshots.clone(),
                peer.snapshot_channel.clone(),
                self.local_id.clone(),
                self.local_address.clone(),
                self.rpc_timeout,
                self.failures.clone(),
            ));
            peer.snapshot_task = Some(task);
            return;
        }
        let lane = if bulk { &peer.bulk } else { &peer.control };
        if lane.queue.try_send(msg).is_err() {
            let _ = self.failures.try_send(if is_snapshot {
                SendFailure::Snapshot(to)
            } else {
                SendFailure::Unreachable(to)
            });
        }
    }

    /// Drops the lanes of a peer that left the configuration.
    pub(crate) fn forget(&self, raft_id: u64) {
        self.peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&raft_id);
    }

    /// Drops every lane (shutdown).
    pub(crate) fn close(&self) {
        self.peers.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    fn endpoint(&self, address: &str) -> Option<Endpoint> {
        let endpoint = Endpoint::from_shared(format!("http://{address}")).ok()?;
        Some(
            endpoint
                .connect_timeout(self.rpc_timeout)
                .timeout(self.rpc_timeout)
                .tcp_nodelay(true)
                .local_address(self.local_ip)
                .http2_keep_alive_interval(Duration::from_secs(5))
                .keep_alive_timeout(self.rpc_timeout)
                .keep_alive_while_idle(true),
        )
    }

    fn connect(&self, to: u64, address: &str) -> Option<Peer> {
        let endpoint = self.endpoint(address)?;
        let _guard = self.runtime.enter();
        let lane = |channel: Channel| {
            let (queue, rx) = mpsc::channel(LANE_QUEUE);
            let client = RaftTransportClient::new(channel)
                .max_decoding_message_size(MAX_FRAME_BYTES)
                .max_encoding_message_size(MAX_FRAME_BYTES);
            let task = self.runtime.spawn(run_lane(
                to,
                client,
                rx,
                self.local_id.clone(),
                self.local_address.clone(),
                self.rpc_timeout,
                self.failures.clone(),
            ));
            Lane { queue, task }
        };
        Some(Peer {
            address: address.to_owned(),
            control: lane(endpoint.clone().connect_lazy()),
            bulk: lane(endpoint.clone().connect_lazy()),
            snapshot_channel: endpoint.connect_lazy(),
            snapshot_task: None,
        })
    }
}

async fn run_lane(
    to: u64,
    mut client: RaftTransportClient<Channel>,
    mut rx: mpsc::Receiver<Message>,
    from_id: String,
    from_address: String,
    rpc_timeout: Duration,
    failures: mpsc::Sender<SendFailure>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let mut bytes = 0usize;
        while batch.len() < MAX_BATCH_MESSAGES && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(m) => {
                    bytes += m.compute_size() as usize;
                    batch.push(m);
                }
                Err(_) => break,
            }
        }
        let has_snapshot = batch
            .iter()
            .any(|m| m.get_msg_type() == MessageType::MsgSnapshot);
        let mut encoded = Vec::with_capacity(batch.len());
        for m in &batch {
            match m.write_to_bytes() {
                Ok(b) => encoded.push(Bytes::from(b)),
                Err(e) => tracing::error!(to, error = %e, "cannot encode raft message; dropped"),
            }
        }
        let mut request = Request::new(MessageBatch {
            from_id: from_id.clone(),
            from_address: from_address.clone(),
            messages: encoded,
        });
        request.set_timeout(rpc_timeout);
        let result = tokio::time::timeout(rpc_timeout, client.send(request)).await;
        let failed = match result {
            Ok(Ok(_)) => false,
            Ok(Err(status)) => {
                tracing::debug!(to, code = ?status.code(), message = status.message(), "raft send failed");
                true
            }
            Err(_) => {
                tracing::debug!(to, "raft send timed out");
                true
            }
        };
        if failed {
            let _ = failures.try_send(SendFailure::Unreachable(to));
            if has_snapshot {
                let _ = failures.try_send(SendFailure::Snapshot(to));
            }
        }
    }
}

/// Streams the snapshot file a `MsgSnapshot` refers to, then the message.
#[allow(clippy::too_many_arguments)]
async fn send_snapshot(
    to: u64,
    msg: Message,
    snapshots: SnapshotDir,
    channel: Channel,
    from_id: String,
    from_address: String,
    rpc_timeout: Duration,
    failures: mpsc::Sender<SendFailure>,
) {
    let meta = msg.get_snapshot().get_metadata().clone();
    let result = stream_snapshot(
        to,
        &msg,
        &meta,
        &snapshots,
        channel,
        from_id,
        from_address,
        rpc_timeout,
    )
    .await;
    match result {
        Ok(()) => {
            tracing::info!(to, index = meta.index, "snapshot sent");
            let _ = failures.try_send(SendFailure::SnapshotSent(to));
        }
        Err(e) => {
            tracing::warn!(to, index = meta.index, error = %e, "sending snapshot failed");
            let _ = failures.try_send(SendFailure::Snapshot(to));
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn stream_snapshot(
    to: u64,
    msg: &Message,
    meta: &raft::eraftpb::SnapshotMetadata,
    snapshots: &SnapshotDir,
    channel: Channel,
    from_id: String,
    from_address: String,
    rpc_timeout: Duration,
) -> Result<(), String> {
    use tokio::io::AsyncReadExt as _;
    let path = snapshots.path(meta.index, meta.term);
    let mut file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| format!("open {}: {e}", path.display()))?;
    let size = file
        .metadata()
        .await
        .map_err(|e| format!("stat {}: {e}", path.display()))?
        .len();
    let mut client = RaftTransportClient::new(channel.clone());
    // A small queue between the file and the call: each chunk must be taken
    // by the network within `rpc_timeout` (a progress-based deadline), while
    // the whole transfer may take as long as the file needs.
    let (chunks, rx) = mpsc::channel::<SnapshotChunk>(2);
    let header = SnapshotHeader {
        from_id: from_id.clone(),
        index: meta.index,
        term: meta.term,
        size,
    };
    let call = tokio::spawn(async move {
        client
            .install_snapshot(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    let mut first = true;
    loop {
        let mut buf = vec![0u8; SNAPSHOT_CHUNK];
        let n = file
            .read(&mut buf)
            .await
            .map_err(|e| format!("read {}: {e}", path.display()))?;
        if n == 0 && !first {
            break;
        }
        buf.truncate(n);
        let chunk = SnapshotChunk {
            header: first.then(|| header.clone()),
            data: Bytes::from(buf),
        };
        first = false;
        if chunks.send_timeout(chunk, rpc_timeout).await.is_err() {
            call.abort();
            return Err("snapshot transfer made no progress".into());
        }
        if n == 0 {
            break;
        }
    }
    drop(chunks);
    match tokio::time::timeout(rpc_timeout, call).await {
        Ok(Ok(Ok(_))) => {}
        Ok(Ok(Err(status))) => return Err(format!("peer refused snapshot: {status}")),
        Ok(Err(e)) => return Err(format!("snapshot call failed: {e}")),
        Err(_) => return Err("peer did not confirm the snapshot".into()),
    }
    let raw = msg
        .write_to_bytes()
        .map_err(|e| format!("encode snapshot message: {e}"))?;
    let mut request = Request::new(MessageBatch {
        from_id,
        from_address,
        messages: vec![Bytes::from(raw)],
    });
    request.set_timeout(rpc_timeout);
    let mut client = RaftTransportClient::new(channel);
    match tokio::time::timeout(rpc_timeout, client.send(request)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(status)) => Err(format!("peer refused the snapshot message: {status}")),
        Err(_) => Err(format!("snapshot message to {to} timed out")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn undecodable_messages_and_missing_snapshots_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, mut rx) = mpsc::channel::<Event<()>>(8);
        let inbound = Inbound::new(
            tx,
            Duration::from_secs(1),
            SnapshotDir::new(dir.path()).unwrap(),
        );
        let garbage = MessageBatch {
            from_id: "n2".into(),
            from_address: "127.0.0.1:1".into(),
            messages: vec![Bytes::from_static(b"\xff\xff\xff\xff\xff not protobuf")],
        };
        let err = inbound.send(Request::new(garbage)).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);

        let anonymous = MessageBatch {
            from_id: String::new(),
            from_address: String::new(),
            messages: vec![],
        };
        let err = inbound.send(Request::new(anonymous)).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);

        let mut snap = Message::default();
        snap.set_msg_type(MessageType::MsgSnapshot);
        snap.mut_snapshot().mut_metadata().index = 9;
        let batch = MessageBatch {
            from_id: "n2".into(),
            from_address: "127.0.0.1:1".into(),
            messages: vec![Bytes::from(snap.write_to_bytes().unwrap())],
        };
        let err = inbound.send(Request::new(batch)).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        assert!(rx.try_recv().is_err(), "nothing reached the raft loop");
    }
}
