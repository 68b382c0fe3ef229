//! [`LeaseProvider`]: leader-local reads without a quorum round, and the one
//! place the lease rule is written down.
//!
//! The rule itself is documented on [`LeaseProvider`].

use std::time::{Duration, Instant};

use crate::callbacks::{Callback, Registration};
use crate::types::{Index, State, Term};

/// One consistent sample of everything the lease rule reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseBasis {
    /// The local role.
    pub state: State,
    /// The current term.
    pub term: Term,
    /// When a quorum of voters last acknowledged this leader in this term
    /// (`None` if never, or not leader).
    pub last_quorum_ack: Option<Instant>,
    /// True while a leadership transfer is in flight.
    pub transfer_in_progress: bool,
    /// True once the leader has applied an entry of `term`.
    pub applied_current_term: bool,
    /// Highest index applied to the local state machine.
    pub applied_index: Index,
}

impl LeaseBasis {
    /// A basis for a node that holds no lease (not leader, nothing acked).
    pub fn none(state: State) -> Self {
        LeaseBasis {
            state,
            term: 0,
            last_quorum_ack: None,
            transfer_in_progress: false,
            applied_current_term: false,
            applied_index: 0,
        }
    }

    /// Applies the lease rule (see [`LeaseProvider`]) at `now`.
    ///
    /// # Errors
    ///
    /// The first rule that fails, as a [`LeaseDenied`].
    pub fn check(&self, now: Instant, lease: Duration) -> Result<LeaseGrant, LeaseDenied> {
        if self.state != State::Leader {
            return Err(LeaseDenied::NotLeader { state: self.state });
        }
        if self.transfer_in_progress {
            return Err(LeaseDenied::TransferInProgress);
        }
        if !self.applied_current_term {
            return Err(LeaseDenied::CurrentTermNotApplied { term: self.term });
        }
        let Some(ack) = self.last_quorum_ack else {
            return Err(LeaseDenied::NoQuorumAck);
        };
        let Some(age) = now.checked_duration_since(ack) else {
            return Err(LeaseDenied::AckInFuture);
        };
        if age >= lease {
            return Err(LeaseDenied::Expired { age, lease });
        }
        Ok(LeaseGrant {
            applied_index: self.applied_index,
            term: self.term,
            remaining: lease - age,
        })
    }
}

/// A valid lease: the local state machine may be read now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseGrant {
    /// The applied index at the sample; reading the local state now observes
    /// at least this index.
    pub applied_index: Index,
    /// The leader's term.
    pub term: Term,
    /// How much longer the lease lasts from the sample's `now`.
    pub remaining: Duration,
}

/// Why the lease does not hold. Fall back to
/// [`LeaderView::linearizable_read`](crate::LeaderView::linearizable_read).
///
/// `?` turns it into [`Error::LeaseDenied`](crate::Error::LeaseDenied):
///
/// ```
/// use raftengine::{Error, LeaseProvider, Result};
///
/// fn lease_index(engine: &dyn LeaseProvider) -> Result<u64> {
///     Ok(engine.check_lease()?.applied_index)
/// }
/// # let denied: Error = raftengine::LeaseDenied::NoQuorumAck.into();
/// # assert!(matches!(denied, Error::LeaseDenied(raftengine::LeaseDenied::NoQuorumAck)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseDenied {
    /// The node is not the leader.
    #[error("no lease: node is {state}, not leader")]
    NotLeader {
        /// The node's state at the sample.
        state: State,
    },
    /// No quorum has acknowledged this leader in its term yet.
    #[error("no lease: no quorum acknowledgement yet")]
    NoQuorumAck,
    /// The acknowledgement is later than `now` (bogus clock reading).
    #[error("no lease: quorum acknowledgement is in the future")]
    AckInFuture,
    /// The last acknowledgement is older than the lease.
    #[error("no lease: last quorum acknowledgement is {age:?} old, lease is {lease:?}")]
    Expired {
        /// Age of the last acknowledgement.
        age: Duration,
        /// The lease duration.
        lease: Duration,
    },
    /// A leadership transfer is in flight.
    #[error("no lease: leadership transfer in progress")]
    TransferInProgress,
    /// The leader has not yet applied an entry of its own term.
    #[error("no lease: no entry of term {term} applied yet")]
    CurrentTermNotApplied {
        /// The leader's term.
        term: Term,
    },
}

/// Leader-local lease reads.
///
/// # The rule
///
/// A leader may answer a read from its local state machine without asking a
/// quorum when, for one sample `now` of the monotonic clock taken **after**
/// the inputs below were read:
///
/// 1. it is the leader;
/// 2. it has a quorum acknowledgement `ack` (voters only, current term);
/// 3. `ack <= now` (an ack "in the future" is a bogus reading and fails closed);
/// 4. `now - ack < lease_duration`, where `lease_duration` is shorter than the
///    minimum election timeout by a safety margin covering clock-rate drift,
///    so no other node can have been elected within the lease;
/// 5. no leadership transfer is in flight (a transfer lets the target campaign
///    immediately, without waiting for an election timeout);
/// 6. it has applied an entry of its own term, so its state machine reflects
///    every entry committed by earlier leaders.
///
/// [`LeaseBasis::check`] implements exactly this and nothing else, and
/// [`LeaseProvider::check_lease`] calls it, so callers never re-derive it.
///
/// # Contract
///
/// The rule above, checked in one place ([`LeaseBasis::check`]) from one
/// sample of the backend's state ([`lease_basis`](Self::lease_basis)), so
/// every backend grants and denies alike; a leader-loss callback fires
/// exactly once per lost leadership.
///
/// # Errors
///
/// [`check_lease`](Self::check_lease) answers [`LeaseDenied`], naming the
/// rule that failed; nothing else fails.
///
/// # Cancel safety
///
/// Nothing to cancel: every method is synchronous.
///
/// Backends implement [`lease_duration`](Self::lease_duration),
/// [`lease_basis`](Self::lease_basis) and
/// [`register_leader_loss_callback`](Self::register_leader_loss_callback);
/// the rest is provided.
///
/// ```
/// use raftengine::{LeaseProvider, LeaderView};
///
/// /// Reads locally under a valid lease, else with a quorum round.
/// async fn read_index<E: LeaseProvider + LeaderView + ?Sized>(e: &E) -> raftengine::Result<u64> {
///     match e.check_lease() {
///         Ok(grant) => Ok(grant.applied_index),
///         Err(_) => e.linearizable_read().await,
///     }
/// }
/// ```
pub trait LeaseProvider: Send + Sync {
    /// How long after a quorum acknowledgement the leader may serve local
    /// reads. Always shorter than the minimum election timeout; each backend
    /// documents its safety margin.
    fn lease_duration(&self) -> Duration;

    /// One consistent sample of the lease inputs.
    fn lease_basis(&self) -> LeaseBasis;

    /// Registers `callback` to run every time the local node leaves the
    /// leader role (step-down, transfer, partition, shutdown). Use it to drop
    /// cached leader state; see [`CallbackRegistry`](crate::CallbackRegistry)
    /// for the contract (non-blocking, panic-contained, exact edges).
    fn register_leader_loss_callback(&self, callback: Callback) -> Registration;

    /// Highest index applied to the local state machine.
    fn applied_index(&self) -> Index {
        self.lease_basis().applied_index
    }

    /// When a quorum of voters last acknowledged this leader in its current
    /// term, on the monotonic clock; `None` if not leader or never.
    fn last_quorum_ack(&self) -> Option<Instant> {
        self.lease_basis().last_quorum_ack
    }

    /// Checks the lease now. `Ok` means the local state machine may be read
    /// without a quorum round.
    ///
    /// # Errors
    ///
    /// [`LeaseDenied`] names the rule that failed.
    fn check_lease(&self) -> Result<LeaseGrant, LeaseDenied> {
        // Sample the inputs first, then the clock, so the ack can never be
        // later than `now` unless the clock itself is broken.
        let basis = self.lease_basis();
        basis.check(Instant::now(), self.lease_duration())
    }

    /// [`check_lease`](Self::check_lease) at a caller-supplied `now`, for
    /// callers that already hold a clock sample (and for tests).
    ///
    /// # Errors
    ///
    /// [`LeaseDenied`] names the rule that failed.
    fn check_lease_at(&self, now: Instant) -> Result<LeaseGrant, LeaseDenied> {
        self.lease_basis().check(now, self.lease_duration())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callbacks::CallbackRegistry;
    use std::sync::{Arc, Mutex};

    const LEASE: Duration = Duration::from_millis(800);

    fn leader(ack: Option<Instant>) -> LeaseBasis {
        LeaseBasis {
            state: State::Leader,
            term: 7,
            last_quorum_ack: ack,
            transfer_in_progress: false,
            applied_current_term: true,
            applied_index: 42,
        }
    }

    #[test]
    fn fresh_ack_grants_with_remaining_time() {
        let t0 = Instant::now();
        let now = t0 + Duration::from_millis(300);
        let grant = leader(Some(t0)).check(now, LEASE).unwrap();
        assert_eq!(grant.applied_index, 42);
        assert_eq!(grant.term, 7);
        assert_eq!(grant.remaining, Duration::from_millis(500));
    }

    #[test]
    fn zero_ack_is_denied() {
        let now = Instant::now();
        assert_eq!(
            leader(None).check(now, LEASE),
            Err(LeaseDenied::NoQuorumAck)
        );
    }

    #[test]
    fn ack_in_the_future_is_denied() {
        let now = Instant::now();
        let ack = now + Duration::from_millis(1);
        assert_eq!(
            leader(Some(ack)).check(now, LEASE),
            Err(LeaseDenied::AckInFuture)
        );
    }

    #[test]
    fn ack_exactly_now_is_granted() {
        let now = Instant::now();
        assert!(leader(Some(now)).check(now, LEASE).is_ok());
    }

    #[test]
    fn expired_lease_is_denied_at_and_after_the_boundary() {
        let t0 = Instant::now();
        let just_inside = t0 + LEASE - Duration::from_nanos(1);
        assert!(leader(Some(t0)).check(just_inside, LEASE).is_ok());
        assert_eq!(
            leader(Some(t0)).check(t0 + LEASE, LEASE),
            Err(LeaseDenied::Expired {
                age: LEASE,
                lease: LEASE
            })
        );
        assert!(matches!(
            leader(Some(t0)).check(t0 + LEASE * 3, LEASE),
            Err(LeaseDenied::Expired { .. })
        ));
    }

    #[test]
    fn transfer_in_flight_is_denied_even_with_a_fresh_ack() {
        let now = Instant::now();
        let mut b = leader(Some(now));
        b.transfer_in_progress = true;
        assert_eq!(b.check(now, LEASE), Err(LeaseDenied::TransferInProgress));
    }

    #[test]
    fn not_leader_is_denied_even_with_a_fresh_ack() {
        let now = Instant::now();
        for state in [
            State::Follower,
            State::Candidate,
            State::Learner,
            State::Shutdown,
            State::Unknown,
        ] {
            let mut b = leader(Some(now));
            b.state = state;
            assert_eq!(b.check(now, LEASE), Err(LeaseDenied::NotLeader { state }));
        }
    }

    #[test]
    fn leader_without_an_applied_entry_of_its_term_is_denied() {
        let now = Instant::now();
        let mut b = leader(Some(now));
        b.applied_current_term = false;
        assert_eq!(
            b.check(now, LEASE),
            Err(LeaseDenied::CurrentTermNotApplied { term: 7 })
        );
    }

    /// A provider whose basis the test changes, to check the provided methods.
    struct Fake {
        basis: Mutex<LeaseBasis>,
        losses: CallbackRegistry,
    }

    impl LeaseProvider for Fake {
        fn lease_duration(&self) -> Duration {
            LEASE
        }
        fn lease_basis(&self) -> LeaseBasis {
            self.basis.lock().unwrap().clone()
        }
        fn register_leader_loss_callback(&self, callback: Callback) -> Registration {
            self.losses.register(callback)
        }
    }

    #[test]
    fn provided_methods_read_one_basis() {
        let t0 = Instant::now();
        let fake = Fake {
            basis: Mutex::new(leader(Some(t0))),
            losses: CallbackRegistry::new("t-lease"),
        };
        assert_eq!(fake.applied_index(), 42);
        assert_eq!(fake.last_quorum_ack(), Some(t0));
        assert!(fake.check_lease_at(t0 + Duration::from_millis(10)).is_ok());
        // `check_lease` reads the real clock: an ack older than a lease is
        // expired and one an hour ahead is in the future, however slow the
        // run (a clock-free check would grant both or deny neither).
        let old = t0
            .checked_sub(LEASE * 2)
            .expect("the monotonic clock has run for two leases");
        *fake.basis.lock().unwrap() = leader(Some(old));
        assert!(matches!(
            fake.check_lease(),
            Err(LeaseDenied::Expired { .. })
        ));
        *fake.basis.lock().unwrap() = leader(Some(Instant::now() + Duration::from_secs(3600)));
        assert_eq!(fake.check_lease(), Err(LeaseDenied::AckInFuture));
        *fake.basis.lock().unwrap() = leader(Some(t0));
        assert!(matches!(
            fake.check_lease_at(t0 + LEASE),
            Err(LeaseDenied::Expired { .. })
        ));
        *fake.basis.lock().unwrap() = LeaseBasis::none(State::Follower);
        assert_eq!(
            fake.check_lease(),
            Err(LeaseDenied::NotLeader {
                state: State::Follower
            })
        );
        assert_eq!(fake.last_quorum_ack(), None);
        let flag = Arc::new(Mutex::new(false));
        let f = flag.clone();
        let r = fake.register_leader_loss_callback(Arc::new(move || *f.lock().unwrap() = true));
        fake.losses.fire();
        fake.losses.flush();
        assert!(*flag.lock().unwrap());
        r.deregister();
    }
}
