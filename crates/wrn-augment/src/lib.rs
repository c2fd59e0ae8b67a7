//! The input pipelines of the paper: reads a prepared dataset from `wrn-data`'s cache and fills
//! reusable NCHW batches (pixels, labels, sample indices, counters) on rayon workers, with every random
//! choice derived from (seed, epoch, sample index) so any thread count gives the same batches.
//!
//! Architecture invariant: this crate does not depend on libtorch; the training runner alone turns
//! batches into tensors.
//!
//! The pipeline itself lands with the augmentation work (crop, flip, ZCA, ImageNet transforms); this
//! crate fixes its place in the dependency graph: after `wrn-data`, before `wrn-train`.
