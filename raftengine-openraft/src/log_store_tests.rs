//! openraft's own storage suite plus what it does not check: reopening,
//! a torn tail, corruption.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::Path;

use openraft::storage::{RaftLogReader, RaftLogStorage, RaftLogStorageExt};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::{EntryPayload, Membership, StorageError};
use raftengine_kit::SnapshotDir;
use tempfile::TempDir;

use crate::log_store::LogStore;
use crate::state_machine::StateMachineAdapter;
use crate::types::{Committed, Entry, LogId, Request, TypeConfig, Vote};

/// A state machine that sums little-endian u64 entries.
#[derive(Default)]
struct Sum(u64);

struct SumSnapshot(u64);

impl raftengine::Snapshot for SumSnapshot {
    fn write_to(&mut self, w: &mut dyn Write) -> std::io::Result<u64> {
        w.write_all(&self.0.to_le_bytes())?;
        Ok(8)
    }
}

impl raftengine::StateMachine for Sum {
    type Response = u64;
    type Snapshot = SumSnapshot;
    fn apply(&mut self, _index: u64, data: &[u8]) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&data[..8]);
        self.0 += u64::from_le_bytes(b);
        self.0
    }
    fn snapshot(&mut self) -> std::io::Result<SumSnapshot> {
        Ok(SumSnapshot(self.0))
    }
    fn restore(&mut self, r: &mut dyn Read) -> std::io::Result<()> {
        let mut b = [0u8; 8];
        r.read_exact(&mut b)?;
        self.0 = u64::from_le_bytes(b);
        Ok(())
    }
}

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineAdapter<Sum>, TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(TempDir, LogStore, StateMachineAdapter<Sum>), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let opened = tokio::task::spawn_blocking(move || LogStore::open(&path, "n1"))
            .await
            .unwrap()
            .unwrap();
        let snapshots = SnapshotDir::new(dir.path()).unwrap();
        let sm = StateMachineAdapter::open(Sum::default(), snapshots).unwrap();
        Ok((dir, opened.store, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite() {
    Suite::test_all(Builder).await.unwrap();
}

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(Committed::new(term), index)
}

fn entry(term: u64, index: u64) -> Entry {
    let payload = if index == 0 {
        EntryPayload::Membership(Membership::new_with_defaults(vec![BTreeSet::from([1])], []))
    } else {
        EntryPayload::Normal(Request(index.to_le_bytes().to_vec().into()))
    };
    Entry {
        log_id: log_id(term, index),
        payload,
    }
}

async fn open(dir: &Path) -> LogStore {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || LogStore::open(&dir, "n1").map(|o| o.store))
        .await
        .unwrap()
        .unwrap()
}

async fn indexes(store: &mut LogStore) -> Vec<u64> {
    store
        .try_get_log_entries(0..u64::MAX)
        .await
        .unwrap()
        .iter()
        .map(|e| e.log_id.index)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = open(dir.path()).await;
        s.blocking_append((0..10).map(|i| entry(1, i)))
            .await
            .unwrap();
        s.save_vote(&Vote::new_committed(2, 7)).await.unwrap();
        s.truncate_after(Some(log_id(1, 6))).await.unwrap();
        assert_eq!(indexes(&mut s).await, (0..=6).collect::<Vec<_>>());
        s.blocking_append((7..9).map(|i| entry(2, i)))
            .await
            .unwrap();
        s.save_committed(Some(log_id(2, 8))).await.unwrap();
        s.purge(log_id(1, 2)).await.unwrap();
        s.blocking_append([entry(2, 9)]).await.unwrap();
    }
    let mut s = open(dir.path()).await;
    assert_eq!(indexes(&mut s).await, (3..=9).collect::<Vec<_>>());
    let entries = s.try_get_log_entries(6..10).await.unwrap();
    let terms: Vec<u64> = entries.iter().map(|e| e.log_id.leader_id.term).collect();
    assert_eq!(terms, vec![1, 2, 2, 2], "truncated tail was replaced");
    assert_eq!(
        s.read_vote().await.unwrap(),
        Some(Vote::new_committed(2, 7))
    );
    assert_eq!(s.read_committed().await.unwrap(), Some(log_id(2, 8)));
    let state = s.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 2)));
    assert_eq!(state.last_log_id, Some(log_id(2, 9)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncation_without_a_following_append_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = open(dir.path()).await;
        s.blocking_append((0..10).map(|i| entry(1, i)))
            .await
            .unwrap();
        s.truncate_after(Some(log_id(1, 4))).await.unwrap();
        s.save_vote(&Vote::new(3, 1)).await.unwrap();
    }
    let mut s = open(dir.path()).await;
    assert_eq!(indexes(&mut s).await, (0..=4).collect::<Vec<_>>());
    assert_eq!(
        s.get_log_state().await.unwrap().last_log_id,
        Some(log_id(1, 4))
    );
}

/// A truncation is written without an fsync of its own; a crash before the
/// next one leaves the shorter log on disk. The watermark was lowered
/// before the write, so the reopen sees no lost records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncation_cut_off_before_its_fsync_is_no_false_alarm() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = open(dir.path()).await;
        s.blocking_append((0..10).map(|i| entry(1, i)))
            .await
            .unwrap();
        s.truncate_after(Some(log_id(1, 4))).await.unwrap();
    }
    let mut s = open(dir.path()).await;
    assert_eq!(indexes(&mut s).await, (0..=4).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_that_would_leave_a_hole_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path()).await;
    s.blocking_append((0..3).map(|i| entry(1, i)))
        .await
        .unwrap();
    assert!(s.blocking_append([entry(1, 5)]).await.is_err());
    assert_eq!(indexes(&mut s).await, vec![0, 1, 2]);
}

/// Replication never gets entries that start after a purged start (they
/// would reach a follower behind the old `prev_log_id`, leaving a hole); the
/// general read still tolerates the purged start, as openraft's contract
/// allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_reads_of_a_purged_start_come_back_empty() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path()).await;
    s.blocking_append((0..10).map(|i| entry(1, i)))
        .await
        .unwrap();
    s.purge(log_id(1, 4)).await.unwrap();
    assert!(s.limited_get_log_entries(2, 8).await.unwrap().is_empty());
    let from_live: Vec<u64> = s
        .limited_get_log_entries(5, 8)
        .await
        .unwrap()
        .iter()
        .map(|e| e.log_id.index)
        .collect();
    assert_eq!(from_live, vec![5, 6, 7]);
    let general: Vec<u64> = s
        .try_get_log_entries(2..8)
        .await
        .unwrap()
        .iter()
        .map(|e| e.log_id.index)
        .collect();
    assert_eq!(general, vec![5, 6, 7]);
}

/// The log as the kit's checkers drive it.
struct OpenraftLog(tokio::runtime::Runtime);

async fn open_as(dir: &Path, id: &str) -> Result<LogStore, String> {
    let (dir, id) = (dir.to_path_buf(), id.to_owned());
    tokio::task::spawn_blocking(move || LogStore::open(&dir, &id).map(|o| o.store))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

impl raftengine_kit::log_checks::LogUnderTest for OpenraftLog {
    fn append(&self, dir: &Path, id: &str, first: u64, last: u64, term: u64) -> Result<(), String> {
        self.0.block_on(async {
            let mut s = open_as(dir, id).await?;
            s.blocking_append((first..=last).map(|i| entry(term, i)))
                .await
                .map_err(|e| e.to_string())
                .map(|_| ())
        })
    }

    fn commit_and_vote(&self, dir: &Path, id: &str, commit: u64, term: u64) -> Result<(), String> {
        self.0.block_on(async {
            let mut s = open_as(dir, id).await?;
            let at = s
                .try_get_log_entries(commit..commit + 1)
                .await
                .map_err(|e| e.to_string())?;
            let Some(committed) = at.first().map(|e| e.log_id) else {
                return Err(format!("no entry {commit} to commit"));
            };
            s.save_committed(Some(committed))
                .await
                .map_err(|e| e.to_string())?;
            s.save_vote(&Vote::new(term, 1))
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn reopen(&self, dir: &Path, id: &str) -> Result<raftengine_kit::log_checks::Found, String> {
        self.0.block_on(async {
            let mut s = open_as(dir, id).await?;
            let state = s.get_log_state().await.map_err(|e| e.to_string())?;
            let read = s
                .try_get_log_entries(0..u64::MAX)
                .await
                .map_err(|e| format!("read entries: {e}"))?;
            let last = state.last_log_id.map_or(0, |l| l.index);
            let indexes: Vec<u64> = read.iter().map(|e| e.log_id.index).collect();
            let contiguous = indexes.windows(2).all(|w| w[1] == w[0] + 1);
            if !contiguous || indexes.last().copied().unwrap_or(0) != last {
                return Err(format!("read entries {indexes:?}, the log ends at {last}"));
            }
            let vote = s.read_vote().await.map_err(|e| e.to_string())?;
            Ok(raftengine_kit::log_checks::Found {
                last_index: state.last_log_id.map_or(0, |l| l.index),
                vote_term: vote.map_or(0, |v| v.leader_id.term),
            })
        })
    }
}

#[test]
fn the_log_passes_the_kit_checks() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    raftengine_kit::log_checks::check_all(&OpenraftLog(rt));
}

/// Two logs in one process (several nodes, or one restarted in place):
/// each read must come from its own log. raft-engine caches decoded blocks
/// per thread, and the two logs' blocks have the same names, so reads of
/// both on one shared blocking-pool thread returned the other log's
/// entries (`raftengine_kit::read_thread`). One blocking thread makes the
/// sharing certain.
#[test]
fn two_logs_in_one_process_each_read_their_own_entries() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let tagged = |tag: u8| {
            (1..=40).map(move |i| Entry {
                log_id: log_id(1, i),
                payload: EntryPayload::Normal(Request(vec![tag; 8].into())),
            })
        };
        for (dir, tag) in [(&a, 0xaa), (&b, 0xbb)] {
            let mut s = open(dir.path()).await;
            s.blocking_append(tagged(tag)).await.unwrap();
        }
        // Reopened, so that reads come from the files, not the entry cache.
        let (mut sa, mut sb) = (open(a.path()).await, open(b.path()).await);
        for round in 0..4 {
            for (s, tag) in [(&mut sa, 0xaa_u8), (&mut sb, 0xbb)] {
                let entries = s.try_get_log_entries(1..41).await.unwrap();
                assert_eq!(entries.len(), 40);
                for e in entries {
                    let EntryPayload::Normal(Request(data)) = &e.payload else {
                        panic!("entry {} is not a normal entry", e.log_id.index);
                    };
                    assert_eq!(
                        data.as_ref(),
                        &[tag; 8],
                        "round {round}: entry {} of log {tag:#x} came from the other log",
                        e.log_id.index
                    );
                }
            }
        }
    });
}

/// A follower being sent the current snapshot while a newer one is built
/// must find its file: the build used to purge the old file before
/// `current` named the new one, and openraft stopped fatally on
/// "Read Snapshot(None): No such file or directory".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_current_snapshot_is_never_purged_under_a_reader() {
    use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let snapshots = SnapshotDir::new(dir.path()).unwrap();
    let mut sm = StateMachineAdapter::open(Sum::default(), snapshots).unwrap();
    let done = std::sync::Arc::new(AtomicBool::new(false));
    let reader = tokio::spawn({
        let mut sm = sm.clone();
        let done = done.clone();
        async move {
            let mut served = 0u64;
            while !done.load(Ordering::Relaxed) {
                if let Err(e) = sm.get_current_snapshot().await {
                    return Err(format!("after {served} reads: {e}"));
                }
                served += 1;
            }
            Ok(served)
        }
    });
    for i in 1..=300u64 {
        let batch = futures::stream::iter([Ok((entry(1, i), None))]);
        sm.apply(batch).await.unwrap();
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
    }
    done.store(true, Ordering::Relaxed);
    let served = reader.await.unwrap().unwrap();
    assert!(served > 0, "the reader never ran");
    let current = sm.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta.last_log_id, Some(log_id(1, 300)));
}
