//! The input pipelines of the paper: reads a prepared dataset from `wrn-data`'s cache and fills
//! reusable NCHW batches (pixels, labels, sample indices, counters) on rayon workers, with every random
//! choice derived from (seed, epoch, sample index) so any thread count gives the same batches.
//!
//! Architecture invariant: this crate does not depend on libtorch; the training runner alone turns
//! batches into tensors.
//!
//! - [`loader`]: [`Loader`], [`LoaderConfig`], [`EpochBatches`] and [`Batch`] (contract 2), whose
//!   [`BatchImages`] are `f32` values or, for the pixel presets, the `u8` pixels before the [`ValueStep`].
//! - [`preset`]: the named recipes ([`Preset`]) and [`Pipeline`].
//! - [`ops`]: the operations ([`ops::Op`]): reflect padding, random and centre crops, flip,
//!   normalisation, scaling.
//! - [`imagenet`]: JPEG decoding, random-sized crops, colour jitter and PCA lighting over an
//!   [`imagenet::EncodedSource`] (what a shard reader provides).
//! - [`zca`]: global contrast normalisation and ZCA whitening, fitted once and cached with a checksum.
//! - [`rng`]: the per-sample and per-epoch random streams.
//! - [`throughput`]: a pipeline's images/s beside its unaugmented counterpart and a copy bound, measured
//!   in the same process.

pub mod error;
pub mod imagenet;
pub mod loader;
pub mod ops;
pub mod preset;
pub mod rng;
pub mod throughput;
pub mod zca;

pub use error::{Error, Result};
pub use imagenet::{EncodedImages, EncodedSource, Resampling};
pub use loader::{Batch, BatchImages, EpochBatches, ImageType, Loader, LoaderConfig, Shard};
pub use ops::ValueStep;
pub use preset::{Draws, Norm, Pipeline, Preset, Source};
pub use zca::{Zca, ZcaParams};
