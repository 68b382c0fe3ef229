//! [`Engine`]: every trait on one handle, plus lifecycle.

use async_trait::async_trait;

use crate::admin::Admin;
use crate::error::Result;
use crate::leader_view::LeaderView;
use crate::lease::LeaseProvider;
use crate::proposer::Proposer;
use crate::readers::{ConfigReader, HealthReader, StatusReader};

/// Why an engine stopped.
///
/// `#[non_exhaustive]`: a `match` outside this crate needs a wildcard arm:
///
/// ```compile_fail
/// use raftengine::StopReason;
/// fn restart(r: &StopReason) -> bool {
///     match r {
///         StopReason::Shutdown | StopReason::Removed => false,
///         StopReason::Fatal(_) => true,
///     }
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// [`Engine::shutdown`] was called.
    Shutdown,
    /// A committed membership change removed this node, and it stopped
    /// itself. Its data dir belongs to a former member: to bring the
    /// machine back, wipe the dir and add it again under a new id.
    Removed,
    /// The engine hit an error it cannot continue from (a failed fsync, a
    /// corrupt log, a state machine that failed to restore). The node must be
    /// restarted; it does not serve in the meantime.
    Fatal(String),
}

/// A running Raft node: all of `raftengine`'s traits on one handle.
///
/// Backends hand it out as `Arc<dyn Engine<R>>`, where `R` is the state
/// machine's response type; it is cheap to share across tasks.
///
/// # Contract
///
/// Every supertrait's contract holds on the one handle, and every backend
/// passes the same conformance suite (`raftengine-conformance`), which pins
/// each behaviour the contracts speak of. Once the engine stopped (for any
/// [`StopReason`]) every call answers
/// [`Error::Shutdown`](crate::Error::Shutdown) or its reader's stopped
/// value; no call hangs.
///
/// # Errors
///
/// Each method lists its own; the variants and which of them are safe to
/// retry are [`Error`](crate::Error)'s.
///
/// # Cancel safety
///
/// Every async method may be dropped at any await point: the wait stops,
/// what was already started (a proposal, a shutdown) keeps its course.
#[async_trait]
pub trait Engine<R>:
    Proposer<R>
    + LeaderView
    + LeaseProvider
    + Admin
    + StatusReader
    + ConfigReader
    + HealthReader
    + Send
    + Sync
    + 'static
{
    /// The engine type, e.g. `"etcd"` or `"openraft"`.
    fn engine_type(&self) -> &'static str;

    /// The local node id.
    fn local_id(&self) -> &str;

    /// Stops the node: pending calls resolve with
    /// [`Error::Shutdown`](crate::Error::Shutdown) (or
    /// [`Error::OutcomeUnknown`](crate::Error::OutcomeUnknown) for appended
    /// proposals), leader-loss callbacks fire if it was leader, storage is
    /// flushed and closed, and outbound connections are dropped.
    /// Idempotent; later calls return once the first one finished.
    ///
    /// # Errors
    ///
    /// A storage error while flushing; the engine is stopped regardless.
    async fn shutdown(&self) -> Result<()>;

    /// Resolves when the engine has stopped, with the reason. Resolves at once
    /// if it already has.
    async fn stopped(&self) -> StopReason;
}

/// `dyn Engine<R>`, the form applications usually hold (`Arc<DynEngine<R>>`).
pub type DynEngine<R> = dyn Engine<R>;
