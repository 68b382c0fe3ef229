//! # raftengine-etcd
//!
//! The `raftengine` backend on tikv's [`raft`](https://docs.rs/raft) crate
//! 0.7 (the etcd/raft port). This crate owns the Ready loop, the durable
//! storage (on `raft-engine`) and the tonic gRPC transport; no raft-rs type
//! appears in its public API.
//!
//! ```no_run
//! use raftengine::tls::{PeerSecurity, PeerTls};
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
//!     .create(
//!         FactoryConfig::new("n1", address, "/var/lib/app/raft", Sm)
//!             .with_bootstrap(true)
//!             // The node's certificate names "n1" (raftengine::tls::node_id_uri).
//!             .with_peer_security(PeerSecurity::Tls(PeerTls::new(
//!                 "/etc/app/ca.pem",
//!                 "/etc/app/n1.pem",
//!                 "/etc/app/n1.key",
//!             ))),
//!     )
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
//!   per Ready, fsynced when raft-rs says so; state-machine snapshots are
//!   checksummed files, and the log is compacted behind them.
//! * Transport: per peer a control lane (heartbeats, votes, responses,
//!   ReadIndex) and a bulk lane (appends), each a long-lived gRPC stream on
//!   its own connection with a bounded queue, many messages per batch and a
//!   deadline on every batch's acknowledgement. Snapshots are streamed in
//!   chunks on a third connection.
//! * Reads use ReadIndex (`Safe`) with unique contexts, batched: all reads
//!   queued in a round share one heartbeat round. The same rounds, repeated
//!   every heartbeat interval, renew the lease: `last_quorum_ack` is the send
//!   time of the newest round a quorum answered in the current term.
//! * Storage: a watermark beside the log (`raft-log-mark`) tells a
//!   corrupt record from a torn tail, so corruption is a typed
//!   [`raftengine::Error::Storage`] at start, never a silent rollback.
//!
//! The state machine is applied on the loop thread; a slow `apply` delays
//! the node's heartbeats (see `docs/backends/etcd.md`).

// rust-protobuf messages are built by setting fields on a default value.
#![allow(clippy::field_reassign_with_default)]

mod config;
mod driver;
mod engine;
mod error;
mod event;
mod factory;
#[cfg(any(test, feature = "forge"))]
pub mod forge;
mod shared;
mod storage;
mod transport;

pub use config::EtcdConfig;
pub use engine::EtcdEngine;
pub use factory::EtcdFactory;

/// The engine type name this backend reports.
pub const ENGINE_TYPE: &str = "etcd";
