//! Building blocks for raftengine **backend authors**, not for applications.
//!
//! Applications depend on `raftengine` (the contract) and one backend. This
//! crate holds mechanisms that every durable backend needs and that are
//! written once here instead of once per backend. It is less stable than
//! `raftengine`: its items follow what the backends need and may change in
//! any release.
//!
//! * [`departed`]: members committed membership removed, refused when
//!   they call again, and when a removed node stops for those refusals.
//! * [`durable`]: files and directories made durable the POSIX way (fsync
//!   the file, then fsync the directory that names it).
//! * [`entry_cache`]: the newest log entries in memory, bounded in count and
//!   bytes (both Raft libraries read back what they just wrote).
//! * [`idle_spin`]: receiving on a dedicated thread without a wake-up per
//!   event.
//! * [`join_alarm`]: the join-as-learner alarm, decided by the role a node
//!   first joined with.
//! * `log_checks` (feature `dev`): checkers a backend runs against its raft
//!   log on disk (torn tails, damaged records, emptied or foreign dirs).
//! * [`log_mark`]: the watermark beside a raft log that tells a torn tail
//!   from lost durable records.
//! * [`member`]: checks of a server an admin call is about to add.
//! * [`node_dir`]: whether a data dir holds a node (its identity file).
//! * [`node_log`]: a node's raft log in its data dir, opened with identity
//!   checks.
//! * [`peer`]: a peer client endpoint's defaults and the removed-node
//!   notice's bounded delivery.
//! * [`raft_log`]: a `raft-engine` log whose fsyncs are counted at the file
//!   layer and whose explicit [`sync`](raft_log::sync) really syncs.
//! * [`read_thread`]: a thread that reads one log and no other (raft-engine
//!   caches decoded blocks per thread, not per log).
//! * [`screen`]: checks an authenticated peer's message passes before the
//!   engine sees it (plausible terms, who may remove a node).
//! * [`snapshot_dir`]: checksummed state-machine snapshot files, written
//!   and received durably.
//! * [`snapshot_stream`]: a snapshot file streamed between peers with a
//!   deadline on progress.
//! * [`stop_signal`]: why an engine stopped, set once, awaited by many.

pub mod cluster_id;
pub mod departed;
pub mod durable;
pub mod entry_cache;
pub mod idle_spin;
pub mod join_alarm;
#[cfg(feature = "dev")]
pub mod log_checks;
pub mod log_mark;
pub mod member;
pub mod node_dir;
pub mod node_log;
pub mod peer;
pub mod raft_log;
pub mod read_thread;
pub mod screen;
mod setters;
pub mod snapshot_dir;
pub mod snapshot_stream;
pub mod stop_signal;

pub use snapshot_dir::SnapshotDir;

/// The message of a caught panic (`catch_unwind`'s payload), or
/// `"unknown panic"` when it carries neither a `String` nor a `&str`.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic")
}
