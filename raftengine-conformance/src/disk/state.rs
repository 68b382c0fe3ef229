//! The in-memory model behind [`super::Disk`]: what a reader sees now,
//! and what a power cut would leave.
//!
//! Files keep their durable bytes plus the writes made since their last
//! fsync, in order. Directories keep their current entries plus the
//! entries as of their last fsync. A cut replays none of the unsynced
//! writes ([`TailLoss::All`]) or a random prefix of them, the last one
//! torn at a random byte ([`TailLoss::RandomCut`]); every directory goes
//! back to its synced entries. Inodes are never reused, so a name that
//! survives the cut refers to the same file it did when it was synced.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::time::SystemTime;

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

/// The unit a disk writes atomically.
const SECTOR: u64 = 512;

/// Inode number of the root directory (FUSE's fixed value).
pub(crate) const ROOT: u64 = 1;

/// What a power cut keeps of the writes that no fsync covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TailLoss {
    /// Every unsynced write is lost.
    All,
    /// A random prefix of each file's unsynced writes survives, the last
    /// surviving write torn at a random sector boundary: a disk that wrote
    /// back part of its cache in order and lost power mid-write. Seeded,
    /// so a failure replays.
    RandomCut {
        /// Seeds the choice of cut points.
        seed: u64,
    },
}

/// A disk fault to inject on command (see [`super::Disk::inject`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Every `fsync`/`fdatasync` of a file fails with `EIO`, and, as on
    /// Linux ("fsyncgate"), the writes it should have covered are dropped
    /// from the path to the disk while readers still see them.
    FsyncFails,
    /// Every write to a file fails with `EIO`.
    WriteFails,
    /// Every write or allocation that grows a file fails with `ENOSPC`.
    DiskFull,
}

#[derive(Debug, Clone)]
enum Op {
    Write { offset: u64, bytes: Vec<u8> },
    SetLen(u64),
}

fn apply(data: &mut Vec<u8>, op: &Op) {
    match op {
        Op::Write { offset, bytes } => {
            let start = *offset as usize;
            let end = start + bytes.len();
            if data.len() < end {
                data.resize(end, 0);
            }
            data[start..end].copy_from_slice(bytes);
        }
        Op::SetLen(len) => data.resize(*len as usize, 0),
    }
}

#[derive(Debug, Default)]
pub(crate) struct File {
    /// What readers see: the page cache.
    pub(crate) data: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<Op>,
}

#[derive(Debug, Default)]
pub(crate) struct Dir {
    pub(crate) entries: BTreeMap<OsString, u64>,
    durable: BTreeMap<OsString, u64>,
}

#[derive(Debug)]
pub(crate) enum Kind {
    File(File),
    Dir(Dir),
}

#[derive(Debug)]
pub(crate) struct Node {
    pub(crate) kind: Kind,
    pub(crate) perm: u16,
    pub(crate) mtime: SystemTime,
}

/// Why an operation failed, as the errno the caller will see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Errno {
    NoEntry,
    Exists,
    NotDir,
    IsDir,
    NotEmpty,
    Io,
    NoSpace,
}

pub(crate) type Res<T> = Result<T, Errno>;

/// Counters a test can read to see what the disk was asked to do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskStats {
    /// Completed `fsync`/`fdatasync` calls on files.
    pub file_syncs: u64,
    /// Completed `fsync` calls on directories.
    pub dir_syncs: u64,
    /// Calls refused because of an injected fault or a cut.
    pub refused: u64,
    /// Files open right now (opened or created, not yet released by the
    /// kernel). A stopped node must have closed all of its files: a
    /// process that loses power has none left.
    pub open_files: u64,
}

#[derive(Debug)]
pub(crate) struct State {
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    /// Set between a power cut and power-on: everything fails with EIO.
    pub(crate) off: bool,
    pub(crate) fault: Option<Fault>,
    pub(crate) stats: DiskStats,
}

impl State {
    pub(crate) fn new() -> Self {
        let mut nodes = HashMap::new();
        nodes.insert(
            ROOT,
            Node {
                kind: Kind::Dir(Dir::default()),
                perm: 0o755,
                mtime: SystemTime::now(),
            },
        );
        State {
            nodes,
            next_ino: ROOT + 1,
            off: false,
            fault: None,
            stats: DiskStats::default(),
        }
    }

    pub(crate) fn node(&self, ino: u64) -> Res<&Node> {
        self.nodes.get(&ino).ok_or(Errno::NoEntry)
    }

    fn node_mut(&mut self, ino: u64) -> Res<&mut Node> {
        self.nodes.get_mut(&ino).ok_or(Errno::NoEntry)
    }

    fn dir(&self, ino: u64) -> Res<&Dir> {
        match &self.node(ino)?.kind {
            Kind::Dir(d) => Ok(d),
            Kind::File(_) => Err(Errno::NotDir),
        }
    }

    fn dir_mut(&mut self, ino: u64) -> Res<&mut Dir> {
        match &mut self.node_mut(ino)?.kind {
            Kind::Dir(d) => Ok(d),
            Kind::File(_) => Err(Errno::NotDir),
        }
    }

    fn file_mut(&mut self, ino: u64) -> Res<&mut File> {
        match &mut self.node_mut(ino)?.kind {
            Kind::File(f) => Ok(f),
            Kind::Dir(_) => Err(Errno::IsDir),
        }
    }

    /// Refuses everything while the power is off.
    pub(crate) fn powered(&mut self) -> Res<()> {
        if self.off {
            self.stats.refused += 1;
            return Err(Errno::Io);
        }
        Ok(())
    }

    pub(crate) fn lookup(&self, parent: u64, name: &OsStr) -> Res<u64> {
        self.dir(parent)?
            .entries
            .get(name)
            .copied()
            .ok_or(Errno::NoEntry)
    }

    pub(crate) fn create(&mut self, parent: u64, name: &OsStr, dir: bool, perm: u16) -> Res<u64> {
        self.powered()?;
        if self.dir(parent)?.entries.contains_key(name) {
            return Err(Errno::Exists);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let kind = if dir {
            Kind::Dir(Dir::default())
        } else {
            Kind::File(File::default())
        };
        self.nodes.insert(
            ino,
            Node {
                kind,
                perm,
                mtime: SystemTime::now(),
            },
        );
        self.dir_mut(parent)?.entries.insert(name.to_owned(), ino);
        Ok(ino)
    }

    pub(crate) fn remove(&mut self, parent: u64, name: &OsStr, dir: bool) -> Res<()> {
        self.powered()?;
        let ino = self.lookup(parent, name)?;
        match (&self.node(ino)?.kind, dir) {
            (Kind::Dir(d), true) if !d.entries.is_empty() => return Err(Errno::NotEmpty),
            (Kind::Dir(_), true) | (Kind::File(_), false) => {}
            (Kind::Dir(_), false) => return Err(Errno::IsDir),
            (Kind::File(_), true) => return Err(Errno::NotDir),
        }
        // The inode stays: a synced name may still point at it.
        self.dir_mut(parent)?.entries.remove(name);
        Ok(())
    }

    pub(crate) fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
    ) -> Res<()> {
        self.powered()?;
        let ino = self.lookup(parent, name)?;
        if let Ok(existing) = self.lookup(new_parent, new_name) {
            if let Kind::Dir(d) = &self.node(existing)?.kind {
                if !d.entries.is_empty() {
                    return Err(Errno::NotEmpty);
                }
            }
        }
        self.dir(new_parent)?;
        self.dir_mut(parent)?.entries.remove(name);
        self.dir_mut(new_parent)?
            .entries
            .insert(new_name.to_owned(), ino);
        Ok(())
    }

    pub(crate) fn read(&mut self, ino: u64, offset: u64, size: u32) -> Res<Vec<u8>> {
        self.powered()?;
        let f = self.file_mut(ino)?;
        let start = (offset as usize).min(f.data.len());
        let end = (start + size as usize).min(f.data.len());
        Ok(f.data[start..end].to_vec())
    }

    pub(crate) fn write(&mut self, ino: u64, offset: u64, bytes: &[u8]) -> Res<u32> {
        self.powered()?;
        let grows = {
            let f = self.file_mut(ino)?;
            offset as usize + bytes.len() > f.data.len()
        };
        match self.fault {
            Some(Fault::WriteFails) => return self.refuse(Errno::Io),
            Some(Fault::DiskFull) if grows => return self.refuse(Errno::NoSpace),
            _ => {}
        }
        let op = Op::Write {
            offset,
            bytes: bytes.to_vec(),
        };
        let f = self.file_mut(ino)?;
        apply(&mut f.data, &op);
        f.pending.push(op);
        self.node_mut(ino)?.mtime = SystemTime::now();
        Ok(bytes.len() as u32)
    }

    pub(crate) fn set_len(&mut self, ino: u64, len: u64) -> Res<()> {
        self.powered()?;
        let grows = len as usize > self.file_mut(ino)?.data.len();
        match self.fault {
            Some(Fault::WriteFails) => return self.refuse(Errno::Io),
            Some(Fault::DiskFull) if grows => return self.refuse(Errno::NoSpace),
            _ => {}
        }
        let op = Op::SetLen(len);
        let f = self.file_mut(ino)?;
        apply(&mut f.data, &op);
        f.pending.push(op);
        Ok(())
    }

    /// `fallocate` without `KEEP_SIZE`: the file grows to `len` if shorter.
    pub(crate) fn grow_to(&mut self, ino: u64, len: u64) -> Res<()> {
        self.powered()?;
        if len as usize > self.file_mut(ino)?.data.len() {
            self.set_len(ino, len)?;
        }
        Ok(())
    }

    pub(crate) fn set_perm(&mut self, ino: u64, perm: u16) -> Res<()> {
        self.node_mut(ino)?.perm = perm;
        Ok(())
    }

    fn refuse<T>(&mut self, errno: Errno) -> Res<T> {
        self.stats.refused += 1;
        Err(errno)
    }

    pub(crate) fn fsync(&mut self, ino: u64) -> Res<()> {
        self.powered()?;
        let fault = self.fault;
        match &mut self.node_mut(ino)?.kind {
            Kind::File(f) => {
                if fault == Some(Fault::FsyncFails) {
                    // Linux marks the pages clean after a failed writeback:
                    // they never reach the disk, though reads still see them.
                    f.pending.clear();
                    return self.refuse(Errno::Io);
                }
                for op in f.pending.drain(..) {
                    apply(&mut f.durable, &op);
                }
                self.stats.file_syncs += 1;
            }
            Kind::Dir(d) => {
                d.durable = d.entries.clone();
                self.stats.dir_syncs += 1;
            }
        }
        Ok(())
    }

    /// Power back on after a cut: the disk holds exactly what `loss` leaves.
    pub(crate) fn restore(&mut self, loss: TailLoss) {
        let mut rng = match loss {
            TailLoss::All => None,
            TailLoss::RandomCut { seed } => Some(StdRng::seed_from_u64(seed)),
        };
        let mut inos: Vec<u64> = self.nodes.keys().copied().collect();
        // The same seed must cut the same way: visit inodes in order.
        inos.sort_unstable();
        for ino in inos {
            let Some(node) = self.nodes.get_mut(&ino) else {
                continue;
            };
            match &mut node.kind {
                Kind::Dir(d) => d.entries = d.durable.clone(),
                Kind::File(f) => {
                    let mut disk = std::mem::take(&mut f.durable);
                    if let Some(rng) = rng.as_mut() {
                        let kept = rng.random_range(0..=f.pending.len());
                        for op in &f.pending[..kept] {
                            apply(&mut disk, op);
                        }
                        if let Some(Op::Write { offset, bytes }) = f.pending.get(kept) {
                            // A sector (512 B) is written whole or not at
                            // all, as disks guarantee; the tear falls on a
                            // sector boundary of the file.
                            let written = rng.random_range(0..bytes.len());
                            let cut = offset + written as u64;
                            let torn = ((cut / SECTOR * SECTOR).saturating_sub(*offset) as usize)
                                .min(written);
                            apply(
                                &mut disk,
                                &Op::Write {
                                    offset: *offset,
                                    bytes: bytes[..torn].to_vec(),
                                },
                            );
                        }
                    }
                    f.pending.clear();
                    f.data = disk.clone();
                    f.durable = disk;
                }
            }
        }
        self.off = false;
        self.fault = None;
    }

    /// The entries of a directory, for `readdir`.
    pub(crate) fn list(&self, ino: u64) -> Res<Vec<(OsString, u64, bool)>> {
        let d = self.dir(ino)?;
        Ok(d.entries
            .iter()
            .map(|(name, ino)| {
                let is_dir = matches!(self.nodes.get(ino).map(|n| &n.kind), Some(Kind::Dir(_)));
                (name.clone(), *ino, is_dir)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> &OsStr {
        OsStr::new(s)
    }

    #[test]
    fn a_cut_keeps_exactly_what_was_synced() {
        let mut s = State::new();
        let d = s.create(ROOT, name("d"), true, 0o755).unwrap();
        s.fsync(ROOT).unwrap();
        let f = s.create(d, name("f"), false, 0o644).unwrap();
        s.write(f, 0, b"hello").unwrap();
        s.fsync(f).unwrap();
        // Data synced but the name is not: the file is gone after a cut.
        s.off = true;
        s.restore(TailLoss::All);
        assert_eq!(s.lookup(d, name("f")), Err(Errno::NoEntry));

        let f = s.create(d, name("f"), false, 0o644).unwrap();
        s.write(f, 0, b"hello").unwrap();
        s.fsync(f).unwrap();
        s.fsync(d).unwrap();
        s.write(f, 5, b" world").unwrap();
        s.restore(TailLoss::All);
        let f = s.lookup(d, name("f")).unwrap();
        assert_eq!(s.read(f, 0, 100).unwrap(), b"hello");
    }

    #[test]
    fn a_random_cut_keeps_a_prefix_of_the_unsynced_writes() {
        for seed in 0..50 {
            let mut s = State::new();
            let f = s.create(ROOT, name("f"), false, 0o644).unwrap();
            s.fsync(ROOT).unwrap();
            s.write(f, 0, b"aaaa").unwrap();
            s.fsync(f).unwrap();
            s.write(f, 4, b"bbbb").unwrap();
            s.write(f, 8, b"cccc").unwrap();
            s.restore(TailLoss::RandomCut { seed });
            let got = s.read(f, 0, 100).unwrap();
            let full = b"aaaabbbbcccc";
            assert!(
                got.len() >= 4 && full.starts_with(&got),
                "seed {seed}: {got:?}"
            );
        }
    }

    #[test]
    fn a_failed_fsync_drops_the_writes_it_should_have_covered() {
        let mut s = State::new();
        let f = s.create(ROOT, name("f"), false, 0o644).unwrap();
        s.fsync(ROOT).unwrap();
        s.write(f, 0, b"lost").unwrap();
        s.fault = Some(Fault::FsyncFails);
        assert_eq!(s.fsync(f), Err(Errno::Io));
        s.fault = None;
        // Readers still see it, and a later fsync succeeds...
        assert_eq!(s.read(f, 0, 10).unwrap(), b"lost");
        s.fsync(f).unwrap();
        // ...but the bytes never reached the disk.
        s.restore(TailLoss::All);
        assert_eq!(s.read(f, 0, 10).unwrap(), b"");
    }

    #[test]
    fn renames_and_removals_are_durable_only_with_the_directory() {
        let mut s = State::new();
        let f = s.create(ROOT, name("a.tmp"), false, 0o644).unwrap();
        s.write(f, 0, b"new").unwrap();
        s.fsync(f).unwrap();
        s.fsync(ROOT).unwrap();
        s.rename(ROOT, name("a.tmp"), ROOT, name("a")).unwrap();
        s.restore(TailLoss::All);
        assert!(s.lookup(ROOT, name("a")).is_err());
        assert!(s.lookup(ROOT, name("a.tmp")).is_ok());
        s.rename(ROOT, name("a.tmp"), ROOT, name("a")).unwrap();
        s.fsync(ROOT).unwrap();
        s.remove(ROOT, name("a"), false).unwrap();
        s.restore(TailLoss::All);
        let f = s.lookup(ROOT, name("a")).unwrap();
        assert_eq!(s.read(f, 0, 10).unwrap(), b"new");
    }
}
