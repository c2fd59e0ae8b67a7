//! The integration tests of `wrn-data`, one test binary with a module per subject (one link, one
//! process to start).

mod cifar;
mod common;
mod fetch;
mod imagenet;
mod imagenet_prepare;
mod import;
mod kaggle;
mod svhn;
