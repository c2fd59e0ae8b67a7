//! Datasets for wrn: manifests, download, checksum verification and preparation into the
//! training-ready cache the augmentation stage reads.
//!
//! Architecture invariant: this crate does not depend on libtorch, nor on any other stage crate; it
//! builds and tests without either.
//!
//! - [`dirs`]: the cache and data directories (`ci/libtorch.sh` shares the cache rule).
//! - [`manifest`]: `datasets/*.toml` as types, with validation.
//! - [`fetch`]: resumable, verified downloads with retries and mirrors.
//! - [`imagenet`]: ImageNet's preparation from the tars and devkit or from Kaggle's zip (`imagenet::kaggle`).
//! - [`import`]: registering files the user already has (ImageNet), by hash, or by layout for the Kaggle zip.
//! - [`zipdir`]: a zip's central directory read without touching its members, and a reader threads share.
//! - [`verify`]: size-then-SHA-256 checks and verification stamps.
//! - [`store`]: the layout of the data directory and each dataset's state.
//! - [`cache`]: the prepared cache, contract 1 (format documented there).
//! - [`encoded`]: the prepared cache of encoded images (ImageNet's JPEG shards and index), contract 1.
//! - [`cifar`]: the CIFAR-10/100 binary readers and their preparation.
//! - [`mat`]: a MATLAB level-5 MAT-file reader (SVHN, the ImageNet devkit).
//! - [`svhn`]: the SVHN `.mat` reader (and writer) and its preparation.
//! - [`synth`]: synthetic datasets in the real archive formats.
//! - [`space`]: free disk space checks before large writes.
//! - [`prepare`]: the options and report every format's preparation shares.
//! - [`ops`]: the operations behind `wrn data ...`.

pub mod cache;
pub mod cifar;
pub mod dirs;
pub mod encoded;
pub mod error;
pub mod fetch;
pub mod imagenet;
pub mod import;
pub mod manifest;
pub mod mat;
pub mod ops;
pub mod prepare;
pub mod space;
pub mod store;
pub mod svhn;
pub mod synth;
pub mod verify;
pub mod zipdir;

pub use error::{Error, Result};
