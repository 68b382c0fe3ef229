//! Checkers a backend runs against its raft log on disk (feature `dev`),
//! the way RustCrypto's `digest::dev` gives every hash the same tests.
//!
//! Each backend keeps its log in `<data_dir>/raft-log` (raft-engine files)
//! with the watermark `<data_dir>/raft-log-mark` beside it, and must tell
//! a torn tail (never fsynced, nothing acknowledged from it: dropped) from
//! damage to fsynced records (a clear error, never a silently shorter log
//! or a rolled-back vote). The backend implements [`LogUnderTest`] over its
//! own storage; the checkers write, damage and reopen through it and panic
//! with what went wrong.
//!
//! ```no_run
//! use std::path::Path;
//! use raftengine_kit::log_checks::{Found, LogUnderTest, check_all};
//!
//! struct MyLog; // opens the backend's storage in each call
//!
//! impl LogUnderTest for MyLog {
//!     fn append(&self, dir: &Path, id: &str, first: u64, last: u64, term: u64) -> Result<(), String> {
//!         Err("write entries first..=last in term through the backend's storage".into())
//!     }
//!     fn commit_and_vote(&self, dir: &Path, id: &str, commit: u64, term: u64) -> Result<(), String> {
//!         Err("save the commit index, then a vote in term".into())
//!     }
//!     fn reopen(&self, dir: &Path, id: &str) -> Result<Found, String> {
//!         Err("open, read every entry, report".into())
//!     }
//! }
//!
//! check_all(&MyLog); // in a #[test]
//! ```

use std::path::{Path, PathBuf};

pub use crate::log_mark::MARK_FILE;
pub use crate::node_log::LOG_DIR;

/// What a reopened log holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// Index of its last entry.
    pub last_index: u64,
    /// Term of its latest vote.
    pub vote_term: u64,
}

/// A backend's raft log, driven by the checkers. Every call opens the log
/// in `dir` as node `id`, does its job, and closes it again (so each is a
/// process lifetime); writes are fsynced before the call returns. The
/// checkers make each call on a thread of its own: raft-engine caches
/// decoded blocks per thread, keyed by file and offset rather than by log
/// ([`read_thread`](crate::read_thread)), so a damaged copy of a block read
/// before would otherwise be served from the cache and pass.
pub trait LogUnderTest: Sync {
    /// Appends entries `first..=last`, all in `term`, to a log that ends at
    /// `first - 1` (or is new, then `first` is 1).
    fn append(&self, dir: &Path, id: &str, first: u64, last: u64, term: u64) -> Result<(), String>;
    /// Records `commit` as committed, then a vote in `term` (the newest
    /// record in the log).
    fn commit_and_vote(&self, dir: &Path, id: &str, commit: u64, term: u64) -> Result<(), String>;
    /// Opens the log, reads every entry back (raft-engine checks an entry's
    /// checksum only when it is read), and reports what it holds; or why it
    /// refused to open or to read.
    fn reopen(&self, dir: &Path, id: &str) -> Result<Found, String>;
}

/// Runs every checker.
pub fn check_all(log: &impl LogUnderTest) {
    a_torn_tail_loses_only_the_unfinished_append(log);
    a_corrupt_last_record_is_not_mistaken_for_a_torn_tail(log);
    a_corrupt_entry_is_a_clear_error(log);
    an_emptied_log_does_not_look_like_a_new_node(log);
    a_dir_of_another_node_is_refused(log);
    garbage_in_the_log_dir_is_an_error_not_a_panic(log);
}

const ID: &str = "n1";

/// Runs `f` on a new thread (see [`LogUnderTest`]).
fn fresh<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| match s.spawn(f).join() {
        Ok(v) => v,
        Err(p) => std::panic::resume_unwind(p),
    })
}

fn append(log: &impl LogUnderTest, dir: &Path, first: u64, last: u64, term: u64) {
    ok(
        &format!("append {first}..={last}"),
        fresh(|| log.append(dir, ID, first, last, term)),
    );
}

fn reopen(log: &impl LogUnderTest, dir: &Path, id: &str) -> Result<Found, String> {
    fresh(|| log.reopen(dir, id))
}

fn ok<T>(what: &str, r: Result<T, String>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: {e}"),
    }
}

fn tempdir() -> tempfile::TempDir {
    match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    }
}

/// Entries 1..=20 in term 1, commit 10, a vote in term 2, all synced.
fn written_log(log: &impl LogUnderTest) -> tempfile::TempDir {
    let dir = tempdir();
    append(log, dir.path(), 1, 20, 1);
    ok(
        "commit and vote",
        fresh(|| log.commit_and_vote(dir.path(), ID, 10, 2)),
    );
    dir
}

/// The log's raft-engine files, oldest first.
pub fn log_files(dir: &Path) -> Vec<PathBuf> {
    let entries = match std::fs::read_dir(dir.join(LOG_DIR)) {
        Ok(e) => e,
        Err(e) => panic!("read {}: {e}", dir.join(LOG_DIR).display()),
    };
    let mut files: Vec<_> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "raftlog"))
        .collect();
    files.sort();
    files
}

fn newest_file(dir: &Path) -> PathBuf {
    match log_files(dir).pop() {
        Some(f) => f,
        None => panic!("no raft-engine file in {}", dir.display()),
    }
}

/// Where the data in `file` ends: raft-engine preallocates, so at the last
/// non-zero byte.
pub fn data_end(file: &Path) -> u64 {
    let bytes = read(file);
    bytes
        .iter()
        .rposition(|b| *b != 0)
        .map_or(0, |p| p as u64 + 1)
}

fn read(file: &Path) -> Vec<u8> {
    match std::fs::read(file) {
        Ok(b) => b,
        Err(e) => panic!("read {}: {e}", file.display()),
    }
}

fn write(file: &Path, bytes: &[u8]) {
    if let Err(e) = std::fs::write(file, bytes) {
        panic!("write {}: {e}", file.display());
    }
}

/// Flips 8 bytes of `file` at `at`, as disk damage would.
pub fn flip(file: &Path, at: u64) {
    let mut bytes = read(file);
    for b in &mut bytes[at as usize..at as usize + 8] {
        *b ^= 0xa5;
    }
    write(file, &bytes);
}

fn expect_refused(log: &impl LogUnderTest, dir: &Path, id: &str, what: &str) -> String {
    match reopen(log, dir, id) {
        Ok(found) => panic!("{what}: the log opened anyway, holding {found:?}"),
        Err(e) => e,
    }
}

/// A crash in the middle of an append (cut at a random point of what it
/// wrote, before the watermark was raised for it) loses that append and
/// nothing else: the synced entries and the vote survive.
pub fn a_torn_tail_loses_only_the_unfinished_append(log: &impl LogUnderTest) {
    let dir = written_log(log);
    let before = data_end(&newest_file(dir.path()));
    let files = log_files(dir.path()).len();
    let mark = read(&dir.path().join(MARK_FILE));
    append(log, dir.path(), 21, 40, 2);
    assert_eq!(
        log_files(dir.path()).len(),
        files,
        "the append opened a new file; the check needs one"
    );
    let file = newest_file(dir.path());
    let after = data_end(&file);
    assert!(
        after > before,
        "the append wrote nothing to the newest file"
    );
    // The crash came before the append was acknowledged: the watermark was
    // never raised for it, and the file ends inside what it wrote.
    write(&dir.path().join(MARK_FILE), &mark);
    let cut = before + (after - before) / 2;
    match std::fs::OpenOptions::new().write(true).open(&file) {
        Ok(f) => {
            if let Err(e) = f.set_len(cut) {
                panic!("cut {}: {e}", file.display());
            }
        }
        Err(e) => panic!("open {}: {e}", file.display()),
    }
    let found = ok("a torn tail is not an error", reopen(log, dir.path(), ID));
    assert_eq!(
        found,
        Found {
            last_index: 20,
            vote_term: 2
        },
        "the synced entries and the vote survive, the torn append does not"
    );
}

/// Damage to the newest record (the vote) is corruption, not a torn tail:
/// raft-engine alone would drop it and reopen with the vote rolled back.
pub fn a_corrupt_last_record_is_not_mistaken_for_a_torn_tail(log: &impl LogUnderTest) {
    let dir = written_log(log);
    let file = newest_file(dir.path());
    flip(&file, data_end(&file) - 12);
    let err = expect_refused(log, dir.path(), ID, "a damaged vote record");
    assert!(
        err.to_lowercase().contains("corrupt"),
        "the error must say corruption: {err}"
    );
}

/// Damage in the middle of the entries is a clear error, at open or when
/// the entries are read, never silently different data.
pub fn a_corrupt_entry_is_a_clear_error(log: &impl LogUnderTest) {
    let dir = written_log(log);
    let file = newest_file(dir.path());
    flip(&file, data_end(&file) / 2);
    let err = expect_refused(log, dir.path(), ID, "a damaged entry");
    assert!(
        err.to_lowercase().contains("corrupt"),
        "the error must say corruption: {err}"
    );
}

/// A node whose log files vanished must not start as a new, empty node
/// (it would vote again in terms it already voted in).
pub fn an_emptied_log_does_not_look_like_a_new_node(log: &impl LogUnderTest) {
    let dir = written_log(log);
    for f in log_files(dir.path()) {
        if let Err(e) = std::fs::remove_file(&f) {
            panic!("remove {}: {e}", f.display());
        }
    }
    expect_refused(log, dir.path(), ID, "an emptied log");
}

/// A data dir written by one node is refused to another.
pub fn a_dir_of_another_node_is_refused(log: &impl LogUnderTest) {
    let dir = written_log(log);
    expect_refused(log, dir.path(), "n2", "another node's dir");
}

/// Garbage over the middle of every log file is an error, never a panic
/// and never a log that silently lost committed entries.
pub fn garbage_in_the_log_dir_is_an_error_not_a_panic(log: &impl LogUnderTest) {
    let dir = written_log(log);
    for f in log_files(dir.path()) {
        let mut bytes = read(&f);
        let end = data_end(&f) as usize;
        if end > 64 {
            for b in bytes
                .iter_mut()
                .take(end)
                .skip(16 + (end - 16) / 4)
                .take((end - 16) / 2)
            {
                *b = 0xa5;
            }
            write(&f, &bytes);
        }
    }
    expect_refused(log, dir.path(), ID, "a log overwritten with garbage");
}
