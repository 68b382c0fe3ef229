//! Durable files and directories.
//!
//! On Linux (and by POSIX) a byte written to a file survives a power cut
//! only after an fsync of that file has returned, and a *name* — a created,
//! renamed or removed directory entry — only after an fsync of the directory
//! that holds it. These helpers do both, in that order, so a crash leaves
//! either the old state or the complete new one.
//!
//! The conformance suite's power-cut file system drops everything not
//! covered this way, so a missing call here fails a test rather than a
//! production disk.

use std::fs::File;
use std::io::{self, Write as _};
use std::path::Path;

/// Fsyncs the directory `dir`, making the names in it durable.
///
/// # Errors
///
/// The I/O error of opening or syncing the directory.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Fsyncs the directory that holds `path` (the current directory for a bare
/// name).
///
/// # Errors
///
/// The I/O error of opening or syncing the parent.
pub fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => sync_dir(p),
        _ => sync_dir(Path::new(".")),
    }
}

/// Creates `dir` and any missing parents, and makes every created name
/// durable: each new directory's parent is fsynced after the directory is
/// made. A directory that already exists is left alone, so calling this on
/// every start costs no fsync.
///
/// # Errors
///
/// The I/O error of creating or syncing a directory.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        if !parent.as_os_str().is_empty() {
            create_dir_all(parent)?;
        }
    }
    match std::fs::create_dir(dir) {
        Ok(()) => sync_parent(dir),
        // Another thread made it between the check and here; it made it
        // durable too, or will before it uses it.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => sync_parent(dir),
        Err(e) => Err(e),
    }
}

/// Writes `bytes` to `path` so that after a crash the file holds either its
/// old content or all of `bytes`: a temporary file next to it is written and
/// fsynced, renamed over `path`, and the directory is fsynced.
///
/// # Errors
///
/// The I/O error of any step; `path` then still holds its old content.
pub fn write_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    sync_parent(path)
}

/// Renames `from` to `to` and fsyncs the directory (or both directories)
/// involved, so the new name is durable when this returns. `from` must
/// already be fsynced if its content has to survive.
///
/// # Errors
///
/// The I/O error of the rename or of a directory sync.
pub fn rename(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::rename(from, to)?;
    sync_parent(to)?;
    if from.parent() != to.parent() {
        sync_parent(from)?;
    }
    Ok(())
}

/// Removes the file `path` and fsyncs its directory.
///
/// # Errors
///
/// The I/O error of the removal or of the directory sync.
pub fn remove_file(path: &Path) -> io::Result<()> {
    std::fs::remove_file(path)?;
    sync_parent(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_file_replaces_content_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b/c");
        create_dir_all(&p).unwrap();
        assert!(p.is_dir());
        create_dir_all(&p).unwrap();
        let f = p.join("id");
        write_file(&f, b"one").unwrap();
        write_file(&f, b"two").unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(&p)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("id")]);
        rename(&f, &p.join("id2")).unwrap();
        remove_file(&p.join("id2")).unwrap();
        assert_eq!(std::fs::read_dir(&p).unwrap().count(), 0);
    }
}
