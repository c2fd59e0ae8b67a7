//! The integration tests of `wrn-augment`, one test binary with a module per subject (one link, one
//! process to start).

mod imagenet;
mod imagenet_shards;
mod loader;
mod zca;
