//! Inbound: the tonic service peers call. Every request is decoded with the
//! size-limited codec; bytes that do not decode get `InvalidArgument`, never
//! a panic, and never reach openraft.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use openraft::Raft;
use openraft::async_runtime::watch::WatchReceiver;
use openraft::raft::{AppendEntriesRequest, TransferLeaderRequest, VoteRequest};
use raftengine::StateMachine;
use raftengine_kit::SnapshotDir;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::{Request, Response, Status, Streaming};

use super::snapshot;
use crate::codec::{decode, encode};
use crate::pb::raft_network_server::{RaftNetwork, RaftNetworkServer};
use crate::pb::{Frame, RemovedNotice, SnapshotChunk};
use crate::shared::{Contact, Watched, stop_removed};
use crate::state_machine::StateMachineAdapter;
use crate::types::{LogId, TypeConfig, Vote};
use raftengine_kit::peer::Caller;
use raftengine_kit::screen;

pub(crate) struct Inbound<S: StateMachine> {
    pub(crate) raft: Raft<TypeConfig, StateMachineAdapter<S>>,
    pub(crate) snapshots: SnapshotDir,
    /// Each snapshot chunk must arrive within this of the previous one.
    pub(crate) progress_timeout: Duration,
    /// Snapshot uploads admitted (size, how many at once).
    pub(crate) receives: raftengine_kit::snapshot_stream::ReceiveLimits,
    pub(crate) max_message_bytes: usize,
    pub(crate) contact: Arc<Contact>,
    pub(crate) local_id: String,
    pub(crate) node_id: u64,
    /// Every call passes it first: a verified caller speaking only for
    /// itself, addressed to this node, from this cluster.
    pub(crate) gate: raftengine_kit::peer::PeerGate,
    pub(crate) watched: Arc<Watched>,
}

impl<S: StateMachine> Inbound<S> {
    pub(crate) fn into_service(self) -> RaftNetworkServer<Self> {
        let max = self.max_message_bytes;
        RaftNetworkServer::new(self)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max)
    }
}

fn request_of<T: DeserializeOwned>(frame: &Frame) -> Result<T, Status> {
    decode(&frame.payload)
        .map_err(|e| Status::invalid_argument(format!("undecodable request: {e}")))
}

fn reply<T: Serialize>(value: &T) -> Result<Response<Frame>, Status> {
    encode(value)
        .map(|b| Response::new(Frame { payload: b.into() }))
        .map_err(|e| Status::internal(format!("encode reply: {e}")))
}

/// The node a vote names as its leader or candidate must be the caller,
/// and its term plausible ([`screen::plausible_term`]: openraft adds to
/// terms unchecked, and a node holding `u64::MAX` stays a candidate
/// forever).
fn speaks_for_vote(caller: &Caller, vote: &Vote) -> Result<(), Status> {
    caller.speaks_as_numeric(vote.leader_id.voted_for)?;
    screen::plausible_term(vote.leader_id.term, "vote term")
}

/// Every log id a request names has a plausible term.
fn plausible_log_ids<'a>(ids: impl IntoIterator<Item = &'a LogId>) -> Result<(), Status> {
    ids.into_iter()
        .try_for_each(|id| screen::plausible_term(id.leader_id.term, "log id term"))
}

/// [`speaks_for_vote`], then [`plausible_log_ids`] of everything an append
/// names.
fn check_append(caller: &Caller, rpc: &AppendEntriesRequest<TypeConfig>) -> Result<(), Status> {
    speaks_for_vote(caller, &rpc.vote)?;
    plausible_log_ids(
        rpc.prev_log_id
            .iter()
            .chain(rpc.leader_commit.iter())
            .chain(rpc.entries.iter().map(|e| &e.log_id)),
    )
}

impl<S: StateMachine> Inbound<S> {
    /// Whether to stop for `notice` ([`screen::honours_removed`]): only
    /// from the leader this node follows, or followed last while an
    /// election runs. `index`/`listed`: this node's newest membership and
    /// whether it lists this node; `leader`: openraft's current leader.
    fn honours_removed(
        &self,
        notice: &RemovedNotice,
        index: u64,
        listed: bool,
        leader: Option<u64>,
    ) -> Result<bool, Status> {
        let leader = leader.or_else(|| self.watched.last_leader());
        let from = raftengine::numeric_id(&notice.from_id);
        let leader_name = leader.map(|l| {
            if l == from {
                notice.from_id.clone()
            } else {
                format!("node {l}")
            }
        });
        screen::honours_removed(&screen::RemovedNotice {
            from: &notice.from_id,
            leader: leader_name.as_deref(),
            conf_index: notice.conf_index,
            local_conf_index: index,
            listed,
        })
    }
}

fn stopped<E: std::fmt::Display>(e: E) -> Status {
    Status::unavailable(format!("raft node is not running: {e}"))
}

type FrameStream = Pin<Box<dyn Stream<Item = Result<Frame, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl<S: StateMachine> RaftNetwork for Inbound<S> {
    async fn append(&self, request: Request<Frame>) -> Result<Response<Frame>, Status> {
        let caller = self.gate.admit(&request).await?;
        let rpc: AppendEntriesRequest<TypeConfig> = request_of(request.get_ref())?;
        check_append(&caller, &rpc)?;
        let resp = self.raft.append_entries(rpc).await.map_err(stopped)?;
        if resp.is_success() {
            self.contact.touch();
        }
        reply(&resp)
    }

    type StreamAppendStream = FrameStream;

    async fn stream_append(
        &self,
        request: Request<Streaming<Frame>>,
    ) -> Result<Response<FrameStream>, Status> {
        let caller = self.gate.admit(&request).await?;
        let bad: Arc<Mutex<Option<Status>>> = Arc::default();
        let bad_in = bad.clone();
        let requests = request
            .into_inner()
            .map(move |item| match item {
                Ok(frame) => {
                    request_of::<AppendEntriesRequest<TypeConfig>>(&frame).and_then(|rpc| {
                        check_append(&caller, &rpc)?;
                        Ok(rpc)
                    })
                }
                Err(status) => Err(status),
            })
            .take_while(move |r| {
                if let Err(status) = r {
                    *bad_in.lock().unwrap_or_else(|p| p.into_inner()) = Some(status.clone());
                }
                std::future::ready(r.is_ok())
            })
            .filter_map(|r| std::future::ready(r.ok()));
        let contact = self.contact.clone();
        let responses = self.raft.stream_append(requests).map(move |r| match r {
            Ok(result) => {
                if result.is_ok() {
                    contact.touch();
                }
                encode(&result)
                    .map(|b| Frame { payload: b.into() })
                    .map_err(|e| Status::internal(format!("encode reply: {e}")))
            }
            Err(fatal) => Err(stopped(fatal)),
        });
        // A request that did not decode ends the stream with its error.
        let tail =
            futures::stream::once(
                async move { bad.lock().unwrap_or_else(|p| p.into_inner()).take() },
            )
            .filter_map(|s| std::future::ready(s.map(Err)));
        Ok(Response::new(Box::pin(responses.chain(tail))))
    }

    async fn removed(&self, request: Request<RemovedNotice>) -> Result<Response<Frame>, Status> {
        let caller = self.gate.admit(&request).await?;
        let notice = request.into_inner();
        caller.speaks_as(&notice.from_id)?;
        if notice.removed_id != self.local_id {
            return Err(Status::invalid_argument(format!(
                "notice names {:?}, this node is {:?}",
                notice.removed_id, self.local_id
            )));
        }
        let (index, listed, leader) = {
            let m = self.raft.metrics();
            let m = m.borrow_watched();
            (
                m.membership_config.log_id().map_or(0, |l| l.index),
                m.membership_config.nodes().any(|(n, _)| *n == self.node_id),
                m.current_leader,
            )
        };
        if !self.honours_removed(&notice, index, listed, leader)? {
            return Ok(Response::new(Frame::default()));
        }
        tracing::warn!(node = %self.local_id, from = %notice.from_id, conf_index = notice.conf_index, "removed from the cluster; stopping");
        stop_removed(&self.raft, &self.watched);
        Ok(Response::new(Frame::default()))
    }

    async fn vote(&self, request: Request<Frame>) -> Result<Response<Frame>, Status> {
        let caller = self.gate.admit(&request).await?;
        let rpc: VoteRequest<TypeConfig> = request_of(request.get_ref())?;
        speaks_for_vote(&caller, &rpc.vote)?;
        plausible_log_ids(rpc.last_log_id.iter())?;
        reply(&self.raft.vote(rpc).await.map_err(stopped)?)
    }

    async fn pre_vote(&self, request: Request<Frame>) -> Result<Response<Frame>, Status> {
        let caller = self.gate.admit(&request).await?;
        let rpc: VoteRequest<TypeConfig> = request_of(request.get_ref())?;
        speaks_for_vote(&caller, &rpc.vote)?;
        plausible_log_ids(rpc.last_log_id.iter())?;
        reply(&self.raft.pre_vote(rpc).await.map_err(stopped)?)
    }

    async fn transfer_leader(&self, request: Request<Frame>) -> Result<Response<Frame>, Status> {
        let caller = self.gate.admit(&request).await?;
        let rpc: TransferLeaderRequest<TypeConfig> = request_of(request.get_ref())?;
        speaks_for_vote(&caller, rpc.from_leader())?;
        plausible_log_ids(rpc.last_log_id())?;
        reply(
            &self
                .raft
                .handle_transfer_leader(rpc)
                .await
                .map_err(stopped)?,
        )
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<Frame>, Status> {
        let caller = self.gate.admit(&request).await?;
        let received = snapshot::receive(
            &self.snapshots,
            request.into_inner(),
            self.progress_timeout,
            &self.receives,
            |vote, meta| {
                speaks_for_vote(&caller, vote)?;
                plausible_log_ids(meta.last_log_id.iter())?;
                // A snapshot replaces the state machine and membership;
                // only the leader this node follows has one to give.
                let leader = self.raft.metrics().borrow_watched().current_leader;
                if leader != Some(vote.leader_id.voted_for) {
                    return Err(Status::permission_denied(format!(
                        "a snapshot from node {}, but this node follows {leader:?}",
                        vote.leader_id.voted_for
                    )));
                }
                Ok(())
            },
        )
        .await?;
        let installed = self
            .raft
            .install_full_snapshot(received.vote, received.snapshot)
            .await
            .map_err(stopped);
        let _ = tokio::fs::remove_file(&received.path).await;
        reply(&installed?)
    }
}

#[cfg(test)]
#[path = "inbound_tests.rs"]
mod tests;
