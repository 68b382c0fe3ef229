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
use crate::types::{TypeConfig, Vote};
use raftengine_kit::peer::Caller;

pub(crate) struct Inbound<S: StateMachine> {
    pub(crate) raft: Raft<TypeConfig, StateMachineAdapter<S>>,
    pub(crate) snapshots: SnapshotDir,
    /// Each snapshot chunk must arrive within this of the previous one.
    pub(crate) progress_timeout: Duration,
    /// The largest snapshot file accepted.
    pub(crate) max_snapshot_bytes: u64,
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

/// The node a vote names as its leader or candidate must be the caller.
fn speaks_for_vote(caller: &Caller, vote: &Vote) -> Result<(), Status> {
    caller.speaks_as_numeric(vote.leader_id.voted_for)
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
        speaks_for_vote(&caller, &rpc.vote)?;
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
                        speaks_for_vote(&caller, &rpc.vote)?;
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
        // A notice older than a membership that lists us again (re-added
        // since) is stale.
        let (index, listed) = {
            let m = self.raft.metrics();
            let m = m.borrow_watched();
            (
                m.membership_config.log_id().map_or(0, |l| l.index),
                m.membership_config.nodes().any(|(n, _)| *n == self.node_id),
            )
        };
        if listed && index > notice.conf_index {
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
        reply(&self.raft.vote(rpc).await.map_err(stopped)?)
    }

    async fn pre_vote(&self, request: Request<Frame>) -> Result<Response<Frame>, Status> {
        let caller = self.gate.admit(&request).await?;
        let rpc: VoteRequest<TypeConfig> = request_of(request.get_ref())?;
        speaks_for_vote(&caller, &rpc.vote)?;
        reply(&self.raft.pre_vote(rpc).await.map_err(stopped)?)
    }

    async fn transfer_leader(&self, request: Request<Frame>) -> Result<Response<Frame>, Status> {
        let caller = self.gate.admit(&request).await?;
        let rpc: TransferLeaderRequest<TypeConfig> = request_of(request.get_ref())?;
        speaks_for_vote(&caller, rpc.from_leader())?;
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
            self.max_snapshot_bytes,
        )
        .await?;
        if let Err(refused) = speaks_for_vote(&caller, &received.vote) {
            let _ = tokio::fs::remove_file(&received.path).await;
            return Err(refused);
        }
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
