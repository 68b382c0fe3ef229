//! # raftengine
//!
//! One trait set for replicating application state with Raft, independent of
//! the Raft implementation underneath.
//!
//! An application writes one [`StateMachine`], codes against the traits in
//! this crate, and picks a backend at build time by depending on its crate:
//! `raftengine-etcd` (tikv's `raft`, the etcd/raft port) or
//! `raftengine-openraft` (`openraft` 0.10). Both pass the same conformance
//! suite, `raftengine-conformance`.
//!
//! ## The pieces
//!
//! | trait | what it gives |
//! |---|---|
//! | [`Factory`] | creates an engine from a [`FactoryConfig`] |
//! | [`Proposer`] | `propose` → committed, applied, typed response |
//! | [`LeaderView`] | role, leader, `verify_leader`, `linearizable_read` |
//! | [`LeaseProvider`] | leader-local reads: [`LeaseProvider::check_lease`] applies the whole lease rule |
//! | [`Admin`] | learners, voters, removal, leadership transfer, leader-acquired callbacks |
//! | [`StatusReader`], [`ConfigReader`], [`HealthReader`] | status, membership, readiness |
//! | [`Engine`] | all of the above on one `Arc<dyn Engine<R>>`, plus shutdown |
//!
//! Every fallible call returns the one [`Error`] enum. Its variants are the
//! cases callers branch on; in particular [`Error::OutcomeUnknown`] ("may
//! have committed") is distinct from [`Error::NotLeader`] ("never appended").
//!
//! ## A complete application
//!
//! A replicated key-value store written once against any backend. Only the
//! last lines (choosing `F`) differ between backends.
//!
//! ```
//! use std::collections::BTreeMap;
//! use std::io::{Read, Write};
//! use std::sync::{Arc, RwLock};
//! use std::time::Duration;
//!
//! use bytes::Bytes;
//! use raftengine::{
//!     Admin, CatchUp, Engine, Factory, FactoryConfig, LeaderView, LeaseProvider,
//!     Proposer, Server, Snapshot, StateMachine, State,
//! };
//! use raftengine::tls::{PeerSecurity, PeerTls};
//!
//! type Map = Arc<RwLock<BTreeMap<String, String>>>;
//!
//! /// Entries are `key=value`; the response is the previous value.
//! struct Kv(Map);
//!
//! struct KvSnapshot(BTreeMap<String, String>);
//!
//! impl Snapshot for KvSnapshot {
//!     fn write_to(&mut self, w: &mut dyn Write) -> std::io::Result<u64> {
//!         let mut n = 0;
//!         for (k, v) in &self.0 {
//!             let line = format!("{k}={v}\n");
//!             w.write_all(line.as_bytes())?;
//!             n += line.len() as u64;
//!         }
//!         Ok(n)
//!     }
//! }
//!
//! impl StateMachine for Kv {
//!     type Response = Option<String>;
//!     type Snapshot = KvSnapshot;
//!
//!     fn apply(&mut self, _index: u64, data: &[u8]) -> Option<String> {
//!         let text = String::from_utf8_lossy(data);
//!         let (k, v) = text.split_once('=')?;
//!         self.0.write().unwrap().insert(k.to_owned(), v.to_owned())
//!     }
//!
//!     fn snapshot(&mut self) -> std::io::Result<KvSnapshot> {
//!         Ok(KvSnapshot(self.0.read().unwrap().clone()))
//!     }
//!
//!     fn restore(&mut self, r: &mut dyn Read) -> std::io::Result<()> {
//!         let mut text = String::new();
//!         r.read_to_string(&mut text)?;
//!         let mut map = BTreeMap::new();
//!         for line in text.lines() {
//!             let (k, v) = line.split_once('=').ok_or_else(|| {
//!                 std::io::Error::new(std::io::ErrorKind::InvalidData, "bad snapshot line")
//!             })?;
//!             map.insert(k.to_owned(), v.to_owned());
//!         }
//!         *self.0.write().unwrap() = map;
//!         Ok(())
//!     }
//! }
//!
//! /// Starts a single-node cluster, writes, reads and hands out admin calls.
//! async fn run<F: Factory>(factory: F, data_dir: &std::path::Path) -> raftengine::Result<()> {
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await
//!         .map_err(|e| raftengine::Error::transport("bind", e))?;
//!     let address = listener.local_addr()
//!         .map_err(|e| raftengine::Error::transport("local addr", e))?.to_string();
//!
//!     let map = Map::default();
//!     let config = FactoryConfig::new("n1", address.clone(), data_dir, Kv(map.clone()))
//!         .with_bootstrap(true)
//!         // Mutual TLS between peers; the certificate names node "n1"
//!         // (`raftengine::tls::node_id_uri`). `PeerSecurity::Plaintext` is
//!         // the explicit opt-out.
//!         .with_peer_security(PeerSecurity::Tls(PeerTls::new(
//!             "/etc/app/ca.pem",
//!             "/etc/app/n1.pem",
//!             "/etc/app/n1.key",
//!         )));
//!     let created = factory.create(config).await?;
//!     let _server = created.serve(listener)?; // or mount created.transport on your server
//!     let engine: Arc<dyn Engine<Option<String>>> = created.engine;
//!
//!     // Wait for the election by polling with a deadline, never a fixed sleep.
//!     let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
//!     while engine.state() != State::Leader {
//!         assert!(tokio::time::Instant::now() < deadline, "no leader elected");
//!         tokio::time::sleep(Duration::from_millis(20)).await;
//!     }
//!
//!     // Write: the response is the state machine's own type.
//!     let written = engine.propose(Bytes::from_static(b"color=blue")).await?;
//!     assert_eq!(written.response, None);
//!
//!     // Read: under a valid lease locally, else via ReadIndex.
//!     if engine.check_lease().is_err() {
//!         engine.linearizable_read().await?;
//!     }
//!     assert_eq!(map.read().unwrap().get("color").map(String::as_str), Some("blue"));
//!
//!     // Admin: add a learner, then promote it once it has the write above.
//!     // (Commented out: there is no second node in this example.)
//!     // let idx = engine.add_learner("n2", "127.0.0.1:7002", None).await?;
//!     // engine.promote_learner("n2", Some(idx), CatchUp::at_least(written.commit_index)?).await?;
//!     let _ = (CatchUp::Unchecked, Server::voter("n2", "127.0.0.1:7002"));
//!
//!     engine.shutdown().await
//! }
//!
//! // Pick a backend by naming its factory, e.g.
//! //   run(raftengine_etcd::EtcdFactory::new(Default::default()), dir).await
//! // This crate has no backend, so the doctest only exercises the state machine.
//! let map = Map::default();
//! let mut kv = Kv(map.clone());
//! assert_eq!(kv.apply(1, b"a=1"), None);
//! assert_eq!(kv.apply(2, b"a=2"), Some("1".to_owned()));
//! let mut bytes = Vec::new();
//! kv.snapshot().unwrap().write_to(&mut bytes).unwrap();
//! let mut restored = Kv(Map::default());
//! restored.restore(&mut bytes.as_slice()).unwrap();
//! assert_eq!(restored.0.read().unwrap().get("a").map(String::as_str), Some("2"));
//! ```
//!
//! ## Contracts
//!
//! Each trait documents its contract under `# Contract`, `# Errors` and
//! `# Cancel safety` headings. The conformance suite checks them against every
//! backend.

mod address;
mod admin;
mod callbacks;
mod engine;
mod error;
mod factory;
mod leader_view;
mod lease;
mod numeric_id;
mod proposer;
mod readers;
mod server;
mod state_machine;
pub mod tls;
mod types;

pub use address::check_address;
pub use admin::{Admin, CatchUp, TransferTarget};
pub use callbacks::{Callback, CallbackRegistry, Registration};
pub use engine::{DynEngine, Engine, StopReason};
pub use error::{BoxError, Error, Result};
pub use factory::{Factory, FactoryConfig, FactoryResult};
pub use leader_view::LeaderView;
pub use lease::{LeaseBasis, LeaseDenied, LeaseGrant, LeaseProvider};
pub use numeric_id::numeric_id;
pub use proposer::Proposer;
pub use readers::{ConfigReader, HealthReader, StatusReader};
pub use server::TransportServer;
pub use state_machine::{Snapshot, StateMachine};
pub use types::{
    Configuration, Index, LeaderInfo, ProposalResult, Server, State, Status, Suffrage, Term,
};
