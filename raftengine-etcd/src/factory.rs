//! [`EtcdFactory`]: opens the data dir, decides bootstrap / join / restart,
//! starts the loop thread, the ticker and the transport service.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use raft::{RawNode, ReadOnlyOption};
use tokio::sync::mpsc;

use raftengine::{Error, Factory, FactoryConfig, FactoryResult, Result, StateMachine};

use crate::config::EtcdConfig;
use crate::driver::{Driver, bootstrap_entries};
use crate::engine::EtcdEngine;
use crate::event::{Base, Event};
use crate::shared::Shared;
use crate::storage::decode_snapshot_data;
use crate::storage::{Member, RaftStorage};
use crate::transport::{Inbound, Outbound};
use raftengine::numeric_id as raft_id;
use raftengine_kit::SnapshotDir;
use raftengine_kit::join_alarm::JoinAlarm;
use raftengine_kit::read_thread::ReadThread;

/// Capacity of the transport-failure report queue.
const FAILURE_QUEUE: usize = 1024;

/// Creates raft-rs engines with one [`EtcdConfig`].
#[derive(Debug, Clone, Default)]
pub struct EtcdFactory {
    config: EtcdConfig,
}

impl EtcdFactory {
    /// A factory whose engines use `config`.
    pub fn new(config: EtcdConfig) -> Self {
        EtcdFactory { config }
    }

    /// The settings engines are created with.
    pub fn config(&self) -> &EtcdConfig {
        &self.config
    }
}

fn members_of<S>(cfg: &FactoryConfig<S>) -> Vec<Member> {
    let mut members: Vec<Member> = cfg
        .peers
        .iter()
        .map(|p| Member {
            raft_id: raft_id(&p.id),
            id: p.id.clone(),
            address: p.address.clone(),
        })
        .collect();
    if !cfg.peers.iter().any(|p| p.id == cfg.local_id) {
        members.push(Member {
            raft_id: raft_id(&cfg.local_id),
            id: cfg.local_id.clone(),
            address: cfg.local_address.clone(),
        });
    }
    members
}

#[async_trait]
impl Factory for EtcdFactory {
    fn engine_type(&self) -> &'static str {
        crate::ENGINE_TYPE
    }

    async fn create<S: StateMachine>(
        &self,
        config: FactoryConfig<S>,
    ) -> Result<FactoryResult<S::Response>> {
        config.validate()?;
        self.config.validate()?;
        let local_ip = config.outbound_source_ip()?;
        let credentials = config.peer_credentials().await?;
        let peer_limits = config.peer_limits;
        peer_limits.check_message_room(
            crate::transport::largest_frame(
                self.config
                    .max_proposal_bytes
                    .max(usize::try_from(self.config.max_size_per_msg).unwrap_or(usize::MAX)),
            ),
            "the etcd backend's largest batch (max_proposal_bytes, max_size_per_msg)",
        )?;
        // Lazy: nothing is read or written until it is awaited, once the
        // node's storage has opened.
        let cluster = raftengine_kit::cluster_id::ClusterId::open_for(&config);
        let members = members_of(&config);
        let local_raft_id = raft_id(&config.local_id);

        let data_dir = config.data_dir.clone();
        let local_id = config.local_id.clone();
        let bootstrap = config.bootstrap;
        let join_as_learner = config.join_as_learner;
        let bootstrap_log = bootstrap_entries(&config.bootstrap_voters())?;
        let has_peers = !config.peers.is_empty();
        let members_for_init = members.clone();
        let mut sm = config.state_machine;
        let mut raft_cfg = raft::Config {
            id: local_raft_id,
            election_tick: self.config.election_tick,
            heartbeat_tick: self.config.heartbeat_tick,
            max_size_per_msg: self.config.max_size_per_msg,
            max_inflight_msgs: self.config.max_inflight_msgs,
            check_quorum: true,
            pre_vote: true,
            read_only_option: ReadOnlyOption::Safe,
            max_uncommitted_size: (self.config.max_proposal_bytes as u64).saturating_mul(64),
            ..raft::Config::default()
        };
        // Opening the log reads and may repair files, and restoring the
        // snapshot reads it whole: keep both off the runtime. They run on a
        // thread of their own, not the blocking pool: raft-engine caches
        // decoded blocks per thread, not per log, and a pool thread may
        // have read another node's log (`raftengine_kit::read_thread`).
        // After this, only the Raft loop's own thread reads the log.
        let open_thread = ReadThread::spawn(&format!("raft-etcd-open-{}", config.local_id))
            .map_err(|e| crate::error::internal("spawn storage open thread", Some(e.into())))?;
        let (raw, opened, snapshots, base, sm, join_alarm, was_removed) = open_thread
            .run(move || -> Result<_> {
                raftengine_kit::node_dir::check_may_start(&data_dir, bootstrap, has_peers)?;
                let opened = RaftStorage::open(&data_dir, &local_id)?;
                let snapshots = SnapshotDir::new(&data_dir)?;
                let join_alarm = JoinAlarm::open(&data_dir, join_as_learner)
                    .map_err(|e| Error::storage(format!("read {}", data_dir.display()), e))?;
                let was_removed = raftengine_kit::node_dir::was_removed(&data_dir);
                snapshots.remove_temporaries();
                let mut base = Base::default();
                if !opened.existed {
                    if bootstrap {
                        opened.storage.initialize(
                            &data_dir,
                            &local_id,
                            &bootstrap_log,
                            &members_for_init,
                        )?;
                    } else {
                        // `check_may_start` passed: there is a peer list.
                        opened
                            .storage
                            .initialize(&data_dir, &local_id, &[], &members_for_init)?;
                    }
                } else if let Some((index, term, data)) = &opened.snapshot {
                    snapshots.restore(*index, *term, &mut sm)?;
                    base = Base {
                        conf_index: decode_snapshot_data(data)?.0,
                        snapshot_index: *index,
                        snapshot_term: *term,
                    };
                }
                // A published file the log's snapshot does not name was
                // received but never installed (the leader sends again), or
                // written before a crash recorded it: neither is state.
                match &opened.snapshot {
                    Some((index, term, _)) => snapshots.purge_except(*index, *term),
                    None => snapshots.purge_except(0, 0),
                }
                // The state machine is fresh at every start and was restored
                // from the snapshot (if any): replay everything after it.
                raft_cfg.applied = base.snapshot_index;
                raft_cfg
                    .validate()
                    .map_err(|e| Error::InvalidConfig(format!("raft-rs config: {e}")))?;
                let logger = slog::Logger::root(slog::Discard, slog::o!());
                let raw = RawNode::new(&raft_cfg, opened.storage.clone(), &logger)
                    .map_err(|e| crate::error::internal("create raft node", Some(e.into())))?;
                Ok((raw, opened, snapshots, base, sm, join_alarm, was_removed))
            })
            .await
            .map_err(|e| crate::error::internal("storage open task failed", Some(e.into())))??;
        drop(open_thread);
        if opened.existed && bootstrap {
            tracing::info!(node = %config.local_id, "data dir holds a node; bootstrap flag ignored");
        }

        let mut addresses: HashMap<u64, Member> = HashMap::new();
        let snapshot_members = match &opened.snapshot {
            Some((_, _, data)) => decode_snapshot_data(data)?.1,
            None => Vec::new(),
        };
        for m in opened
            .members
            .iter()
            .chain(members.iter())
            .chain(snapshot_members.iter())
        {
            addresses.insert(m.raft_id, m.clone());
        }

        let cluster = cluster.await?;
        let (events_tx, events_rx) =
            mpsc::channel::<Event<S::Response>>(self.config.max_pending_requests);
        let (failures_tx, failures_rx) = mpsc::channel(FAILURE_QUEUE);
        let outbound = Outbound::new(
            snapshots.clone(),
            raftengine_kit::peer::Dialer::new(
                credentials.clone(),
                local_ip,
                self.config.rpc_timeout,
                cluster.clone(),
            ),
            config.local_id.clone(),
            config.local_address.clone(),
            self.config.rpc_timeout,
            tokio::runtime::Handle::current(),
            failures_tx,
            peer_limits.max_message_bytes,
        );
        let shared = Arc::new(Shared::new(opened.storage.sync_counter()));
        let gate = raftengine_kit::peer::PeerGate::new(
            &config.local_id,
            credentials.is_some(),
            cluster.clone(),
        );
        let mut driver = Driver::new(
            raw,
            opened.storage,
            sm,
            self.config.clone(),
            config.local_id.clone(),
            join_alarm,
            config.data_dir.clone(),
            addresses,
            outbound,
            failures_rx,
            events_rx,
            events_tx.clone(),
            shared.clone(),
            snapshots.clone(),
            base,
            gate.departed().clone(),
        );
        // A new thread for every instance: from here on it is the only one
        // that reads the log (raft-rs's `Storage` calls), so raft-engine's
        // per-thread block cache never holds another log's block.
        driver.members.removed = was_removed;
        // `state()` and `status()` answer from the first call on, before the
        // loop has run a round (a bootstrap voter reads as Follower, not
        // Unknown).
        driver.publish();
        let thread = std::thread::Builder::new()
            .name(format!("raft-etcd-{}", config.local_id))
            .spawn(move || driver.run())
            .map_err(|e| crate::error::internal("spawn raft loop thread", Some(e.into())))?;

        let tick = self.config.tick_interval;
        let tick_tx = events_tx.clone();
        let ticker = tokio::spawn(async move {
            let mut interval = tokio::time::interval(tick);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                if tick_tx.send(Event::Tick).await.is_err() {
                    return;
                }
            }
        });

        let inbound = Inbound::new(
            gate,
            events_tx.clone(),
            self.config.rpc_timeout,
            snapshots,
            {
                let shared = shared.clone();
                Arc::new(move || shared.status().leader.map(|l| l.id))
            },
            &peer_limits,
        );
        let transport = tonic::service::Routes::new(inbound.into_service());
        let engine = EtcdEngine {
            local_id: config.local_id,
            cfg: self.config.clone(),
            events: events_tx,
            shared,
            ticker,
            thread: Mutex::new(Some(thread)),
            shutdown_lock: tokio::sync::Mutex::new(()),
        };
        Ok(FactoryResult {
            engine: Arc::new(engine),
            transport,
            peer_credentials: credentials,
            peer_limits,
        })
    }
}

#[cfg(test)]
mod tests {
    use raftengine_conformance::{Cluster, put};

    /// A published snapshot file the log does not name (received, never
    /// installed) is gone after a restart; the node keeps its state.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stale_snapshot_files_are_removed_at_start() {
        let c = Cluster::start(crate::EtcdFactory::new(crate::EtcdConfig::default()), 1).await;
        c.wait_leader().await;
        let w = c.engine(0).propose(put("k", "v")).await.expect("put");
        c.stop(0).await;
        let snapshots = raftengine_kit::SnapshotDir::new(&c.nodes[0].dir).expect("snapshot dir");
        struct Junk;
        impl raftengine::Snapshot for Junk {
            fn write_to(&mut self, w: &mut dyn std::io::Write) -> std::io::Result<u64> {
                w.write_all(b"junk")?;
                Ok(4)
            }
        }
        snapshots
            .write(999_999, 7, &mut Junk)
            .expect("plant a file");
        assert_eq!(snapshots.list(), vec![(999_999, 7)]);
        c.restart(0).await.expect("restart");
        c.wait_leader().await;
        assert!(
            snapshots.list().is_empty(),
            "stale snapshot files survived the restart: {:?}",
            snapshots.list()
        );
        c.wait_applied(0, w.commit_index).await;
        assert_eq!(c.nodes[0].kv.get(b"k").as_deref(), Some(&b"v"[..]));
        c.shutdown().await;
    }
}
