//! The cases. Each is a `pub async fn` generic over the backend's
//! [`Factory`](raftengine::Factory); it panics with a message naming what
//! failed. [`conformance_tests!`](crate::conformance_tests) stamps one test
//! per case.

// Cases are test code: a panic with a message is how a case fails.
#![allow(clippy::expect_used, clippy::unwrap_used)]

pub mod basics;
pub mod callbacks;
pub mod elections;
pub mod forged;
pub mod hostile;
pub mod lease;
pub mod linearizability;
pub mod membership;
pub mod partitions;
pub mod peers;
pub mod power;
pub mod reads;
pub mod restart;
pub mod snapshots;
pub mod status;
