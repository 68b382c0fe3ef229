//! The openraft type configuration: what a log entry carries, what a node
//! is, and how responses travel back to proposers.

use std::any::Any;
use std::fmt;
use std::sync::Mutex;

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An application command: the bytes given to `propose`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Request(pub(crate) Bytes);

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request({} bytes)", self.0.len())
    }
}

/// The state machine's response to one entry, on its way to the proposer.
///
/// openraft needs one response type for every engine, while each engine has
/// its own `StateMachine::Response`; the value is boxed here and unboxed by
/// the engine that knows its type. Responses never cross the network, so the
/// serde impls (required by openraft's `serde` feature) carry nothing.
pub(crate) struct Reply(Mutex<Option<Box<dyn Any + Send>>>);

impl Reply {
    pub(crate) fn new<T: Send + 'static>(value: T) -> Self {
        Reply(Mutex::new(Some(Box::new(value))))
    }

    /// The reply to an entry without an application response (blank or
    /// membership entries).
    pub(crate) fn none() -> Self {
        Reply(Mutex::new(None))
    }

    /// The response, if it is a `T`.
    pub(crate) fn take<T: 'static>(self) -> Option<T> {
        let inner = self.0.into_inner().unwrap_or_else(|p| p.into_inner())?;
        inner.downcast::<T>().ok().map(|b| *b)
    }
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Reply")
    }
}

impl Serialize for Reply {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_unit()
    }
}

impl<'de> Deserialize<'de> for Reply {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <()>::deserialize(d)?;
        Ok(Reply::none())
    }
}

/// What the membership records about a node: its string id and the address
/// its transport listens on.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub(crate) struct Peer {
    pub(crate) id: String,
    pub(crate) address: String,
}

openraft::declare_raft_types!(
    /// The openraft type configuration of this backend. Standard Raft leader
    /// ids (one leader per term), like raft-rs, so a term names one leader.
    pub(crate) TypeConfig:
        D = Request,
        R = Reply,
        NodeId = u64,
        Node = Peer,
        Term = u64,
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, u64>,
);

/// The committed form of a leader id: just the term.
pub(crate) type Committed = openraft::vote::leader_id_std::CommittedLeaderId<u64>;
pub(crate) type LogId = openraft::LogId<Committed>;
pub(crate) type Entry = <TypeConfig as openraft::RaftTypeConfig>::Entry;
pub(crate) type Vote = <TypeConfig as openraft::RaftTypeConfig>::Vote;
pub(crate) type StoredMembership = openraft::StoredMembership<Committed, u64, Peer>;
pub(crate) type SnapshotMeta = openraft::SnapshotMeta<Committed, u64, Peer>;
