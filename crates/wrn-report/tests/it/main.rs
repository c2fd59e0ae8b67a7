//! The integration tests of `wrn-report`, one test binary with a module per subject (one link, one
//! process to start).

mod collect;
mod common;
mod fixtures;
mod nightly;
mod readme;
mod report;
