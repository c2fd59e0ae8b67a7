//! The integration tests of `wrn-train`, one test binary with a module per subject (one link, one
//! process to start).

mod common;
mod eval;
mod sgd_parity;
mod train;
mod train_imagenet;
