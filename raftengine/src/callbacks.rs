//! Leadership-edge callbacks: registration, deregistration and dispatch.
//!
//! Both backends keep one [`CallbackRegistry`] for leader-loss and one for
//! leader-acquired edges. The registry exists so the callback contract is
//! implemented once:
//!
//! * **Callbacks never block the engine.** [`CallbackRegistry::fire`] only
//!   queues the edge; a dedicated dispatcher thread runs the callbacks. A
//!   callback that blocks delays later callbacks, never the Raft loop.
//! * **Panics are contained.** A panicking callback is caught, logged through
//!   `tracing` at ERROR, and the remaining callbacks still run.
//! * **Each registration is separate.** Registering the same closure twice
//!   gives two registrations, and it runs twice per edge.
//! * **Deregistration is idempotent** and takes effect immediately: once
//!   [`Registration::deregister`] returns, the callback is not started again,
//!   even for an edge that was queued before.
//! * **Exact edges.** A callback runs once per edge fired after it was
//!   registered, in the order the edges were fired.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, Weak};

/// A callback run on a leadership edge. It must return quickly; offload real
/// work to a task or thread.
pub type Callback = Arc<dyn Fn() + Send + Sync + 'static>;

/// How many fired-but-not-yet-dispatched edges a registry holds. Only a
/// callback that blocks can fill it; further edges are then dropped and
/// counted (see [`CallbackRegistry::dropped_edges`]) instead of blocking the
/// engine or growing memory without bound.
const EDGE_QUEUE: usize = 1024;

struct Entry {
    id: u64,
    callback: Callback,
    active: AtomicBool,
}

struct Shared {
    name: &'static str,
    entries: Mutex<Vec<Arc<Entry>>>,
    next_id: AtomicU64,
    dropped: AtomicU64,
}

impl Shared {
    fn lock_entries(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Entry>>> {
        // A poisoned lock only means a thread panicked while holding it; the
        // Vec is still structurally valid, so keep going.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A list of callbacks fired together on one kind of edge.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use raftengine::CallbackRegistry;
///
/// let registry = CallbackRegistry::new("leader-loss");
/// let hits = Arc::new(AtomicUsize::new(0));
/// let h = hits.clone();
/// let registration = registry.register(Arc::new(move || {
///     h.fetch_add(1, Ordering::SeqCst);
/// }));
/// registry.fire();
/// registry.flush();
/// assert_eq!(hits.load(Ordering::SeqCst), 1);
/// registration.deregister();
/// registration.deregister(); // idempotent
/// registry.fire();
/// registry.flush();
/// assert_eq!(hits.load(Ordering::SeqCst), 1);
/// ```
pub struct CallbackRegistry {
    shared: Arc<Shared>,
    queue: SyncSender<Job>,
}

enum Job {
    Edge(Vec<Arc<Entry>>),
    Flush(SyncSender<()>),
}

impl fmt::Debug for CallbackRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallbackRegistry")
            .field("name", &self.shared.name)
            .field("registered", &self.len())
            .field("dropped_edges", &self.dropped_edges())
            .finish()
    }
}

impl CallbackRegistry {
    /// A registry whose log lines and dispatcher thread carry `name`.
    ///
    /// Starts one dispatcher thread; it exits when the registry is dropped.
    pub fn new(name: &'static str) -> Self {
        let shared = Arc::new(Shared {
            name,
            entries: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            dropped: AtomicU64::new(0),
        });
        let (queue, jobs) = sync_channel::<Job>(EDGE_QUEUE);
        let thread_name = format!("raftengine-cb-{name}");
        let spawned = std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || {
                for job in jobs {
                    match job {
                        Job::Edge(entries) => run_edge(name, &entries),
                        Job::Flush(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            // Without a dispatcher every fire() finds a closed queue and logs;
            // the engine keeps running, which beats refusing to start.
            tracing::error!(registry = name, error = %e, "could not start callback dispatcher thread");
        }
        CallbackRegistry { shared, queue }
    }

    /// Adds `callback`; it runs on every edge fired from now on until the
    /// returned [`Registration`] is deregistered.
    pub fn register(&self, callback: Callback) -> Registration {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let entry = Arc::new(Entry {
            id,
            callback,
            active: AtomicBool::new(true),
        });
        self.shared.lock_entries().push(entry.clone());
        Registration {
            shared: Arc::downgrade(&self.shared),
            entry,
        }
    }

    /// Queues one edge: every callback registered now will run once, on the
    /// dispatcher thread. Never blocks.
    pub fn fire(&self) {
        let entries: Vec<Arc<Entry>> = self.shared.lock_entries().clone();
        if entries.is_empty() {
            return;
        }
        match self.queue.try_send(Job::Edge(entries)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    registry = self.shared.name,
                    "callback queue is full (a callback is blocking); edge dropped"
                );
            }
            Err(TrySendError::Disconnected(_)) => {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    registry = self.shared.name,
                    "callback dispatcher is not running; edge dropped"
                );
            }
        }
    }

    /// Blocks until every edge fired before this call has been dispatched.
    ///
    /// For shutdown paths and tests; never call it from a Raft loop or from a
    /// callback.
    pub fn flush(&self) {
        let (done, wait) = sync_channel(1);
        if self.queue.send(Job::Flush(done)).is_ok() {
            let _ = wait.recv();
        }
    }

    /// Number of live registrations.
    pub fn len(&self) -> usize {
        self.shared.lock_entries().len()
    }

    /// True when nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Edges dropped because the queue was full or the dispatcher was gone.
    pub fn dropped_edges(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

fn run_edge(name: &'static str, entries: &[Arc<Entry>]) {
    for entry in entries {
        if !entry.active.load(Ordering::Acquire) {
            continue;
        }
        let callback = &entry.callback;
        if catch_unwind(AssertUnwindSafe(|| callback())).is_err() {
            tracing::error!(
                registry = name,
                registration = entry.id,
                "callback panicked; the panic was contained"
            );
        }
    }
}

/// The handle of one registration.
///
/// Dropping it leaves the callback registered (like the Go API, where the
/// deregister function may simply be ignored); call
/// [`Registration::deregister`] when the callback's owner goes away.
#[must_use = "dropping a Registration keeps the callback registered; keep it to deregister later"]
pub struct Registration {
    shared: Weak<Shared>,
    entry: Arc<Entry>,
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("id", &self.entry.id)
            .field("active", &self.is_active())
            .finish()
    }
}

impl Registration {
    /// Removes this registration. Safe to call any number of times, from any
    /// thread, also after the engine is gone. Once it returns, the callback is
    /// not started again (a run already under way finishes).
    pub fn deregister(&self) {
        self.entry.active.store(false, Ordering::Release);
        if let Some(shared) = self.shared.upgrade() {
            shared.lock_entries().retain(|e| e.id != self.entry.id);
        }
    }

    /// False once deregistered.
    pub fn is_active(&self) -> bool {
        self.entry.active.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::{Duration, Instant};

    fn counter() -> (Arc<AtomicUsize>, Callback) {
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        (
            hits,
            Arc::new(move || {
                h.fetch_add(1, Ordering::SeqCst);
            }),
        )
    }

    #[test]
    fn same_closure_registered_twice_runs_twice() {
        let registry = CallbackRegistry::new("t-twice");
        let (hits, cb) = counter();
        let a = registry.register(cb.clone());
        let b = registry.register(cb);
        assert_eq!(registry.len(), 2);
        registry.fire();
        registry.flush();
        assert_eq!(hits.load(Ordering::SeqCst), 2);
        a.deregister();
        registry.fire();
        registry.flush();
        assert_eq!(hits.load(Ordering::SeqCst), 3, "only b remains");
        assert!(b.is_active());
    }

    #[test]
    fn deregister_is_idempotent_and_survives_the_registry() {
        let registry = CallbackRegistry::new("t-idem");
        let (hits, cb) = counter();
        let r = registry.register(cb);
        r.deregister();
        r.deregister();
        assert!(registry.is_empty());
        registry.fire();
        registry.flush();
        assert_eq!(hits.load(Ordering::SeqCst), 0);
        drop(registry);
        r.deregister();
        assert!(!r.is_active());
    }

    #[test]
    fn panicking_callback_is_contained_and_others_still_run() {
        let registry = CallbackRegistry::new("t-panic");
        let _bad = registry.register(Arc::new(|| panic!("callback bug")));
        let (hits, cb) = counter();
        let _good = registry.register(cb);
        registry.fire();
        registry.fire();
        registry.flush();
        assert_eq!(hits.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn blocking_callback_does_not_block_fire() {
        let registry = CallbackRegistry::new("t-block");
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let release_rx = Mutex::new(release_rx);
        let _blocker = registry.register(Arc::new(move || {
            let _ = release_rx
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(30));
        }));
        let started = Instant::now();
        // More edges than the queue holds: fire() must neither block nor grow
        // without bound; the overflow is counted.
        for _ in 0..(EDGE_QUEUE + 10) {
            registry.fire();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "fire() blocked behind a blocking callback"
        );
        assert!(registry.dropped_edges() >= 1);
        // Unblock every queued run so the dispatcher drains.
        for _ in 0..(EDGE_QUEUE + 10) {
            let _ = release_tx.send(());
        }
        registry.flush();
    }

    #[test]
    fn edges_fired_before_registration_do_not_reach_the_callback() {
        let registry = CallbackRegistry::new("t-order");
        let (early, cb_early) = counter();
        let _a = registry.register(cb_early);
        registry.fire();
        let (late, cb_late) = counter();
        let _b = registry.register(cb_late);
        registry.flush();
        assert_eq!(early.load(Ordering::SeqCst), 1);
        assert_eq!(late.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn deregister_cancels_queued_runs() {
        let registry = CallbackRegistry::new("t-queued");
        let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
        let gate_rx = Mutex::new(gate_rx);
        // The first registration holds the dispatcher until the gate opens,
        // so the second one's run is still queued when it deregisters.
        let _gate = registry.register(Arc::new(move || {
            let _ = gate_rx
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(30));
        }));
        let (hits, cb) = counter();
        let r = registry.register(cb);
        registry.fire();
        r.deregister();
        gate_tx.send(()).unwrap();
        registry.flush();
        assert_eq!(hits.load(Ordering::SeqCst), 0);
    }
}
