//! Small read-only views: [`StatusReader`], [`ConfigReader`], [`HealthReader`].

use async_trait::async_trait;

use crate::error::Result;
use crate::types::{Configuration, Status};

/// A point-in-time [`Status`] of the local node.
pub trait StatusReader: Send + Sync {
    /// Reads the status. Cheap; never blocks on the Raft loop.
    fn status(&self) -> Status;
}

/// The cluster membership.
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
#[async_trait]
pub trait HealthReader: Send + Sync {
    /// `Ok(())` only on a leader that is serving; a follower answers
    /// [`Error::NotLeader`](crate::Error::NotLeader) with the leader hint,
    /// a stopped engine [`Error::Shutdown`](crate::Error::Shutdown).
    async fn check_serving(&self) -> Result<()>;
}
