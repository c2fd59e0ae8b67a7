//! The integration tests of `wrn`, one test binary with a module per subject (one link, one
//! process to start).

mod architecture;
mod cli;
mod collect_cli;
mod common;
mod data_cli;
mod dist_cli;
mod eval_cli;
mod nightly_cli;
mod readme;
mod sweep_cli;
mod table_rows;
mod train_cli;
