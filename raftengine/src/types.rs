//! Value types shared by every trait: roles, servers, configurations,
//! status snapshots and proposal results.

use std::fmt;
use std::time::Duration;

/// A log index. Index 0 means "nothing": Raft logs start at 1.
pub type Index = u64;

/// A Raft term.
pub type Term = u64;

/// The role of the local node as the engine last observed it.
///
/// Pre-candidates (pre-vote) are reported as [`State::Candidate`].
///
/// `#[non_exhaustive]`: a later release may add a state, so a `match`
/// outside this crate needs a wildcard arm:
///
/// ```compile_fail
/// use raftengine::State;
/// fn writable(s: State) -> bool {
///     match s {
///         State::Leader => true,
///         State::Follower | State::Candidate | State::Learner | State::Shutdown | State::Unknown => false,
///     }
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum State {
    /// Replicates the leader's log; does not accept proposals.
    Follower,
    /// Campaigning for leadership (including the pre-vote phase).
    Candidate,
    /// Accepts proposals and serves reads.
    Leader,
    /// A non-voting member that replicates and applies the log (listed as
    /// a learner in the configuration it knows).
    Learner,
    /// The engine has been shut down or has stopped on a fatal error.
    Shutdown,
    /// Not listed in the configuration the node knows — a joiner no admin
    /// call has added yet — or the engine cannot tell yet. A bootstrap voter
    /// is `Follower` (or campaigning, or leading) from the moment
    /// [`Factory::create`](crate::Factory::create) returns, never `Unknown`.
    Unknown,
}

impl State {
    /// The lower-case name used in logs and JSON (`"leader"`, `"follower"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            State::Follower => "follower",
            State::Candidate => "candidate",
            State::Leader => "leader",
            State::Learner => "learner",
            State::Shutdown => "shutdown",
            State::Unknown => "unknown",
        }
    }

    /// True only for [`State::Leader`].
    pub fn is_leader(self) -> bool {
        self == State::Leader
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a member votes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Suffrage {
    /// Counts toward elections and commit quorums.
    Voter,
    /// Receives and applies the log but never counts toward a quorum.
    Learner,
}

impl Suffrage {
    /// `"voter"` or `"learner"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Suffrage::Voter => "voter",
            Suffrage::Learner => "learner",
        }
    }
}

impl fmt::Display for Suffrage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One member of a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Server {
    /// The node's id; unique in the cluster and never reused for another data dir.
    pub id: String,
    /// Where peers reach the node's transport, e.g. `"127.0.0.1:7001"`.
    pub address: String,
    /// Voter or learner.
    pub suffrage: Suffrage,
}

impl Server {
    /// A voting member.
    pub fn voter(id: impl Into<String>, address: impl Into<String>) -> Self {
        Server {
            id: id.into(),
            address: address.into(),
            suffrage: Suffrage::Voter,
        }
    }

    /// A non-voting member.
    pub fn learner(id: impl Into<String>, address: impl Into<String>) -> Self {
        Server {
            id: id.into(),
            address: address.into(),
            suffrage: Suffrage::Learner,
        }
    }
}

/// The cluster membership as of a log index.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Configuration {
    /// The log index of the entry that established this configuration
    /// (0 for a configuration that only exists in the bootstrap input).
    /// Pass it as `prev_index` to [`Admin`](crate::Admin) calls to make
    /// them conditional on nobody having changed membership since.
    pub index: Index,
    /// Every member, voters and learners, sorted by id.
    pub servers: Vec<Server>,
}

impl Configuration {
    /// The members that vote.
    pub fn voters(&self) -> impl Iterator<Item = &Server> {
        self.servers
            .iter()
            .filter(|s| s.suffrage == Suffrage::Voter)
    }

    /// The members that do not vote.
    pub fn learners(&self) -> impl Iterator<Item = &Server> {
        self.servers
            .iter()
            .filter(|s| s.suffrage == Suffrage::Learner)
    }

    /// The member with this id, if any.
    pub fn server(&self, id: &str) -> Option<&Server> {
        self.servers.iter().find(|s| s.id == id)
    }
}

/// Who leads, as far as the local node knows.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LeaderInfo {
    /// The leader's node id.
    pub id: String,
    /// The leader's transport address (empty if the local node does not know it).
    pub address: String,
}

impl fmt::Display for LeaderInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.address.is_empty() {
            write!(f, "{}", self.id)
        } else {
            write!(f, "{}@{}", self.id, self.address)
        }
    }
}

/// A point-in-time view of the local node, for dashboards and health checks.
///
/// Fields are read without a barrier; two fields may come from slightly
/// different moments. Use [`LeaderView`](crate::LeaderView) for decisions.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Status {
    /// The local role.
    pub state: State,
    /// The known leader, if any.
    pub leader: Option<LeaderInfo>,
    /// The current term.
    pub term: Term,
    /// Highest index known committed (and durable on this node).
    pub commit_index: Index,
    /// Highest index applied to the local state machine.
    pub applied_index: Index,
    /// Highest index in the local log.
    pub last_log_index: Index,
    /// Index covered by the newest local snapshot (0 if none).
    pub last_snapshot_index: Index,
    /// Committed entries not yet applied (`commit_index - applied_index`).
    pub fsm_pending: u64,
    /// Number of other members in the configuration (voters and learners).
    pub num_peers: u64,
    /// Time since the leader was last heard from: `Some(0)` on the leader,
    /// `None` when no leader has been heard from.
    pub last_contact: Option<Duration>,
    /// The target of a leadership transfer in progress on this leader.
    /// Proposals are refused with
    /// [`Error::TransferInProgress`](crate::Error::TransferInProgress) while it is set.
    pub lead_transferee: Option<String>,
    /// Index of the latest configuration known locally.
    pub configuration_index: Index,
    /// True while a membership change is proposed but not yet applied.
    pub pending_conf_change: bool,
    /// The join-as-learner alarm: true while this node, started with
    /// [`FactoryConfig::join_as_learner`](crate::FactoryConfig::join_as_learner),
    /// is a voter *and the first configuration that listed it made it a
    /// voter* (it was added with [`Admin::add_voter`](crate::Admin::add_voter),
    /// never as a learner). A learner promoted with
    /// [`Admin::promote_learner`](crate::Admin::promote_learner) is not an
    /// alarm. The first role is recorded in the data dir, so the answer
    /// survives restarts. The node keeps running; the backend also logs an
    /// error on the edge. Operators alert on it: someone added a node meant
    /// to catch up first straight into the quorum.
    pub join_role_violation: bool,
    /// Proposals this node accepted whose outcome it has not delivered yet
    /// (the waiters it holds). It returns to 0 when the node is idle; a
    /// number that only grows is a leak.
    pub pending_proposals: u64,
    /// Fsyncs of this node's Raft log files completed since the engine
    /// started, counted where the backend calls `fdatasync`/`fsync` (not
    /// where it believes it asked for one). Entries, votes and hard state
    /// are durable only through these; the bench divides the growth by the
    /// writes served to get "fsyncs per write". Group commit keeps it well
    /// under one per write under load.
    pub log_syncs: u64,
}

impl Status {
    /// A status with every counter at zero, for a node in `state`.
    pub fn new(state: State) -> Self {
        Status {
            state,
            leader: None,
            term: 0,
            commit_index: 0,
            applied_index: 0,
            last_log_index: 0,
            last_snapshot_index: 0,
            fsm_pending: 0,
            num_peers: 0,
            last_contact: None,
            lead_transferee: None,
            configuration_index: 0,
            pending_conf_change: false,
            join_role_violation: false,
            pending_proposals: 0,
            log_syncs: 0,
        }
    }
}

/// What a committed proposal produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProposalResult<R> {
    /// The log index the proposal was committed and applied at.
    pub commit_index: Index,
    /// What [`StateMachine::apply`](crate::StateMachine::apply) returned for it
    /// on this node.
    pub response: R,
}
