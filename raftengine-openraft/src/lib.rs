//! # raftengine-openraft
//!
//! The `raftengine` backend on [openraft](https://docs.rs/openraft) 0.10
//! (pinned `=0.10.0-alpha.37`). openraft runs the Raft protocol; this crate
//! owns the durable log store (on `raft-engine`), the state-machine adapter
//! with checksummed snapshot files, the tonic gRPC network and the mapping
//! onto `raftengine`'s traits. No openraft type appears in its public API.
//!
//! ```no_run
//! use raftengine::tls::{PeerSecurity, PeerTls};
//! use raftengine::{Factory, FactoryConfig};
//! use raftengine_openraft::{OpenraftConfig, OpenraftFactory};
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
//! let factory = OpenraftFactory::new(OpenraftConfig::default());
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
//! let engine = created.engine;
//! # let _ = engine;
//! # Ok(()) }
//! ```
//!
//! ## How it works
//!
//! * **Log**: entries, vote, committed and purge records in `raft-engine`
//!   under `<data_dir>/raft-log`; one writer thread group-commits every
//!   append that queued during the previous fsync. It passes openraft's own
//!   storage suite plus reopen, torn-tail and corruption tests.
//! * **State machine**: applied in log order, in batches on the blocking
//!   pool (the application's `apply` may block); snapshots are written off
//!   the Raft loop into checksummed files and restored with the
//!   application's `restore`.
//! * **Network**: per peer a control connection (heartbeats, votes,
//!   pre-votes, leadership transfer), a data connection (pipelined appends on
//!   one stream) and a snapshot connection (1 MiB chunks, progress deadline).
//! * **Semantics**: see `docs/backends/openraft.md` for each trait's mapping,
//!   e.g. why a leader whose lease ran out is reported as a follower.

mod codec;
mod config;
mod engine;
mod error;
mod factory;
#[cfg(any(test, feature = "forge"))]
pub mod forge;
// Only for `examples/log_store.rs`: not part of the API.
#[cfg(feature = "log-bench")]
#[doc(hidden)]
pub mod log_bench;
mod log_store;

/// The generated gRPC code of `proto/transport.proto`.
#[allow(missing_docs, unreachable_pub, clippy::all)]
mod pb {
    tonic::include_proto!("raftengine.openraft.v1");
}

mod shared;
mod state_machine;
mod transport;
mod types;

pub use config::OpenraftConfig;
pub use engine::OpenraftEngine;
pub use factory::OpenraftFactory;

/// The engine type name this backend reports.
pub const ENGINE_TYPE: &str = "openraft";
