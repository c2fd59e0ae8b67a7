//! How a library says how far a long piece of work has got, without drawing anything itself.
//!
//! Libraries take a `&dyn Progress` and open a [`Task`] per piece of work (a download, a hash, a split being
//! prepared, an epoch); the `wrn` binary implements [`Progress`] with terminal bars and prints the
//! [`Progress::line`]s, tests and quiet callers pass [`Silent`]. Only std: every crate may use it.

use std::sync::atomic::{AtomicU64, Ordering};

/// What a task counts, so a renderer can format amounts and rates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Bytes (a download, a hash).
    Bytes,
    /// Whole things, named in the plural ("images", "steps").
    Items(&'static str),
}

/// Whoever runs the library: renders tasks and prints lines.
pub trait Progress: Sync {
    /// Starts a task named `label` of `total` units (unknown if `None`), of which `done` are already done.
    fn task(&self, label: &str, unit: Unit, total: Option<u64>, done: u64) -> Box<dyn Task>;

    /// A line for the user to read, once (an epoch's summary); printed above any task being drawn.
    fn line(&self, text: &str);
}

/// One piece of work in progress. Dropping it without [`Task::finish`] or [`Task::abandon`] finishes it.
pub trait Task: Send + Sync {
    /// `n` more units done.
    fn advance(&self, n: u64);

    /// A short status shown beside the task (the loss so far).
    fn message(&self, text: &str);

    /// Done: the task disappears.
    fn finish(self: Box<Self>);

    /// Stopped before the end, saying why; the task stays visible with `why`.
    fn abandon(self: Box<Self>, why: &str);
}

/// Reports nothing: for tests and for callers that print their own summaries.
#[derive(Clone, Copy, Debug, Default)]
pub struct Silent;

impl Progress for Silent {
    fn task(&self, _label: &str, _unit: Unit, _total: Option<u64>, done: u64) -> Box<dyn Task> {
        Box::new(Count(AtomicU64::new(done)))
    }

    fn line(&self, _text: &str) {}
}

/// The silent task: counts, so a caller holding it can still read how far it got.
#[derive(Debug)]
struct Count(AtomicU64);

impl Task for Count {
    fn advance(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    fn message(&self, _text: &str) {}

    fn finish(self: Box<Self>) {}

    fn abandon(self: Box<Self>, _why: &str) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A recorder, as the binary's renderer would see the calls.
    #[derive(Default)]
    struct Record(Mutex<Vec<String>>);

    struct Recorded<'a>(&'a Record, String);

    impl Progress for &'static Record {
        fn task(&self, label: &str, _unit: Unit, total: Option<u64>, done: u64) -> Box<dyn Task> {
            self.0.lock().unwrap().push(format!("start {label} {total:?} {done}"));
            Box::new(Recorded(self, label.to_string()))
        }

        fn line(&self, text: &str) {
            self.0.lock().unwrap().push(format!("line {text}"));
        }
    }

    impl Task for Recorded<'static> {
        fn advance(&self, n: u64) {
            self.0 .0.lock().unwrap().push(format!("{} +{n}", self.1));
        }

        fn message(&self, text: &str) {
            self.0 .0.lock().unwrap().push(format!("{} msg {text}", self.1));
        }

        fn finish(self: Box<Self>) {
            self.0 .0.lock().unwrap().push(format!("{} done", self.1));
        }

        fn abandon(self: Box<Self>, why: &str) {
            self.0 .0.lock().unwrap().push(format!("{} abandoned: {why}", self.1));
        }
    }

    fn hash_like(progress: &dyn Progress, chunks: &[u64]) {
        let task = progress.task("hashing", Unit::Bytes, Some(chunks.iter().sum()), 0);
        for &c in chunks {
            task.advance(c);
        }
        task.finish();
        progress.line("hashed");
    }

    #[test]
    fn a_library_reports_through_whatever_progress_it_is_given() {
        let record: &'static Record = Box::leak(Box::default());
        hash_like(&record, &[3, 4]);
        assert_eq!(
            *record.0.lock().unwrap(),
            ["start hashing Some(7) 0", "hashing +3", "hashing +4", "hashing done", "line hashed"]
        );
        // The silent one accepts the same calls.
        hash_like(&Silent, &[3, 4]);
    }
}
