//! Advisory locks: one process at a time for a run folder, a dataset, a sweep.
//!
//! A lock is a file (`.lock` in the folder it guards) locked with the OS's advisory lock (`flock`), which
//! the OS releases when the process ends however it ends, so a crash never leaves a folder locked. The
//! holder writes who it is into the file; a second process gets [`LockError::Held`] naming that holder
//! and writes nothing. The file itself stays: deleting a lock file would let two processes lock two
//! different files of the same name.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// A lock that could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error("{} is in use by {holder}; wait for it to finish or stop it, then try again", guarded.display())]
    Held {
        /// The folder the lock guards.
        guarded: PathBuf,
        /// Who holds it, as the holder wrote it ("pid 123 (wrn train) since 2026-12-04 20:30:00 UTC").
        holder: String,
    },
    /// The lock file could not be created or locked.
    #[error("cannot lock {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A held lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct Lock {
    file: File,
    path: PathBuf,
}

impl Drop for Lock {
    /// Unlocks explicitly rather than by closing: a child being started by another thread at that moment
    /// holds a copy of the descriptor until its `exec`, and would keep the lock that long.
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

/// The lock file that guards `folder`.
pub fn lock_path(folder: &Path) -> PathBuf {
    folder.join(".lock")
}

impl Lock {
    /// Locks `folder` (which must exist) for `what` this process does ("wrn train"), or says who holds it.
    pub fn acquire(folder: &Path, what: &str) -> Result<Lock, LockError> {
        let path = lock_path(folder);
        let io = |source| LockError::Io { path: path.clone(), source };
        let mut file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let holder = if holder.is_empty() { "another process".to_string() } else { holder.to_string() };
                return Err(LockError::Held { guarded: folder.to_path_buf(), holder });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        let since = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let who = format!("pid {} on {} ({what}) since {} (Unix time)\n", std::process::id(), host.trim(), since);
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(who.as_bytes()).map_err(io)?;
        Ok(Lock { file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_named_until_it_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = Lock::acquire(dir.path(), "wrn train").unwrap();
        // flock locks belong to the open file, so a second open in this process conflicts as another
        // process's would.
        let err = Lock::acquire(dir.path(), "wrn sweep").unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&format!("pid {}", std::process::id())), "{text}");
        assert!(text.contains("(wrn train)") && text.contains(&dir.path().display().to_string()), "{text}");
        drop(first);
        let again = Lock::acquire(dir.path(), "wrn sweep").unwrap();
        assert!(std::fs::read_to_string(again.path()).unwrap().contains("(wrn sweep)"));
    }

    #[test]
    fn a_lock_in_a_missing_folder_fails_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = Lock::acquire(&dir.path().join("absent"), "wrn train").unwrap_err();
        assert!(matches!(err, LockError::Io { .. }));
        assert!(err.to_string().contains("absent/.lock"), "{err}");
    }

    #[test]
    fn the_lock_is_released_when_its_process_ends() {
        let dir = tempfile::tempdir().unwrap();
        // flock(1) takes the same lock, keeps it only in its own process (`-o`), and is killed.
        let mut child =
            std::process::Command::new("flock").arg("-o").arg(lock_path(dir.path())).args(["sleep", "30"]).spawn();
        if let Ok(child) = child.as_mut() {
            // Wait until it holds the lock.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while Lock::acquire(dir.path(), "probe").is_ok() {
                assert!(std::time::Instant::now() < deadline, "flock never took the lock");
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            child.kill().unwrap();
            child.wait().unwrap();
            Lock::acquire(dir.path(), "wrn train").unwrap();
        } else {
            panic!("flock(1) from util-linux is needed by this test");
        }
    }
}
