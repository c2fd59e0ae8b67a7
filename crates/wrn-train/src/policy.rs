//! When the training loop writes a checkpoint and when it stops, as a value: every
//! `checkpoint_minutes`, every `checkpoint_steps` steps of an epoch, and when a stop is requested (a
//! signal, or the step limit of this process). The end of each epoch always checkpoints (the trainer
//! does that itself). Pure: the clock is an argument, so the rules are tested without training.

use std::time::{Duration, Instant};

/// The checkpoint rules of one process's share of a run.
#[derive(Debug, Clone)]
pub struct CheckpointPolicy {
    /// Minimum time between two checkpoints within an epoch; `None`: no timed checkpoints.
    every: Option<Duration>,
    /// Checkpoint when the epoch's step count is a multiple of this; 0: never by count.
    steps: usize,
    /// Stop (as if signalled) after this many steps of this process.
    max_steps: Option<usize>,
    /// Steps taken by this process.
    taken: usize,
    /// When the last checkpoint was written (or the policy made).
    last: Instant,
}

/// What to do after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AfterStep {
    /// Write a checkpoint now.
    pub save: bool,
    /// Stop the run now (after the checkpoint).
    pub stop: bool,
}

impl CheckpointPolicy {
    /// Checkpoints every `minutes` (0: never by time) and every `steps` steps (0: never by count);
    /// stops after `max_steps` steps of this process, when given.
    pub fn new(minutes: f64, steps: usize, max_steps: Option<usize>, now: Instant) -> CheckpointPolicy {
        let every = (minutes > 0.0).then(|| Duration::from_secs_f64(minutes * 60.0));
        CheckpointPolicy { every, steps, max_steps, taken: 0, last: now }
    }

    /// Counts a step that brought the epoch to `step` of `per_epoch` steps, and says whether to save and
    /// stop; `signalled` is whether a stop was asked for. A stop at the end of an epoch waits for the
    /// epoch's own checkpoint (see [`CheckpointPolicy::stop_requested`]).
    pub fn after_step(&mut self, step: usize, per_epoch: usize, signalled: bool, now: Instant) -> AfterStep {
        self.taken += 1;
        let timed = self.every.is_some_and(|every| now.saturating_duration_since(self.last) >= every);
        let counted = self.steps > 0 && step.is_multiple_of(self.steps);
        let stop = self.stop_requested(signalled) && step < per_epoch;
        AfterStep { save: timed || counted || stop, stop }
    }

    /// A checkpoint was written at `now`: the next timed one is `checkpoint_minutes` later.
    pub fn saved(&mut self, now: Instant) {
        self.last = now;
    }

    /// Whether the run should stop: asked to, or this process took its `max_steps`.
    pub fn stop_requested(&self, signalled: bool) -> bool {
        signalled || self.max_steps.is_some_and(|max| self.taken >= max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_come_by_count_and_by_time_and_the_clock_restarts_at_each() {
        let t0 = Instant::now();
        let minute = Duration::from_secs(60);
        let mut policy = CheckpointPolicy::new(10.0, 4, None, t0);
        let plan = |p: &mut CheckpointPolicy, step, at| p.after_step(step, 100, false, at);
        assert_eq!(plan(&mut policy, 1, t0 + minute), AfterStep { save: false, stop: false });
        assert_eq!(plan(&mut policy, 4, t0 + minute), AfterStep { save: true, stop: false });
        assert!(plan(&mut policy, 5, t0 + 10 * minute).save, "ten minutes since the start");
        policy.saved(t0 + 10 * minute);
        assert!(!plan(&mut policy, 6, t0 + 19 * minute).save);
        assert!(plan(&mut policy, 7, t0 + 20 * minute).save);
        // Zero means never.
        let mut never = CheckpointPolicy::new(0.0, 0, None, t0);
        assert!(!plan(&mut never, 8, t0 + 1000 * minute).save);
    }

    #[test]
    fn a_stop_mid_epoch_saves_and_stops_and_at_the_epoch_end_waits_for_the_epoch() {
        let t0 = Instant::now();
        let mut policy = CheckpointPolicy::new(0.0, 0, Some(3), t0);
        assert!(!policy.after_step(1, 5, false, t0).stop);
        assert!(!policy.after_step(2, 5, false, t0).stop);
        assert_eq!(policy.after_step(3, 5, false, t0), AfterStep { save: true, stop: true });
        // The step limit reached on the epoch's last step: the epoch ends and checkpoints first.
        let mut policy = CheckpointPolicy::new(0.0, 0, Some(2), t0);
        policy.after_step(4, 5, false, t0);
        assert_eq!(policy.after_step(5, 5, false, t0), AfterStep { save: false, stop: false });
        assert!(policy.stop_requested(false));
        // A signal stops whatever the count.
        let mut policy = CheckpointPolicy::new(0.0, 0, None, t0);
        assert!(!policy.stop_requested(false));
        assert_eq!(policy.after_step(1, 5, true, t0), AfterStep { save: true, stop: true });
    }
}
