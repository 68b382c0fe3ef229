//! # raftengine-conformance
//!
//! The shared suite every `raftengine` backend must pass: the executable
//! contract of the `raftengine` traits.
//!
//! Each case is a plain `pub async fn` over a [`Factory`](raftengine::Factory)
//! in [`cases`]; it builds a fresh [`Cluster`] of real nodes (own tonic
//! server on a loopback port chosen by the OS, own temporary data dir, the
//! reference [`KvStateMachine`]) and panics with a message naming what
//! failed. Waits poll with deadlines ([`wait_for`]); nothing sleeps for
//! synchronisation.
//!
//! ## Adopting the suite
//!
//! In the backend crate, add this crate, `rstest` and `tokio` (features
//! `macros`, `rt-multi-thread`) as dev-dependencies, then write
//! `tests/conformance.rs`:
//!
//! ```text
//! raftengine_conformance::conformance_tests!(my_backend::MyFactory::default());
//! ```
//!
//! The macro expands to one `#[tokio::test]` per case, named after it, each
//! calling the case with a fresh factory built from the expression. Cases
//! that take a parameter (cluster size, which node fails) are stamped with
//! `rstest`, one test per value, e.g.
//! `replicas_apply_the_identical_sequence::case_2_three_nodes`.

pub mod cases;
pub mod disk;
mod faults;
pub mod forge;
mod harness;
mod kv;
mod pki;

pub use faults::{Link, Network, Proxy, node_ip};
pub use forge::{Answer, Forge, Forger, Forgery};

/// Which node a parameterised case acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// The current leader.
    Leader,
    /// A follower.
    Follower,
}

pub use harness::{Cluster, KvEngine, Node, WAIT, step, wait_for};
pub use kv::{KvHandle, KvResponse, KvSnapshot, KvState, KvStateMachine, put};
pub use pki::TestPki;

/// Every case of the suite, as `module::case`, in the order the macro
/// stamps them: the one registry, read by [`conformance_tests!`] and by the
/// test that checks `docs/conformance.md` lists exactly these.
pub const CASES: &[&str] = conformance_tests!(@registry (@names));

/// Compiles only if `make` builds a [`Factory`](raftengine::Factory); used by
/// [`conformance_tests!`] so that its argument is checked in every build.
#[doc(hidden)]
pub fn assert_factory<F: raftengine::Factory>(make: impl FnOnce() -> F) {
    let _ = make;
}

/// Stamps the forged-message cases ([`cases::forged`]), one test per
/// [`Forgery`], into the calling module. `$forger` is the backend's
/// [`Forger`]; the wire format is private to a backend, so this usually
/// sits in the backend's library tests, beside its wire types:
///
/// ```text
/// raftengine_conformance::forged_tests!(MyFactory::default(), MyForger);
/// ```
#[macro_export]
macro_rules! forged_tests {
    ($factory:expr, $forger:expr) => {
        $crate::conformance_tests!(@registry (@stamp_forged $factory, $forger));
    };
}

/// Stamps one `#[tokio::test]` per conformance case into the calling module.
/// `$factory` is an expression evaluated afresh for every case.
#[macro_export]
macro_rules! conformance_tests {
    ($factory:expr) => {
        $crate::conformance_tests!(@registry (@stamp $factory));
    };
    // The registry: every case, plain ones first, then those stamped once
    // per parameter value. It hands both lists to the rule `$mode` names.
    (@registry ($($mode:tt)*)) => {
        // Braces: the expansion is items for `@stamp`, an expression for
        // `@names`.
        $crate::conformance_tests! { $($mode)* ; cases: [
            basics::single_node_elects_itself,
            basics::propose_returns_response_and_commit_index,
            basics::propose_admin_behaves_like_propose,
            basics::many_proposers_apply_the_identical_sequence,
            basics::follower_propose_is_not_leader_with_hint,
            basics::oversized_proposal_is_a_typed_error,
            basics::dropped_propose_future_does_not_break_the_engine,
            basics::apply_runs_off_the_async_runtime,
            status::status_reports_leader_and_follower_fields,
            status::configuration_lists_voters_with_addresses,
            status::check_serving_only_on_the_leader,
            status::roles_before_the_first_election_and_before_being_added,
            reads::linearizable_read_sees_acknowledged_writes,
            reads::follower_read_is_not_leader,
            reads::many_concurrent_reads_complete,
            reads::lease_holds_on_the_leader_only,
            reads::quorum_ack_advances_under_heartbeats,
            reads::single_voter_leader_has_a_lease,
            lease::lease_ends_within_one_lease_of_isolation,
            lease::transfer_suspends_writes_and_the_lease,
            lease::lease_moves_with_leadership,
            lease::learner_acks_never_count_toward_the_lease,
            callbacks::leadership_callbacks_are_exact_contained_and_deregistrable,
            restart::single_node_restart_restores_state,
            restart::full_cluster_restart_keeps_acknowledged_writes,
            restart::wiped_node_refuses_to_self_bootstrap,
            elections::minority_cannot_commit,
            elections::five_nodes_tolerate_two_failures,
            membership::learner_catches_up_and_is_promoted,
            membership::promote_preconditions_are_enforced,
            membership::stale_prev_index_is_refused,
            membership::concurrent_membership_changes_are_fenced,
            membership::transfer_to_a_named_voter,
            membership::invalid_transfer_targets_are_refused,
            membership::removing_the_leader_hands_over,
            membership::add_voter_replicates,
            membership::a_stopped_learner_does_not_block_commits,
            membership::learner_suffrage_survives_restart,
            membership::transfer_to_any_voter,
            membership::join_as_learner_alarm_fires_when_added_as_voter,
            membership::removed_nodes_stop,
            membership::a_removed_node_the_leader_cannot_reach_stops_on_its_peers_refusals,
            membership::an_answered_change_is_visible_to_the_next_call,
            membership::re_adding_a_member_changes_nothing,
            partitions::rejoining_node_does_not_disrupt_the_leader,
            partitions::progress_continues_under_flapping_links,
            partitions::leadership_callbacks_fire_on_isolation,
            partitions::transfer_to_an_isolated_target_is_aborted,
            partitions::read_right_after_an_election_completes,
            partitions::a_slow_follower_does_not_stall_commits,
            partitions::transfer_to_a_lagging_target_resolves,
            snapshots::restart_from_snapshot_after_compaction,
            snapshots::learner_added_after_compaction_catches_up,
            snapshots::lagging_follower_catches_up_after_compaction,
            snapshots::large_snapshot_transfers_intact,
            linearizability::history_is_linearizable_under_leader_isolation,
            linearizability::history_is_linearizable_under_leadership_transfers,
            linearizability::history_is_linearizable_under_restarts,
            hostile::garbage_on_the_transport_port_is_harmless,
            hostile::invalid_factory_configs_are_refused,
            hostile::corrupt_snapshot_file_is_an_error_at_start,
            hostile::truncated_data_files_are_an_error_or_recovered,
            peers::peers_need_a_certificate_from_the_cluster_ca,
            peers::certificates_rotate_without_a_restart,
            peers::connection_floods_are_bounded,
            peers::another_cluster_is_refused_despite_a_valid_certificate,
        ] ; params: [
            basics::replicas_apply_the_identical_sequence(nodes: usize) =>
                [one_node = 1, three_nodes = 3, five_nodes = 5],
            elections::majority_elects_a_new_leader_after_the_leader_stops(nodes: usize) =>
                [three_nodes = 3, five_nodes = 5],
            partitions::isolated_leader_is_replaced_and_converges(nodes: usize) =>
                [three_nodes = 3, five_nodes = 5],
            restart::restarted_node_catches_up(which: $crate::Which) =>
                [leader = $crate::Which::Leader, follower = $crate::Which::Follower],
            power::acknowledged_writes_survive_power_cuts(cut: $crate::cases::power::PowerCut) =>
                [one_node = $crate::cases::power::PowerCut::OneNode,
                 minority = $crate::cases::power::PowerCut::Minority,
                 every_node = $crate::cases::power::PowerCut::EveryNode],
            power::disk_faults_stop_the_node_closed(fault: $crate::disk::Fault) =>
                [fsync_fails = $crate::disk::Fault::FsyncFails,
                 write_fails = $crate::disk::Fault::WriteFails,
                 disk_full = $crate::disk::Fault::DiskFull],
        ] ; forged: [
            forged::forged_messages_change_nothing =>
                [huge_term = $crate::Forgery::HugeTerm,
                 commit_beyond_log = $crate::Forgery::CommitBeyondLog,
                 removed_notice = $crate::Forgery::RemovedNotice,
                 poisoned_address = $crate::Forgery::PoisonedAddress,
                 snapshot_from_follower = $crate::Forgery::SnapshotFromFollower,
                 oversized_message = $crate::Forgery::OversizedMessage,
                 oversized_snapshot = $crate::Forgery::OversizedSnapshot],
        ] }
    };
    (@stamp $factory:expr ; cases: [$($cases:tt)*] ; params: [$($params:tt)*] ;
        forged: [$($forged:tt)*]) => {
        // The tests exist only under `cargo test`; this checks the factory
        // expression in every build (a doc example with a wrong one fails).
        const _: () = {
            #[allow(dead_code)]
            fn factory_expression_is_a_factory() {
                $crate::assert_factory(|| $factory);
            }
        };
        $crate::conformance_tests!(@cases $factory; $($cases)*);
        $crate::conformance_tests!(@param $factory; $($params)*);
    };
    (@names ; cases: [$($module:ident :: $case:ident),* $(,)?] ;
        params: [$($pmodule:ident :: $pcase:ident ($param:ident : $ty:ty) =>
            [$($name:ident = $value:expr),+ $(,)?]),* $(,)?] ;
        forged: [$($fmodule:ident :: $fcase:ident =>
            [$($fname:ident = $fvalue:expr),+ $(,)?]),* $(,)?]) => {
        &[
            $(concat!(stringify!($module), "::", stringify!($case)),)*
            $(concat!(stringify!($pmodule), "::", stringify!($pcase)),)*
            $(concat!(stringify!($fmodule), "::", stringify!($fcase)),)*
        ]
    };
    (@stamp_forged $factory:expr, $forger:expr ; cases: [$($cases:tt)*] ;
        params: [$($params:tt)*] ;
        forged: [$($module:ident :: $case:ident =>
            [$($name:ident = $value:expr),+ $(,)?]),* $(,)?]) => {
        $(
            #[::rstest::rstest]
            $( #[case::$name($value)] )+
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case(#[case] forgery: $crate::Forgery) {
                $crate::cases::$module::$case($factory, $forger, forgery).await;
            }
        )*
    };
    (@cases $factory:expr; $($module:ident :: $case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                $crate::cases::$module::$case($factory).await;
            }
        )*
    };
    (@param $factory:expr;
        $($module:ident :: $case:ident ($param:ident : $ty:ty) => [$($name:ident = $value:expr),+ $(,)?]),* $(,)?) => {
        $(
            #[::rstest::rstest]
            $( #[case::$name($value)] )+
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case(#[case] $param: $ty) {
                $crate::cases::$module::$case($factory, $param).await;
            }
        )*
    };
}
