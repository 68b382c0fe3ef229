//! [`EtcdEngine`]: the handle applications hold; every call becomes an event
//! for the Raft loop or a read of what the loop published.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use raftengine::{
    Admin, Callback, CatchUp, ConfigReader, Configuration, Engine, Error, HealthReader, Index,
    LeaderInfo, LeaderView, LeaseBasis, LeaseProvider, ProposalResult, Proposer, Registration,
    Result, State, Status, StatusReader, StopReason, TransferTarget,
};

use crate::config::EtcdConfig;
use crate::event::{Event, MembershipChange};
use crate::shared::Shared;

/// A running raft-rs node. Obtain it from
/// [`EtcdFactory`](crate::EtcdFactory); share it as
/// `Arc<dyn raftengine::Engine<R>>`.
pub struct EtcdEngine<R: Send + 'static> {
    pub(crate) local_id: String,
    pub(crate) cfg: EtcdConfig,
    pub(crate) events: mpsc::Sender<Event<R>>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) ticker: JoinHandle<()>,
    pub(crate) thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    pub(crate) shutdown_lock: tokio::sync::Mutex<()>,
}

impl<R: Send + 'static> std::fmt::Debug for EtcdEngine<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdEngine")
            .field("local_id", &self.local_id)
            .field("state", &self.shared.status().state)
            .finish_non_exhaustive()
    }
}

impl<R: Send + 'static> EtcdEngine<R> {
    async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T>>) -> Event<R>,
    ) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.events
            .send(make(tx))
            .await
            .map_err(|_| Error::Shutdown)?;
        rx.await.map_err(|_| Error::Shutdown)?
    }

    async fn membership(
        &self,
        change: MembershipChange,
        prev_index: Option<Index>,
    ) -> Result<Index> {
        self.request(|reply| Event::Membership {
            change,
            prev_index,
            reply,
        })
        .await
    }

    async fn propose_bytes(&self, data: Bytes) -> Result<ProposalResult<R>> {
        if data.len() > self.cfg.max_proposal_bytes {
            return Err(Error::ProposalTooLarge {
                size: data.len(),
                max: self.cfg.max_proposal_bytes,
            });
        }
        self.request(|reply| Event::Propose { data, reply }).await
    }
}

impl<R: Send + 'static> Drop for EtcdEngine<R> {
    fn drop(&mut self) {
        // A handle dropped without shutdown() still stops its loop thread.
        self.ticker.abort();
        let (reply, _) = oneshot::channel();
        let _ = self.events.try_send(Event::Shutdown { reply });
    }
}

#[async_trait]
impl<R: Send + 'static> Proposer<R> for EtcdEngine<R> {
    async fn propose(&self, data: Bytes) -> Result<ProposalResult<R>> {
        self.propose_bytes(data).await
    }

    async fn propose_admin(&self, data: Bytes) -> Result<ProposalResult<R>> {
        self.propose_bytes(data).await
    }
}

#[async_trait]
impl<R: Send + 'static> LeaderView for EtcdEngine<R> {
    fn state(&self) -> State {
        self.shared.status().state
    }

    fn leader(&self) -> Option<LeaderInfo> {
        self.shared.status().leader
    }

    async fn verify_leader(&self) -> Result<()> {
        self.request(|reply| Event::Read { reply })
            .await
            .map(|_| ())
    }

    async fn linearizable_read(&self) -> Result<Index> {
        self.request(|reply| Event::Read { reply }).await
    }
}

impl<R: Send + 'static> LeaseProvider for EtcdEngine<R> {
    fn lease_duration(&self) -> Duration {
        self.cfg.lease_duration()
    }

    fn lease_basis(&self) -> LeaseBasis {
        self.shared.lease()
    }

    fn register_leader_loss_callback(&self, callback: Callback) -> Registration {
        self.shared.loss.register(callback)
    }
}

#[async_trait]
impl<R: Send + 'static> Admin for EtcdEngine<R> {
    async fn add_voter(&self, id: &str, address: &str, prev_index: Option<Index>) -> Result<Index> {
        raftengine_kit::member::check_new(id, address)?;
        self.membership(
            MembershipChange::AddVoter {
                id: id.to_owned(),
                address: address.to_owned(),
            },
            prev_index,
        )
        .await
    }

    async fn add_learner(
        &self,
        id: &str,
        address: &str,
        prev_index: Option<Index>,
    ) -> Result<Index> {
        raftengine_kit::member::check_new(id, address)?;
        self.membership(
            MembershipChange::AddLearner {
                id: id.to_owned(),
                address: address.to_owned(),
            },
            prev_index,
        )
        .await
    }

    async fn promote_learner(
        &self,
        id: &str,
        prev_index: Option<Index>,
        catch_up: CatchUp,
    ) -> Result<Index> {
        self.membership(
            MembershipChange::Promote {
                id: id.to_owned(),
                catch_up,
            },
            prev_index,
        )
        .await
    }

    async fn remove_server(&self, id: &str, prev_index: Option<Index>) -> Result<Index> {
        // Removing the leader itself is an ordinary change: once it is
        // applied the Raft loop stops this node (`StopReason::Removed`; raft-rs
        // 0.7 would not step it down), and the other voters elect a leader.
        self.membership(MembershipChange::Remove { id: id.to_owned() }, prev_index)
            .await
    }

    async fn transfer_leadership(&self, target: TransferTarget) -> Result<()> {
        self.request(|reply| Event::Transfer { target, reply })
            .await
    }

    fn register_leader_acquired_callback(&self, callback: Callback) -> Registration {
        self.shared.acquired.register(callback)
    }
}

impl<R: Send + 'static> StatusReader for EtcdEngine<R> {
    fn status(&self) -> Status {
        self.shared.status()
    }
}

#[async_trait]
impl<R: Send + 'static> ConfigReader for EtcdEngine<R> {
    async fn configuration(&self) -> Result<Configuration> {
        if self.shared.stopped_reason().is_some() {
            return Err(Error::Shutdown);
        }
        Ok(self.shared.configuration())
    }
}

#[async_trait]
impl<R: Send + 'static> HealthReader for EtcdEngine<R> {
    async fn check_serving(&self) -> Result<()> {
        let status = self.shared.status();
        match status.state {
            State::Leader => Ok(()),
            State::Shutdown => Err(Error::Shutdown),
            _ => Err(Error::NotLeader {
                leader: status.leader,
            }),
        }
    }
}

#[async_trait]
impl<R: Send + 'static> Engine<R> for EtcdEngine<R> {
    fn engine_type(&self) -> &'static str {
        crate::ENGINE_TYPE
    }

    fn local_id(&self) -> &str {
        &self.local_id
    }

    async fn shutdown(&self) -> Result<()> {
        let _one_at_a_time = self.shutdown_lock.lock().await;
        self.ticker.abort();
        if self.shared.stopped_reason().is_none() {
            let (reply, done) = oneshot::channel();
            if self.events.send(Event::Shutdown { reply }).await.is_ok() {
                let _ = done.await;
            }
        }
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = thread {
            let joined = tokio::task::spawn_blocking(move || thread.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                return Err(crate::error::internal("raft loop thread panicked", None));
            }
        }
        Ok(())
    }

    async fn stopped(&self) -> StopReason {
        self.shared.stop.stopped().await
    }
}
