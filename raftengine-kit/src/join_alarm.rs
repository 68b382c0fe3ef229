//! The join-as-learner alarm (`Status::join_role_violation`), decided once.
//!
//! A node started with `join_as_learner` is meant to enter the cluster as a
//! learner and become a voter only through a promotion. The alarm is about
//! how it *entered*, not what it is now: a learner that was promoted is a
//! voter too, and must not raise it (issue #13, item 3: it did, after every
//! correct promotion). So the first configuration that lists the node
//! decides, and that first role is recorded in the data dir
//! ([`JOINED_AS_FILE`]), because after a restart the node only knows its
//! latest configuration, not how it got there.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use raftengine::Suffrage;

/// The file, directly in the data dir, that records the role the node had
/// in the first configuration that listed it: `learner` or `voter`.
pub const JOINED_AS_FILE: &str = "joined-as";

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    join_as_learner: bool,
    joined_as: Option<Suffrage>,
    raised: bool,
}

/// Decides the alarm from the configurations a node sees. Cheap to clone;
/// clones share the state.
#[derive(Debug, Clone)]
pub struct JoinAlarm(Arc<Mutex<Inner>>);

impl JoinAlarm {
    /// Reads what `data_dir` recorded. Blocking.
    ///
    /// # Errors
    ///
    /// The record exists but cannot be read or holds neither `learner` nor
    /// `voter`.
    pub fn open(data_dir: &Path, join_as_learner: bool) -> std::io::Result<Self> {
        let path = data_dir.join(JOINED_AS_FILE);
        let joined_as = match std::fs::read(&path) {
            Ok(raw) => Some(match raw.as_slice() {
                b"learner" => Suffrage::Learner,
                b"voter" => Suffrage::Voter,
                other => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!(
                            "{} holds {:?}, neither \"learner\" nor \"voter\"",
                            path.display(),
                            String::from_utf8_lossy(other)
                        ),
                    ));
                }
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        Ok(JoinAlarm(Arc::new(Mutex::new(Inner {
            path,
            join_as_learner,
            joined_as,
            raised: false,
        }))))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Plain values set in one assignment each.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True when [`observe`](Self::observe) has something to record, i.e.
    /// would do blocking I/O: the node is listed for the first time. A
    /// caller on the async runtime moves that call to a blocking thread.
    pub fn would_record(&self, role: Option<Suffrage>) -> bool {
        role.is_some() && self.lock().joined_as.is_none()
    }

    /// Takes the local node's role in the configuration it now knows
    /// (`None`: not listed), records the first role durably, and returns
    /// whether the alarm is raised. Logs an error when it goes up. Blocking
    /// when [`would_record`](Self::would_record) says so.
    pub fn observe(&self, role: Option<Suffrage>) -> bool {
        let mut inner = self.lock();
        if let (Some(r), None) = (role, inner.joined_as) {
            let text: &[u8] = match r {
                Suffrage::Learner => b"learner",
                Suffrage::Voter => b"voter",
            };
            // A record lost to a crash is made again from the next
            // configuration seen; only the alarm's memory of a direct add
            // across that crash is lost, never a false alarm raised.
            if let Err(e) = crate::durable::write_file(&inner.path, text) {
                tracing::warn!(error = %e, path = %inner.path.display(), "recording the role this node joined with failed");
            }
            inner.joined_as = Some(r);
        }
        let raised = inner.join_as_learner
            && inner.joined_as == Some(Suffrage::Voter)
            && role == Some(Suffrage::Voter);
        if raised && !inner.raised {
            tracing::error!(
                "node was started with join_as_learner but was added straight as a voter, \
                 not as a learner later promoted"
            );
        }
        inner.raised = raised;
        raised
    }

    /// Whether the alarm is up, as of the last [`observe`](Self::observe).
    pub fn raised(&self) -> bool {
        self.lock().raised
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_promotion_is_no_alarm_and_a_direct_add_is_one_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let promoted = dir.path().join("promoted");
        std::fs::create_dir_all(&promoted).unwrap();
        let a = JoinAlarm::open(&promoted, true).unwrap();
        assert!(!a.observe(None));
        assert!(a.would_record(Some(Suffrage::Learner)));
        assert!(!a.observe(Some(Suffrage::Learner)));
        assert!(!a.would_record(Some(Suffrage::Voter)));
        assert!(
            !a.observe(Some(Suffrage::Voter)),
            "a promotion raised the alarm"
        );
        let a = JoinAlarm::open(&promoted, true).unwrap();
        assert!(
            !a.observe(Some(Suffrage::Voter)),
            "a restart after a promotion raised it"
        );

        let direct = dir.path().join("direct");
        std::fs::create_dir_all(&direct).unwrap();
        let b = JoinAlarm::open(&direct, true).unwrap();
        assert!(b.observe(Some(Suffrage::Voter)));
        assert!(b.raised());
        let b = JoinAlarm::open(&direct, true).unwrap();
        assert!(
            b.observe(Some(Suffrage::Voter)),
            "the alarm was forgotten by a restart"
        );
        assert!(!b.observe(None), "removed: no longer a voter");

        let plain = dir.path().join("plain");
        std::fs::create_dir_all(&plain).unwrap();
        let c = JoinAlarm::open(&plain, false).unwrap();
        assert!(
            !c.observe(Some(Suffrage::Voter)),
            "not started with join_as_learner"
        );
        std::fs::write(plain.join(JOINED_AS_FILE), b"boss").unwrap();
        assert!(JoinAlarm::open(&plain, false).is_err());
    }
}
