//! Outbound: openraft's `RaftNetworkV2` over tonic gRPC.
//!
//! Per peer three HTTP/2 connections, reused by every client openraft asks
//! for: *control* (heartbeats, votes, pre-votes, leadership transfer),
//! *data* (appends, pipelined on one stream) and *snapshot*. A snapshot or a
//! large append batch therefore never delays a heartbeat, which the leader
//! lease depends on. Every call has a deadline: the `RPCOption` openraft
//! passes, and for streams a per-response deadline from each request's send
//! time; snapshots get a progress deadline per chunk instead of one overall.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use openraft::base::{BoxFuture, BoxStream};
use openraft::error::{
    NetworkError, RPCError, ReplicationClosed, StreamingError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult,
    TransferLeaderRequest, TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{RaftNetworkV2, Snapshot};
use raftengine_kit::peer::PeerChannel;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::snapshot::{self, SendError};
use raftengine_kit::peer::Dialer;

use crate::codec::{decode, encode};
use crate::pb::raft_network_client::RaftNetworkClient;
use crate::pb::{Frame, RemovedNotice};
use crate::state_machine::SnapshotFile;
use crate::types::{Committed, Peer, TypeConfig, Vote};

type Client = RaftNetworkClient<PeerChannel>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Lane {
    Control,
    Data,
    Snapshot,
}

/// Connection settings and the shared connection cache.
#[derive(Debug)]
pub(crate) struct Outbound {
    pub(crate) local_id: u64,
    dialer: Dialer,
    pub(crate) connect_timeout: Duration,
    pub(crate) max_message_bytes: usize,
    /// How long a peer may take to confirm an installed snapshot after the
    /// last chunk (it restores the state machine before answering).
    pub(crate) snapshot_install_timeout: Duration,
    /// Keyed by the peer's node id too: with TLS a channel reaches only
    /// the node it was made for.
    channels: Mutex<HashMap<(u64, String, Lane), PeerChannel>>,
    /// Peers that refused this node as removed (`raftengine_kit::departed`).
    pub(crate) refusals: Arc<raftengine_kit::departed::Refusals>,
    /// When each peer last refused a replication stream.
    refused_at: Mutex<HashMap<u64, Instant>>,
}

/// How long after a refused replication stream the next one to the same
/// peer waits. openraft opens the next stream at once (its backoff paces
/// requests inside a stream, and a refused stream has none): measured
/// about 900 refused streams a second in
/// `another_cluster_is_refused_despite_a_valid_certificate` without this.
const REFUSED_STREAM_PAUSE: Duration = Duration::from_millis(200);

impl Outbound {
    pub(crate) fn new(
        local_id: u64,
        dialer: Dialer,
        connect_timeout: Duration,
        max_message_bytes: usize,
        snapshot_install_timeout: Duration,
    ) -> Self {
        Outbound {
            local_id,
            dialer,
            connect_timeout,
            max_message_bytes,
            snapshot_install_timeout,
            refusals: Arc::default(),
            refused_at: Mutex::new(HashMap::new()),
            channels: Mutex::new(HashMap::new()),
        }
    }

    fn channel(&self, to: u64, address: &str, lane: Lane) -> Option<PeerChannel> {
        let mut cache = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let key = (to, address.to_owned(), lane);
        if let Some(c) = cache.get(&key) {
            return Some(c.clone());
        }
        let channel = self.dialer.channel(self.dialer.endpoint(address)?, to);
        cache.insert(key, channel.clone());
        Some(channel)
    }

    fn client(&self, to: u64, address: &str, lane: Lane) -> Option<Client> {
        let c = self.channel(to, address, lane)?;
        Some(
            RaftNetworkClient::new(c)
                .max_decoding_message_size(self.max_message_bytes)
                .max_encoding_message_size(self.max_message_bytes),
        )
    }

    /// Tells a node the leader removed that it is out: best effort, retried
    /// once per `connect_timeout` for a bounded number of attempts, each
    /// call with a deadline.
    pub(crate) fn notify_removed(
        &self,
        from_id: String,
        removed_id: String,
        address: &str,
        conf_index: u64,
    ) {
        let to = raftengine::numeric_id(&removed_id);
        let Some(client) = self.client(to, address, Lane::Control) else {
            return;
        };
        let deadline = self.connect_timeout;
        tokio::spawn(async move {
            raftengine_kit::peer::deliver_removed_notice(&removed_id, deadline, || {
                let mut request = tonic::Request::new(RemovedNotice {
                    from_id: from_id.clone(),
                    removed_id: removed_id.clone(),
                    conf_index,
                });
                request.set_timeout(deadline);
                let mut client = client.clone();
                async move { client.removed(request).await }
            })
            .await;
        });
    }

    /// Drops every cached connection (shutdown).
    pub(crate) fn close(&self) {
        self.channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

/// Hands openraft one [`PeerClient`] per replication stream, heartbeat
/// loop or snapshot transfer.
#[derive(Debug, Clone)]
pub(crate) struct NetworkFactory(pub(crate) Arc<Outbound>);

impl NetworkFactory {
    fn make(&self, target: u64, node: &Peer, data: Lane, control: Lane) -> PeerClient {
        let out = &self.0;
        // openraft must never be handed a connection to itself; a node id
        // that maps to this node gets a client that is always unreachable.
        let usable = target != out.local_id;
        let client = |lane| {
            usable
                .then(|| out.client(target, &node.address, lane))
                .flatten()
        };
        PeerClient {
            target,
            outbound: out.clone(),
            data: client(data),
            control: client(control),
            snapshot: client(Lane::Snapshot),
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &Peer) -> PeerClient {
        self.make(target, node, Lane::Data, Lane::Control)
    }

    async fn new_heartbeat_client(&mut self, target: u64, node: &Peer) -> PeerClient {
        self.make(target, node, Lane::Control, Lane::Control)
    }

    async fn new_snapshot_client(&mut self, target: u64, node: &Peer) -> PeerClient {
        self.make(target, node, Lane::Snapshot, Lane::Control)
    }
}

/// One peer as openraft sees it.
#[derive(Debug)]
pub(crate) struct PeerClient {
    target: u64,
    outbound: Arc<Outbound>,
    data: Option<Client>,
    control: Option<Client>,
    snapshot: Option<Client>,
}

fn unreachable(why: &str) -> RPCError<TypeConfig> {
    RPCError::Unreachable(Unreachable::from_string(why))
}

impl PeerClient {
    /// [`from_status`], after noting the refusal: one that says committed
    /// membership removed this node, and the time, so the next stream
    /// waits ([`REFUSED_STREAM_PAUSE`]).
    fn refused(&self, status: &tonic::Status) -> RPCError<TypeConfig> {
        if raftengine_kit::departed::is_removed_refusal(status) {
            self.outbound.refusals.record(self.target);
        }
        if !matches!(
            status.code(),
            tonic::Code::DeadlineExceeded | tonic::Code::Unavailable | tonic::Code::Cancelled
        ) {
            self.outbound
                .refused_at
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(self.target, Instant::now());
        }
        from_status(status)
    }

    /// Waits out [`REFUSED_STREAM_PAUSE`] after this peer's last refusal.
    async fn pause_after_refusal(&self) {
        let last = self
            .outbound
            .refused_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&self.target)
            .copied();
        if let Some(at) = last {
            tokio::time::sleep_until(at + REFUSED_STREAM_PAUSE).await;
        }
    }
}

fn from_status(status: &tonic::Status) -> RPCError<TypeConfig> {
    use tonic::Code;
    match status.code() {
        // Connection refused or reset, or the peer is shutting down:
        // openraft backs off before the next attempt.
        Code::Unavailable | Code::Cancelled | Code::Unknown => {
            RPCError::Unreachable(Unreachable::from_string(status.to_string()))
        }

        _ => RPCError::Network(NetworkError::from_string(status.to_string())),
    }
}

fn decode_reply<T: DeserializeOwned>(frame: &Frame) -> Result<T, RPCError<TypeConfig>> {
    decode(&frame.payload)
        .map_err(|e| RPCError::Network(NetworkError::from_string(format!("bad reply: {e}"))))
}

fn frame_of<T: Serialize>(value: &T) -> Result<Frame, RPCError<TypeConfig>> {
    encode(value)
        .map(|b| Frame { payload: b.into() })
        .map_err(|e| RPCError::Network(NetworkError::from_string(format!("encode: {e}"))))
}

impl PeerClient {
    fn timeout(&self, action: RPCTypes, after: Duration) -> RPCError<TypeConfig> {
        RPCError::Timeout(Timeout {
            action,
            id: self.outbound.local_id,
            target: self.target,
            timeout: after,
        })
    }

    /// One unary call with a deadline.
    async fn unary<Req, Resp, F, Fut>(
        &self,
        client: Option<&Client>,
        action: RPCTypes,
        request: &Req,
        option: &RPCOption,
        call: F,
    ) -> Result<Resp, RPCError<TypeConfig>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        F: FnOnce(Client, tonic::Request<Frame>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Frame>, tonic::Status>>,
    {
        let client = client
            .cloned()
            .ok_or_else(|| unreachable("no usable address for this peer"))?;
        let ttl = option.hard_ttl();
        let mut req = tonic::Request::new(frame_of(request)?);
        req.set_timeout(ttl);
        match tokio::time::timeout(ttl, call(client, req)).await {
            Ok(Ok(resp)) => decode_reply(resp.get_ref()),
            Ok(Err(status)) if status.code() == tonic::Code::DeadlineExceeded => {
                Err(self.timeout(action, ttl))
            }
            Ok(Err(status)) => Err(self.refused(&status)),
            Err(_) => Err(self.timeout(action, ttl)),
        }
    }
}

/// Send times of requests still waiting for their response, so the response
/// stream can hold each to its own deadline and stay patient while idle.
#[derive(Default)]
struct InFlight {
    sent: Mutex<VecDeque<Instant>>,
    more: Notify,
}

impl InFlight {
    fn push(&self) {
        self.sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(Instant::now());
        self.more.notify_one();
    }

    fn oldest(&self) -> Option<Instant> {
        self.sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .front()
            .copied()
    }

    fn pop(&self) {
        self.sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front();
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = SnapshotFile;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let client = self.data.as_ref();
        self.unary(
            client,
            RPCTypes::AppendEntries,
            &rpc,
            &option,
            |mut c, r| async move { c.append(r).await },
        )
        .await
    }

    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<
            BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>,
            RPCError<TypeConfig>,
        >,
    >
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
    {
        Box::pin(async move {
            let mut client = self
                .data
                .clone()
                .ok_or_else(|| unreachable("no usable address for this peer"))?;
            self.pause_after_refusal().await;
            let ttl = option.hard_ttl();
            let in_flight = Arc::new(InFlight::default());
            let tracker = in_flight.clone();
            // A request that cannot be encoded ends the stream; openraft
            // then sees fewer responses than requests and retries.
            let requests = input
                .map(|req| encode(&req))
                .take_while(|r| std::future::ready(r.is_ok()))
                .filter_map(move |r| {
                    let frame = r.ok().map(|b| Frame { payload: b.into() });
                    if frame.is_some() {
                        tracker.push();
                    }
                    std::future::ready(frame)
                });
            let responses = match tokio::time::timeout(ttl, client.stream_append(requests)).await {
                Ok(Ok(r)) => r.into_inner(),
                Ok(Err(status)) => return Err(self.refused(&status)),
                Err(_) => return Err(self.timeout(RPCTypes::AppendEntries, ttl)),
            };
            let timeout_err = self.timeout(RPCTypes::AppendEntries, ttl);
            let stream = futures::stream::unfold(Some((responses, in_flight)), move |state| {
                let timeout_err = timeout_err.clone();
                async move {
                    let (mut responses, in_flight) = state?;
                    let next = loop {
                        match in_flight.oldest() {
                            Some(sent) => {
                                match tokio::time::timeout_at(sent + ttl, responses.message()).await
                                {
                                    Ok(m) => break m,
                                    Err(_) => return Some((Err(timeout_err), None)),
                                }
                            }
                            None => {
                                tokio::select! {
                                    m = responses.message() => break m,
                                    _ = in_flight.more.notified() => continue,
                                }
                            }
                        }
                    };
                    match next {
                        Ok(Some(frame)) => {
                            in_flight.pop();
                            let item = decode_reply::<StreamAppendResult<TypeConfig>>(&frame);
                            let keep = item.is_ok();
                            Some((item, keep.then_some((responses, in_flight))))
                        }
                        Ok(None) => None,
                        Err(status) => Some((Err(from_status(&status)), None)),
                    }
                }
            });
            Ok(Box::pin(stream) as BoxStream<'s, _>)
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let client = self.control.as_ref();
        self.unary(
            client,
            RPCTypes::Vote,
            &rpc,
            &option,
            |mut c, r| async move { c.vote(r).await },
        )
        .await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let client = self.control.as_ref();
        self.unary(
            client,
            RPCTypes::Vote,
            &rpc,
            &option,
            |mut c, r| async move { c.pre_vote(r).await },
        )
        .await
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        let client = self.control.as_ref();
        self.unary(
            client,
            RPCTypes::TransferLeader,
            &req,
            &option,
            |mut c, r| async move { c.transfer_leader(r).await },
        )
        .await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot<Committed, u64, Peer, SnapshotFile>,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let client = self.snapshot.clone().ok_or_else(|| {
            StreamingError::Unreachable(Unreachable::from_string("no usable address"))
        })?;
        let progress = option.hard_ttl();
        let timeout = |after| {
            StreamingError::Timeout(Timeout {
                action: RPCTypes::InstallSnapshot,
                id: self.outbound.local_id,
                target: self.target,
                timeout: after,
            })
        };
        let transfer = snapshot::send(
            client,
            vote,
            snapshot,
            progress,
            self.outbound.snapshot_install_timeout,
        );
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            r = transfer => match r {
                Ok(resp) => Ok(resp),
                Err(SendError::Stalled(after)) => Err(timeout(after)),
                Err(SendError::Status(s)) => Err(match self.refused(&s) {
                    RPCError::Unreachable(u) => StreamingError::Unreachable(u),
                    _ => StreamingError::Network(NetworkError::from_string(s.to_string())),
                }),
                Err(SendError::Local(e)) => Err(StreamingError::Network(NetworkError::from_string(e))),
            },
        }
    }
}
