//! The shared conformance suite against the raft-rs backend.

raftengine_conformance::conformance_tests!(raftengine_etcd::EtcdFactory::default());
