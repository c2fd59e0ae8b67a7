//! Where a dataset lives under the data directory, and what state it is in.
//!
//! ```text
//! <data>/<dataset>/<file>                 a downloaded or imported file, as named in the manifest
//! <data>/<dataset>/<file>.verified        its verification stamp (see `verify`)
//! <data>/<dataset>/<file>.part            an unfinished download (resumed by the next fetch)
//! <data>/<dataset>/<file>.rejected        a complete download whose hash did not match (see `fetch`)
//! <data>/<dataset>/<alternative file>     ImageNet: the Kaggle zip, when imported instead of the tars
//! <data>/<dataset>/<alternative file>.verified  its stamp: layout checked (see `imagenet::kaggle`)
//! <data>/<dataset>/prepared/<split>.wrnc  the prepared cache, one file per split (see `cache`)
//! <data>/<dataset>/prepared/<split>.wrni  ImageNet: the index of a split's JPEG shards (see `encoded`)
//! <data>/<dataset>/prepared/<split>-NNNNN.wrns  ImageNet: the shards
//! ```

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::cache::{self, PreparedSplit, Source};
use crate::encoded::{self, EncodedSplit};
use crate::error::{Error, IoContext, Result};
use crate::manifest::{Alternative, FileEntry, Format, Manifest};
use crate::verify;

/// The data directory and the paths inside it.
#[derive(Debug, Clone)]
pub struct Store {
    pub root: PathBuf,
}

/// `<file>.part`.
pub fn part_path(path: &Path) -> PathBuf {
    suffixed(path, ".part")
}

/// `<file>.rejected`: a complete download whose hash did not match, kept for inspection.
pub fn rejected_path(path: &Path) -> PathBuf {
    suffixed(path, ".rejected")
}

fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// The state of one dataset, from least to most complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// No file, not even a partial download.
    Missing,
    /// Some files or parts of files are present, or present but not yet verified.
    Partial,
    /// Every file is present and verified, or an alternative distribution is present and its layout
    /// checked.
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
    /// Why the prepared split on disk cannot be used (unreadable, another image count than the
    /// manifest's, prepared from other files); `None` when it is sound or absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub damaged: Option<String>,
}

/// What a prepared split holds.
#[derive(Debug, Clone)]
pub struct SplitSummary {
    pub images: usize,
    /// Images of the source left out (corrupt ImageNet files).
    pub left_out: usize,
    /// Bytes on disk (for ImageNet, the index and its shards).
    pub size_on_disk: u64,
    pub sources: Vec<Source>,
}

/// An alternative distribution (ImageNet's Kaggle zip) in the dataset's folder.
#[derive(Debug, Clone, Serialize)]
pub struct AlternativeStatus {
    /// The alternative's name in the manifest (`kaggle`).
    pub name: String,
    pub file: String,
    pub path: PathBuf,
    pub size_on_disk: u64,
    /// `missing`, `partial` (present, layout not checked) or `verified` (layout checked).
    pub state: State,
}

#[derive(Debug, Clone, Serialize)]
pub struct DatasetStatus {
    pub name: String,
    pub dir: PathBuf,
    pub state: State,
    pub files: Vec<FileStatus>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub alternatives: Vec<AlternativeStatus>,
    /// The alternative the dataset is verified through, when its own files are not all verified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
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

    /// The path of an alternative's file (the Kaggle zip) in the dataset's folder.
    pub fn alternative_path(&self, manifest: &Manifest, alternative: &Alternative) -> PathBuf {
        self.dataset_dir(manifest).join(&alternative.file)
    }

    /// The digest of an alternative's file whose layout check is stamped and still current.
    pub fn alternative_digest(&self, manifest: &Manifest, name: &str) -> Option<String> {
        let alternative = manifest.alternatives.get(name)?;
        verify::layout_stamp(&self.alternative_path(manifest, alternative), name)
    }

    /// Keeps `wrn data` to one process per dataset: locks the dataset's folder (created if missing) for
    /// `what` ("wrn data fetch"), or fails naming the process that holds it. With the lock held,
    /// temporary files that a crashed writer left (`.tmp-*`, in the dataset's folder and `prepared/`) are
    /// removed; `.part` downloads stay, since fetch resumes them.
    pub fn lock(&self, manifest: &Manifest, what: &str) -> Result<wrn_fs::Lock> {
        let dir = self.dataset_dir(manifest);
        std::fs::create_dir_all(&dir).at(&dir)?;
        let lock = wrn_fs::Lock::acquire(&dir, what)?;
        for folder in [dir.clone(), self.prepared_dir(manifest)] {
            let Ok(entries) = std::fs::read_dir(&folder) else { continue };
            for entry in entries.flatten() {
                let name = entry.file_name();
                if name.to_string_lossy().starts_with(".tmp-") && entry.file_type().is_ok_and(|t| t.is_file()) {
                    let path = entry.path();
                    tracing::info!("removing {}, left by an interrupted write", path.display());
                    std::fs::remove_file(&path).at(&path)?;
                }
            }
        }
        Ok(lock)
    }

    pub fn prepared_dir(&self, manifest: &Manifest) -> PathBuf {
        self.dataset_dir(manifest).join("prepared")
    }

    /// The prepared file of each split (for ImageNet, the index of its shards), in the manifest's split
    /// order.
    pub fn split_paths(&self, manifest: &Manifest) -> Vec<(String, PathBuf)> {
        let dir = self.prepared_dir(manifest);
        let path = |s: &str| match manifest.format {
            Format::ImagenetTars => encoded::index_path(&dir, s),
            _ => cache::split_path(&dir, s),
        };
        manifest.splits.keys().map(|s| (s.clone(), path(s))).collect()
    }

    /// The prepared file of one split (for ImageNet, the index of its shards).
    fn split_path(&self, manifest: &Manifest, split: &str) -> PathBuf {
        match manifest.format {
            Format::ImagenetTars => encoded::index_path(&self.prepared_dir(manifest), split),
            _ => cache::split_path(&self.prepared_dir(manifest), split),
        }
    }

    /// Opens a prepared split of encoded images (ImageNet).
    pub fn open_encoded(&self, manifest: &Manifest, split: &str) -> Result<EncodedSplit> {
        EncodedSplit::open(&encoded::index_path(&self.prepared_dir(manifest), split))
    }

    /// What a prepared split holds, whatever its format.
    pub fn summary(&self, manifest: &Manifest, split: &str) -> Result<SplitSummary> {
        let path = self.split_path(manifest, split);
        match manifest.format {
            Format::ImagenetTars => EncodedSplit::open_unhashed(&path).map(|s| SplitSummary {
                images: s.len(),
                left_out: s.meta.skipped.len(),
                size_on_disk: s.size_on_disk(),
                sources: s.meta.sources.clone(),
            }),
            _ => PreparedSplit::open_unhashed(&path).map(|s| SplitSummary {
                images: s.len(),
                left_out: 0,
                size_on_disk: std::fs::metadata(s.path()).map(|m| m.len()).unwrap_or(0),
                sources: s.meta.sources.clone(),
            }),
        }
    }

    /// Re-hashes a prepared split, whatever its format.
    pub fn verify_split(&self, manifest: &Manifest, split: &str) -> Result<()> {
        match manifest.format {
            Format::ImagenetTars => EncodedSplit::open_unhashed(&self.split_path(manifest, split))?.verify(),
            _ => PreparedSplit::open_unhashed(&self.split_path(manifest, split))?.verify(),
        }
    }

    /// Opens a prepared split.
    pub fn open_split(&self, manifest: &Manifest, split: &str) -> Result<PreparedSplit> {
        PreparedSplit::open(&cache::split_path(&self.prepared_dir(manifest), split))
    }

    /// Whether a split prepared from `sources` was prepared from what the manifest describes: its files
    /// (each SHA-256 matches the manifest), or one alternative alone (its layout was checked before it
    /// was prepared; while the file is here with a current stamp, the recorded digest must match it).
    pub fn accepts_sources(&self, manifest: &Manifest, sources: &[Source]) -> bool {
        let files = !sources.is_empty()
            && sources.iter().all(|src| manifest.file(&src.file).is_some_and(|f| f.sha256 == src.sha256));
        let alternative = match sources {
            [one] => manifest.alternative_for(&one.file).is_some_and(|(name, _)| {
                self.alternative_digest(manifest, name).is_none_or(|digest| digest == one.sha256)
            }),
            _ => false,
        };
        files || alternative
    }

    /// Whether every split is prepared, with the manifest's image count, from the manifest's files or
    /// one of its alternatives ([`Store::accepts_sources`]).
    pub fn is_prepared(&self, manifest: &Manifest) -> bool {
        manifest.splits.iter().all(|(split, &n)| {
            self.summary(manifest, split)
                .is_ok_and(|s| (s.images + s.left_out) as u64 == n && self.accepts_sources(manifest, &s.sources))
        })
    }

    /// The state of a dataset from what is on disk; trusts verification stamps (no hashing).
    pub fn status(&self, manifest: &Manifest) -> DatasetStatus {
        let files: Vec<FileStatus> = manifest
            .files
            .iter()
            .map(|f| {
                let path = self.file_path(manifest, f);
                let part = part_path(&path);
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
            .map(|(split, path)| self.split_status(manifest, split, path))
            .collect();
        let alternatives: Vec<AlternativeStatus> = manifest
            .alternatives
            .iter()
            .map(|(name, a)| {
                let path = self.alternative_path(manifest, a);
                let (state, size_on_disk) = match std::fs::metadata(&path) {
                    Ok(m) if verify::layout_stamp(&path, name).is_some() => (State::Verified, m.len()),
                    Ok(m) => (State::Partial, m.len()),
                    Err(_) => (State::Missing, 0),
                };
                AlternativeStatus { name: name.clone(), file: a.file.clone(), path, size_on_disk, state }
            })
            .collect();
        let files_verified = files.iter().all(|f| f.state == State::Verified);
        let via = match files_verified {
            true => None,
            false => alternatives.iter().find(|a| a.state == State::Verified).map(|a| a.name.clone()),
        };
        let all_prepared = self.is_prepared(manifest);
        let state = if all_prepared {
            State::Prepared
        } else if files_verified || via.is_some() {
            State::Verified
        } else if files.iter().all(|f| f.state == State::Missing)
            && alternatives.iter().all(|a| a.state == State::Missing)
        {
            State::Missing
        } else {
            State::Partial
        };
        DatasetStatus {
            name: manifest.name.clone(),
            dir: self.dataset_dir(manifest),
            state,
            files,
            alternatives,
            via,
            prepared,
        }
    }

    /// A prepared split as found on disk: what it holds, or why it cannot be used.
    fn split_status(&self, manifest: &Manifest, split: String, path: PathBuf) -> SplitStatus {
        let summary = match self.summary(manifest, &split) {
            Ok(summary) => summary,
            Err(e) => {
                let on_disk = std::fs::metadata(&path).ok();
                let size_on_disk = on_disk.as_ref().map_or(0, |m| m.len());
                let damaged = on_disk.map(|_| e.to_string());
                return SplitStatus { split, path, images: None, size_on_disk, damaged };
            }
        };
        let expected = manifest.splits.get(&split).copied().unwrap_or(0);
        let held = (summary.images + summary.left_out) as u64;
        let damaged = if held != expected {
            Some(format!("holds {held} images, the manifest says {expected}"))
        } else if !self.accepts_sources(manifest, &summary.sources) {
            Some("prepared from other files than the manifest's".to_string())
        } else {
            None
        };
        SplitStatus { split, path, images: Some(summary.images), size_on_disk: summary.size_on_disk, damaged }
    }

    /// What to bring when files that must be fetched by hand are not verified (and no alternative, such as
    /// ImageNet's Kaggle zip, stands in for them): the manifest's instructions, each missing file with its
    /// size, SHA-256 and URL, then each alternative with where to get it and the command to run.
    pub fn missing_manual(&self, manifest: &Manifest) -> Option<Error> {
        let missing: Vec<&FileEntry> = manifest
            .files
            .iter()
            .filter(|f| f.manual && !verify::is_stamped(&self.file_path(manifest, f), f))
            .collect();
        if missing.is_empty()
            || manifest.alternatives.keys().any(|name| self.alternative_digest(manifest, name).is_some())
        {
            return None;
        }
        let mut detail = manifest.manual.clone().unwrap_or_default().trim().to_string();
        detail.push_str("\nMissing:");
        for f in missing {
            detail.push_str(&format!("\n  {} ({} bytes, SHA-256 {}) from {}", f.name, f.size, f.sha256, f.url));
        }
        for a in manifest.alternatives.values() {
            detail.push_str(&format!("\nOr, instead of all of these: {} ({}) from {}", a.file, a.title, a.url));
            if let Some(how) = &a.manual {
                detail.push_str(&format!("\n{}", how.trim_end()));
            }
        }
        Some(Error::Unsupported { dataset: manifest.name.clone(), detail })
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

    #[test]
    fn one_process_per_dataset_and_the_holder_clears_stale_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let manifest = Manifest::builtin("cifar10").unwrap();
        let prepared = store.prepared_dir(&manifest);
        std::fs::create_dir_all(&prepared).unwrap();
        let part = part_path(&store.file_path(&manifest, &manifest.files[0]));
        std::fs::write(&part, b"resumable").unwrap();
        std::fs::write(prepared.join(".tmp-abc.wrnc"), b"half a split").unwrap();
        std::fs::write(store.dataset_dir(&manifest).join(".tmp-x"), b"half a stamp").unwrap();

        let held = store.lock(&manifest, "wrn data prepare").unwrap();
        assert!(!prepared.join(".tmp-abc.wrnc").exists());
        assert!(!store.dataset_dir(&manifest).join(".tmp-x").exists());
        assert_eq!(std::fs::read(&part).unwrap(), b"resumable", "a download being resumed is kept");

        let err = store.lock(&manifest, "wrn data fetch").unwrap_err().to_string();
        assert!(err.contains("(wrn data prepare)") && err.contains("cifar10"), "{err}");
        drop(held);
        store.lock(&manifest, "wrn data fetch").unwrap();
    }
}
