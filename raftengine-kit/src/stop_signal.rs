//! Why an engine stopped, set once and awaited by any number of callers:
//! the state behind `Engine::stopped()` and the "is it still running?"
//! check every handle method makes.

use raftengine::StopReason;
use tokio::sync::watch;

/// A stop reason, set once. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct StopSignal(watch::Sender<Option<StopReason>>);

impl Default for StopSignal {
    fn default() -> Self {
        StopSignal(watch::channel(None).0)
    }
}

impl StopSignal {
    /// A signal that has not fired.
    pub fn new() -> Self {
        StopSignal::default()
    }

    /// Records why the engine stopped, unless a reason is already set: the
    /// first cause wins, so a removal or a failure is not overwritten by
    /// the shutdown that follows it. True if this call set it.
    pub fn stop(&self, reason: StopReason) -> bool {
        self.0.send_if_modified(|stop| {
            let first = stop.is_none();
            if first {
                *stop = Some(reason);
            }
            first
        })
    }

    /// The reason, once stopped.
    pub fn reason(&self) -> Option<StopReason> {
        self.0.borrow().clone()
    }

    /// Resolves with the reason once the signal fired (at once if it has).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only waits.
    pub async fn stopped(&self) -> StopReason {
        let mut rx = self.0.subscribe();
        loop {
            if let Some(reason) = rx.borrow_and_update().clone() {
                return reason;
            }
            // The sender lives in `self`, which outlives this borrow, so
            // `changed` cannot report a closed channel while we wait; the
            // arm only keeps the loop total.
            if rx.changed().await.is_err() {
                return self.reason().unwrap_or(StopReason::Shutdown);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn the_first_reason_wins_and_every_waiter_sees_it() {
        let s = Arc::new(StopSignal::new());
        assert_eq!(s.reason(), None);
        let waiter = {
            let s = s.clone();
            tokio::spawn(async move { s.stopped().await })
        };
        assert!(s.stop(StopReason::Removed));
        assert!(!s.stop(StopReason::Shutdown));
        assert_eq!(waiter.await.unwrap(), StopReason::Removed);
        assert_eq!(s.stopped().await, StopReason::Removed);
        assert_eq!(s.reason(), Some(StopReason::Removed));
    }
}
