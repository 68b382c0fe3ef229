//! The application's replicated state: [`StateMachine`] and its [`Snapshot`].

use std::io::{Read, Write};

use crate::types::Index;

/// The application state that Raft replicates.
///
/// The engine owns the state machine (it is moved into
/// [`FactoryConfig`](crate::FactoryConfig)); an application that also reads
/// the state keeps a shared handle to the inner data (for example an
/// `Arc<RwLock<…>>`) and reads it after
/// [`LeaderView::linearizable_read`](crate::LeaderView::linearizable_read) or a
/// lease check has said the local copy is fresh enough.
///
/// # Contract
///
/// * `apply` is called once per committed normal entry, in log order, with
///   strictly increasing indexes, on one thread at a time. Entries the engine
///   writes for itself (leader no-ops, membership changes) are not passed.
/// * `apply` MUST be deterministic: every replica applies the same entries and
///   must reach the same state. Errors that are part of the application's
///   semantics belong in [`StateMachine::Response`]; they are not engine
///   failures.
/// * `snapshot` MUST be cheap (it runs on the apply path): capture an
///   immutable view, e.g. clone an `Arc` of a persistent map, and do the
///   serialization in [`Snapshot::write_to`], which the engine runs on a
///   blocking thread off the Raft loop.
/// * `restore` replaces the whole state with the snapshot's. After it
///   returns, the next `apply` continues from the snapshot's index + 1.
/// * The engine calls `snapshot`, `restore` and `apply` on blocking threads,
///   so they may do synchronous I/O.
///
/// # Errors
///
/// `apply` cannot fail (its errors are the application's, in the response).
/// A failed `snapshot` is retried later and the log is kept meanwhile; a
/// failed `restore` stops the snapshot install with
/// [`Error::StateMachine`](crate::Error::StateMachine), and at start fails
/// `Factory::create` with it.
///
/// # Cancel safety
///
/// Nothing to cancel: the methods are synchronous and the engine never
/// abandons one half-way (a node that stops waits for the `apply` running).
///
/// # Example
///
/// ```
/// use std::io::{Read, Write};
/// use raftengine::{Snapshot, StateMachine};
///
/// /// A counter that sums the little-endian u64 in each entry.
/// #[derive(Default)]
/// struct Sum(u64);
///
/// struct SumSnapshot(u64);
///
/// impl Snapshot for SumSnapshot {
///     fn write_to(&mut self, w: &mut dyn Write) -> std::io::Result<u64> {
///         w.write_all(&self.0.to_le_bytes())?;
///         Ok(8)
///     }
/// }
///
/// impl StateMachine for Sum {
///     type Response = u64;
///     type Snapshot = SumSnapshot;
///
///     fn apply(&mut self, _index: u64, data: &[u8]) -> u64 {
///         let mut n = [0u8; 8];
///         let len = data.len().min(8);
///         n[..len].copy_from_slice(&data[..len]);
///         self.0 += u64::from_le_bytes(n);
///         self.0
///     }
///
///     fn snapshot(&mut self) -> std::io::Result<SumSnapshot> {
///         Ok(SumSnapshot(self.0))
///     }
///
///     fn restore(&mut self, r: &mut dyn Read) -> std::io::Result<()> {
///         let mut n = [0u8; 8];
///         r.read_exact(&mut n)?;
///         self.0 = u64::from_le_bytes(n);
///         Ok(())
///     }
/// }
///
/// let mut sm = Sum::default();
/// assert_eq!(sm.apply(1, &5u64.to_le_bytes()), 5);
/// let mut snap = sm.snapshot().unwrap();
/// let mut bytes = Vec::new();
/// snap.write_to(&mut bytes).unwrap();
/// let mut fresh = Sum::default();
/// fresh.restore(&mut bytes.as_slice()).unwrap();
/// assert_eq!(fresh.apply(2, &1u64.to_le_bytes()), 6);
/// ```
pub trait StateMachine: Send + 'static {
    /// What `apply` returns; delivered to the proposer in
    /// [`ProposalResult::response`](crate::ProposalResult::response).
    type Response: Send + 'static;

    /// The handle [`StateMachine::snapshot`] returns.
    type Snapshot: Snapshot;

    /// Applies the committed entry at `index` and returns its response.
    fn apply(&mut self, index: Index, data: &[u8]) -> Self::Response;

    /// Captures the current state cheaply; the expensive part happens in
    /// [`Snapshot::write_to`].
    ///
    /// # Errors
    ///
    /// An I/O error aborts this snapshot; the engine retries later and keeps
    /// the log until a snapshot succeeds.
    fn snapshot(&mut self) -> std::io::Result<Self::Snapshot>;

    /// Replaces the whole state with the one `reader` yields (bytes written by
    /// a [`Snapshot::write_to`] of some replica).
    ///
    /// # Errors
    ///
    /// Garbage input must produce an error, not a panic; the engine then
    /// refuses the snapshot and reports [`Error::StateMachine`](crate::Error::StateMachine).
    fn restore(&mut self, reader: &mut dyn Read) -> std::io::Result<()>;
}

/// An immutable view of the state, captured by [`StateMachine::snapshot`].
///
/// Dropping the handle releases whatever it pins (the Go API's `Close`).
///
/// # Contract
///
/// [`write_to`](Self::write_to) writes the state as of the capture, however
/// far `apply` has moved since, in bytes that [`StateMachine::restore`] of
/// any replica accepts.
///
/// # Errors
///
/// An I/O error aborts that snapshot only; the engine keeps its log and
/// tries again later.
///
/// # Cancel safety
///
/// Nothing to cancel: `write_to` is synchronous; a snapshot the engine no
/// longer needs is dropped, never half-used.
pub trait Snapshot: Send + 'static {
    /// Serializes the captured state into `writer` and returns the number of
    /// bytes written. Runs on a blocking thread, off the Raft loop; it may be
    /// slow.
    ///
    /// # Errors
    ///
    /// Any I/O error aborts the snapshot.
    fn write_to(&mut self, writer: &mut dyn Write) -> std::io::Result<u64>;
}
