//! # raftengine-etcd
//!
//! The `raftengine` backend on tikv's [`raft`](https://docs.rs/raft) crate
//! 0.7 (the etcd/raft port). This crate owns the Ready loop, the durable
//! storage (on `raft-engine`) and the tonic gRPC transport; no raft-rs type
//! appears in its public API.
//!
//! ```no_run
//! use raftengine::{Factory, FactoryConfig};
//! use raftengine_etcd::{EtcdConfig, EtcdFactory};
//! # struct Sm;
//! # impl raftengine::StateMachine for Sm {
//! #     type Response = ();
//! #     type Snapshot = Snap;
//! #     fn apply(&mut self, _: u64, _: &[u8]) {}
//! #     fn snapshot(&mut self) -> std::io::Result<Snap> { Ok(Snap) }
//! #     fn restore(&mut self, _: &mut dyn std::io::Read) -> std::io::Result<()> { Ok(()) }
//! # }
//! # struct Snap;
//! # impl raftengine::Snapshot for Snap {
//! #     fn write_to(&mut self, _: &mut dyn std::io::Write) -> std::io::Result<u64> { Ok(0) }
//! # }
//! # async fn demo() -> raftengine::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! let address = listener.local_addr().unwrap().to_string();
//! let factory = EtcdFactory::new(EtcdConfig::default());
//! let created = factory
//!     .create(FactoryConfig::new("n1", address, "/var/lib/app/raft", Sm).with_bootstrap(true))
//!     .await?;
//! let _server = created.serve(listener)?;
//! # Ok(()) }
//! ```
//!
//! ## How it works
//!
//! * One OS thread per node owns the `RawNode` and runs the Ready loop in the
//!   order raft-rs requires (persist before sending dependent messages, apply
//!   only durable commits, `apply_conf_change` for each conf change,
//!   `advance_apply` each round). Many queued proposals share one Ready and
//!   therefore one fsync.
//! * Storage: entries and hard state go to `raft-engine` in one atomic batch
//!   per Ready, fsynced when raft-rs says so.
//! * Transport: per peer a control lane (heartbeats, votes, responses,
//!   ReadIndex) and a bulk lane (appends), each with its own connection,
//!   bounded queue and per-call deadline; many messages per call.
//! * Reads use ReadIndex (`Safe`) with unique contexts, batched: all reads
//!   queued in a round share one heartbeat round. The same rounds, repeated
//!   every heartbeat interval, renew the lease: `last_quorum_ack` is the send
//!   time of the newest round a quorum answered in the current term.
//!
//! ## Current limits (tracked in issue #3)
//!
//! * No snapshots or log compaction yet: the log grows without bound and a
//!   restart replays it from the first entry into the fresh state machine.
//! * The state machine is applied on the loop thread.

// rust-protobuf messages are built by setting fields on a default value.
#![allow(clippy::field_reassign_with_default)]

mod config;
mod driver;
mod engine;
mod factory;
mod shared;
mod storage;
mod transport;
mod watermark;

pub use config::EtcdConfig;
pub use engine::EtcdEngine;
pub use factory::EtcdFactory;

/// The engine type name this backend reports.
pub const ENGINE_TYPE: &str = "etcd";
