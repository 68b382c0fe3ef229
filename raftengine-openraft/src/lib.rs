//! # raftengine-openraft
//!
//! The `raftengine` backend on [openraft](https://docs.rs/openraft) 0.10
//! (pinned `=0.10.0-alpha.37`).

mod codec;
mod log_store;
mod state_machine;
mod types;

#[cfg(test)]
mod storage_tests;
