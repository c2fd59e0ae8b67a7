//! Free disk space, queried on the filesystem that will receive the bytes (not the one of the current
//! directory), checked before large writes so a download or a prepare fails up front with the numbers
//! rather than part-way with a full disk.

use std::path::Path;

use crate::error::{Error, Result};

/// Bytes available to this user on the filesystem holding `dir` (or its nearest existing ancestor).
pub fn available(dir: &Path) -> Option<u64> {
    let existing = dir.ancestors().find(|d| d.exists())?;
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(existing.as_os_str().as_bytes()).ok()?;
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `c` is a valid NUL-terminated path and `s` a valid out-pointer.
        if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
            return None;
        }
        #[allow(clippy::unnecessary_cast)]
        Some(s.f_bavail as u64 * s.f_frsize as u64)
    }
    #[cfg(not(unix))]
    {
        let _ = existing;
        None
    }
}

/// Fails when fewer than `needed` bytes are free under `dir`; `what` says what they are for. Passes when
/// the free space cannot be determined.
pub fn ensure(dir: &Path, needed: u64, what: &str) -> Result<()> {
    match available(dir) {
        Some(free) if free < needed => {
            Err(Error::Space { path: dir.into(), needed, available: free, what: what.into() })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_space_is_reported_and_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let free = available(&dir.path().join("not/yet/created")).expect("statvfs works here");
        assert!(free > 0);
        ensure(dir.path(), 1, "a byte").unwrap();
        let err = ensure(dir.path(), u64::MAX, "the ImageNet train tar").unwrap_err().to_string();
        assert!(err.contains("the ImageNet train tar") && err.contains(&dir.path().display().to_string()), "{err}");
    }
}
