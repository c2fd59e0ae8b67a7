//! The integration tests of `wrn-nets`, one test binary with a module per subject (one link, one
//! process to start).

mod ghost_bn;
mod paper;
mod parity;
mod weights;
