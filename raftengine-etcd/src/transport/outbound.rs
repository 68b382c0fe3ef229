//! One sender per peer: the control and bulk lanes, their batching and
//! in-flight bounds, and the removed-node notice.

use super::snapshot::send_snapshot;
use super::*;

/// Feedback from the senders to the Raft loop.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SendFailure {
    /// The peer could not be reached.
    Unreachable(u64),
    /// A snapshot to the peer failed.
    Snapshot(u64),
    /// A snapshot reached the peer.
    SnapshotSent(u64),
    /// The peer refused this node: a configuration it committed removed
    /// this node (`raftengine_kit::departed`).
    RemovedBy(u64),
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
    snapshot_channel: PeerChannel,
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

use raftengine_kit::peer::{Dialer, PeerChannel};

/// The outbound side: per-peer lanes, created on first use.
pub(crate) struct Outbound {
    snapshots: SnapshotDir,
    dialer: Dialer,
    local_id: String,
    local_address: String,
    rpc_timeout: Duration,
    runtime: Handle,
    failures: mpsc::Sender<SendFailure>,
    peers: Mutex<HashMap<u64, Peer>>,
    /// `PeerLimits::max_message_bytes`.
    max_message_bytes: usize,
}

impl Outbound {
    /// `failures` is bounded; when it is full the report is dropped, which
    /// only delays raft-rs's switch to probing.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        snapshots: SnapshotDir,
        dialer: Dialer,
        local_id: String,
        local_address: String,
        rpc_timeout: Duration,
        runtime: Handle,
        failures: mpsc::Sender<SendFailure>,
        max_message_bytes: usize,
    ) -> Arc<Self> {
        Arc::new(Outbound {
            snapshots,
            dialer,
            local_id,
            local_address,
            rpc_timeout,
            runtime,
            failures,
            peers: Mutex::new(HashMap::new()),
            max_message_bytes,
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
        let _guard = self.runtime.enter();
        let channel = self
            .dialer
            .channel(endpoint, raftengine::numeric_id(&removed_id));
        self.runtime.spawn(async move {
            let client = RaftTransportClient::new(channel);
            raftengine_kit::peer::deliver_removed_notice(&removed_id, rpc_timeout, || {
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
        self.dialer
            .endpoint(address)
            .map(|e| e.timeout(self.rpc_timeout))
    }

    fn connect(&self, to: u64, address: &str) -> Option<Peer> {
        let endpoint = self.endpoint(address)?;
        let _guard = self.runtime.enter();
        let lane = |channel: PeerChannel| {
            let (queue, rx) = mpsc::channel(LANE_QUEUE);
            let client = RaftTransportClient::new(channel)
                .max_decoding_message_size(self.max_message_bytes)
                .max_encoding_message_size(self.max_message_bytes);
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
            control: lane(self.dialer.channel(endpoint.clone(), to)),
            bulk: lane(self.dialer.channel(endpoint.clone(), to)),
            snapshot_channel: self.dialer.channel(endpoint, to),
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
    client: RaftTransportClient<PeerChannel>,
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
                self.refused(&status);
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

    /// Reports a refusal that says committed membership removed this node.
    fn refused(&self, status: &Status) {
        if raftengine_kit::departed::is_removed_refusal(status) {
            let _ = self.failures.try_send(SendFailure::RemovedBy(self.to));
        }
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
                        ctx.refused(&status);
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
