//! The shared conformance suite against the raft-rs backend.

fn factory() -> raftengine_etcd::EtcdFactory {
    let mut config = raftengine_etcd::EtcdConfig::default();
    // Snapshot and compact often so the snapshot cases exercise transfer
    // and restore within a few hundred writes.
    config.snapshot_interval = 200;
    config.snapshot_keep_entries = 20;
    raftengine_etcd::EtcdFactory::new(config)
}

raftengine_conformance::conformance_tests!(factory());
