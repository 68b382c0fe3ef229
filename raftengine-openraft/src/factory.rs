//! [`OpenraftFactory`]: opens the data dir, decides bootstrap / join /
//! restart, starts openraft, the metrics watcher and the transport service.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use openraft::Raft;
use raftengine::numeric_id;
use raftengine::{Error, Factory, FactoryConfig, FactoryResult, Result, StateMachine};
use raftengine_kit::SnapshotDir;
use raftengine_kit::join_alarm::JoinAlarm;

use crate::config::OpenraftConfig;
use crate::engine::{OpenraftEngine, RemovalNotices, watch_metrics};
use crate::log_store::LogStore;
use crate::shared::Contact;
use crate::shared::{Watched, stop_removed};
use crate::state_machine::StateMachineAdapter;
use crate::transport::inbound::Inbound;
use crate::transport::outbound::{NetworkFactory, Outbound};
use crate::types::Peer;

/// Creates openraft engines with one [`OpenraftConfig`].
#[derive(Debug, Clone, Default)]
pub struct OpenraftFactory {
    config: OpenraftConfig,
}

impl OpenraftFactory {
    /// A factory whose engines use `config`.
    pub fn new(config: OpenraftConfig) -> Self {
        OpenraftFactory { config }
    }

    /// The settings engines are created with.
    pub fn config(&self) -> &OpenraftConfig {
        &self.config
    }
}

#[async_trait]
impl Factory for OpenraftFactory {
    fn engine_type(&self) -> &'static str {
        crate::ENGINE_TYPE
    }

    async fn create<S: StateMachine>(
        &self,
        config: FactoryConfig<S>,
    ) -> Result<FactoryResult<S::Response>> {
        config.validate()?;
        self.config.validate()?;
        let raft_config = Arc::new(self.config.to_openraft()?);
        let node_id = numeric_id(&config.local_id);
        let local_ip = config.outbound_source_ip()?;
        let credentials = config.peer_credentials().await?;
        let peer_limits = config.peer_limits;
        peer_limits.check_message_room(
            self.config.largest_message(),
            "the openraft backend's largest append (2 × max_proposal_bytes)",
        )?;
        // Lazy: nothing is read or written until it is awaited, once the
        // node's storage has opened.
        let cluster = raftengine_kit::cluster_id::ClusterId::open_for(&config);

        let bootstrap_voters = config.bootstrap_voters();
        let data_dir = config.data_dir.clone();
        let local_id = config.local_id.clone();
        let (bootstrap, has_peers) = (config.bootstrap, !config.peers.is_empty());
        let sm = config.state_machine;
        // Opening the log reads and may repair files, and restoring the
        // snapshot reads it whole: keep both off the runtime.
        let join_as_learner = config.join_as_learner;
        let (opened, snapshots, adapter, join_alarm, was_removed) =
            tokio::task::spawn_blocking(move || -> Result<_> {
                raftengine_kit::node_dir::check_may_start(&data_dir, bootstrap, has_peers)?;
                raftengine_kit::durable::create_dir_all(&data_dir)
                    .map_err(|e| Error::storage(format!("create {}", data_dir.display()), e))?;
                let opened = LogStore::open(&data_dir, &local_id).map_err(|e| {
                    Error::storage(format!("open the raft log in {}", data_dir.display()), e)
                })?;
                let snapshots = SnapshotDir::new(&data_dir)?;
                let adapter = StateMachineAdapter::open(sm, snapshots.clone())?;
                let join_alarm = JoinAlarm::open(&data_dir, join_as_learner)
                    .map_err(|e| Error::storage(format!("read {}", data_dir.display()), e))?;
                let was_removed = raftengine_kit::node_dir::was_removed(&data_dir);
                Ok((opened, snapshots, adapter, join_alarm, was_removed))
            })
            .await
            .map_err(|e| crate::error::internal("storage open task failed", Some(e.into())))??;
        if opened.existed && config.bootstrap {
            tracing::info!(node = %config.local_id, "data dir holds a node; bootstrap flag ignored");
        }

        let log_syncs = opened.store.sync_counter();
        let cluster = cluster.await?;
        let gate = raftengine_kit::peer::PeerGate::new(
            &config.local_id,
            credentials.is_some(),
            cluster.clone(),
        );
        let outbound = Arc::new(Outbound::new(
            node_id,
            raftengine_kit::peer::Dialer::new(
                credentials.clone(),
                local_ip,
                self.config.rpc_timeout,
                cluster.clone(),
            ),
            self.config.rpc_timeout,
            peer_limits.max_message_bytes,
            self.config.snapshot_install_timeout,
        ));
        let raft = Raft::new(
            node_id,
            raft_config,
            NetworkFactory(outbound.clone()),
            opened.store,
            adapter.clone(),
        )
        .await
        .map_err(|e| crate::error::internal("start openraft", Some(e.into())))?;

        // Initialize exactly once: a restarted node (initialized log or
        // vote) never does it again, whatever the flag says.
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| crate::error::internal("read raft state", Some(e.into())))?;
        if config.bootstrap && !initialized {
            let members: BTreeMap<u64, Peer> = bootstrap_voters
                .into_iter()
                .map(|s| {
                    let peer = Peer {
                        id: s.id,
                        address: s.address,
                    };
                    (numeric_id(&peer.id), peer)
                })
                .collect();
            if let Err(e) = raft.initialize(members).await {
                let _ = raft.shutdown().await;
                return Err(crate::error::internal(
                    "initialize the cluster",
                    Some(e.into()),
                ));
            }
            // `initialize` returns before the metrics show the membership it
            // wrote; until then this voter would read as a non-member
            // (`state()` Unknown). Return once they do, as etcd does.
            let shown = raft
                .wait(Some(self.config.election_timeout_max))
                .metrics(
                    |m| m.membership_config.voter_ids().any(|v| v == node_id),
                    "the bootstrap membership in the metrics",
                )
                .await;
            if let Err(e) = shown {
                tracing::warn!(error = %e, "bootstrap membership not yet in the metrics");
            }
        }

        let watched = Arc::new(Watched::new(config.data_dir.clone()));
        let contact = Arc::new(Contact::default());
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(watch_metrics(
            raft.clone(),
            node_id,
            self.config.election_timeout_max,
            self.config.heartbeat_interval,
            watched.clone(),
            contact.clone(),
            join_alarm,
            RemovalNotices {
                local_id: config.local_id.clone(),
                outbound: outbound.clone(),
                departed: gate.departed().clone(),
            },
        )));
        if was_removed {
            // Restarted on the dir of a node a committed configuration
            // removed: nobody will talk to it again; stop like etcd does.
            tracing::warn!(node = %config.local_id, "this data dir belongs to a removed node; stopping");
            stop_removed(&raft, &watched);
        }
        if opened.existed {
            // Until the cluster's commit covers what this node logged before
            // the restart, its state machine may lag what it once served.
            let (raft, watched) = (raft.clone(), watched.clone());
            tasks.push(tokio::spawn(async move {
                if raft.wait_for_recovery(None).await.is_ok() {
                    watched.recovered.store(true, Ordering::Release);
                }
            }));
        } else {
            watched.recovered.store(true, Ordering::Release);
        }

        let inbound = Inbound {
            raft: raft.clone(),
            snapshots,
            progress_timeout: self.config.rpc_timeout,
            receives: raftengine_kit::snapshot_stream::ReceiveLimits::new(&peer_limits),
            max_message_bytes: peer_limits.max_message_bytes,
            contact: contact.clone(),
            local_id: config.local_id.clone(),
            node_id,
            gate,
            watched: watched.clone(),
        };
        let transport = tonic::service::Routes::new(inbound.into_service());
        let engine = OpenraftEngine {
            local_id: config.local_id,
            node_id,
            cfg: self.config.clone(),
            metrics: raft.metrics(),
            raft,
            sm: adapter,
            watched,
            contact,
            outbound,
            tasks: Mutex::new(tasks),
            shutdown_lock: tokio::sync::Mutex::new(()),
            log_syncs,
        };
        Ok(FactoryResult {
            engine: Arc::new(engine),
            transport,
            peer_credentials: credentials,
            peer_limits,
        })
    }
}
