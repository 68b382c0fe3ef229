//! `storage`'s tests: reopening, the watermark, and the kit's log checkers.

use super::*;
use raft::Storage as _;

fn entry(index: u64, term: u64) -> Entry {
    let mut e = Entry::default();
    e.index = index;
    e.term = term;
    e.data = format!("e{index}").into_bytes().into();
    e
}

#[test]
fn entries_and_hard_state_survive_reopen_and_tails_are_replaced() {
    let dir = tempfile::tempdir().unwrap();
    {
        let o = RaftStorage::open(dir.path(), "n1").unwrap();
        assert!(!o.existed);
        o.storage
            .initialize(
                dir.path(),
                "n1",
                &[],
                &[Member {
                    raft_id: 7,
                    id: "n1".into(),
                    address: "a:1".into(),
                }],
            )
            .unwrap();
        let mut hs = HardState::default();
        hs.term = 2;
        hs.vote = 7;
        hs.commit = 2;
        o.storage
            .persist(&[entry(1, 1), entry(2, 1), entry(3, 1)], Some(&hs), true)
            .unwrap();
        // A new leader overwrites index 3 onward.
        o.storage.persist(&[entry(3, 2)], None, true).unwrap();
    }
    let o = RaftStorage::open(dir.path(), "n1").unwrap();
    assert!(o.existed);
    assert_eq!(o.members.len(), 1);
    let s = o.storage;
    let st = s.initial_state().unwrap();
    assert_eq!(st.hard_state.term, 2);
    assert_eq!(st.hard_state.commit, 2);
    assert_eq!(s.first_index().unwrap(), 1);
    assert_eq!(s.last_index().unwrap(), 3);
    assert_eq!(s.term(3).unwrap(), 2);
    let es = s
        .entries(1, 4, None, GetEntriesContext::empty(false))
        .unwrap();
    assert_eq!(es.len(), 3);
    assert_eq!(&es[0].data[..], b"e1");
}

fn hard_state(term: u64, vote: u64, commit: u64) -> HardState {
    let mut hs = HardState::default();
    hs.term = term;
    hs.vote = vote;
    hs.commit = commit;
    hs
}

/// A node with entries 1..=20 and a vote, all synced; returns the dir.
fn written_log() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let o = RaftStorage::open(dir.path(), "n1").unwrap();
    o.storage.initialize(dir.path(), "n1", &[], &[]).unwrap();
    let entries: Vec<_> = (1..=20).map(|i| entry(i, 1)).collect();
    o.storage
        .persist(&entries, Some(&hard_state(1, 0, 10)), true)
        .unwrap();
    o.storage
        .persist(&[], Some(&hard_state(2, 3, 10)), true)
        .unwrap();
    dir
}

#[test]
fn a_replaced_tail_and_an_installed_snapshot_lower_the_mark() {
    let dir = written_log();
    {
        let o = RaftStorage::open(dir.path(), "n1").unwrap();
        // A new leader replaces 15.. with a shorter tail, and the node
        // stops before an fsync covers it: the mark was lowered before
        // the write, so the shorter log is no false alarm.
        o.storage
            .persist(&[entry(15, 2), entry(16, 2)], None, false)
            .unwrap();
    }
    {
        let o = RaftStorage::open(dir.path(), "n1").expect("a replaced tail is not a loss");
        assert_eq!(o.storage.last_index().unwrap(), 16);
        let mut meta = SnapshotMetadata::default();
        meta.index = 12;
        meta.term = 1;
        o.storage.install_snapshot(&meta, b"", None).unwrap();
        assert_eq!(o.storage.last_index().unwrap(), 12);
    }
    let o = RaftStorage::open(dir.path(), "n1").expect("an installed snapshot is not a loss");
    assert_eq!(o.storage.first_index().unwrap(), 13);
    assert_eq!(o.storage.last_index().unwrap(), 12);
}

/// The log as the kit's checkers drive it.
struct EtcdLog;

impl raftengine_kit::log_checks::LogUnderTest for EtcdLog {
    fn append(
        &self,
        dir: &Path,
        id: &str,
        first: u64,
        last: u64,
        term: u64,
    ) -> std::result::Result<(), String> {
        let o = RaftStorage::open(dir, id).map_err(|e| e.to_string())?;
        if !o.existed {
            o.storage
                .initialize(dir, id, &[], &[])
                .map_err(|e| e.to_string())?;
        }
        let entries: Vec<_> = (first..=last).map(|i| entry(i, term)).collect();
        o.storage
            .persist(&entries, None, true)
            .map_err(|e| e.to_string())
    }

    fn commit_and_vote(
        &self,
        dir: &Path,
        id: &str,
        commit: u64,
        term: u64,
    ) -> std::result::Result<(), String> {
        let o = RaftStorage::open(dir, id).map_err(|e| e.to_string())?;
        o.storage
            .persist(&[], Some(&hard_state(term, 3, commit)), true)
            .map_err(|e| e.to_string())
    }

    fn reopen(
        &self,
        dir: &Path,
        id: &str,
    ) -> std::result::Result<raftengine_kit::log_checks::Found, String> {
        let o = RaftStorage::open(dir, id).map_err(|e| format!("{e:#}"))?;
        let st = o.storage.initial_state().map_err(|e| e.to_string())?;
        let (first, last) = (
            o.storage.first_index().map_err(|e| e.to_string())?,
            o.storage.last_index().map_err(|e| e.to_string())?,
        );
        let read = o
            .storage
            .entries(first, last + 1, None, GetEntriesContext::empty(false))
            .map_err(|e| format!("read entries {first}..={last}: {e}"))?;
        if read.len() as u64 != last + 1 - first {
            return Err(format!("read {} entries of {first}..={last}", read.len()));
        }
        Ok(raftengine_kit::log_checks::Found {
            last_index: last,
            vote_term: st.hard_state.term,
        })
    }
}

#[test]
fn the_log_passes_the_kit_checks() {
    raftengine_kit::log_checks::check_all(&EtcdLog);
}
