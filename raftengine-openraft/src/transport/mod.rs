//! The peer transport: the tonic service peers call (`inbound`) and
//! openraft's `RaftNetworkV2` over tonic clients (`outbound`). Snapshot
//! files stream both ways through `raftengine_kit::snapshot_stream`.

pub(crate) mod inbound;
pub(crate) mod outbound;
