//! The server side of the key-value service: the `Kv` gRPC API over an
//! engine and the map its state machine applies to. Engine-agnostic: it
//! holds an `Arc<dyn raftengine::Engine<u64>>`.

use std::sync::Arc;

use raftengine::{CatchUp, Engine, Error, LeaseDenied, TransferTarget};
use tonic::{Request, Response, Status};

use crate::admin::AdminToken;
use crate::api::kv_server::{Kv, KvServer};
use crate::api::{
    ConfigurationReply, Empty, GetReply, GetRequest, IndexReply, KeyRequest, Member, MemberRequest,
    PutRequest, ReadMode, StatusReply, WriteReply,
};
use crate::{Map, delete, put};

/// Metadata key carrying the leader's id on a not-leader error.
pub const LEADER_ID: &str = "x-raft-leader-id";
/// Metadata key carrying the leader's client-API address on a not-leader
/// error, so a client can retry there.
pub const LEADER_ADDRESS: &str = "x-raft-leader-address";

/// Where the replicated map keeps each node's client-API address (the API
/// listens apart from the Raft port, which only peers may reach): the way
/// etcd members publish their client URLs through Raft. Client keys may not
/// start with it.
pub const API_ADDRESS_PREFIX: &[u8] = b"\0kv/api-address/";

/// The map key of node `id`'s client-API address.
pub fn api_address_key(id: &str) -> Vec<u8> {
    [API_ADDRESS_PREFIX, id.as_bytes()].concat()
}

/// Writes this node's client-API address into the replicated map, retrying
/// until a leader takes it or the engine stops. Runs in the background of
/// `kv serve`; other nodes then point clients here.
pub async fn publish_api_address(engine: Arc<dyn Engine<u64>>, api_address: String) {
    let key = api_address_key(engine.local_id());
    let mut wait = std::time::Duration::from_millis(50);
    loop {
        tokio::select! {
            _ = engine.stopped() => return,
            written = engine.propose(put(&key, api_address.as_bytes())) => {
                if written.is_ok() {
                    return;
                }
            }
        }
        // Only the leader takes writes; ask again once one may be elected.
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(std::time::Duration::from_secs(2));
    }
}

/// The `Kv` service of one node.
#[derive(Clone)]
pub struct KvService {
    engine: Arc<dyn Engine<u64>>,
    map: Map,
    /// Admin calls need it; without one they are all refused.
    admin_token: Option<AdminToken>,
}

impl std::fmt::Debug for KvService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvService")
            .field("node", &self.engine.local_id())
            .finish_non_exhaustive()
    }
}

impl KvService {
    /// Serves `engine`, reading from `map` (the state machine's map).
    ///
    /// Admin calls (add, promote, remove, transfer) are refused until
    /// [`with_admin_token`](Self::with_admin_token) gives a token.
    pub fn new(engine: Arc<dyn Engine<u64>>, map: Map) -> Self {
        KvService {
            engine,
            map,
            admin_token: None,
        }
    }

    /// Admin calls must carry `token` ([`AdminToken::check`]).
    pub fn with_admin_token(mut self, token: AdminToken) -> Self {
        self.admin_token = Some(token);
        self
    }

    /// Refuses an admin call without this node's token.
    fn authorize<T>(&self, request: &Request<T>) -> Result<(), Status> {
        match &self.admin_token {
            Some(token) => token.check(request),
            None => Err(Status::permission_denied(
                "admin calls are disabled on this node (start it with --admin-token-file)",
            )),
        }
    }

    /// The tonic service to mount next to the Raft transport.
    pub fn into_server(self) -> KvServer<Self> {
        KvServer::new(self)
    }

    fn lookup(&self, key: &[u8], index: u64) -> GetReply {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        match map.get(key) {
            Some(v) => GetReply {
                found: true,
                value: v.clone(),
                index,
            },
            None => GetReply {
                found: false,
                value: Default::default(),
                index,
            },
        }
    }
}

impl KvService {
    /// [`to_status`], with the leader's client-API address (as the map
    /// holds it) as the hint.
    fn status_of(&self, e: Error) -> Status {
        let Error::NotLeader {
            leader: Some(leader),
        } = &e
        else {
            return to_status(e);
        };
        let api = self
            .map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(api_address_key(&leader.id).as_slice())
            .and_then(|a| String::from_utf8(a.to_vec()).ok());
        let mut s = to_status(e);
        if let Some(addr) = api.and_then(|a| a.parse().ok()) {
            s.metadata_mut().insert(LEADER_ADDRESS, addr);
        }
        s
    }
}

/// Refuses client keys in the map's reserved space.
fn client_key(key: &[u8]) -> Result<&[u8], Status> {
    if key.starts_with(API_ADDRESS_PREFIX) {
        return Err(Status::invalid_argument(
            "keys starting with \\0kv/ are reserved",
        ));
    }
    Ok(key)
}

/// Maps an engine error to a gRPC status; a not-leader error carries the
/// leader's id in metadata ([`LEADER_ID`]).
pub fn to_status(e: Error) -> Status {
    match e {
        Error::NotLeader { leader } => {
            let mut s = Status::failed_precondition(match &leader {
                Some(l) => format!("not leader; the leader is {l}"),
                None => "not leader; no leader known".to_owned(),
            });
            if let Some(id) = leader.and_then(|l| l.id.parse().ok()) {
                s.metadata_mut().insert(LEADER_ID, id);
            }
            s
        }
        Error::OutcomeUnknown { reason } => Status::unknown(format!("outcome unknown: {reason}")),
        Error::TransferInProgress | Error::LeadershipLost | Error::Shutdown => {
            Status::unavailable(e.to_string())
        }
        Error::ProposalTooLarge { .. } | Error::InvalidConfig(_) => {
            Status::invalid_argument(e.to_string())
        }
        Error::FailedPrecondition { .. } => Status::failed_precondition(e.to_string()),
        Error::ConfChangePending | Error::ConfigIndexMismatch { .. } => {
            Status::aborted(e.to_string())
        }
        Error::TransferAborted { .. } => Status::aborted(e.to_string()),
        Error::LeaseDenied(_) => Status::unavailable(e.to_string()),
        other => Status::internal(other.to_string()),
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn put(&self, request: Request<PutRequest>) -> Result<Response<WriteReply>, Status> {
        let r = request.into_inner();
        let res = self
            .engine
            .propose(put(client_key(&r.key)?, &r.value))
            .await
            .map_err(|e| self.status_of(e))?;
        Ok(Response::new(WriteReply {
            index: res.commit_index,
        }))
    }

    async fn delete(&self, request: Request<KeyRequest>) -> Result<Response<WriteReply>, Status> {
        let r = request.into_inner();
        let res = self
            .engine
            .propose(delete(client_key(&r.key)?))
            .await
            .map_err(|e| self.status_of(e))?;
        Ok(Response::new(WriteReply {
            index: res.commit_index,
        }))
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetReply>, Status> {
        let r = request.into_inner();
        let index = match ReadMode::try_from(r.mode).unwrap_or(ReadMode::Linearizable) {
            ReadMode::Linearizable => self
                .engine
                .linearizable_read()
                .await
                .map_err(|e| self.status_of(e))?,
            ReadMode::Lease => match self.engine.check_lease() {
                Ok(grant) => grant.applied_index,
                // Not the leader: point the client at it (never at this
                // node itself, which would send it round in a circle).
                Err(LeaseDenied::NotLeader { .. }) => {
                    let leader = self
                        .engine
                        .leader()
                        .filter(|l| l.id != self.engine.local_id());
                    return Err(self.status_of(Error::NotLeader { leader }));
                }
                // The leader without a valid lease right now: retryable.
                Err(denied) => return Err(to_status(denied.into())),
            },
            ReadMode::Local => self.engine.status().applied_index,
        };
        Ok(Response::new(self.lookup(&r.key, index)))
    }

    async fn status(&self, _request: Request<Empty>) -> Result<Response<StatusReply>, Status> {
        let s = self.engine.status();
        Ok(Response::new(StatusReply {
            id: self.engine.local_id().to_owned(),
            state: s.state.to_string(),
            leader_id: s.leader.as_ref().map(|l| l.id.clone()).unwrap_or_default(),
            leader_address: s.leader.map(|l| l.address).unwrap_or_default(),
            term: s.term,
            commit_index: s.commit_index,
            applied_index: s.applied_index,
            engine: self.engine.engine_type().to_owned(),
        }))
    }

    async fn configuration(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<ConfigurationReply>, Status> {
        let c = self
            .engine
            .configuration()
            .await
            .map_err(|e| self.status_of(e))?;
        Ok(Response::new(ConfigurationReply {
            index: c.index,
            members: c
                .servers
                .into_iter()
                .map(|s| Member {
                    voter: s.suffrage == raftengine::Suffrage::Voter,
                    id: s.id,
                    address: s.address,
                })
                .collect(),
        }))
    }

    async fn add_learner(
        &self,
        request: Request<MemberRequest>,
    ) -> Result<Response<IndexReply>, Status> {
        self.authorize(&request)?;
        let r = request.into_inner();
        let index = self
            .engine
            .add_learner(&r.id, &r.address, None)
            .await
            .map_err(|e| self.status_of(e))?;
        Ok(Response::new(IndexReply { index }))
    }

    async fn promote(
        &self,
        request: Request<MemberRequest>,
    ) -> Result<Response<IndexReply>, Status> {
        self.authorize(&request)?;
        let r = request.into_inner();
        // Promote once the learner holds everything committed so far.
        let target = self.engine.status().commit_index;
        let catch_up = CatchUp::at_least(target).unwrap_or(CatchUp::Unchecked);
        let index = self
            .engine
            .promote_learner(&r.id, None, catch_up)
            .await
            .map_err(|e| self.status_of(e))?;
        Ok(Response::new(IndexReply { index }))
    }

    async fn remove(
        &self,
        request: Request<MemberRequest>,
    ) -> Result<Response<IndexReply>, Status> {
        self.authorize(&request)?;
        let r = request.into_inner();
        let index = self
            .engine
            .remove_server(&r.id, None)
            .await
            .map_err(|e| self.status_of(e))?;
        Ok(Response::new(IndexReply { index }))
    }

    async fn transfer(&self, request: Request<MemberRequest>) -> Result<Response<Empty>, Status> {
        self.authorize(&request)?;
        let r = request.into_inner();
        let target = if r.id.is_empty() {
            TransferTarget::Any
        } else {
            TransferTarget::Server(r.id)
        };
        self.engine
            .transfer_leadership(target)
            .await
            .map_err(|e| self.status_of(e))?;
        Ok(Response::new(Empty {}))
    }
}
