//! The peer transport: the tonic service peers call (`inbound`),
//! openraft's `RaftNetworkV2` over tonic clients (`outbound`), and the
//! snapshot file streamed between them (`snapshot`).

pub(crate) mod inbound;
pub(crate) mod outbound;
mod snapshot;
