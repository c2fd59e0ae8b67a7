//! What the test modules share: one training at a time.

use std::sync::{Mutex, MutexGuard};

/// Held while a test trains: libtorch's random generator is global to the process, and a run re-seeds
/// it at every step, so two runs in parallel threads would draw each other's dropout masks.
pub fn one_training_at_a_time() -> MutexGuard<'static, ()> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}
