//! Datasets for wrn: where they live on disk, and (as the stage grows) their manifests, download,
//! checksum verification and preparation into the training-ready cache the augmentation stage reads.
//!
//! Architecture invariant: this crate does not depend on libtorch; it builds and tests without it.
//!
//! - [`dirs`]: the cache and data directories, shared with `ci/libtorch.sh`.

pub mod dirs;
