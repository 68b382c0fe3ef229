//! [`OpenraftConfig`]: the engine-specific knobs of the openraft backend.

use std::time::Duration;

use raftengine::{Error, Result};

/// Settings of the openraft backend. The defaults suit a LAN or loopback
/// cluster; [`OpenraftConfig::validate`] rejects unsafe combinations.
///
/// Build one from the defaults with the `with_*` setters:
///
/// ```
/// use std::time::Duration;
/// let cfg = raftengine_openraft::OpenraftConfig::default()
///     .with_snapshot_interval(50_000)
///     .with_heartbeat_interval(Duration::from_millis(50));
/// cfg.validate().unwrap();
/// assert!(cfg.lease_duration() < cfg.election_timeout_max);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OpenraftConfig {
    /// Lower bound of the randomized election timeout.
    pub election_timeout_min: Duration,
    /// Upper bound of the randomized election timeout. openraft also uses it
    /// as the leader lease: a follower that heard from a leader refuses votes
    /// for this long.
    pub election_timeout_max: Duration,
    /// Interval between leader heartbeats.
    pub heartbeat_interval: Duration,
    /// Safety margin subtracted from `election_timeout_max` to get the lease
    /// this engine grants (covers clock-rate drift between nodes).
    pub lease_margin: Duration,
    /// Largest proposal accepted by `propose`, in bytes.
    pub max_proposal_bytes: usize,
    /// Entries per append request, at most.
    pub max_payload_entries: u64,
    /// Deadline for connecting to a peer and for each snapshot chunk.
    pub rpc_timeout: Duration,
    /// How long a peer may take to install a received snapshot and answer.
    pub snapshot_install_timeout: Duration,
    /// Take a state-machine snapshot after this many entries since the last
    /// one; the log before it is then purged. Default 100,000 (etcd's
    /// default `--snapshot-count`): each snapshot serializes the whole
    /// state, so a small interval with a large state spends most of the CPU
    /// writing snapshots (measured in docs/benchmarks.md).
    pub snapshot_interval: u64,
    /// Entries kept before the snapshot index when purging, so a follower
    /// that lags a little catches up from the log instead of a snapshot.
    pub snapshot_keep_entries: u64,
    /// How long [`Admin::transfer_leadership`](raftengine::Admin::transfer_leadership)
    /// waits for the target to lead before reporting the transfer aborted.
    pub transfer_timeout: Duration,
    /// Deadline of a linearizable read (the confirming heartbeat round).
    pub read_timeout: Duration,
}

impl Default for OpenraftConfig {
    fn default() -> Self {
        OpenraftConfig {
            election_timeout_min: Duration::from_millis(1000),
            election_timeout_max: Duration::from_millis(1500),
            heartbeat_interval: Duration::from_millis(100),
            lease_margin: Duration::from_millis(150),
            max_proposal_bytes: 8 * 1024 * 1024,
            max_payload_entries: 1024,
            rpc_timeout: Duration::from_secs(2),
            snapshot_install_timeout: Duration::from_secs(60),
            snapshot_interval: 100_000,
            snapshot_keep_entries: 5_000,
            transfer_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(5),
        }
    }
}

raftengine_kit::config_setters!(OpenraftConfig {
    with_election_timeout_min => election_timeout_min: Duration,
    with_election_timeout_max => election_timeout_max: Duration,
    with_heartbeat_interval => heartbeat_interval: Duration,
    with_lease_margin => lease_margin: Duration,
    with_max_proposal_bytes => max_proposal_bytes: usize,
    with_max_payload_entries => max_payload_entries: u64,
    with_rpc_timeout => rpc_timeout: Duration,
    with_snapshot_install_timeout => snapshot_install_timeout: Duration,
    with_snapshot_interval => snapshot_interval: u64,
    with_snapshot_keep_entries => snapshot_keep_entries: u64,
    with_transfer_timeout => transfer_timeout: Duration,
    with_read_timeout => read_timeout: Duration,
});

impl OpenraftConfig {
    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] when a value is zero where it must not be,
    /// the election timeouts are not ordered and well above the heartbeat
    /// interval, or the lease would be zero.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::InvalidConfig(m.to_owned()));
        if self.heartbeat_interval.is_zero() {
            return bad("heartbeat_interval must be positive");
        }
        if self.election_timeout_min <= self.heartbeat_interval * 2 {
            return bad("election_timeout_min must be more than twice heartbeat_interval");
        }
        if self.election_timeout_max <= self.election_timeout_min {
            return bad("election_timeout_max must be above election_timeout_min");
        }
        if self.max_proposal_bytes == 0 || self.max_payload_entries == 0 {
            return bad("max_proposal_bytes and max_payload_entries must be positive");
        }
        if self.snapshot_interval == 0 {
            return bad("snapshot_interval must be positive");
        }
        if self.rpc_timeout.is_zero()
            || self.transfer_timeout.is_zero()
            || self.read_timeout.is_zero()
            || self.snapshot_install_timeout.is_zero()
        {
            return bad("timeouts must be positive");
        }
        if self.lease_duration().is_zero() {
            return bad("lease_margin leaves no lease: it must be below election_timeout_max");
        }
        Ok(())
    }

    /// The lease this engine grants a leader, measured from the send time of
    /// the heartbeat round a quorum acknowledged.
    pub fn lease_duration(&self) -> Duration {
        self.election_timeout_max.saturating_sub(self.lease_margin)
    }

    /// Largest gRPC message: a full append batch of maximal proposals is
    /// split by openraft, so this only has to hold one proposal plus framing.
    /// The largest message this configuration sends: an append holding
    /// one proposal of the largest size, with room for framing
    /// (`PeerLimits::max_message_bytes` must hold it).
    pub(crate) fn largest_message(&self) -> usize {
        self.max_proposal_bytes.saturating_mul(2)
    }

    fn millis(d: Duration) -> u64 {
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
    }

    /// The openraft configuration these settings stand for.
    pub(crate) fn to_openraft(&self) -> Result<openraft::Config> {
        let max = Self::millis(self.election_timeout_max);
        let cfg = openraft::Config {
            cluster_name: "raftengine".into(),
            election_timeout_min: Self::millis(self.election_timeout_min),
            election_timeout_max: max,
            heartbeat_interval: Self::millis(self.heartbeat_interval),
            install_snapshot_timeout: Self::millis(self.rpc_timeout),
            max_payload_entries: self.max_payload_entries,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_interval),
            max_in_snapshot_log_to_keep: self.snapshot_keep_entries,
            enable_pre_vote: Some(true),
            // The old leader of a partial partition keeps the rest from
            // electing while its heartbeats still arrive; after losing its
            // quorum it goes quiet in phases of this length (openraft's
            // minimum, lease + election_timeout_max).
            quorum_loss_probe_interval: Some(max.saturating_mul(2)),
            // A follower whose log went backwards (a wiped node rejoining
            // under its old id) would otherwise make the leader panic; the
            // leader resends it everything instead.
            allow_log_reversion: Some(true),
            // A restarted leader must win a new election. Restoring its old
            // leadership is only safe if the state machine was durable up to
            // the commit index; ours is rebuilt from a snapshot and the log,
            // and the committed id is not fsynced on its own.
            enable_leader_restore: Some(false),
            ..openraft::Config::default()
        };
        cfg.validate()
            .map_err(|e| Error::InvalidConfig(format!("openraft config: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_translates() {
        let c = OpenraftConfig::default();
        c.validate().unwrap();
        let o = c.to_openraft().unwrap();
        assert_eq!(o.election_timeout_max, 1500);
        assert!(c.lease_duration() < c.election_timeout_max);
    }

    #[test]
    fn bad_values_are_typed_errors() {
        type Mutation = Box<dyn Fn(&mut OpenraftConfig)>;
        let cases: Vec<Mutation> = vec![
            Box::new(|c| c.heartbeat_interval = Duration::ZERO),
            Box::new(|c| c.election_timeout_min = Duration::from_millis(150)),
            Box::new(|c| c.election_timeout_max = c.election_timeout_min),
            Box::new(|c| c.max_proposal_bytes = 0),
            Box::new(|c| c.snapshot_interval = 0),
            Box::new(|c| c.lease_margin = Duration::from_secs(60)),
        ];
        for f in cases {
            let mut c = OpenraftConfig::default();
            f(&mut c);
            assert!(matches!(c.validate(), Err(Error::InvalidConfig(_))));
        }
    }
}
