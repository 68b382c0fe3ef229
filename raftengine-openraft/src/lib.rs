//! # raftengine-openraft
//!
//! The `raftengine` backend on [openraft](https://docs.rs/openraft) 0.10
//! (pinned `=0.10.0-alpha.37`).

mod codec;
mod config;
mod engine;
mod factory;
#[doc(hidden)]
pub mod log_bench;
mod log_store;
mod network;

/// The generated gRPC code of `proto/transport.proto`.
#[allow(missing_docs, unreachable_pub, clippy::all)]
mod pb {
    tonic::include_proto!("raftengine.openraft.v1");
}

mod service;
mod state_machine;
mod types;

#[cfg(test)]
mod storage_tests;

pub use config::OpenraftConfig;
pub use engine::OpenraftEngine;
pub use factory::OpenraftFactory;

/// The engine type name this backend reports.
pub const ENGINE_TYPE: &str = "openraft";
