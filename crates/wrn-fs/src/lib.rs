//! Replacing a file atomically and durably: the one way wrn writes a file in place.
//!
//! The bytes go to a temporary file in the target's folder (so the rename cannot cross file systems),
//! which is flushed to disk, given the permissions a newly created file gets (`rw-rw-rw-` less the process's
//! umask, as `File::create` would), renamed over the target, and then
//! the folder is flushed so the rename itself survives a crash. A reader therefore sees the old file or
//! the new one, never a part; a failure at any step leaves the old file in place and no temporary file.
//!
//! [`atomic_write`] writes bytes held in memory; [`AtomicFile`] is for writers that stream (a prepared
//! cache) or that only take a path (libtorch's safetensors writer), and ends in the same [`AtomicFile::commit`].
//! [`Lock`] keeps a folder to one process at a time (see `lock`).

mod lock;

pub use lock::{lock_path, Lock, LockError};

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A write that failed, naming the file it was to replace.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct Error {
    /// The target file (not the temporary one).
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Replaces `path` with `bytes`: see the module doc.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let mut file = AtomicFile::create(path)?;
    file.write_all(bytes).map_err(|source| Error { path: path.to_path_buf(), source })?;
    file.commit()
}

/// A file being written to a temporary name beside its target; [`AtomicFile::commit`] puts it in place.
/// Dropped without a commit, the temporary file is removed and the target is untouched.
#[derive(Debug)]
pub struct AtomicFile {
    tmp: tempfile::NamedTempFile,
    target: PathBuf,
}

impl AtomicFile {
    /// Starts a temporary file in the folder of `target`: `.tmp-<unique>` with the target's extension,
    /// for writers that choose a format by it (the plots' PNG encoder).
    pub fn create(target: &Path) -> Result<AtomicFile, Error> {
        let suffix = target.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
        let tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .suffix(&suffix)
            .tempfile_in(folder(target))
            .map_err(|source| Error { path: target.to_path_buf(), source })?;
        Ok(AtomicFile { tmp, target: target.to_path_buf() })
    }

    /// The temporary file's path, for writers that open a path themselves.
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// The temporary file.
    pub fn as_file(&self) -> &File {
        self.tmp.as_file()
    }

    /// The file it will replace.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Flushes the temporary file to disk, renames it over the target and flushes the folder.
    pub fn commit(self) -> Result<(), Error> {
        let AtomicFile { mut tmp, target } = self;
        let io = |source| Error { path: target.clone(), source };
        tmp.flush().map_err(io)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o666 & !umask())).map_err(io)?;
        }
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(&target).map_err(|e| io(e.error))?;
        sync_folder(folder(&target)).map_err(io)
    }

    /// [`AtomicFile::commit`], first moving the file it replaces (if any) to `previous`, in the same folder,
    /// so the version before stays beside it. A crash between the two renames leaves only `previous`.
    pub fn commit_keeping(self, previous: &Path) -> Result<(), Error> {
        match std::fs::rename(&self.target, previous) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error { path: previous.to_path_buf(), source: e })
            }
            _ => self.commit(),
        }
    }
}

/// The process's file-creation mask, from `/proc/self/status` (read once; `022` where it cannot be read).
/// Read rather than set, since `umask(2)` can only be queried by changing it, which races other threads.
#[cfg(unix)]
fn umask() -> u32 {
    static UMASK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Umask:").map(|v| v.trim().to_string())))
            .and_then(|v| u32::from_str_radix(&v, 8).ok())
            .unwrap_or(0o022)
    })
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tmp.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.tmp.write_all(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.tmp.flush()
    }
}

/// The folder `path` is in (`.` for a bare file name).
fn folder(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Makes the folder's entries (a rename into it) durable. Only Unix can open a folder to sync it.
fn sync_folder(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        names
    }

    #[test]
    fn replaces_the_content_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("result.json");
        atomic_write(&path, b"first").unwrap();
        atomic_write(&path, b"second, longer").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second, longer");
        assert_eq!(names(dir.path()), ["result.json"]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // As `File::create` would make it under this process's umask (tempfile alone makes 0600).
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o666 & !umask());
            assert!(umask() <= 0o777);
        }
    }

    #[test]
    fn a_streamed_file_written_through_its_path_is_put_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint.safetensors");
        atomic_write(&path, b"old").unwrap();
        let file = AtomicFile::create(&path).unwrap();
        let name = file.path().file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with(".tmp-") && name.ends_with(".safetensors"), "{name}");
        // A writer that opens the path itself, as libtorch's does.
        std::fs::write(file.path(), b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        file.commit().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(names(dir.path()), ["checkpoint.safetensors"]);
    }

    #[test]
    fn a_commit_keeping_the_previous_version_moves_it_aside_first() {
        let dir = tempfile::tempdir().unwrap();
        let (target, previous) = (dir.path().join("c.bin"), dir.path().join("c.prev.bin"));
        for text in ["one", "two", "three"] {
            let mut file = AtomicFile::create(&target).unwrap();
            file.write_all(text.as_bytes()).unwrap();
            file.commit_keeping(&previous).unwrap();
        }
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "three");
        assert_eq!(std::fs::read_to_string(&previous).unwrap(), "two");
        assert_eq!(names(dir.path()), ["c.bin", "c.prev.bin"]);
    }

    #[test]
    fn an_uncommitted_file_leaves_the_target_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.csv");
        atomic_write(&path, b"kept").unwrap();
        let mut file = AtomicFile::create(&path).unwrap();
        file.write_all(b"half").unwrap();
        drop(file);
        assert_eq!(std::fs::read(&path).unwrap(), b"kept");
        assert_eq!(names(dir.path()), ["a.csv"]);
    }

    #[test]
    fn a_missing_folder_fails_naming_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent/result.json");
        let err = atomic_write(&path, b"x").unwrap_err();
        assert_eq!(err.path, path);
        assert!(err.to_string().starts_with(&path.display().to_string()), "{err}");
        assert!(names(dir.path()).is_empty());
    }

    #[test]
    fn a_failed_rename_leaves_the_previous_file_and_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        atomic_write(&dir.path().join("result.json"), b"first").unwrap();
        // A target that cannot be replaced (a non-empty folder) fails the rename.
        std::fs::create_dir(dir.path().join("blocked")).unwrap();
        std::fs::write(dir.path().join("blocked/x"), "").unwrap();
        let err = atomic_write(&dir.path().join("blocked"), b"second").unwrap_err();
        assert_eq!(err.path, dir.path().join("blocked"));
        assert_eq!(std::fs::read(dir.path().join("result.json")).unwrap(), b"first");
        assert_eq!(names(dir.path()), ["blocked", "result.json"]);
    }

    #[cfg(unix)]
    #[test]
    fn a_read_only_folder_fails_and_keeps_the_previous_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.csv");
        atomic_write(&path, b"first").unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o555)).unwrap();
        let result = atomic_write(&path, b"second");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        // Root may write anyway; otherwise the write fails and nothing changes.
        if let Err(err) = result {
            assert_eq!(err.path, path);
            assert_eq!(std::fs::read(&path).unwrap(), b"first");
        }
        assert_eq!(names(dir.path()), ["metrics.csv"]);
    }
}
