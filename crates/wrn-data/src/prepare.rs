//! What every format's preparation takes and returns: [`PrepareOptions`] in, one [`PreparedReport`]
//! per split out. The options other than `progress` only matter to ImageNet's encoded cache; CIFAR and
//! SVHN ignore them.
//!
//! Preparation reads every byte of a source file anyway, so it hashes the bytes as they stream past
//! ([`HashingReader`]) and compares the result with the manifest's SHA-256 before anything is written
//! (`check_source`): a file that rotted on disk since it was verified (same size and modification
//! time, so its `.verified` stamp still matches) is named and refused, never prepared.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wrn_progress::{Progress, Silent};

use crate::error::{Error, IoContext, Result};
use crate::manifest::{FileEntry, Manifest};

/// What `prepare` wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PreparedReport {
    pub split: String,
    pub path: PathBuf,
    pub images: usize,
    pub sha256: String,
    /// What else a user should know: files converted or left out, throughput (ImageNet).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// How to prepare a dataset (ImageNet's encoded cache; the other formats only report progress).
#[derive(Clone)]
pub struct PrepareOptions<'a> {
    /// Re-encode images whose longer side exceeds this many pixels to fit it (`--max-side`).
    pub max_side: Option<u32>,
    /// Bytes per shard before a new one starts.
    pub shard_bytes: u64,
    /// JPEG quality of converted and re-encoded images.
    pub quality: u8,
    /// Where the images of a split being prepared are counted ([`Silent`] by default).
    pub progress: &'a dyn Progress,
    /// Stop with [`crate::Error::Stopped`] once this many shards of a split are written and journalled
    /// in this run, as an interruption there would (a later prepare continues from them). For tests of
    /// resuming; `None` otherwise.
    pub stop_after_shards: Option<usize>,
}

impl Default for PrepareOptions<'_> {
    fn default() -> Self {
        PrepareOptions { max_side: None, shard_bytes: 1 << 30, quality: 90, progress: &Silent, stop_after_shards: None }
    }
}

impl std::fmt::Debug for PrepareOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrepareOptions")
            .field("max_side", &self.max_side)
            .field("shard_bytes", &self.shard_bytes)
            .field("quality", &self.quality)
            .field("stop_after_shards", &self.stop_after_shards)
            .finish_non_exhaustive()
    }
}

/// A reader that hashes (SHA-256) every byte read through it, so a source file is hashed in the same
/// pass that parses it.
pub struct HashingReader<R> {
    inner: R,
    hash: Sha256,
    bytes: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> HashingReader<R> {
        HashingReader { inner, hash: Sha256::new(), bytes: 0 }
    }

    /// Bytes read through so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Reads what the parser left unread (a tar's end blocks, a gzip trailer), then returns the SHA-256
    /// of every byte, as lowercase hex.
    pub fn finish(mut self) -> std::io::Result<String> {
        std::io::copy(&mut self, &mut std::io::sink())?;
        Ok(format!("{:x}", self.hash.finalize()))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Opens a source file of `manifest` for preparation: its size must be the manifest's (the SHA-256 is
/// checked as it is read, by [`check_source`]). Returns the file, to wrap in a [`HashingReader`].
pub(crate) fn open_source(path: &Path, entry: &FileEntry) -> Result<std::fs::File> {
    let file = std::fs::File::open(path).at(path)?;
    let size = file.metadata().at(path)?.len();
    if size != entry.size {
        let kind = if size < entry.size { "truncated" } else { "too long" };
        return Err(Error::Size { path: path.into(), expected: entry.size, actual: size, kind });
    }
    Ok(file)
}

/// Compares the SHA-256 of a source file, computed while preparing it, with the manifest's. A match
/// stamps the file as verified; a mismatch removes its stamp and is an error naming the file, both
/// hashes and how to get the file again.
pub(crate) fn check_source(path: &Path, entry: &FileEntry, manifest: &Manifest, actual: &str) -> Result<()> {
    if actual == entry.sha256 {
        if !crate::verify::is_stamped(path, entry) {
            crate::verify::write_stamp(path, actual)?;
        }
        return Ok(());
    }
    crate::verify::remove_stamp(path);
    Err(Error::SourceChanged {
        path: path.into(),
        expected: entry.sha256.clone(),
        actual: actual.into(),
        dataset: manifest.name.clone(),
    })
}
