//! Checking files against their manifest entries: the size first (instant, and a truncated file is then
//! reported as truncated rather than as a hash mismatch), then the SHA-256, streamed.
//!
//! A successful check leaves a stamp `<file>.verified` (JSON: size, modification time, SHA-256), so a
//! verified file is neither hashed nor downloaded again while it is unchanged; `wrn data verify` ignores
//! stamps and re-hashes everything. A file with no published checksum (ImageNet's Kaggle zip) is checked
//! by its layout instead; its stamp says which layout (`"layout": "kaggle"`) and holds the digest of what
//! was checked in place of the file's SHA-256.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use wrn_progress::Task;

use crate::error::{Error, IoContext, Result};
use crate::manifest::FileEntry;

const BUFFER: usize = 1 << 20;

/// The SHA-256 of a file, as lowercase hex; `progress` advances by the bytes read.
pub fn sha256_file(path: &Path, progress: Option<&dyn Task>) -> Result<String> {
    let mut file = std::fs::File::open(path).at(path)?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; BUFFER];
    loop {
        let k = file.read(&mut buf).at(path)?;
        if k == 0 {
            break;
        }
        hash.update(&buf[..k]);
        if let Some(p) = progress {
            p.advance(k as u64);
        }
    }
    Ok(format!("{:x}", hash.finalize()))
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Stamp {
    size: u64,
    mtime_ns: u128,
    sha256: String,
    /// Set when the file was checked by its layout (the alternative's name) rather than hashed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    layout: Option<String>,
}

/// `<file>.verified`.
pub fn stamp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".verified");
    path.with_file_name(name)
}

fn current_stamp(path: &Path, sha256: &str) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    let mtime_ns = meta.modified().ok()?.duration_since(UNIX_EPOCH).ok()?.as_nanos();
    Some(Stamp { size: meta.len(), mtime_ns, sha256: sha256.to_string(), layout: None })
}

/// Whether `path` carries a stamp that still matches the file and the expected entry.
pub fn is_stamped(path: &Path, entry: &FileEntry) -> bool {
    let Ok(text) = std::fs::read_to_string(stamp_path(path)) else { return false };
    let Ok(stamp) = serde_json::from_str::<Stamp>(&text) else { return false };
    stamp.size == entry.size && stamp.sha256 == entry.sha256 && current_stamp(path, &entry.sha256) == Some(stamp)
}

pub(crate) fn write_stamp(path: &Path, sha256: &str) -> Result<()> {
    let stamp = current_stamp(path, sha256)
        .ok_or_else(|| Error::Format { path: path.into(), detail: "cannot read size and modification time".into() })?;
    save_stamp(path, &stamp)
}

/// Stamps a file checked by its layout `layout` (an alternative's name); `digest` identifies what was
/// checked.
pub(crate) fn write_layout_stamp(path: &Path, layout: &str, digest: &str) -> Result<()> {
    let mut stamp = current_stamp(path, digest)
        .ok_or_else(|| Error::Format { path: path.into(), detail: "cannot read size and modification time".into() })?;
    stamp.layout = Some(layout.to_string());
    save_stamp(path, &stamp)
}

/// The digest in `path`'s stamp when the file was checked by layout `layout` and is unchanged since.
pub fn layout_stamp(path: &Path, layout: &str) -> Option<String> {
    let stamp: Stamp = serde_json::from_str(&std::fs::read_to_string(stamp_path(path)).ok()?).ok()?;
    let current = current_stamp(path, &stamp.sha256)?;
    (stamp.layout.as_deref() == Some(layout) && (current.size, current.mtime_ns) == (stamp.size, stamp.mtime_ns))
        .then_some(stamp.sha256)
}

/// Removes a file's stamp, if any.
pub(crate) fn remove_stamp(path: &Path) {
    let _ = std::fs::remove_file(stamp_path(path));
}

fn save_stamp(path: &Path, stamp: &Stamp) -> Result<()> {
    Ok(wrn_fs::atomic_write(&stamp_path(path), &serde_json::to_vec(stamp).unwrap())?)
}

/// Checks size then SHA-256 of `path` against `entry` and stamps it; a stale stamp is removed first.
pub fn check_file(path: &Path, entry: &FileEntry, progress: Option<&dyn Task>) -> Result<()> {
    let _ = std::fs::remove_file(stamp_path(path));
    let size = std::fs::metadata(path).at(path)?.len();
    if size != entry.size {
        let kind = if size < entry.size { "truncated" } else { "too long" };
        return Err(Error::Size { path: path.into(), expected: entry.size, actual: size, kind });
    }
    let actual = sha256_file(path, progress)?;
    if actual != entry.sha256 {
        return Err(Error::Checksum { path: path.into(), expected: entry.sha256.clone(), actual });
    }
    write_stamp(path, &actual)
}

/// Like [`check_file`], but trusts a matching stamp.
pub fn ensure_verified(path: &Path, entry: &FileEntry, progress: Option<&dyn Task>) -> Result<()> {
    if is_stamped(path, entry) {
        return Ok(());
    }
    check_file(path, entry, progress)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(bytes: &[u8]) -> FileEntry {
        FileEntry {
            name: "f.bin".into(),
            url: "http://127.0.0.1/f.bin".into(),
            mirrors: vec![],
            manual: false,
            size: bytes.len() as u64,
            sha256: format!("{:x}", Sha256::digest(bytes)),
            md5: None,
            split: None,
            members: vec![],
        }
    }

    #[test]
    fn sha256_of_a_known_input() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abc");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(sha256_file(&p, None).unwrap(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn size_is_checked_before_the_hash_and_stamps_follow_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.bin");
        let e = entry(b"hello world");
        std::fs::write(&p, b"hello").unwrap();
        let err = check_file(&p, &e, None).unwrap_err().to_string();
        assert!(err.contains("truncated") && err.contains("size 5 bytes, expected 11"), "{err}");
        std::fs::write(&p, b"hello_world").unwrap();
        let err = check_file(&p, &e, None).unwrap_err().to_string();
        assert!(err.contains("SHA-256 mismatch") && err.contains(&e.sha256), "{err}");
        assert!(!is_stamped(&p, &e));
        std::fs::write(&p, b"hello world").unwrap();
        check_file(&p, &e, None).unwrap();
        assert!(is_stamped(&p, &e));
        // Changing the file invalidates the stamp even at the same size.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&p, b"hello_world").unwrap();
        assert!(!is_stamped(&p, &e));
        assert!(ensure_verified(&p, &e, None).is_err());
    }
}
