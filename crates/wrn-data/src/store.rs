//! Where a dataset lives under the data directory, and what state it is in.
//!
//! ```text
//! <data>/<dataset>/<file>                 a downloaded or imported file, as named in the manifest
//! <data>/<dataset>/<file>.verified        its verification stamp (see `verify`)
//! <data>/<dataset>/<file>.part            an unfinished download (resumed by the next fetch)
//! <data>/<dataset>/prepared/<split>.wrnc  the prepared cache, one file per split (see `cache`)
//! ```

use std::path::PathBuf;

use serde::Serialize;

use crate::cache::{self, PreparedSplit};
use crate::error::Result;
use crate::manifest::{FileEntry, Manifest};
use crate::verify;

/// The data directory and the paths inside it.
#[derive(Debug, Clone)]
pub struct Store {
    pub root: PathBuf,
}

/// The state of one dataset, from least to most complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// No file, not even a partial download.
    Missing,
    /// Some files or parts of files are present, or present but not yet verified.
    Partial,
    /// Every file is present and verified.
    Verified,
    /// Every split is prepared.
    Prepared,
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            State::Missing => "missing",
            State::Partial => "partial",
            State::Verified => "verified",
            State::Prepared => "prepared",
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct FileStatus {
    pub name: String,
    pub path: PathBuf,
    pub expected_size: u64,
    /// Bytes on disk (of the file, or of its `.part`).
    pub size_on_disk: u64,
    pub state: State,
}

#[derive(Debug, Clone, Serialize)]
pub struct SplitStatus {
    pub split: String,
    pub path: PathBuf,
    pub images: Option<usize>,
    pub size_on_disk: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DatasetStatus {
    pub name: String,
    pub dir: PathBuf,
    pub state: State,
    pub files: Vec<FileStatus>,
    pub prepared: Vec<SplitStatus>,
}

impl Store {
    pub fn new(root: impl Into<PathBuf>) -> Store {
        Store { root: root.into() }
    }

    pub fn dataset_dir(&self, manifest: &Manifest) -> PathBuf {
        self.root.join(&manifest.name)
    }

    pub fn file_path(&self, manifest: &Manifest, file: &FileEntry) -> PathBuf {
        self.dataset_dir(manifest).join(&file.name)
    }

    pub fn prepared_dir(&self, manifest: &Manifest) -> PathBuf {
        self.dataset_dir(manifest).join("prepared")
    }

    /// The prepared file of each split, in the manifest's split order.
    pub fn split_paths(&self, manifest: &Manifest) -> Vec<(String, PathBuf)> {
        let dir = self.prepared_dir(manifest);
        manifest.splits.keys().map(|s| (s.clone(), cache::split_path(&dir, s))).collect()
    }

    /// Opens a prepared split.
    pub fn open_split(&self, manifest: &Manifest, split: &str) -> Result<PreparedSplit> {
        PreparedSplit::open(&cache::split_path(&self.prepared_dir(manifest), split))
    }

    /// Whether every split is prepared, with the manifest's image count, from the manifest's files
    /// (the SHA-256 recorded in each split's sources matches the manifest).
    pub fn is_prepared(&self, manifest: &Manifest) -> bool {
        manifest.splits.iter().all(|(split, &n)| {
            self.open_split(manifest, split).is_ok_and(|s| {
                s.len() as u64 == n
                    && !s.meta.sources.is_empty()
                    && s.meta.sources.iter().all(|src| manifest.file(&src.file).is_some_and(|f| f.sha256 == src.sha256))
            })
        })
    }

    /// The state of a dataset from what is on disk; trusts verification stamps (no hashing).
    pub fn status(&self, manifest: &Manifest) -> DatasetStatus {
        let files: Vec<FileStatus> = manifest
            .files
            .iter()
            .map(|f| {
                let path = self.file_path(manifest, f);
                let part = crate::fetch::part_path(&path);
                let (state, size_on_disk) = match std::fs::metadata(&path) {
                    Ok(m) if verify::is_stamped(&path, f) => (State::Verified, m.len()),
                    Ok(m) => (State::Partial, m.len()),
                    Err(_) => match std::fs::metadata(&part) {
                        Ok(m) => (State::Partial, m.len()),
                        Err(_) => (State::Missing, 0),
                    },
                };
                FileStatus { name: f.name.clone(), path, expected_size: f.size, size_on_disk, state }
            })
            .collect();
        let prepared: Vec<SplitStatus> = self
            .split_paths(manifest)
            .into_iter()
            .map(|(split, path)| {
                let opened = PreparedSplit::open(&path).ok();
                let size_on_disk = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                SplitStatus { split, images: opened.map(|s| s.len()), size_on_disk, path }
            })
            .collect();
        let all_prepared = self.is_prepared(manifest);
        let state = if all_prepared {
            State::Prepared
        } else if files.iter().all(|f| f.state == State::Verified) {
            State::Verified
        } else if files.iter().all(|f| f.state == State::Missing) {
            State::Missing
        } else {
            State::Partial
        };
        DatasetStatus { name: manifest.name.clone(), dir: self.dataset_dir(manifest), state, files, prepared }
    }
}

/// Human-readable bytes (binary units).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_uses_binary_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(170_052_171), "162.2 MiB");
        assert_eq!(human_bytes(147_897_477_120), "137.7 GiB");
    }
}
