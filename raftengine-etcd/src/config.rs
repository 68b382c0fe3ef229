//! [`EtcdConfig`]: the engine-specific knobs of the raft-rs backend.

use std::time::Duration;

use raftengine::{Error, Result};

/// Settings of the raft-rs backend. The defaults suit a LAN or loopback
/// cluster; [`EtcdConfig::validate`] rejects unsafe combinations.
///
/// Build one from the defaults with the `with_*` setters:
///
/// ```
/// use std::time::Duration;
/// let cfg = raftengine_etcd::EtcdConfig::default()
///     .with_tick_interval(Duration::from_millis(20))
///     .with_election_tick(25);
/// cfg.validate().unwrap();
/// assert_eq!(cfg.election_timeout(), Duration::from_millis(500));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EtcdConfig {
    /// Length of one Raft tick.
    pub tick_interval: Duration,
    /// Ticks without a leader before a follower campaigns (raft-rs
    /// randomizes in `[election_tick, 2 * election_tick)`).
    pub election_tick: usize,
    /// Ticks between leader heartbeats.
    pub heartbeat_tick: usize,
    /// Largest append message, in bytes (raft-rs's default 0 would mean one
    /// entry per append).
    pub max_size_per_msg: u64,
    /// Appends in flight per follower before the leader waits for acks.
    pub max_inflight_msgs: usize,
    /// Largest proposal accepted by `propose`, in bytes.
    pub max_proposal_bytes: usize,
    /// Proposals and reads waiting for the Raft loop, at most; callers wait
    /// for room beyond that (backpressure instead of unbounded memory).
    pub max_pending_requests: usize,
    /// Deadline of one transport call to a peer.
    pub rpc_timeout: Duration,
    /// Safety margin subtracted from the minimum election timeout to get the
    /// lease duration (covers clock-rate drift between nodes and one tick of
    /// granularity in raft-rs's election timer).
    pub lease_margin: Duration,
    /// Take a state-machine snapshot after this many entries were applied
    /// since the last one; the log before it is then compacted. Default
    /// 100,000 (etcd's default `--snapshot-count`): each snapshot serializes
    /// the whole state, so a small interval with a large state spends most
    /// of the CPU writing snapshots (measured in docs/benchmarks.md).
    pub snapshot_interval: u64,
    /// Entries kept before the snapshot index when compacting, so a follower
    /// that lags a little catches up from the log instead of a snapshot.
    pub snapshot_keep_entries: u64,
    /// How long the Raft loop keeps polling for the next event (yielding the
    /// CPU between polls) before it sleeps; see
    /// [`blocking_recv_spinning`](raftengine_kit::idle_spin::blocking_recv_spinning).
    /// A durable write waits for several such wake-ups (proposal, follower
    /// append, follower ack), each tens of microseconds on a VM. Measured on
    /// the bench's 3-node loopback cluster (docs/benchmarks.md): single-client
    /// p50 318–350 µs with 300 µs against 482–557 µs with none, and 256
    /// clients 50–53 k against 46–47 k writes/s. The price is CPU while a
    /// node is nearly idle, at most this much per Raft round: in an idle
    /// 3-node cluster 0.6 % of a core more per node. `Duration::ZERO` turns
    /// it off; it must be shorter than `tick_interval`. Default 300 µs,
    /// about one durable write round trip.
    pub idle_spin: Duration,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            tick_interval: Duration::from_millis(50),
            election_tick: 20,
            heartbeat_tick: 2,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            max_proposal_bytes: 8 * 1024 * 1024,
            max_pending_requests: 16 * 1024,
            rpc_timeout: Duration::from_secs(2),
            lease_margin: Duration::from_millis(150),
            snapshot_interval: 100_000,
            snapshot_keep_entries: 5_000,
            idle_spin: Duration::from_micros(300),
        }
    }
}

raftengine_kit::config_setters!(EtcdConfig {
    with_tick_interval => tick_interval: Duration,
    with_election_tick => election_tick: usize,
    with_heartbeat_tick => heartbeat_tick: usize,
    with_max_size_per_msg => max_size_per_msg: u64,
    with_max_inflight_msgs => max_inflight_msgs: usize,
    with_max_proposal_bytes => max_proposal_bytes: usize,
    with_max_pending_requests => max_pending_requests: usize,
    with_rpc_timeout => rpc_timeout: Duration,
    with_lease_margin => lease_margin: Duration,
    with_snapshot_interval => snapshot_interval: u64,
    with_snapshot_keep_entries => snapshot_keep_entries: u64,
    with_idle_spin => idle_spin: Duration,
});

impl EtcdConfig {
    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] when a value is zero where it must not be,
    /// the election timeout is not well above the heartbeat interval, the
    /// lease would be zero or negative, or `idle_spin` is not shorter than a
    /// tick.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::InvalidConfig(m.to_owned()));
        if self.tick_interval.is_zero() {
            return bad("tick_interval must be positive");
        }
        if self.heartbeat_tick == 0 {
            return bad("heartbeat_tick must be positive");
        }
        if self.election_tick <= self.heartbeat_tick * 2 {
            return bad("election_tick must be more than twice heartbeat_tick");
        }
        if self.max_size_per_msg == 0 {
            return bad("max_size_per_msg must be positive (0 means one entry per append)");
        }
        if self.max_inflight_msgs == 0 || self.max_pending_requests == 0 {
            return bad("max_inflight_msgs and max_pending_requests must be positive");
        }
        if self.max_proposal_bytes == 0 {
            return bad("max_proposal_bytes must be positive");
        }
        if self.snapshot_interval == 0 {
            return bad("snapshot_interval must be positive");
        }
        if self.rpc_timeout.is_zero() {
            return bad("rpc_timeout must be positive");
        }
        if self.idle_spin >= self.tick_interval {
            return bad("idle_spin must be shorter than tick_interval");
        }
        if self.lease_duration().is_zero() {
            return bad(
                "lease_margin leaves no lease: it must be below (election_tick - 1) * tick_interval",
            );
        }
        Ok(())
    }

    /// The minimum election timeout.
    pub fn election_timeout(&self) -> Duration {
        self.tick_interval * self.election_tick as u32
    }

    /// The lease: a follower that heard from the leader refuses to vote for
    /// `election_tick` of its own ticks, which can be as short as
    /// `(election_tick - 1) * tick_interval` of real time (the first tick may
    /// come right after the reset); the margin covers clock drift.
    pub fn lease_duration(&self) -> Duration {
        let floor = self.tick_interval * (self.election_tick.saturating_sub(1) as u32);
        floor.saturating_sub(self.lease_margin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_lease_is_below_election_timeout() {
        let c = EtcdConfig::default();
        c.validate().unwrap();
        assert!(c.lease_duration() < c.election_timeout());
        assert!(!c.lease_duration().is_zero());
    }

    #[test]
    fn bad_values_are_typed_errors() {
        type Mutation = Box<dyn Fn(&mut EtcdConfig)>;
        let cases: Vec<Mutation> = vec![
            Box::new(|c| c.tick_interval = Duration::ZERO),
            Box::new(|c| c.heartbeat_tick = 0),
            Box::new(|c| c.election_tick = 4),
            Box::new(|c| c.max_size_per_msg = 0),
            Box::new(|c| c.max_proposal_bytes = 0),
            Box::new(|c| c.lease_margin = Duration::from_secs(60)),
            Box::new(|c| c.idle_spin = Duration::from_secs(1)),
        ];
        for f in cases {
            let mut c = EtcdConfig::default();
            f(&mut c);
            assert!(matches!(c.validate(), Err(Error::InvalidConfig(_))));
        }
    }
}
