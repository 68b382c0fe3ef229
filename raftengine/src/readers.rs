//! Small read-only views: [`StatusReader`], [`ConfigReader`], [`HealthReader`].

use async_trait::async_trait;

use crate::error::Result;
use crate::types::{Configuration, Status};

/// A point-in-time [`Status`] of the local node.
///
/// # Contract
///
/// [`status`](Self::status) reads what the engine last published; it never
/// waits for the Raft loop, so it may lag the loop by one round.
///
/// # Errors
///
/// None: a stopped engine reports `State::Shutdown`.
///
/// # Cancel safety
///
/// Nothing to cancel: the method is synchronous.
pub trait StatusReader: Send + Sync {
    /// Reads the status. Cheap; never blocks on the Raft loop.
    fn status(&self) -> Status;
}

/// The cluster membership.
///
/// # Contract
///
/// The answer is the latest configuration the node knows of, servers sorted
/// by id; right after a membership call answered index `i`, it is at `i` or
/// later on that node.
///
/// # Errors
///
/// [`Error::Shutdown`](crate::Error::Shutdown) once the engine stopped.
///
/// # Cancel safety
///
/// Dropping the future only stops the wait.
#[async_trait]
pub trait ConfigReader: Send + Sync {
    /// The latest configuration the local node knows of (applied or not),
    /// with voters and learners and the index that established it.
    ///
    /// # Errors
    ///
    /// [`Error::Shutdown`](crate::Error::Shutdown) once the engine stopped.
    async fn configuration(&self) -> Result<Configuration>;
}

/// A readiness probe for load balancers.
///
/// # Contract
///
/// `Ok(())` means "send writes here": the node leads and serves.
///
/// # Errors
///
/// [`Error::NotLeader`](crate::Error::NotLeader) (with the hint) on every
/// other node, [`Error::Shutdown`](crate::Error::Shutdown) once stopped.
///
/// # Cancel safety
///
/// Dropping the future only stops the wait.
#[async_trait]
pub trait HealthReader: Send + Sync {
    /// `Ok(())` only on a leader that is serving; a follower answers
    /// [`Error::NotLeader`](crate::Error::NotLeader) with the leader hint,
    /// a stopped engine [`Error::Shutdown`](crate::Error::Shutdown).
    async fn check_serving(&self) -> Result<()>;
}
