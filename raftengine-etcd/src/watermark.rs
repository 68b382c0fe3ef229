//! A watermark beside the raft log: what the log held at its last fsync.
//!
//! raft-engine recovers a damaged record in its newest file by dropping it
//! and everything after it (`TolerateTailCorruption`), so a corrupt record
//! looks exactly like a torn tail. Dropping a torn tail is right (that write
//! was never fsynced, so nothing was acknowledged from it); dropping a
//! durable record is not: it can roll back a vote (a second vote in the same
//! term) or lose entries a leader counted toward a quorum.
//!
//! The mark tells the two apart. It is rewritten in place after each fsync of
//! the log with values that are durable at that moment, and lowered *before*
//! a write that shortens the log (a replaced tail, an installed snapshot). It
//! is not fsynced itself, so after a power cut it may lag the log (less
//! detection) but it never leads it, so it never raises a false alarm.

use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::Path;

/// File name, next to the `raft-log` directory.
pub(crate) const MARK_FILE: &str = "raft-log-mark";

/// The durable state as of the last fsync.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Mark {
    /// Hard-state term (never decreases).
    pub(crate) term: u64,
    /// Vote in `term` (0 = none yet).
    pub(crate) vote: u64,
    /// Hard-state commit index (never decreases).
    pub(crate) commit: u64,
    /// Index of the last entry in the log (or of the snapshot it starts from).
    pub(crate) last: u64,
}

const LEN: usize = 32;

impl Mark {
    fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        for (i, v) in [self.term, self.vote, self.commit, self.last]
            .into_iter()
            .enumerate()
        {
            b[i * 8..i * 8 + 8].copy_from_slice(&v.to_be_bytes());
        }
        b
    }

    fn decode(b: &[u8]) -> Option<Mark> {
        if b.len() != LEN {
            return None;
        }
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[i * 8..i * 8 + 8]);
            u64::from_be_bytes(w)
        };
        Some(Mark {
            term: word(0),
            vote: word(1),
            commit: word(2),
            last: word(3),
        })
    }

    /// Compares what the reopened log holds against the mark; the error
    /// names what was lost.
    pub(crate) fn check(&self, found: &Mark) -> Result<(), String> {
        if found.term < self.term {
            return Err(format!(
                "the log's term is {} but term {} was durable: records were lost",
                found.term, self.term
            ));
        }
        if found.term == self.term && self.vote != 0 && found.vote != self.vote {
            return Err(format!(
                "the log's vote in term {} is {} but {} was durable: records were lost",
                found.term, found.vote, self.vote
            ));
        }
        if found.commit < self.commit {
            return Err(format!(
                "the log's commit index is {} but {} was durable: records were lost",
                found.commit, self.commit
            ));
        }
        if found.last < self.last {
            return Err(format!(
                "the log ends at index {} but held entries up to {}: records were lost",
                found.last, self.last
            ));
        }
        Ok(())
    }
}

/// The open mark file and the value last written to it.
#[derive(Debug)]
pub(crate) struct MarkFile {
    file: std::fs::File,
    written: Mark,
}

impl MarkFile {
    /// Opens (creating) the mark in `data_dir` and reads its claim; a missing
    /// or cut file claims nothing.
    pub(crate) fn open(data_dir: &Path) -> io::Result<(MarkFile, Mark)> {
        let path = data_dir.join(MARK_FILE);
        let claim = match std::fs::read(&path) {
            // Created but never written (a crash right after creation).
            Ok(b) if b.is_empty() => Mark::default(),
            // Written in place with one 32-byte write: it cannot be shorter
            // or longer unless the disk damaged it.
            Ok(b) => Mark::decode(&b).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{} is {} bytes, not {LEN}: damaged; if the raft log is known to be \
                         intact, delete it to start without the check",
                        path.display(),
                        b.len()
                    ),
                )
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Mark::default(),
            Err(e) => return Err(e),
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        Ok((
            MarkFile {
                file,
                written: claim,
            },
            claim,
        ))
    }

    /// Rewrites the mark. A failed write only weakens detection (the old,
    /// smaller-or-equal claim stays), except when lowering, which is why
    /// callers lowering first must see the error.
    pub(crate) fn store(&mut self, mark: Mark) -> io::Result<()> {
        if mark == self.written {
            return Ok(());
        }
        self.file.write_all_at(&mark.encode(), 0)?;
        self.written = mark;
        Ok(())
    }

    /// Lowers `last` before a write that ends the log at `last`.
    pub(crate) fn lower_last(&mut self, last: u64) -> io::Result<()> {
        if last >= self.written.last {
            return Ok(());
        }
        let lowered = Mark {
            last,
            ..self.written
        };
        self.store(lowered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_checks() {
        let dir = tempfile::tempdir().unwrap();
        let (mut f, claim) = MarkFile::open(dir.path()).unwrap();
        assert_eq!(claim, Mark::default());
        let m = Mark {
            term: 3,
            vote: 2,
            commit: 10,
            last: 12,
        };
        f.store(m).unwrap();
        drop(f);
        let (_, claim) = MarkFile::open(dir.path()).unwrap();
        assert_eq!(claim, m);
        assert!(m.check(&m).is_ok());
        assert!(
            m.check(&Mark {
                term: 4,
                vote: 0,
                ..m
            })
            .is_ok()
        );
        assert!(m.check(&Mark { term: 2, ..m }).is_err());
        assert!(m.check(&Mark { vote: 0, ..m }).is_err());
        assert!(m.check(&Mark { commit: 9, ..m }).is_err());
        assert!(m.check(&Mark { last: 11, ..m }).is_err());
        // An empty file (crash right after creation) claims nothing; a
        // file of another length is damage, not silence.
        std::fs::write(dir.path().join(MARK_FILE), []).unwrap();
        assert_eq!(MarkFile::open(dir.path()).unwrap().1, Mark::default());
        std::fs::write(dir.path().join(MARK_FILE), [1u8; 7]).unwrap();
        assert!(MarkFile::open(dir.path()).is_err());
    }
}
