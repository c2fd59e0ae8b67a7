//! What every format's preparation takes and returns: [`PrepareOptions`] in, one [`PreparedReport`]
//! per split out. The options only matter to ImageNet's encoded cache; CIFAR and SVHN ignore them.

use std::path::PathBuf;

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

/// How to prepare a dataset (ImageNet's encoded cache; the other formats have no options).
#[derive(Debug, Clone)]
pub struct PrepareOptions {
    /// Re-encode images whose longer side exceeds this many pixels to fit it (`--max-side`).
    pub max_side: Option<u32>,
    /// Bytes per shard before a new one starts.
    pub shard_bytes: u64,
    /// JPEG quality of converted and re-encoded images.
    pub quality: u8,
    /// Draw a progress bar on stderr.
    pub progress: bool,
    /// Stop with [`crate::Error::Stopped`] once this many shards of a split are written and journalled
    /// in this run, as an interruption there would (a later prepare continues from them). For tests of
    /// resuming; `None` otherwise.
    pub stop_after_shards: Option<usize>,
}

impl Default for PrepareOptions {
    fn default() -> PrepareOptions {
        PrepareOptions { max_side: None, shard_bytes: 1 << 30, quality: 90, progress: false, stop_after_shards: None }
    }
}
