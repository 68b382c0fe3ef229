//! The shared conformance suite against the openraft backend.

fn factory() -> raftengine_openraft::OpenraftFactory {
    let mut config = raftengine_openraft::OpenraftConfig::default();
    // Snapshot and purge often so the snapshot cases exercise transfer and
    // restore within a few hundred writes.
    config.snapshot_interval = 200;
    config.snapshot_keep_entries = 20;
    raftengine_openraft::OpenraftFactory::new(config)
}

raftengine_conformance::conformance_tests!(factory());
