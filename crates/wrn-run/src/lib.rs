//! The run folder (contract 3, train -> sweep, report): everything a finished or interrupted run leaves
//! behind, readable without the code that wrote it.
//!
//! ```text
//! <run>/config.toml            the resolved experiment (re-runnable with `wrn train <run>/config.toml`)
//! <run>/environment.json       versions, libtorch, GPUs, threads, git commit
//! <run>/metrics.csv            one row per finished epoch (columns: [`METRIC_COLUMNS`])
//! <run>/result.json            the outcome once the run ends ([`RunResult`]); absent while it runs
//! <run>/checkpoint.safetensors the latest checkpoint (written by `wrn-train`, which owns its tensors;
//!                              the SHA-256 of its tensors in the safetensors metadata, checked on load)
//! <run>/checkpoint.prev.safetensors  the checkpoint before it, kept for when the latest is damaged
//! <run>/train.log              the trainer's log, appended
//! <run>/sweep.log              the output of the `wrn train` processes a sweep started, appended
//! <run>/.lock                  held (`wrn_fs::Lock`) by the `wrn train` process training the run; stays
//! ```
//!
//! `wrn eval` writes the same files but checkpoints and metrics for weights it evaluated, with status
//! `evaluated` and an [`Evaluation`] in `result.json`; for a table row, into `weights-<label>`
//! ([`evaluated_folder`]) beside the row's `seed<N>` folders, where a report shows it and never counts
//! it as a trained run.
//!
//! Every file except the logs is replaced atomically (`wrn_fs`), so a crash at any moment leaves the
//! previous complete version in place; a new checkpoint moves the latest to `checkpoint.prev.safetensors`
//! first ([`wrn_fs::AtomicFile::commit_keeping`]). One process trains a run at a time: it holds the
//! folder's lock ([`RunFolder::lock`]) from start to end. `wrn-train` writes through [`RunFolder`];
//! `wrn-sweep` and `wrn-report` read through it and through [`progress_of`]. No libtorch.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

mod metrics;
mod result;

pub use metrics::{EpochMetrics, METRIC_COLUMNS};
pub use result::{Evaluation, RunResult, Status};

/// The resolved experiment.
pub const CONFIG: &str = "config.toml";
/// What the run ran on.
pub const ENVIRONMENT: &str = "environment.json";
/// One row per finished epoch.
pub const METRICS: &str = "metrics.csv";
/// The outcome, once the run ends.
pub const RESULT: &str = "result.json";
/// The latest checkpoint.
pub const CHECKPOINT: &str = "checkpoint.safetensors";
/// The checkpoint before the latest.
pub const CHECKPOINT_PREV: &str = "checkpoint.prev.safetensors";
/// The trainer's log.
pub const TRAIN_LOG: &str = "train.log";
/// The output of the processes a sweep started for this run.
pub const SWEEP_LOG: &str = "sweep.log";

/// Errors of reading and writing a run folder.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: {message}", path.display())]
    Format { path: PathBuf, message: String },
}

impl From<wrn_fs::Error> for Error {
    fn from(e: wrn_fs::Error) -> Error {
        Error::Io { path: e.path, source: e.source }
    }
}

/// A run folder.
#[derive(Debug, Clone)]
pub struct RunFolder {
    root: PathBuf,
    /// False for a [`RunFolder::replica`]: its writes are left to rank 0.
    writes: bool,
}

impl RunFolder {
    /// Creates (or opens) the folder.
    pub fn create(root: &Path) -> Result<RunFolder, Error> {
        std::fs::create_dir_all(root).map_err(|source| Error::Io { path: root.to_path_buf(), source })?;
        Ok(RunFolder::at(root))
    }

    /// The folder at `root`, which may not exist (for reading).
    pub fn at(root: &Path) -> RunFolder {
        RunFolder { root: root.to_path_buf(), writes: true }
    }

    /// The folder as a rank other than 0 of a run over several processes sees it: it reads the folder
    /// (a checkpoint to resume from), and its writes do nothing, since rank 0 writes the same files.
    pub fn replica(root: &Path) -> RunFolder {
        RunFolder { root: root.to_path_buf(), writes: false }
    }

    /// Whether this process writes the folder (false for a [`RunFolder::replica`]).
    pub fn writes(&self) -> bool {
        self.writes
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The path of one of its files (one of this crate's constants).
    pub fn file(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Replaces the file `name` with `text`.
    pub fn write_text(&self, name: &str, text: &str) -> Result<(), Error> {
        if !self.writes {
            return Ok(());
        }
        Ok(wrn_fs::atomic_write(&self.file(name), text.as_bytes())?)
    }

    /// Replaces the file `name` with `value` as pretty JSON and a final newline.
    pub fn write_json<T: Serialize>(&self, name: &str, value: &T) -> Result<(), Error> {
        let text = serde_json::to_string_pretty(value).expect("serialisable") + "\n";
        self.write_text(name, &text)
    }

    /// Writes `result.json`.
    pub fn write_result(&self, result: &RunResult) -> Result<(), Error> {
        self.write_json(RESULT, result)
    }

    /// Reads `result.json`: `None` when absent (the run has not ended).
    pub fn read_result(&self) -> Result<Option<RunResult>, Error> {
        let path = self.file(RESULT);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let result: RunResult = serde_json::from_str(&text)
                    .map_err(|e| Error::Format { path: path.clone(), message: e.to_string() })?;
                match result.implausible() {
                    Some(message) => Err(Error::Format { path, message }),
                    None => Ok(Some(result)),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::Io { path, source }),
        }
    }

    /// Rewrites `metrics.csv` with these rows.
    pub fn write_metrics(&self, rows: &[EpochMetrics]) -> Result<(), Error> {
        self.write_text(METRICS, &metrics::csv_text(rows))
    }

    /// Reads `metrics.csv` (empty when absent).
    pub fn read_metrics(&self) -> Result<Vec<EpochMetrics>, Error> {
        let path = self.file(METRICS);
        if !path.exists() {
            return Ok(Vec::new());
        }
        metrics::read(&path).map_err(|e| Error::Format { path, message: e.to_string() })
    }

    /// Appends a line to `train.log`.
    pub fn log(&self, line: &str) -> Result<(), Error> {
        if !self.writes {
            return Ok(());
        }
        let path = self.file(TRAIN_LOG);
        let io = |source| Error::Io { path: path.clone(), source };
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(io)?;
        writeln!(f, "{line}").map_err(io)
    }

    /// Whether a checkpoint (the latest or the one before) is there to resume from.
    pub fn has_checkpoint(&self) -> bool {
        has_checkpoint(&self.root)
    }

    /// Takes the folder's lock for `what` this process does ("wrn train") for as long as the returned
    /// lock lives, or says who holds it ([`wrn_fs::LockError::Held`]). The folder must exist.
    pub fn lock(&self, what: &str) -> Result<wrn_fs::Lock, wrn_fs::LockError> {
        wrn_fs::Lock::acquire(&self.root, what)
    }
}

/// Where a run folder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// No checkpoint and no finished result: to be trained from the start.
    New,
    /// A checkpoint without a finished result: `wrn train --resume` continues it.
    Resume,
    /// `result.json` says finished, every planned epoch run.
    Finished,
    /// `result.json` says the run diverged: neither a result nor something to resume.
    Diverged,
}

/// Where the run folder `dir` stands: finished, resumable from its checkpoint, or to be started.
/// `result.json` is read whole, as the report reads it: one it cannot read (cut short, a field missing) is
/// no result, and the run is resumed, which writes it again.
pub fn progress_of(dir: &Path) -> Progress {
    match RunFolder::at(dir).read_result() {
        Ok(Some(r)) if r.is_finished() => return Progress::Finished,
        Ok(Some(r)) if r.status == Status::Diverged => return Progress::Diverged,
        _ => {}
    }
    if has_checkpoint(dir) {
        Progress::Resume
    } else {
        Progress::New
    }
}

/// Whether the run folder `dir` holds a checkpoint: the latest, or the one before (a crash between the two
/// renames of a new checkpoint leaves only that one).
fn has_checkpoint(dir: &Path) -> bool {
    dir.join(CHECKPOINT).exists() || dir.join(CHECKPOINT_PREV).exists()
}

/// The folder, beside a row's `seed<N>` folders, of the weights `label` evaluated for it by `wrn eval`
/// (`weights-<label>`); `None` when the label is not a plain name (letters, digits, `.`, `_`, `-`).
pub fn evaluated_folder(label: &str) -> Option<String> {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    (!label.is_empty() && !label.starts_with('.') && label.chars().all(plain))
        .then(|| format!("{EVALUATED_PREFIX}{label}"))
}

/// The start of the name of a folder of evaluated weights ([`evaluated_folder`]).
pub const EVALUATED_PREFIX: &str = "weights-";

/// Whether `dir/result.json` says the run finished every planned epoch.
pub fn is_finished(dir: &Path) -> bool {
    matches!(RunFolder::at(dir).read_result(), Ok(Some(r)) if r.is_finished())
}

/// The median of `values` (the mean of the middle two for an even count); `None` for none.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => None,
        n if n % 2 == 1 => Some(v[n / 2]),
        n => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(epoch: u32) -> EpochMetrics {
        EpochMetrics {
            epoch,
            lr: 0.1,
            train_loss: 2.0,
            train_error: 80.0,
            test_loss: 2.1,
            test_error: 81.5,
            test_top5_error: 40.0,
            images_per_second: 100.0,
            data_wait_fraction: 0.01,
            epoch_seconds: 3.5,
            decode_failures: 0,
        }
    }

    fn result(status: Status) -> RunResult {
        // Figures whose shortest decimal form a parser can miss by one ulp (1.0512586019999999 did).
        RunResult {
            status,
            dataset: "cifar10".into(),
            arch: "wrn-10-1".into(),
            seed: 1,
            epochs_planned: 4,
            epochs_done: 4,
            full_scale: false,
            parameters: 77_850,
            final_test_error: Some(52.08333333333333),
            final_test_top5_error: Some(4.1666666666666625),
            best_test_error: Some(0.1 + 0.2),
            median_epoch_seconds: Some(1.0512586019999999),
            device: "cpu".into(),
            ranks: None,
            divergence: None,
            recipe_changes: Some([("preprocessing".to_string(), serde_json::json!("zca"))].into()),
            precision: Some("fp32".into()),
            evaluation: None,
        }
    }

    #[test]
    fn metrics_round_trip_with_a_stable_header() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunFolder::create(dir.path()).unwrap();
        assert_eq!(run.read_metrics().unwrap(), []);
        run.write_metrics(&[]).unwrap();
        assert_eq!(std::fs::read_to_string(run.file(METRICS)).unwrap(), METRIC_COLUMNS.join(",") + "\n");
        run.write_metrics(&[metrics(1), metrics(2)]).unwrap();
        let text = std::fs::read_to_string(run.file(METRICS)).unwrap();
        assert_eq!(text.lines().next().unwrap(), METRIC_COLUMNS.join(","));
        assert_eq!(text.lines().nth(1).unwrap(), "1,0.1,2.0,80.0,2.1,81.5,40.0,100.0,0.01,3.5,0");
        assert_eq!(run.read_metrics().unwrap(), [metrics(1), metrics(2)]);
        // No temporary files are left behind.
        let names: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert_eq!(names, [METRICS]);
    }

    #[test]
    fn a_result_reads_back_the_very_figures_written() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunFolder::create(dir.path()).unwrap();
        assert_eq!(run.read_result().unwrap(), None);
        run.write_result(&result(Status::Finished)).unwrap();
        assert_eq!(run.read_result().unwrap(), Some(result(Status::Finished)));
        let text = std::fs::read_to_string(run.file(RESULT)).unwrap();
        assert!(text.starts_with("{\n  \"status\": \"finished\",\n  \"dataset\": \"cifar10\","), "{text}");
        assert!(
            text.ends_with(
                "\"recipe_changes\": {\n    \"preprocessing\": \"zca\"\n  },\n  \"precision\": \"fp32\"\n}\n"
            ),
            "{text}"
        );
        // A result written before the recipe was recorded still reads, without it.
        let old = text
            .replace(",\n  \"recipe_changes\": {\n    \"preprocessing\": \"zca\"\n  },\n  \"precision\": \"fp32\"", "");
        std::fs::write(run.file(RESULT), &old).unwrap();
        let read = run.read_result().unwrap().unwrap();
        assert_eq!((read.recipe_changes, read.precision), (None, None));
        std::fs::write(run.file(RESULT), "{\"status\": \"finished\"}").unwrap();
        let err = run.read_result().unwrap_err().to_string();
        assert!(err.contains("result.json") && err.contains("missing field"), "{err}");
    }

    #[test]
    fn progress_comes_from_the_result_status_and_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunFolder::create(dir.path()).unwrap();
        assert_eq!(progress_of(dir.path()), Progress::New);
        assert_eq!(progress_of(&dir.path().join("absent")), Progress::New);
        // The checkpoint before the latest is one to resume from too.
        std::fs::write(run.file(CHECKPOINT_PREV), "").unwrap();
        assert!(run.has_checkpoint());
        assert_eq!(progress_of(dir.path()), Progress::Resume);
        std::fs::remove_file(run.file(CHECKPOINT_PREV)).unwrap();
        assert_eq!(progress_of(dir.path()), Progress::New);
        std::fs::write(run.file(CHECKPOINT), "").unwrap();
        assert_eq!(progress_of(dir.path()), Progress::Resume);
        run.write_result(&result(Status::Interrupted)).unwrap();
        assert_eq!(progress_of(dir.path()), Progress::Resume);
        run.write_result(&result(Status::Finished)).unwrap();
        assert_eq!(progress_of(dir.path()), Progress::Finished);
        // Fields a later version adds are ignored.
        let mut later = serde_json::to_value(result(Status::Finished)).unwrap();
        later["later"] = 1.into();
        std::fs::write(run.file(RESULT), later.to_string()).unwrap();
        assert!(is_finished(dir.path()));
        // Figures no run can have are a damaged file, not a result.
        for (bad, why) in [
            (
                RunResult { final_test_error: Some(-50.0), ..result(Status::Finished) },
                "final_test_error is -50, not a percentage",
            ),
            (
                RunResult { best_test_error: Some(1e308), ..result(Status::Finished) },
                "best_test_error is 1e308, not a percentage",
            ),
            (
                RunResult { final_test_error: None, ..result(Status::Finished) },
                "a finished run without its final_test_error",
            ),
            (RunResult { median_epoch_seconds: Some(-1.0), ..result(Status::Finished) }, "median_epoch_seconds is -1"),
            (RunResult { epochs_done: 9, ..result(Status::Finished) }, "9 epochs done of 4 planned"),
        ] {
            run.write_result(&bad).unwrap();
            let err = run.read_result().unwrap_err().to_string();
            assert!(err.contains("result.json") && err.ends_with(why), "{err}");
            assert_eq!(progress_of(dir.path()), Progress::Resume);
        }
        // A result the report cannot read (a field missing) is none to the sweep either: the run resumes.
        std::fs::write(run.file(RESULT), r#"{"status": "finished"}"#).unwrap();
        assert!(!is_finished(dir.path()));
        assert_eq!(progress_of(dir.path()), Progress::Resume);
        std::fs::write(run.file(RESULT), "not json").unwrap();
        assert_eq!(progress_of(dir.path()), Progress::Resume);
        // "Finished" with epochs missing is no result: the checkpoint continues it.
        let short = RunResult { epochs_done: 3, ..result(Status::Finished) };
        assert!(!short.is_finished());
        run.write_result(&short).unwrap();
        assert_eq!(progress_of(dir.path()), Progress::Resume);
        // A diverged run is neither a result nor something to resume.
        let diverged = RunResult { divergence: Some("epoch 2".into()), ..result(Status::Diverged) };
        run.write_result(&diverged).unwrap();
        assert_eq!((progress_of(dir.path()), is_finished(dir.path())), (Progress::Diverged, false));
        assert_eq!(run.read_result().unwrap(), Some(diverged));
    }

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    #[test]
    fn one_process_at_a_time_holds_the_folder_and_readers_do_not_see_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunFolder::create(dir.path()).unwrap();
        run.write_metrics(&[metrics(1)]).unwrap();
        let held = run.lock("wrn train").unwrap();
        let err = run.lock("wrn train").unwrap_err().to_string();
        assert!(err.contains("is in use by") && err.contains("(wrn train)"), "{err}");
        // The lock file is no run file: the folder still reads as before, a new run.
        assert_eq!(run.read_metrics().unwrap(), [metrics(1)]);
        assert_eq!((progress_of(dir.path()), run.read_result().unwrap()), (Progress::New, None));
        drop(held);
        run.lock("wrn train").unwrap();
    }

    #[test]
    fn the_log_is_appended() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunFolder::create(&dir.path().join("new")).unwrap();
        run.log("one").unwrap();
        run.log("two").unwrap();
        assert_eq!(std::fs::read_to_string(run.file(TRAIN_LOG)).unwrap(), "one\ntwo\n");
    }
}
