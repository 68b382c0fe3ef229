//! State-machine snapshot files: `<data_dir>/snapshots/snap-<index>-<term>.snap`.
//!
//!
//! Format: `RESNAP01` magic, index (u64 BE), term (u64 BE), payload length
//! (u64 BE), the payload as [`Snapshot::write_to`] produced it, then the
//! CRC-32 of the payload (u32 BE). Files are written to a `.tmp` name,
//! fsynced and renamed, so a crash leaves either the old set or a complete
//! new file. Every reader checks the checksum before trusting the payload,
//! so a truncated or corrupt file is a clear error, never a silently wrong
//! state.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use raftengine::{Error, Result, Snapshot, StateMachine};

use crate::durable;

const MAGIC: &[u8; 8] = b"RESNAP01";
/// Bytes before the payload: magic, index, term and payload length.
pub const HEADER_LEN: u64 = 32;
const TRAILER_LEN: u64 = 4;

/// The snapshot directory of one node.
#[derive(Debug, Clone)]
pub struct SnapshotDir {
    dir: PathBuf,
}

fn io_err(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::storage(what, e)
}

fn corrupt(path: &Path, why: &str) -> Error {
    Error::Storage {
        message: format!("snapshot {} is corrupt: {why}", path.display()),
        source: None,
    }
}

/// Counts bytes and checksums them on their way to the file.
struct Checksummed<W> {
    inner: W,
    hasher: crc32fast::Hasher,
    written: u64,
}

impl<W: Write> Write for Checksummed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl SnapshotDir {
    /// Opens (creating if needed) `<data_dir>/snapshots`.
    pub fn new(data_dir: &Path) -> Result<Self> {
        let dir = data_dir.join("snapshots");
        durable::create_dir_all(&dir).map_err(io_err(format!("create {}", dir.display())))?;
        Ok(SnapshotDir { dir })
    }

    /// Where the snapshot at `(index, term)` lives.
    pub fn path(&self, index: u64, term: u64) -> PathBuf {
        self.dir.join(format!("snap-{index:020}-{term:020}.snap"))
    }

    /// A temporary path for a file being written or received.
    pub fn temp_path(&self, index: u64, term: u64) -> PathBuf {
        self.dir.join(format!("snap-{index:020}-{term:020}.tmp"))
    }

    /// Serializes `snapshot` into the file for `(index, term)`. Blocking.
    pub fn write<T: Snapshot>(&self, index: u64, term: u64, snapshot: &mut T) -> Result<u64> {
        let tmp = self.temp_path(index, term);
        let file = File::create(&tmp).map_err(io_err(format!("create {}", tmp.display())))?;
        let mut out = BufWriter::new(file);
        let header_err = io_err(format!("write {}", tmp.display()));
        let mut header = Vec::with_capacity(HEADER_LEN as usize);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&index.to_be_bytes());
        header.extend_from_slice(&term.to_be_bytes());
        header.extend_from_slice(&0u64.to_be_bytes());
        out.write_all(&header).map_err(header_err)?;
        let mut body = Checksummed {
            inner: out,
            hasher: crc32fast::Hasher::new(),
            written: 0,
        };
        snapshot
            .write_to(&mut body)
            .map_err(|e| Error::state_machine("write snapshot", e))?;
        let (mut out, crc, len) = (body.inner, body.hasher.finalize(), body.written);
        let err = |what: &str| io_err(format!("{what} {}", tmp.display()));
        out.write_all(&crc.to_be_bytes()).map_err(err("write"))?;
        let mut file = out
            .into_inner()
            .map_err(|e| Error::storage(format!("flush {}", tmp.display()), e.into_error()))?;
        // Patch the payload length now that it is known.
        file.seek(SeekFrom::Start(24)).map_err(err("seek"))?;
        file.write_all(&len.to_be_bytes()).map_err(err("write"))?;
        file.sync_all().map_err(err("sync"))?;
        drop(file);
        self.publish(&tmp, index, term)?;
        Ok(len)
    }

    /// A unique temporary path for a file received from a peer.
    pub fn receive_path(&self, index: u64, term: u64, nonce: u64) -> PathBuf {
        self.dir
            .join(format!("recv-{index:020}-{term:020}-{nonce:016x}.tmp"))
    }

    /// Deletes temporary files a crash may have left behind (call at open).
    pub fn remove_temporaries(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "tmp") {
                let _ = std::fs::remove_file(&p);
            }
        }
    }

    /// Verifies a complete file at `tmp` and renames it into place.
    pub fn publish(&self, tmp: &Path, index: u64, term: u64) -> Result<()> {
        let (i, t, _) = verify(tmp)?;
        if (i, t) != (index, term) {
            return Err(corrupt(tmp, "header names another snapshot"));
        }
        let path = self.path(index, term);
        durable::rename(tmp, &path).map_err(io_err(format!("rename {}", tmp.display())))
    }

    /// Restores `sm` from the file for `(index, term)` after checking it.
    /// Blocking.
    pub fn restore<S: StateMachine>(&self, index: u64, term: u64, sm: &mut S) -> Result<()> {
        let mut payload = self.payload(index, term)?;
        sm.restore(&mut payload).map_err(|e| {
            Error::state_machine(
                format!("restore from {}", self.path(index, term).display()),
                e,
            )
        })
    }

    /// The checked payload of the file for `(index, term)`: the bytes
    /// [`Snapshot::write_to`] wrote, and nothing else. Blocking.
    pub fn payload(&self, index: u64, term: u64) -> Result<impl Read + use<>> {
        let path = self.path(index, term);
        let (_, _, len) = verify(&path)?;
        let file = File::open(&path).map_err(io_err(format!("open {}", path.display())))?;
        let mut reader = BufReader::new(file);
        reader
            .seek(SeekFrom::Start(HEADER_LEN))
            .map_err(io_err(format!("seek {}", path.display())))?;
        Ok(reader.take(len))
    }

    /// The finished snapshot files present, as `(index, term)`, newest last.
    pub fn list(&self) -> Vec<(u64, u64)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut found: Vec<(u64, u64)> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let rest = name.strip_prefix("snap-")?.strip_suffix(".snap")?;
                let (i, t) = rest.split_once('-')?;
                Some((i.parse().ok()?, t.parse().ok()?))
            })
            .collect();
        found.sort_unstable();
        found
    }

    /// Deletes every finished snapshot file other than the one for
    /// `(index, term)`. Temporary files (transfers in progress) are kept.
    pub fn purge_except(&self, index: u64, term: u64) {
        let keep = self.path(index, term);
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p != keep && p.extension().is_some_and(|x| x == "snap") {
                if let Err(err) = std::fs::remove_file(&p) {
                    tracing::warn!(path = %p.display(), error = %err, "could not delete old snapshot file");
                }
            }
        }
    }
}

/// A valid snapshot file for `(index, term)` holding `payload`, as bytes
/// (written by [`SnapshotDir::write`] in a temporary dir and read back):
/// what a peer would stream, for tests that forge one.
///
/// # Errors
///
/// The temporary dir cannot be made, written or read.
#[cfg(feature = "dev")]
pub fn file_bytes(index: u64, term: u64, payload: &[u8]) -> Result<Vec<u8>> {
    let dir = tempfile::tempdir().map_err(io_err("create a temporary dir".to_owned()))?;
    let snapshots = SnapshotDir::new(dir.path())?;
    // `Snapshot` is `'static`: the payload is copied in.
    let mut owned = Owned(payload.to_vec());
    snapshots.write(index, term, &mut owned)?;
    let path = snapshots.path(index, term);
    std::fs::read(&path).map_err(io_err(format!("read {}", path.display())))
}

/// An owned payload, for [`file_bytes`].
#[cfg(feature = "dev")]
struct Owned(Vec<u8>);

#[cfg(feature = "dev")]
impl Snapshot for Owned {
    fn write_to(&mut self, writer: &mut dyn Write) -> std::io::Result<u64> {
        writer.write_all(&self.0)?;
        Ok(self.0.len() as u64)
    }
}

/// Checks magic, length and checksum; returns `(index, term, payload_len)`.
pub fn verify(path: &Path) -> Result<(u64, u64, u64)> {
    let file = File::open(path).map_err(io_err(format!("open {}", path.display())))?;
    let size = file
        .metadata()
        .map_err(io_err(format!("stat {}", path.display())))?
        .len();
    if size < HEADER_LEN + TRAILER_LEN {
        return Err(corrupt(path, "shorter than its header"));
    }
    let mut r = BufReader::new(file);
    let mut header = [0u8; HEADER_LEN as usize];
    r.read_exact(&mut header)
        .map_err(io_err(format!("read {}", path.display())))?;
    if &header[..8] != MAGIC {
        return Err(corrupt(path, "bad magic"));
    }
    let word = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&header[at..at + 8]);
        u64::from_be_bytes(b)
    };
    let (index, term, len) = (word(8), word(16), word(24));
    if HEADER_LEN + len + TRAILER_LEN != size {
        return Err(corrupt(
            path,
            "length does not match the file size (truncated?)",
        ));
    }
    let mut hasher = crc32fast::Hasher::new();
    let mut left = len;
    let mut buf = vec![0u8; 64 * 1024];
    while left > 0 {
        let n = (left as usize).min(buf.len());
        r.read_exact(&mut buf[..n])
            .map_err(io_err(format!("read {}", path.display())))?;
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    let mut crc = [0u8; 4];
    r.read_exact(&mut crc)
        .map_err(io_err(format!("read {}", path.display())))?;
    if u32::from_be_bytes(crc) != hasher.finalize() {
        return Err(corrupt(path, "checksum mismatch"));
    }
    Ok((index, term, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Bytes(Vec<u8>);
    impl Snapshot for Bytes {
        fn write_to(&mut self, w: &mut dyn Write) -> std::io::Result<u64> {
            w.write_all(&self.0)?;
            Ok(self.0.len() as u64)
        }
    }

    #[test]
    fn written_files_verify_and_damage_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let snaps = SnapshotDir::new(dir.path()).unwrap();
        let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let n = snaps.write(42, 3, &mut Bytes(payload.clone())).unwrap();
        assert_eq!(n, payload.len() as u64);
        let path = snaps.path(42, 3);
        assert_eq!(verify(&path).unwrap(), (42, 3, payload.len() as u64));

        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER_LEN as usize + 500] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(verify(&path), Err(Error::Storage { .. })));

        bytes.truncate(bytes.len() - 10);
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(verify(&path), Err(Error::Storage { .. })));

        std::fs::write(&path, b"garbage").unwrap();
        assert!(matches!(verify(&path), Err(Error::Storage { .. })));
    }
}
