//! Forged peer messages: what an authenticated member that misbehaves (a
//! bug, a stale process, a replayed packet) could send. The wire format is
//! private to each backend, so the backend writes the messages
//! ([`Forger`]); the suite decides what to forge, sends it as a real member
//! (that member's certificate and cluster id) and checks that nothing
//! changed ([`cases::forged`](crate::cases::forged)).

use std::future::Future;
use std::path::PathBuf;

use raftengine::tls::PeerCredentials;

/// One kind of forged message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Forgery {
    /// A message whose term is [`Forge::term`] (`u64::MAX`): both engines
    /// add to terms unchecked.
    HugeTerm,
    /// A heartbeat, or an append without entries, of the target's current
    /// term ([`Forge::term`]) that commits [`Forge::commit`], far past the
    /// target's log.
    CommitBeyondLog,
    /// A removed-node notice for the target, with `conf_index = u64::MAX`,
    /// from a member that is not the target's leader.
    RemovedNotice,
    /// Whatever the backend's wire lets a sender say about its own address,
    /// saying [`Forge::poison_address`]; the target is the leader.
    PoisonedAddress,
    /// A snapshot of the target's current term from a member that is not
    /// its leader: a valid file envelope, a payload of the forger's choice.
    SnapshotFromFollower,
    /// A message that would be taken if it were not [`Forge::size`] bytes
    /// long, above the target's `PeerLimits::max_message_bytes`.
    OversizedMessage,
    /// A snapshot from the target's leader (its current vote) whose file
    /// is [`Forge::size`] bytes long, above the target's
    /// `PeerLimits::max_snapshot_bytes`: a valid envelope, sent whole.
    OversizedSnapshot,
}

impl Forgery {
    /// Every forgery, in the order the suite stamps them.
    pub const ALL: [Forgery; 7] = [
        Forgery::HugeTerm,
        Forgery::CommitBeyondLog,
        Forgery::RemovedNotice,
        Forgery::PoisonedAddress,
        Forgery::SnapshotFromFollower,
        Forgery::OversizedMessage,
        Forgery::OversizedSnapshot,
    ];
}

/// Who sends a forgery to whom, and with what values.
#[derive(Debug, Clone)]
pub struct Forge {
    /// The member the forger speaks as.
    pub from: String,
    /// That member's certificate and key.
    pub credentials: PeerCredentials,
    /// That member's data dir (its cluster id file).
    pub from_dir: PathBuf,
    /// The target's node id.
    pub to: String,
    /// The target's own listener (not through the fault proxy).
    pub to_address: String,
    /// The term the message carries.
    pub term: u64,
    /// The commit index of [`Forgery::CommitBeyondLog`].
    pub commit: u64,
    /// The address of [`Forgery::PoisonedAddress`]: a listener the suite
    /// watches for connections.
    pub poison_address: String,
    /// The size of [`Forgery::OversizedMessage`] and
    /// [`Forgery::OversizedSnapshot`], in bytes.
    pub size: u64,
}

/// What the target answered a forgery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The call succeeded (the message may still have been dropped later).
    Taken,
    /// The call was refused with this gRPC status code (as its number) and
    /// message.
    Refused(i32, String),
}

/// Writes and sends forgeries in a backend's wire format.
pub trait Forger: Send + Sync + 'static {
    /// Sends `forgery` as `forge` describes, from a fresh connection with
    /// `forge.credentials` and `forge.from_dir`'s cluster id.
    ///
    /// # Errors
    ///
    /// The message could not be sent at all (no connection, no cluster id):
    /// the case fails, since it then tested nothing. A forger that cannot
    /// write a forgery panics rather than pass quietly.
    fn send(
        &self,
        forgery: Forgery,
        forge: &Forge,
    ) -> impl Future<Output = Result<Answer, String>> + Send;
}
