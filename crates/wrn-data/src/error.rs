//! The typed errors of the data stage. Every variant names the file it is about and what is wrong
//! with it, so a message can be acted on without a debugger.
//!
//! Each message is whole in its `Display`: an I/O error's reason (`... (os error 2)`) is part of the
//! message and not also returned as `source()`, so a printer that walks the chain (anyhow's `{:#}`)
//! says it once.

use std::path::PathBuf;

/// Everything that can go wrong while reading manifests, fetching, verifying or preparing data.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing `path` failed; `error` is the OS's reason, shown in the message (with what to do
    /// when the disk is full).
    #[error("{path}: {error}{}", full_disk_hint(error))]
    Io { path: PathBuf, error: std::io::Error },
    #[error("manifest {path}: {detail}")]
    Manifest { path: PathBuf, detail: String },
    /// `known`: the built-in datasets' names.
    #[error("unknown dataset `{name}` (known: {known}; or pass --manifest FILE)")]
    UnknownDataset { name: String, known: String },
    #[error("{path}: size {actual} bytes, expected {expected} bytes ({kind})")]
    Size { path: PathBuf, expected: u64, actual: u64, kind: &'static str },
    #[error("{path}: SHA-256 mismatch: expected {expected}, got {actual}")]
    Checksum { path: PathBuf, expected: String, actual: String },
    /// A source file's bytes, hashed while preparing it, differ from the manifest's SHA-256.
    #[error(
        "{path}: SHA-256 {actual} read while preparing, the manifest says {expected}: the file changed on disk \
         since it was verified, and nothing was prepared from it; run `wrn data fetch {dataset}` again (or \
         `wrn data import {dataset} FILE` with a good copy)"
    )]
    SourceChanged { path: PathBuf, expected: String, actual: String, dataset: String },
    #[error("archive {path}: {detail}")]
    Archive { path: PathBuf, detail: String },
    #[error("{path}: {detail}")]
    Format { path: PathBuf, detail: String },
    #[error("prepared cache {path}: {detail}")]
    Cache { path: PathBuf, detail: String },
    #[error("could not fetch {file}: {}", attempts.join("; "))]
    Fetch { file: String, attempts: Vec<String> },
    /// Every source of a dataset's file failed: each source once with why, then the ways out.
    #[error(
        "could not fetch {file} of {dataset} from any of its sources:\n{}\nWays out: `--mirror URL` (or \
         WRN_DATA_MIRROR=URL) for a server holding the same file; HTTPS_PROXY=http://host:port if this network \
         reaches the internet through a proxy; or download {file} on another machine and run \
         `wrn data import {dataset} FILE` (checked against the manifest's SHA-256).",
        tried.iter().map(|t| format!("  - {t}")).collect::<Vec<_>>().join("\n")
    )]
    Unreachable { file: String, dataset: String, tried: Vec<String> },
    #[error("{path}: not enough free disk space for {what}: {needed} bytes needed, {available} available")]
    Space { path: PathBuf, needed: u64, available: u64, what: String },
    #[error("{dataset}: {detail}")]
    Unsupported { dataset: String, detail: String },
    /// Another process holds the dataset's lock (or it could not be taken); the message says which.
    #[error("{0}")]
    Locked(wrn_fs::LockError),
    #[error("preparing {dataset} {split}: stopped after {shards} shard(s) as asked; prepare again to continue")]
    Stopped { dataset: String, split: String, shards: usize },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What to do when a write failed for want of space: a download keeps what it has in its `.part` file
/// and resumes from there, and a preparation starts its split again.
fn full_disk_hint(error: &std::io::Error) -> &'static str {
    match error.kind() {
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
            "; free space on that disk (or choose another with --data-dir) and run the same command again: a \
             download resumes where it stopped"
        }
        _ => "",
    }
}

impl From<wrn_fs::Error> for Error {
    fn from(e: wrn_fs::Error) -> Error {
        Error::Io { path: e.path, error: e.source }
    }
}

impl From<wrn_fs::LockError> for Error {
    fn from(e: wrn_fs::LockError) -> Error {
        Error::Locked(e)
    }
}

/// Attaches a path to an `io::Error`.
pub(crate) trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|error| Error::Io { path: path.into(), error })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_says_what_to_do() {
        let full = Error::Io { path: "/d/x.part".into(), error: std::io::Error::from_raw_os_error(28) };
        let text = full.to_string();
        assert!(text.starts_with("/d/x.part: No space left on device (os error 28); free space"), "{text}");
        assert!(text.ends_with("a download resumes where it stopped"), "{text}");
        let other = Error::Io { path: "/d/x".into(), error: std::io::Error::from_raw_os_error(2) };
        assert_eq!(other.to_string(), "/d/x: No such file or directory (os error 2)");
    }
}
