//! A disk that can lose power: a FUSE file system, in the spirit of LazyFS,
//! that keeps every byte and directory entry not covered by a completed
//! fsync in "volatile" memory and drops it on command.
//!
//! Killing a process keeps the page cache, so crash tests on a real file
//! system cannot see a missing fsync; this one can. It is engine-agnostic:
//! a node's data dir is simply a directory under the mount, so any backend
//! gets the power-loss cases without a hook of its own.
//!
//! Semantics (strict POSIX, stricter than ext4 in practice):
//! * a write to a file reaches the disk only when an `fsync`/`fdatasync`
//!   of that file completes;
//! * a created, renamed or removed *name* reaches the disk only when an
//!   `fsync` of the directory holding it completes;
//! * [`Disk::cut`] switches the power off: from then every call fails with
//!   `EIO` until [`Disk::power_on`], which leaves exactly the synced state
//!   (or, with [`TailLoss::RandomCut`], a random in-order prefix of each
//!   file's unsynced writes, the last one torn);
//! * [`Disk::inject`] makes fsyncs, writes or allocations fail on command,
//!   with Linux's behaviour after a failed fsync (the covered writes never
//!   reach the disk).
//!
//! Files are opened in direct-I/O mode and every entry and attribute has a
//! zero cache lifetime, so the kernel never serves a byte or a name the
//! disk has lost.
//!
//! Needs `/dev/fuse` and the right to mount (root, or `CAP_SYS_ADMIN`);
//! [`Disk::mount`] fails with a clear error otherwise, and the cases that
//! use it fail rather than skip.

mod state;

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    Config, Errno as FuseErrno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, MountOption, OpenFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request,
};

pub use state::{DiskStats, Fault, TailLoss};
use state::{Errno, Kind, ROOT, Res, State};

/// Nothing is cached by the kernel: a name or a size the disk lost must
/// not be served from a cache after power-on.
const TTL: Duration = Duration::ZERO;

/// A mounted power-cut file system. Unmounted when dropped.
pub struct Disk {
    state: Arc<Mutex<State>>,
    path: PathBuf,
    // Dropped (unmounted) before `_dir` is removed.
    session: Option<fuser::BackgroundSession>,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for Disk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Disk")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // Every operation leaves the model consistent before it can fail.
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl Disk {
    /// Mounts an empty disk on a new temporary directory.
    ///
    /// # Errors
    ///
    /// `/dev/fuse` is missing or the process may not mount: the error says
    /// so, and what to do.
    pub fn mount() -> io::Result<Disk> {
        let dir = tempfile::Builder::new()
            .prefix("raftengine-disk-")
            .tempdir()?;
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path)?;
        let state = Arc::new(Mutex::new(State::new()));
        let fs = PowerCutFs {
            state: state.clone(),
        };
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("raftengine-disk".into()),
            MountOption::NoAtime,
        ];
        let session = fuser::spawn_mount(fs, &path, &config).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot mount the power-cut disk at {} ({e}); the power-loss cases need \
                     /dev/fuse and the right to mount (run as root or with CAP_SYS_ADMIN)",
                    path.display()
                ),
            )
        })?;
        Ok(Disk {
            state,
            path,
            session: Some(session),
            _dir: dir,
        })
    }

    /// The mount point: put data dirs under it.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Cuts the power: every later call on this disk fails with `EIO`, and
    /// what no fsync covered is gone once [`Disk::power_on`] runs.
    pub fn cut(&self) {
        lock(&self.state).off = true;
    }

    /// Powers the disk back on after a [`Disk::cut`] (or right away, for a
    /// cut at this instant): it then holds what `loss` leaves of the
    /// unsynced writes, and injected faults are cleared.
    pub fn power_on(&self, loss: TailLoss) {
        lock(&self.state).restore(loss);
    }

    /// Makes every later matching call fail until [`Disk::clear_fault`].
    pub fn inject(&self, fault: Fault) {
        lock(&self.state).fault = Some(fault);
    }

    /// Removes an injected fault.
    pub fn clear_fault(&self) {
        lock(&self.state).fault = None;
    }

    /// What the disk was asked to do so far.
    pub fn stats(&self) -> DiskStats {
        lock(&self.state).stats
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        // Dropping the session detaches the mount without waiting for its
        // thread: a node that failed a case may still hold files open, and
        // its calls must keep being answered (a FUSE call nobody answers
        // blocks its thread for good). The thread ends with the last open
        // file.
        drop(self.session.take());
    }
}

struct PowerCutFs {
    state: Arc<Mutex<State>>,
}

fn errno(e: Errno) -> FuseErrno {
    match e {
        Errno::NoEntry => FuseErrno::ENOENT,
        Errno::Exists => FuseErrno::EEXIST,
        Errno::NotDir => FuseErrno::ENOTDIR,
        Errno::IsDir => FuseErrno::EISDIR,
        Errno::NotEmpty => FuseErrno::ENOTEMPTY,
        Errno::Io => FuseErrno::EIO,
        Errno::NoSpace => FuseErrno::ENOSPC,
    }
}

fn attr(state: &State, ino: u64) -> Res<FileAttr> {
    let node = state.node(ino)?;
    let (kind, size, nlink) = match &node.kind {
        Kind::File(f) => (FileType::RegularFile, f.data.len() as u64, 1),
        Kind::Dir(_) => (FileType::Directory, 0, 2),
    };
    Ok(FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: size.div_ceil(512),
        atime: node.mtime,
        mtime: node.mtime,
        ctime: node.mtime,
        crtime: SystemTime::UNIX_EPOCH,
        kind,
        perm: node.perm,
        nlink,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    })
}

impl PowerCutFs {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn entry(&self, ino: Res<u64>, reply: ReplyEntry) {
        let s = self.state();
        match ino.and_then(|ino| attr(&s, ino)) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn attr(result: Res<FileAttr>, reply: ReplyAttr) {
        match result {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn empty(result: Res<()>, reply: ReplyEmpty) {
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }
}

/// Direct I/O: reads and writes reach this file system instead of the
/// kernel's page cache, which would outlive a power cut.
const OPEN_FLAGS: FopenFlags = FopenFlags::FOPEN_DIRECT_IO;

impl Filesystem for PowerCutFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let ino = {
            let mut s = self.state();
            s.powered().and_then(|()| s.lookup(parent.0, name))
        };
        self.entry(ino, reply);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        Self::attr(attr(&self.state(), ino.0), reply);
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut s = self.state();
        let result = (|| {
            if let Some(len) = size {
                s.set_len(ino.0, len)?;
            }
            if let Some(mode) = mode {
                s.powered()?;
                s.set_perm(ino.0, (mode & 0o7777) as u16)?;
            }
            attr(&s, ino.0)
        })();
        Self::attr(result, reply);
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let ino = self
            .state()
            .create(parent.0, name, true, (mode & !umask & 0o7777) as u16);
        self.entry(ino, reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        Self::empty(self.state().remove(parent.0, name, false), reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        Self::empty(self.state().remove(parent.0, name, true), reply);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        if !flags.is_empty() {
            // RENAME_EXCHANGE / RENAME_NOREPLACE: nothing here uses them.
            reply.error(FuseErrno::EINVAL);
            return;
        }
        Self::empty(
            self.state().rename(parent.0, name, newparent.0, newname),
            reply,
        );
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let mut s = self.state();
        match s.powered().and_then(|()| s.node(ino.0).map(|_| ())) {
            Ok(()) => {
                s.stats.open_files += 1;
                reply.opened(FileHandle(0), OPEN_FLAGS);
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let mut s = self.state();
        let result = s
            .create(parent.0, name, false, (mode & !umask & 0o7777) as u16)
            .and_then(|ino| attr(&s, ino));
        match result {
            Ok(a) => {
                s.stats.open_files += 1;
                reply.created(&TTL, &a, Generation(0), FileHandle(0), OPEN_FLAGS);
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        match self.state().read(ino.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: fuser::WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.state().write(ino.0, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let mut s = self.state();
        s.stats.open_files = s.stats.open_files.saturating_sub(1);
        reply.ok();
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: fuser::LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2) is not a sync.
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        Self::empty(self.state().fsync(ino.0), reply);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let listed = {
            let mut s = self.state();
            s.powered().and_then(|()| s.list(ino.0))
        };
        let entries = match listed {
            Ok(e) => e,
            Err(e) => {
                reply.error(errno(e));
                return;
            }
        };
        let all = [(".".into(), ino.0, true), ("..".into(), ROOT, true)]
            .into_iter()
            .chain(entries);
        for (i, (name, child, is_dir)) in all.enumerate().skip(offset as usize) {
            let kind = if is_dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            };
            if reply.add(INodeNo(child), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        Self::empty(self.state().fsync(ino.0), reply);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // 64 GiB free in 4 KiB blocks; an injected DiskFull is per write.
        reply.statfs(1 << 24, 1 << 24, 1 << 24, 1 << 20, 1 << 20, 4096, 255, 4096);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        const KEEP_SIZE: i32 = 1;
        let mut s = self.state();
        let result = match mode {
            // Plain allocation grows the file with zeros.
            0 => s.grow_to(ino.0, offset + length),
            // Reserving blocks without changing the size: nothing to model.
            KEEP_SIZE => s.powered(),
            _ => {
                reply.error(FuseErrno::EOPNOTSUPP);
                return;
            }
        };
        Self::empty(result, reply);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read as _, Seek as _, SeekFrom, Write as _};

    #[test]
    fn the_kernel_sees_only_what_was_synced_after_a_cut() {
        let disk = Disk::mount().expect("mount the power-cut disk");
        let dir = disk.path().join("node");
        std::fs::create_dir(&dir).unwrap();
        std::fs::File::open(disk.path())
            .unwrap()
            .sync_all()
            .unwrap();
        let path = dir.join("log");
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(b"durable").unwrap();
        f.sync_data().unwrap();
        std::fs::File::open(&dir).unwrap().sync_all().unwrap();
        f.write_all(b" volatile").unwrap();
        std::fs::write(dir.join("unsynced-name"), b"x").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"durable volatile");

        disk.cut();
        assert!(
            f.write_all(b"after").is_err(),
            "writes fail while the power is off"
        );
        assert!(f.sync_data().is_err());
        disk.power_on(TailLoss::All);
        drop(f);

        assert_eq!(std::fs::read(&path).unwrap(), b"durable");
        assert!(!dir.join("unsynced-name").exists());
        let stats = disk.stats();
        assert_eq!(stats.file_syncs, 1);
        assert!(stats.refused >= 2);
    }

    #[test]
    fn injected_faults_reach_the_caller() {
        let disk = Disk::mount().expect("mount the power-cut disk");
        let path = disk.path().join("f");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        f.write_all(b"abc").unwrap();
        disk.inject(Fault::FsyncFails);
        assert_eq!(f.sync_data().unwrap_err().raw_os_error(), Some(libc_eio()));
        disk.inject(Fault::DiskFull);
        let err = f.write_all(b"more").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(28), "ENOSPC: {err}");
        disk.inject(Fault::WriteFails);
        f.seek(SeekFrom::Start(0)).unwrap();
        assert!(f.write_all(b"x").is_err());
        disk.clear_fault();
        f.sync_data().unwrap();
        let mut back = String::new();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.read_to_string(&mut back).unwrap();
        assert_eq!(back, "abc");
    }

    fn libc_eio() -> i32 {
        5
    }
}
