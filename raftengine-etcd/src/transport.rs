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
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use raftengine_kit::SnapshotDir;

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
/// Largest frame accepted from a peer.
pub(crate) const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;
/// Largest snapshot file accepted from a peer.
const MAX_SNAPSHOT_BYTES: u64 = 1 << 40;

/// What a peer sent, checked and decoded, for the Raft loop.
#[derive(Debug)]
pub(crate) enum PeerInput {
    /// Raft messages.
    Messages {
        from_id: String,
        from_address: String,
        messages: Vec<Message>,
    },
    /// The leader says a committed configuration removed this node.
    Removed { from_id: String, conf_index: u64 },
}

/// Why [`PeerSink::deliver`] did not deliver.
pub(crate) enum Undelivered {
    /// The queue stayed full for the whole deadline.
    Overloaded,
    /// The loop is gone.
    Stopped,
}

/// Where the transport hands [`PeerInput`]: the Raft loop's bounded queue,
/// whatever else that queue carries.
#[tonic::async_trait]
pub(crate) trait PeerSink: Send + Sync + 'static {
    /// Queues `input`, waiting at most `deadline` for room.
    async fn deliver(&self, input: PeerInput, deadline: Duration) -> Result<(), Undelivered>;
    /// Resolves once the loop is gone.
    async fn closed(&self);
}

#[tonic::async_trait]
impl<T: From<PeerInput> + Send + 'static> PeerSink for mpsc::Sender<T> {
    async fn deliver(&self, input: PeerInput, deadline: Duration) -> Result<(), Undelivered> {
        match self.send_timeout(T::from(input), deadline).await {
            Ok(()) => Ok(()),
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => Err(Undelivered::Overloaded),
            Err(mpsc::error::SendTimeoutError::Closed(_)) => Err(Undelivered::Stopped),
        }
    }

    async fn closed(&self) {
        mpsc::Sender::closed(self).await;
    }
}

/// Where inbound batches go: the Raft loop's event queue.
#[derive(Clone)]
pub(crate) struct Inbound {
    local_id: String,
    events: Arc<dyn PeerSink>,
    enqueue_timeout: Duration,
    snapshots: SnapshotDir,
}

impl Inbound {
    pub(crate) fn new(
        local_id: String,
        events: impl PeerSink,
        enqueue_timeout: Duration,
        snapshots: SnapshotDir,
    ) -> Self {
        Inbound {
            local_id,
            events: Arc::new(events),
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

impl Inbound {
    /// Checks one batch and hands it to the Raft loop. Nothing of a batch
    /// with one bad message reaches the loop.
    async fn accept(&self, batch: MessageBatch) -> Result<(), Status> {
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
        let input = PeerInput::Messages {
            from_id: batch.from_id,
            from_address: batch.from_address,
            messages,
        };
        match self.events.deliver(input, self.enqueue_timeout).await {
            Ok(()) => Ok(()),
            Err(Undelivered::Overloaded) => {
                Err(Status::resource_exhausted("raft loop is overloaded"))
            }
            Err(Undelivered::Stopped) => Err(Status::unavailable("raft engine is shut down")),
        }
    }
}

#[tonic::async_trait]
impl RaftTransport for Inbound {
    type StreamStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<BatchAck, Status>> + Send + 'static>>;

    async fn stream(
        &self,
        request: Request<tonic::Streaming<MessageBatch>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let batches = request.into_inner();
        // The acknowledgements are computed as the connection polls for
        // them: reading a batch, handing it to the Raft loop and answering
        // happen in the connection's own task, with no hop through another
        // task. Measured against a task per stream (3 bench runs each):
        // single-client p50 448 vs 480 µs, 256 clients 53.6 k vs 48.0 k
        // writes/s. The stream ends when the sender closes it, after a
        // refused batch, or when the engine stops (a stream never ends by
        // itself, and a graceful server shutdown would wait for it).
        let acks = futures::stream::unfold(Some((batches, self.clone())), |state| async move {
            let (mut batches, inbound) = state?;
            let next = tokio::select! {
                next = batches.message() => next,
                () = inbound.events.closed() => {
                    return Some((Err(Status::unavailable("raft engine is shut down")), None));
                }
            };
            match next {
                Ok(Some(batch)) => {
                    let seq = batch.seq;
                    match inbound.accept(batch).await {
                        Ok(()) => Some((Ok(BatchAck { seq }), Some((batches, inbound)))),
                        Err(status) => Some((Err(status), None)),
                    }
                }
                Ok(None) => None,
                Err(status) => Some((Err(status), None)),
            }
        });
        Ok(Response::new(Box::pin(acks)))
    }

    async fn send(&self, request: Request<MessageBatch>) -> Result<Response<SendReply>, Status> {
        self.accept(request.into_inner()).await?;
        Ok(Response::new(SendReply {}))
    }

    async fn removed(
        &self,
        request: Request<RemovedNotice>,
    ) -> Result<Response<SendReply>, Status> {
        let notice = request.into_inner();
        if notice.removed_id != self.local_id {
            return Err(Status::invalid_argument(format!(
                "notice names {:?}, this node is {:?}",
                notice.removed_id, self.local_id
            )));
        }
        let input = PeerInput::Removed {
            from_id: notice.from_id,
            conf_index: notice.conf_index,
        };
        match self.events.deliver(input, self.enqueue_timeout).await {
            Ok(()) => Ok(Response::new(SendReply {})),
            // Already stopped: the notice has nothing left to do.
            Err(Undelivered::Stopped) => Ok(Response::new(SendReply {})),
            Err(Undelivered::Overloaded) => {
                Err(Status::resource_exhausted("raft loop is overloaded"))
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
            // Published files were verified once, but the disk may have
            // damaged them since; a bad one is replaced by this transfer.
            let path = final_path.clone();
            let valid =
                tokio::task::spawn_blocking(move || raftengine_kit::snapshot_dir::verify(&path))
                    .await;
            if matches!(valid, Ok(Ok(_))) {
                return Ok(Response::new(SendReply {}));
            }
            tracing::warn!(path = %final_path.display(), "local copy of the snapshot is damaged; receiving it again");
            let _ = tokio::fs::remove_file(&final_path).await;
        }
        let tmp = self
            .snapshots
            .receive_path(header.index, header.term, rand::random());
        let mut rest = tokio_stream::StreamExt::map(stream, |c| c.map(|c| c.data));
        let result = raftengine_kit::snapshot_stream::receive_file(
            &tmp,
            header.size,
            first.data,
            &mut rest,
            self.enqueue_timeout,
        )
        .await;
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

    /// Tells a node the leader removed that it is out (best effort: retried
    /// every `rpc_timeout` for a bounded time, each call with a deadline).
    pub(crate) fn notify_removed(&self, removed_id: String, address: &str, conf_index: u64) {
        let Some(endpoint) = self.endpoint(address) else {
            return;
        };
        let from_id = self.local_id.clone();
        let rpc_timeout = self.rpc_timeout;
        self.runtime.spawn(async move {
            let client = RaftTransportClient::new(endpoint.connect_lazy());
            let delivered = raftengine_kit::peer::deliver_removed_notice(rpc_timeout, || {
                let mut request = Request::new(RemovedNotice {
                    from_id: from_id.clone(),
                    removed_id: removed_id.clone(),
                    conf_index,
                });
                request.set_timeout(rpc_timeout);
                let mut client = client.clone();
                async move { client.removed(request).await }
            })
            .await;
            if delivered {
                tracing::info!(node = %removed_id, conf_index, "removed node notified");
            } else {
                tracing::info!(node = %removed_id, "removed node did not take the notice; it stays up until stopped");
            }
        });
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
        raftengine_kit::peer::endpoint(address, self.rpc_timeout, self.local_ip)
            .map(|e| e.timeout(self.rpc_timeout))
    }

    fn connect(&self, to: u64, address: &str) -> Option<Peer> {
        let endpoint = self.endpoint(address)?;
        let _guard = self.runtime.enter();
        let lane = |channel: Channel| {
            let (queue, rx) = mpsc::channel(LANE_QUEUE);
            let client = RaftTransportClient::new(channel)
                .max_decoding_message_size(MAX_FRAME_BYTES)
                .max_encoding_message_size(MAX_FRAME_BYTES);
            let ctx = LaneContext {
                to,
                client,
                from_id: self.local_id.clone(),
                from_address: self.local_address.clone(),
                rpc_timeout: self.rpc_timeout,
                failures: self.failures.clone(),
            };
            let task = self.runtime.spawn(run_lane(ctx, rx));
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

/// One lane's long-lived stream to its peer.
struct LaneStream {
    batches: mpsc::Sender<MessageBatch>,
    acks: tonic::Streaming<BatchAck>,
    /// Sent batches awaiting their ack: (seq, when sent).
    in_flight: std::collections::VecDeque<(u64, Instant)>,
}

/// What the lane task needs to talk to one peer.
struct LaneContext {
    to: u64,
    client: RaftTransportClient<Channel>,
    from_id: String,
    from_address: String,
    rpc_timeout: Duration,
    failures: mpsc::Sender<SendFailure>,
}

impl LaneContext {
    /// Opens the stream; bounded by the call deadline.
    async fn open(&mut self) -> Option<LaneStream> {
        let (batches, rx) = mpsc::channel(MAX_IN_FLIGHT);
        let call = self.client.stream(ReceiverStream::new(rx));
        match tokio::time::timeout(self.rpc_timeout, call).await {
            Ok(Ok(response)) => {
                tracing::debug!(to = self.to, "raft stream opened");
                Some(LaneStream {
                    batches,
                    acks: response.into_inner(),
                    in_flight: std::collections::VecDeque::new(),
                })
            }
            Ok(Err(status)) => {
                tracing::debug!(to = self.to, code = ?status.code(), message = status.message(), "raft stream refused");
                None
            }
            Err(_) => {
                tracing::debug!(to = self.to, "opening raft stream timed out");
                None
            }
        }
    }

    /// Raft retransmits what was lost; telling raft-rs makes the leader probe
    /// the follower instead of streaming appends into the void.
    fn unreachable(&self) {
        let _ = self.failures.try_send(SendFailure::Unreachable(self.to));
    }

    fn batch(&self, messages: Vec<Message>, seq: u64) -> MessageBatch {
        let mut encoded = Vec::with_capacity(messages.len());
        for m in &messages {
            match m.write_to_bytes() {
                Ok(b) => encoded.push(Bytes::from(b)),
                Err(e) => {
                    tracing::error!(to = self.to, error = %e, "cannot encode raft message; dropped")
                }
            }
        }
        MessageBatch {
            from_id: self.from_id.clone(),
            from_address: self.from_address.clone(),
            messages: encoded,
            seq,
        }
    }
}

/// Takes what is queued behind `first`, up to the batch limits.
fn drain_batch(first: Message, rx: &mut mpsc::Receiver<Message>) -> Vec<Message> {
    let mut bytes = first.compute_size() as usize;
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH_MESSAGES && bytes < MAX_BATCH_BYTES {
        match rx.try_recv() {
            Ok(m) => {
                bytes += m.compute_size() as usize;
                batch.push(m);
            }
            Err(_) => break,
        }
    }
    batch
}

/// The lane task: drains its queue into batches on one long-lived stream,
/// up to [`MAX_IN_FLIGHT`] batches ahead of the acknowledgements. Each batch
/// must be acknowledged within `rpc_timeout` of being sent; a late ack, an
/// error or a closed stream drops the stream (reopened for the next batch)
/// and reports the peer unreachable.
async fn run_lane(mut ctx: LaneContext, mut rx: mpsc::Receiver<Message>) {
    let mut stream: Option<LaneStream> = None;
    let mut seq = 0u64;
    loop {
        let deadline = stream
            .as_ref()
            .and_then(|s| s.in_flight.front())
            .map(|(_, sent)| *sent + ctx.rpc_timeout);
        let has_room = stream
            .as_ref()
            .is_none_or(|s| s.in_flight.len() < MAX_IN_FLIGHT);
        tokio::select! {
            next = rx.recv(), if has_room => {
                let Some(first) = next else { return };
                let messages = drain_batch(first, &mut rx);
                if stream.is_none() {
                    stream = ctx.open().await;
                }
                let Some(s) = stream.as_mut() else {
                    ctx.unreachable();
                    continue;
                };
                seq += 1;
                let batch = ctx.batch(messages, seq);
                // The channel holds at most MAX_IN_FLIGHT batches and we
                // never have more than that unacknowledged, so this cannot
                // wait; a closed channel means the call ended.
                if s.batches.try_send(batch).is_err() {
                    stream = None;
                    ctx.unreachable();
                    continue;
                }
                s.in_flight.push_back((seq, Instant::now()));
            }
            ack = async {
                match stream.as_mut() {
                    Some(s) => s.acks.message().await,
                    None => std::future::pending().await,
                }
            } => {
                match ack {
                    Ok(Some(BatchAck { seq: acked })) => {
                        if let Some(s) = stream.as_mut() {
                            while s.in_flight.front().is_some_and(|(q, _)| *q <= acked) {
                                s.in_flight.pop_front();
                            }
                        }
                    }
                    Ok(None) => {
                        tracing::debug!(to = ctx.to, "raft stream closed by the peer");
                        stream = None;
                        ctx.unreachable();
                    }
                    Err(status) => {
                        tracing::debug!(to = ctx.to, code = ?status.code(), message = status.message(), "raft stream failed");
                        stream = None;
                        ctx.unreachable();
                    }
                }
            }
            () = sleep_until_or_never(deadline) => {
                tracing::debug!(to = ctx.to, "raft stream ack overdue; reconnecting");
                stream = None;
                ctx.unreachable();
            }
        }
    }
}

async fn sleep_until_or_never(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
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
    let path = snapshots.path(meta.index, meta.term);
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| format!("open {}: {e}", path.display()))?;
    let size = file
        .metadata()
        .await
        .map_err(|e| format!("stat {}: {e}", path.display()))?
        .len();
    let header = SnapshotHeader {
        from_id: from_id.clone(),
        index: meta.index,
        term: meta.term,
        size,
    };
    let mut header = Some(header);
    let mut client = RaftTransportClient::new(channel.clone());
    let call = raftengine_kit::snapshot_stream::send_file(
        file,
        rpc_timeout,
        |data| SnapshotChunk {
            header: header.take(),
            data,
        },
        |chunks| async move { client.install_snapshot(chunks).await },
    )
    .await
    .map_err(|e| e.to_string())?;
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
        seq: 0,
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
        let (tx, mut rx) = mpsc::channel::<PeerInput>(8);
        let inbound = Inbound::new(
            "n1".into(),
            tx,
            Duration::from_secs(1),
            SnapshotDir::new(dir.path()).unwrap(),
        );
        let garbage = MessageBatch {
            from_id: "n2".into(),
            from_address: "127.0.0.1:1".into(),
            messages: vec![Bytes::from_static(b"\xff\xff\xff\xff\xff not protobuf")],
            seq: 0,
        };
        let err = inbound.send(Request::new(garbage)).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);

        let anonymous = MessageBatch {
            from_id: String::new(),
            from_address: String::new(),
            messages: vec![],
            seq: 0,
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
            seq: 0,
        };
        let err = inbound.send(Request::new(batch)).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        assert!(rx.try_recv().is_err(), "nothing reached the raft loop");
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
            "n1".into(),
            tx,
            Duration::from_secs(1),
            SnapshotDir::new(dir).unwrap(),
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
        let mut client = RaftTransportClient::connect(format!("http://{address}"))
            .await
            .unwrap();
        let (batches, brx) = mpsc::channel(4);
        let mut acks = client
            .stream(ReceiverStream::new(brx))
            .await
            .unwrap()
            .into_inner();
        let good = |seq| MessageBatch {
            from_id: "n2".into(),
            from_address: "127.0.0.1:1".into(),
            messages: vec![Bytes::from(heartbeat(1).write_to_bytes().unwrap())],
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
            Some(node_ip(0)),
            "n2".into(),
            node_ip(0).to_string(),
            Duration::from_millis(500),
            Handle::current(),
            failures,
        );
        let send = |commit: u64| {
            let mut m = heartbeat(1);
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
                if let Ok(Some(SendFailure::Unreachable(1))) =
                    tokio::time::timeout(Duration::from_millis(100), failed.recv()).await
                {
                    reported = true;
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
        let mut client = RaftTransportClient::connect(format!("http://{address}"))
            .await
            .unwrap();
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
