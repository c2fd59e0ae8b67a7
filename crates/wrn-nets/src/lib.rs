//! The networks of "Wide Residual Networks" (Zagoruyko & Komodakis, 2016), built with `tch`.
//!
//! This crate holds model definitions only: no data loading, no training loop. Every model is a
//! [`tch::nn::ModuleT`] whose parameters live in a caller-owned [`tch::nn::VarStore`], so the training
//! runner decides the device, precision and checkpoint format.
//!
//! - [`cifar`]: the pre-activation WRN-n-k used for CIFAR-10/100 and SVHN.

pub mod cifar;

pub use cifar::{ArchError, WideResNet, WrnConfig};

/// Number of scalar parameters held by a variable store (trainable or not, BN running stats excluded).
pub fn parameter_count(vs: &tch::nn::VarStore) -> i64 {
    vs.trainable_variables().iter().map(|t| t.numel() as i64).sum()
}
