//! State the Raft loop publishes for the engine handle to read without a
//! round trip: status, lease basis, configuration, leadership callbacks and
//! the stop signal.

use std::sync::RwLock;

use raftengine::{CallbackRegistry, Configuration, LeaseBasis, State, Status, StopReason};
use raftengine_kit::raft_log::SyncCounter;
use raftengine_kit::stop_signal::StopSignal;

#[derive(Debug)]
struct View {
    status: Status,
    lease: LeaseBasis,
    configuration: Configuration,
}

/// Shared between the loop thread (writer) and the engine handle (readers).
#[derive(Debug)]
pub(crate) struct Shared {
    view: RwLock<View>,
    pub(crate) loss: CallbackRegistry,
    pub(crate) acquired: CallbackRegistry,
    pub(crate) stop: StopSignal,
    /// The log's fsync count, read live (not as of the last publish).
    log_syncs: SyncCounter,
}

impl Shared {
    pub(crate) fn new(log_syncs: SyncCounter) -> Self {
        Shared {
            view: RwLock::new(View {
                status: Status::new(State::Unknown),
                lease: LeaseBasis::none(State::Unknown),
                configuration: Configuration::default(),
            }),
            loss: CallbackRegistry::new("etcd-leader-loss"),
            acquired: CallbackRegistry::new("etcd-leader-acquired"),
            stop: StopSignal::new(),
            log_syncs,
        }
    }

    pub(crate) fn publish(&self, status: Status, lease: LeaseBasis, configuration: Configuration) {
        // Readers never panic while holding the lock, and the view is plain
        // data, so a poisoned lock is still consistent.
        let mut v = self.view.write().unwrap_or_else(|p| p.into_inner());
        if v.status.state == State::Shutdown {
            return;
        }
        v.status = status;
        v.lease = lease;
        v.configuration = configuration;
    }

    pub(crate) fn publish_stopped(&self, reason: StopReason) {
        {
            let mut v = self.view.write().unwrap_or_else(|p| p.into_inner());
            v.status.state = State::Shutdown;
            v.status.leader = None;
            v.lease = LeaseBasis::none(State::Shutdown);
        }
        self.stop.stop(reason);
    }

    pub(crate) fn status(&self) -> Status {
        let mut status = self
            .view
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .status
            .clone();
        status.log_syncs = self.log_syncs.get();
        status
    }

    pub(crate) fn lease(&self) -> LeaseBasis {
        self.view
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .lease
            .clone()
    }

    pub(crate) fn configuration(&self) -> Configuration {
        self.view
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .configuration
            .clone()
    }

    pub(crate) fn stopped_reason(&self) -> Option<StopReason> {
        self.stop.reason()
    }
}
