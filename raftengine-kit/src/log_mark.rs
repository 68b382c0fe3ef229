//! The log watermark: what the raft log held at its last fsync, kept in
//! `<data_dir>/raft-log-mark` beside it.
//!
//! raft-engine recovers a damaged record in its newest file by dropping it
//! and everything after it (`TolerateTailCorruption`), so a corrupt record
//! looks exactly like a torn tail. Dropping a torn tail is right (that write
//! was never fsynced, so nothing was acknowledged from it); dropping a
//! durable record is not: it can roll back a vote (a second vote in the same
//! term) or lose entries a leader counted toward a quorum.
//!
//! The mark tells the two apart. A backend reports each write to
//! [`MarkFile::written`] and each completed fsync to [`MarkFile::synced`],
//! which rewrites the file in place with what is durable at that moment;
//! a write that shortens the log (a replaced tail, an installed snapshot)
//! calls [`MarkFile::lower_end`] *before* it. The file is not fsynced
//! itself, so after a power cut it may lag the log (less detection) but it
//! never leads it, so it never raises a false alarm. At open,
//! [`Mark::check`] compares its claim with what the reopened log holds.
//!
//! # Format
//!
//! 44 bytes: the magic `RELMARK` and a version byte (2), four big-endian
//! words (vote term, voted-for node, commit end, log end) and a CRC32 of
//! the 40 bytes before it. All zeros is a file created but never written.
//! Version 1 had one layout per backend: 32 bytes (term, vote, commit,
//! last index) from `raftengine-etcd`, 16 bytes (log end, vote term) from
//! `raftengine-openraft`. [`MarkFile::open`] reads the one the backend
//! names ([`Legacy`]) and replaces it with version 2 atomically before the
//! first in-place write, so a torn in-place write can never mix layouts.

use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::Path;

/// The mark's file name, directly in the data dir.
pub const MARK_FILE: &str = "raft-log-mark";

const MAGIC: &[u8; 7] = b"RELMARK";
const VERSION: u8 = 2;
const LEN: usize = 44;

/// What the log held at an fsync. Indexes are *ends* (one past the last
/// entry, 0 = none), so a log whose first entry has index 0 (openraft's)
/// and one starting at 1 (raft-rs's) read the same way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mark {
    /// The term of the latest vote (never decreases).
    pub vote_term: u64,
    /// The numeric id voted for in `vote_term`; 0 when unknown or none.
    pub voted_for: u64,
    /// One past the highest committed index the log recorded.
    pub commit_end: u64,
    /// One past the last live entry (or past the snapshot the log starts
    /// from).
    pub end: u64,
}

/// A write, as the mark sees it: only the fields the write changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MarkUpdate {
    /// The live log ends here after the write (raised or lowered).
    pub end: Option<u64>,
    /// The vote the write saved: (term, numeric id voted for).
    pub vote: Option<(u64, u64)>,
    /// One past the commit index the write saved.
    pub commit_end: Option<u64>,
}

/// A mark file written by a release before this format; see the module's
/// "Format" section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Legacy {
    /// Nothing older exists for this backend: only version 2 is read.
    None,
    /// `raftengine-etcd`'s 32 bytes: term, vote, commit, last index.
    TermVoteCommitLast,
    /// `raftengine-openraft`'s 16 bytes: log end, vote term.
    EndVoteTerm,
}

/// What was lost, found by [`Mark::check`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Lost(String);

impl Mark {
    fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[..7].copy_from_slice(MAGIC);
        b[7] = VERSION;
        for (i, v) in [self.vote_term, self.voted_for, self.commit_end, self.end]
            .into_iter()
            .enumerate()
        {
            b[8 + i * 8..16 + i * 8].copy_from_slice(&v.to_be_bytes());
        }
        let crc = crc32fast::hash(&b[..LEN - 4]);
        b[LEN - 4..].copy_from_slice(&crc.to_be_bytes());
        b
    }

    fn decode(b: &[u8], legacy: Legacy) -> Option<Mark> {
        let words = |n: usize| -> Vec<u64> {
            (0..n)
                .map(|i| {
                    let mut w = [0u8; 8];
                    w.copy_from_slice(&b[i * 8..i * 8 + 8]);
                    u64::from_be_bytes(w)
                })
                .collect()
        };
        if b.iter().all(|&x| x == 0) {
            // Created (or grown) but its data never reached the disk.
            return Some(Mark::default());
        }
        match (b.len(), legacy) {
            (LEN, _) => {
                let crc = u32::from_be_bytes([b[40], b[41], b[42], b[43]]);
                if &b[..7] != MAGIC || b[7] != VERSION || crc32fast::hash(&b[..40]) != crc {
                    return None;
                }
                // The 8-byte header is word 0; the values are words 1..=4.
                let w = words(5);
                Some(Mark {
                    vote_term: w[1],
                    voted_for: w[2],
                    commit_end: w[3],
                    end: w[4],
                })
            }
            (32, Legacy::TermVoteCommitLast) => {
                let w = words(4);
                let end_of = |index: u64| if index == 0 { 0 } else { index + 1 };
                Some(Mark {
                    vote_term: w[0],
                    voted_for: w[1],
                    commit_end: end_of(w[2]),
                    end: end_of(w[3]),
                })
            }
            (16, Legacy::EndVoteTerm) => {
                let w = words(2);
                Some(Mark {
                    vote_term: w[1],
                    voted_for: 0,
                    commit_end: 0,
                    end: w[0],
                })
            }
            _ => None,
        }
    }

    /// Compares what the reopened log holds (`found`) with this claim.
    ///
    /// # Errors
    ///
    /// [`Lost`], naming what was durable and is missing: a lower vote term,
    /// another vote in the claimed term, a lower commit or a shorter log.
    pub fn check(&self, found: &Mark) -> Result<(), Lost> {
        if found.vote_term < self.vote_term {
            return Err(Lost(format!(
                "the log's vote is in term {} but term {} was durable: records were lost",
                found.vote_term, self.vote_term
            )));
        }
        if found.vote_term == self.vote_term
            && self.voted_for != 0
            && found.voted_for != self.voted_for
        {
            return Err(Lost(format!(
                "the log's vote in term {} is for {} but {} was durable: records were lost",
                found.vote_term, found.voted_for, self.voted_for
            )));
        }
        if found.commit_end < self.commit_end {
            return Err(Lost(format!(
                "the log's commit index is below {} but {} was durable: records were lost",
                found.commit_end,
                self.commit_end - 1
            )));
        }
        if found.end < self.end {
            return Err(Lost(format!(
                "the log ends before index {} but held entries up to {}: records were lost",
                found.end,
                self.end - 1
            )));
        }
        Ok(())
    }

    fn apply(&mut self, u: &MarkUpdate) {
        if let Some(end) = u.end {
            self.end = end;
        }
        if let Some((term, voted_for)) = u.vote {
            if term >= self.vote_term {
                self.vote_term = term;
                self.voted_for = voted_for;
            }
        }
        if let Some(c) = u.commit_end {
            self.commit_end = self.commit_end.max(c);
        }
    }
}

/// The open mark file: what it says now, and what the writes since the last
/// fsync will make durable.
#[derive(Debug)]
pub struct MarkFile {
    file: std::fs::File,
    written: Mark,
    pending: Mark,
}

impl MarkFile {
    /// Opens (creating) the mark in `data_dir` and returns it with its
    /// claim; a missing file claims nothing. A file in the `legacy` layout
    /// is rewritten in the current one (durably, by rename) first.
    /// Blocking.
    ///
    /// # Errors
    ///
    /// The file cannot be read or written, or it is damaged (a length or
    /// checksum no writer produces): [`io::ErrorKind::InvalidData`], with
    /// the way out in the message.
    pub fn open(data_dir: &Path, legacy: Legacy) -> io::Result<(MarkFile, Mark)> {
        let path = data_dir.join(MARK_FILE);
        let (claim, upgrade) = match std::fs::read(&path) {
            Ok(b) if b.is_empty() => (Mark::default(), false),
            Ok(b) => match Mark::decode(&b, legacy) {
                Some(m) => (m, b.len() != LEN),
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{} ({} bytes) is damaged; if the raft log is known to be intact, \
                             delete it to start without the check",
                            path.display(),
                            b.len()
                        ),
                    ));
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => (Mark::default(), false),
            Err(e) => return Err(e),
        };
        if upgrade {
            crate::durable::write_file(&path, &claim.encode())?;
            tracing::info!(path = %path.display(), "raft log mark upgraded to version {VERSION}");
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        Ok((
            MarkFile {
                file,
                written: claim,
                pending: claim,
            },
            claim,
        ))
    }

    /// Before a write that ends the live log at `end`: lowers the mark now,
    /// so that it never claims entries the write may remove.
    ///
    /// # Errors
    ///
    /// The file could not be written; the caller must not make the write
    /// (the mark would then lead the log and raise a false alarm at the
    /// next open).
    pub fn lower_end(&mut self, end: u64) -> io::Result<()> {
        self.pending.end = self.pending.end.min(end);
        if end >= self.written.end {
            return Ok(());
        }
        self.store(Mark {
            end,
            ..self.written
        })
    }

    /// Records a write that reached the log (not yet fsynced).
    pub fn written(&mut self, update: &MarkUpdate) {
        self.pending.apply(update);
    }

    /// After an fsync of the log: everything written so far is durable, so
    /// the mark is raised to it. A failed write of the mark is logged and
    /// only weakens detection (the older, lower claim stays).
    pub fn synced(&mut self) {
        if let Err(e) = self.store(self.pending) {
            tracing::warn!(error = %e, "could not update the raft log mark");
        }
    }

    fn store(&mut self, mark: Mark) -> io::Result<()> {
        if mark == self.written {
            return Ok(());
        }
        self.file.write_all_at(&mark.encode(), 0)?;
        self.written = mark;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: Mark = Mark {
        vote_term: 3,
        voted_for: 2,
        commit_end: 11,
        end: 13,
    };

    #[test]
    fn a_mark_round_trips_and_checks_each_field() {
        let dir = tempfile::tempdir().unwrap();
        let (mut f, claim) = MarkFile::open(dir.path(), Legacy::None).unwrap();
        assert_eq!(claim, Mark::default());
        f.written(&MarkUpdate {
            end: Some(13),
            vote: Some((3, 2)),
            commit_end: Some(11),
        });
        // Nothing is claimed before the fsync.
        assert_eq!(MarkFile::open(dir.path(), Legacy::None).unwrap().1, claim);
        f.synced();
        drop(f);
        let (_, claim) = MarkFile::open(dir.path(), Legacy::None).unwrap();
        assert_eq!(claim, M);
        assert!(M.check(&M).is_ok());
        assert!(
            M.check(&Mark {
                vote_term: 4,
                voted_for: 0,
                ..M
            })
            .is_ok()
        );
        assert!(M.check(&Mark { vote_term: 2, ..M }).is_err());
        assert!(M.check(&Mark { voted_for: 1, ..M }).is_err());
        assert!(
            M.check(&Mark {
                commit_end: 10,
                ..M
            })
            .is_err()
        );
        assert!(M.check(&Mark { end: 12, ..M }).is_err());
    }

    #[test]
    fn lowering_is_written_before_the_write_and_raising_after_the_sync() {
        let dir = tempfile::tempdir().unwrap();
        let (mut f, _) = MarkFile::open(dir.path(), Legacy::None).unwrap();
        f.written(&MarkUpdate {
            end: Some(13),
            ..MarkUpdate::default()
        });
        f.synced();
        f.lower_end(5).unwrap();
        let read = || MarkFile::open(dir.path(), Legacy::None).unwrap().1;
        assert_eq!(read().end, 5);
        f.written(&MarkUpdate {
            end: Some(8),
            ..MarkUpdate::default()
        });
        assert_eq!(read().end, 5);
        f.synced();
        assert_eq!(read().end, 8);
        // An older vote never replaces a newer one; commit never falls.
        f.written(&MarkUpdate {
            vote: Some((4, 7)),
            commit_end: Some(6),
            ..MarkUpdate::default()
        });
        f.written(&MarkUpdate {
            vote: Some((3, 1)),
            commit_end: Some(2),
            ..MarkUpdate::default()
        });
        f.synced();
        assert_eq!(
            read(),
            Mark {
                vote_term: 4,
                voted_for: 7,
                commit_end: 6,
                end: 8
            }
        );
    }

    #[test]
    fn legacy_marks_are_read_and_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(MARK_FILE);
        let be = |ws: &[u64]| ws.iter().flat_map(|w| w.to_be_bytes()).collect::<Vec<u8>>();
        std::fs::write(&path, be(&[3, 2, 10, 12])).unwrap();
        let (_, claim) = MarkFile::open(dir.path(), Legacy::TermVoteCommitLast).unwrap();
        assert_eq!(claim, M);
        assert_eq!(std::fs::read(&path).unwrap(), M.encode().to_vec());
        std::fs::write(&path, be(&[13, 3])).unwrap();
        let (_, claim) = MarkFile::open(dir.path(), Legacy::EndVoteTerm).unwrap();
        assert_eq!(
            claim,
            Mark {
                vote_term: 3,
                voted_for: 0,
                commit_end: 0,
                end: 13
            }
        );
        assert_eq!(std::fs::read(&path).unwrap().len(), LEN);
        // Another backend's legacy layout is damage, not a claim.
        std::fs::write(&path, be(&[13, 3])).unwrap();
        assert!(MarkFile::open(dir.path(), Legacy::TermVoteCommitLast).is_err());
    }

    #[test]
    fn a_damaged_mark_is_refused_and_an_unwritten_one_claims_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(MARK_FILE);
        for zeros in [0, 16, 32, LEN] {
            std::fs::write(&path, vec![0u8; zeros]).unwrap();
            let (_, claim) = MarkFile::open(dir.path(), Legacy::None).unwrap();
            assert_eq!(claim, Mark::default(), "{zeros} zero bytes");
        }
        let mut b = M.encode();
        b[20] ^= 1;
        std::fs::write(&path, b).unwrap();
        assert!(MarkFile::open(dir.path(), Legacy::None).is_err());
        std::fs::write(&path, [1u8; 7]).unwrap();
        let e = MarkFile::open(dir.path(), Legacy::None).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }
}
