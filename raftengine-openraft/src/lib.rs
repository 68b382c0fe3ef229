//! # raftengine-openraft
//!
//! The `raftengine` backend on [openraft](https://docs.rs/openraft) 0.10
//! (pinned `=0.10.0-alpha.37`): openraft owns the Raft loop; this crate owns
//! the durable log store, the state-machine adapter, the tonic network and the
//! mapping onto `raftengine`'s traits.
//!
//! **Status:** not implemented yet; tracked by issue #4. The crate exists so
//! the workspace layout is final; it exports nothing until the backend lands.
