//! # raftengine-etcd
//!
//! The `raftengine` backend on tikv's [`raft`](https://docs.rs/raft) crate
//! (the etcd/raft port): this crate owns the Ready loop, durable storage and
//! the tonic gRPC transport.
//!
//! **Status:** not implemented yet; tracked by issue #3.
