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

fn data_end(file: &Path) -> u64 {
    let bytes = std::fs::read(file).unwrap();
    bytes.iter().rposition(|b| *b != 0).unwrap() as u64 + 1
}

fn log_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir.join("raft-log"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "raftlog"))
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_tail_loses_only_the_unfinished_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (first_end, second_end) = {
        let mut s = open(dir.path()).await;
        s.blocking_append((0..20).map(|i| entry(1, i)))
            .await
            .unwrap();
        // raft-engine preallocates: the data ends at the last non-zero byte.
        let first_end = data_end(&log_files(dir.path()).pop().unwrap());
        s.blocking_append((20..40).map(|i| entry(1, i)))
            .await
            .unwrap();
        (first_end, data_end(&log_files(dir.path()).pop().unwrap()))
    };
    let file = log_files(dir.path()).pop().unwrap();
    // Cut into the middle of what the second append wrote (its entries and
    // the record that carried its fsync), as a crash during it would.
    let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    f.set_len(first_end + (second_end - first_end) / 2).unwrap();
    drop(f);
    // The crash also happened before the batch was acknowledged, so the
    // watermark never claimed it.
    std::fs::write(dir.path().join("raft-log-mark"), [0u8; 16]).unwrap();
    let mut s = open(dir.path()).await;
    let got = indexes(&mut s).await;
    assert_eq!(
        got,
        (0..20).collect::<Vec<_>>(),
        "the complete batch survives"
    );
}

/// Writes 20 entries, commits them and votes; returns the dir.
async fn written_log() -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path()).await;
    s.blocking_append((0..20).map(|i| entry(1, i)))
        .await
        .unwrap();
    s.save_committed(Some(log_id(1, 19))).await.unwrap();
    s.save_vote(&Vote::new_committed(1, 1)).await.unwrap();
    dir
}

fn flip(file: &Path, at: u64) {
    let mut bytes = std::fs::read(file).unwrap();
    for b in &mut bytes[at as usize..at as usize + 8] {
        *b ^= 0xa5;
    }
    std::fs::write(file, &bytes).unwrap();
}

async fn try_open(dir: &Path) -> std::io::Result<()> {
    let path = dir.to_path_buf();
    tokio::task::spawn_blocking(move || LogStore::open(&path, "n1").map(|_| ()))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_entry_is_a_clear_error() {
    let dir = written_log().await;
    let file = log_files(dir.path()).pop().unwrap();
    flip(&file, data_end(&file) * 2 / 3);
    let err = try_open(dir.path())
        .await
        .expect_err("corruption must not open");
    assert!(err.to_string().to_lowercase().contains("corrupt"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_last_record_is_not_mistaken_for_a_torn_tail() {
    let dir = written_log().await;
    // Damage the newest record (the vote): raft-engine alone would drop it
    // as a torn tail and reopen with the vote rolled back.
    let file = log_files(dir.path()).pop().unwrap();
    flip(&file, data_end(&file) - 12);
    let err = try_open(dir.path())
        .await
        .expect_err("lost records must be noticed");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emptied_log_does_not_look_like_a_new_node() {
    let dir = written_log().await;
    for f in log_files(dir.path()) {
        std::fs::remove_file(f).unwrap();
    }
    assert!(try_open(dir.path()).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dir_of_another_node_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()).await);
    let path = dir.path().to_path_buf();
    let result = tokio::task::spawn_blocking(move || LogStore::open(&path, "n2").map(|_| ()))
        .await
        .unwrap();
    assert!(result.is_err());
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
