//! The nightly regression check (`ci/nightly.sh`, `make nightly`, `wrn report nightly`): this night's
//! figures against committed baselines (`reports/baselines/*.json`), a verdict per figure, and
//! `report.md` + `report.json` naming every regression.
//!
//! # What is measured
//!
//! - **Accuracy at a fixed smoke budget** ([`Kind::TestError`]): the final test error of each row of the
//!   demo table (WRN-10-1/2/4, five epochs on the synthetic CIFAR-10 of `wrn data synth cifar10 --n 2000
//!   --seed 0`), read from the run folders' `result.json` (the median over finished seeds; the demo has
//!   one).
//! - **Throughput as ratios** ([`Kind::Ratio`]): machines differ, so images/s are never compared across
//!   nights; what is compared is a ratio to a reference measured in the same process, in alternation with
//!   the figure (`wrn bench pipeline --json`: the CIFAR training pipeline over the unaugmented test
//!   pipeline through the same loader; `wrn bench train --reference --json`: training FLOP/s over the
//!   FLOP/s of a fixed matrix product). The raw images/s, and the pipeline's ratio to the copy bound
//!   (memory-bound, so it varied up to twofold on a loaded machine), are kept in each figure's detail,
//!   for reading only.
//!
//! # Tolerances
//!
//! - Test error: a regression when it rises by more than [`TEST_ERROR_POINTS`] (5 points). On the CPU a
//!   run is deterministic for a given libtorch thread count, but reductions are summed in a different
//!   order with another count, and the baseline machine and the CI machine need not have the same cores.
//!   Five epochs on 2,000 images amplify that rounding into a spread of a few points (the demo's test split
//!   is small, so one image is 0.1 point): a real break (a wrong augmentation, a broken schedule, a
//!   network that does not learn) moves the error by tens of points, towards the 90% of chance.
//! - Ratios: a regression when the ratio falls by more than [`RATIO_DROP`] (25%) of the baseline. Taking
//!   the best of several alternating rounds cancels most of a shared machine's load; on the two-core
//!   machine the baselines were measured on, with another build running, repeated measurements stayed
//!   within about ±10% (pipeline ratio 0.83–1.03; training ratio 0.52–0.62 with one libtorch thread, as
//!   `ci/nightly.sh` runs it, where two threads halved it under load), and a ratio of two
//!   compute-bound figures moves by a similar amount between machines (vector width, cache sizes). 25%
//!   stays above that and below the loss of an optimisation worth keeping (the fused CIFAR kernel, the
//!   BLAS-backed convolutions: each well over 25%).
//! - A figure the baseline has and tonight does not (a run that failed, a benchmark that did not run) is a
//!   regression; a figure better than the baseline by more than the tolerance is *improved* (a pass that
//!   suggests recording a new baseline); a figure without a baseline is *new* and never fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::runs::read_runs;
use crate::ReportError;

/// Points of test error a figure may rise above its baseline.
pub const TEST_ERROR_POINTS: f64 = 5.0;
/// Fraction of its baseline a ratio may lose.
pub const RATIO_DROP: f64 = 0.25;

/// What kind of figure a metric is, which fixes its direction and tolerance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Test error in %, lower is better; tolerance [`TEST_ERROR_POINTS`].
    TestError,
    /// A throughput over a reference measured in the same run, higher is better; tolerance [`RATIO_DROP`].
    Ratio,
}

/// One figure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// `<group>/<...>`, e.g. `demo/wrn-10-1/test_error`; the group names the baseline file it belongs to.
    pub id: String,
    pub kind: Kind,
    pub value: f64,
    /// How it was obtained, with the raw figures behind a ratio.
    #[serde(default)]
    pub detail: String,
}

impl Metric {
    /// The part of the id before the first `/`.
    pub fn group(&self) -> &str {
        self.id.split('/').next().unwrap_or(&self.id)
    }
}

/// A set of figures: one night's, or a baseline file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Measurements {
    /// When, where and how they were measured.
    #[serde(default)]
    pub measured: String,
    pub metrics: Vec<Metric>,
}

impl Measurements {
    /// Reads a measurements file (a baseline, or a night's `measurements.json`).
    pub fn load(path: &Path) -> Result<Measurements, ReportError> {
        let text = std::fs::read_to_string(path).map_err(|source| ReportError::Io { path: path.into(), source })?;
        serde_json::from_str(&text).map_err(|e| ReportError::Format { path: path.into(), message: e.to_string() })
    }

    /// The metrics split by group, each with this set's `measured` note (what baseline files hold).
    pub fn by_group(&self) -> BTreeMap<String, Measurements> {
        let mut groups: BTreeMap<String, Measurements> = BTreeMap::new();
        for m in &self.metrics {
            let group = groups
                .entry(m.group().to_string())
                .or_insert_with(|| Measurements { measured: self.measured.clone(), metrics: vec![] });
            group.metrics.push(m.clone());
        }
        groups
    }
}

/// Each baseline file with its `measured` note.
pub type Notes = Vec<(PathBuf, String)>;

/// The baselines: every `*.json` of `dir`, merged; the same id in two files is an error.
pub fn load_baselines(dir: &Path) -> Result<(Notes, Vec<Metric>), ReportError> {
    let entries = std::fs::read_dir(dir).map_err(|source| ReportError::Io { path: dir.into(), source })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let (mut notes, mut metrics, mut seen) = (Vec::new(), Vec::new(), BTreeMap::new());
    for file in files {
        let set = Measurements::load(&file)?;
        for m in set.metrics {
            if let Some(other) = seen.insert(m.id.clone(), file.clone()) {
                let message = format!("metric {} is also in {}", m.id, other.display());
                return Err(ReportError::Format { path: file, message });
            }
            metrics.push(m);
        }
        notes.push((file, set.measured));
    }
    Ok((notes, metrics))
}

/// The final test error of each trainable row of `table` (median over its finished seeds) under `runs`,
/// as `<table>/<row>/test_error`. Rows without a finished seed give no metric (and so fail against a
/// baseline that has one).
pub fn accuracy(table: &wrn_tables::Table, runs: &Path) -> Result<Vec<Metric>, ReportError> {
    let mut metrics = Vec::new();
    for row in table.trainable() {
        let Some(key) = row.run_key() else { continue };
        let found = read_runs(runs, &key)?;
        let mut errors: Vec<(f64, u32, u64)> = found
            .iter()
            .filter_map(|r| r.finished())
            .filter_map(|r| r.final_test_error.map(|e| (e, r.epochs_done, r.seed)))
            .collect();
        if errors.is_empty() {
            continue;
        }
        errors.sort_by(|a, b| a.0.total_cmp(&b.0));
        let values: Vec<f64> = errors.iter().map(|e| e.0).collect();
        let seeds: Vec<String> = errors.iter().map(|e| e.2.to_string()).collect();
        metrics.push(Metric {
            id: format!("{}/{}/test_error", table.id, row.id),
            kind: Kind::TestError,
            value: wrn_run::median(&values).expect("at least one finished seed"),
            detail: format!(
                "{}: final test error (%) after {} epochs, median of seed(s) {}",
                row.label,
                errors[0].1,
                seeds.join(", ")
            ),
        });
    }
    Ok(metrics)
}

/// The ratio metric of a `wrn bench pipeline --json` or `wrn bench train --reference --json` output.
pub fn bench(path: &Path) -> Result<Metric, ReportError> {
    let format = |message: String| ReportError::Format { path: path.into(), message };
    let text = std::fs::read_to_string(path).map_err(|source| ReportError::Io { path: path.into(), source })?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| format(e.to_string()))?;
    let num = |key: &str| v.pointer(key).and_then(|x| x.as_f64()).ok_or_else(|| format(format!("no number at {key}")));
    let text = |key: &str| v.pointer(key).and_then(|x| x.as_str()).ok_or_else(|| format(format!("no text at {key}")));
    match v.get("benchmark").and_then(|b| b.as_str()) {
        Some("pipeline") => Ok(Metric {
            id: format!("bench/pipeline/{}/ratio_to_plain", text("/preset")?),
            kind: Kind::Ratio,
            value: num("/ratio_to_plain")?,
            detail: format!(
                "{} over {} images, batch {}, {} worker(s): {:.0} images/s ÷ {} {:.0} images/s (best of {}); \
                 one-thread copy bound {:.0} images/s (ratio {:.3}, not judged)",
                text("/preset")?,
                num("/images")?,
                num("/batch")?,
                num("/workers")?,
                num("/images_per_second")?,
                text("/plain_preset")?,
                num("/plain_images_per_second")?,
                num("/rounds")?,
                num("/copy_images_per_second")?,
                num("/ratio_to_copy")?
            ),
        }),
        Some("train") => Ok(Metric {
            id: format!("bench/train/{}/ratio_to_reference", text("/train/arch")?),
            kind: Kind::Ratio,
            value: num("/ratio_to_reference")?,
            detail: format!(
                "{} training steps on {}, batch {}: {:.1} images/s = {:.2} GFLOP/s ÷ {} {:.1} GFLOP/s (best of {})",
                text("/train/arch")?,
                text("/train/device")?,
                num("/train/batch")?,
                num("/train/images_per_second")?,
                num("/train/images_per_second")? * 6.0 * num("/train/mult_adds_per_image")? / 1e9,
                text("/reference/workload")?,
                num("/reference/flops_per_second")? / 1e9,
                num("/rounds")?
            ),
        }),
        other => Err(format(format!("not a `wrn bench ... --json` output with a ratio (benchmark: {other:?})"))),
    }
}

/// Tonight's figures: the test errors of `table` (read from `tables_dir`) under `runs`, then the ratio of
/// each benchmark output in `benches`.
pub fn collect(
    tables_dir: &Path,
    table: &str,
    runs: &Path,
    benches: &[PathBuf],
    measured: &str,
) -> Result<Measurements, ReportError> {
    let all = wrn_tables::load_dir(tables_dir)?;
    let table = wrn_tables::select(&all, &[table.to_string()], tables_dir)?[0];
    let mut metrics = accuracy(table, runs)?;
    for path in benches {
        metrics.push(bench(path)?);
    }
    Ok(Measurements { measured: measured.to_string(), metrics })
}

/// The verdict on one figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Within tolerance of the baseline.
    Pass,
    /// Better than the baseline by more than the tolerance (a pass; record a new baseline).
    Improved,
    /// Worse than the baseline by more than the tolerance.
    Regressed,
    /// In the baseline, absent tonight: a regression.
    Missing,
    /// Tonight only, no baseline: never a failure.
    New,
}

impl Status {
    pub fn is_regression(self) -> bool {
        matches!(self, Status::Regressed | Status::Missing)
    }
    fn label(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Improved => "improved",
            Status::Regressed => "REGRESSED",
            Status::Missing => "MISSING",
            Status::New => "new",
        }
    }
}

/// One figure against its baseline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub id: String,
    pub kind: Kind,
    pub baseline: Option<f64>,
    pub current: Option<f64>,
    /// The worst value that still passes.
    pub limit: Option<f64>,
    pub status: Status,
    /// Tonight's detail, or the baseline's when the figure is missing.
    pub detail: String,
}

/// The worst value of a figure of `kind` that still passes against `baseline`.
pub fn limit(kind: Kind, baseline: f64) -> f64 {
    match kind {
        Kind::TestError => baseline + TEST_ERROR_POINTS,
        Kind::Ratio => baseline * (1.0 - RATIO_DROP),
    }
}

/// The verdict on `current` against `baseline` for a figure of `kind`.
pub fn judge(kind: Kind, baseline: f64, current: f64) -> Status {
    let (worse, better) = match kind {
        Kind::TestError => (current > limit(kind, baseline), current < baseline - TEST_ERROR_POINTS),
        Kind::Ratio => (current < limit(kind, baseline), current > baseline / (1.0 - RATIO_DROP)),
    };
    if !current.is_finite() || worse {
        Status::Regressed
    } else if better {
        Status::Improved
    } else {
        Status::Pass
    }
}

/// One night compared with the baselines.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Nightly {
    pub date: String,
    pub passed: bool,
    /// The ids of every regressed or missing figure.
    pub regressions: Vec<String>,
    pub verdicts: Vec<Verdict>,
    /// Tonight's `measured` note.
    pub measured: String,
    /// Each baseline file and its `measured` note.
    pub baselines: Notes,
    pub tolerances: Tolerances,
}

/// The tolerances in force, written into `report.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tolerances {
    pub test_error_points: f64,
    pub ratio_drop: f64,
}

/// Compares `current` with `baseline`: one verdict per figure of either, baseline order first.
pub fn compare(date: &str, current: &Measurements, baseline: &[Metric], notes: Notes) -> Nightly {
    let mut verdicts = Vec::new();
    for b in baseline {
        let verdict = match current.metrics.iter().find(|c| c.id == b.id) {
            Some(c) => Verdict {
                id: b.id.clone(),
                kind: b.kind,
                baseline: Some(b.value),
                current: Some(c.value),
                limit: Some(limit(b.kind, b.value)),
                status: judge(b.kind, b.value, c.value),
                detail: c.detail.clone(),
            },
            None => Verdict {
                id: b.id.clone(),
                kind: b.kind,
                baseline: Some(b.value),
                current: None,
                limit: Some(limit(b.kind, b.value)),
                status: Status::Missing,
                detail: format!("not measured tonight (baseline: {})", b.detail),
            },
        };
        verdicts.push(verdict);
    }
    for c in current.metrics.iter().filter(|c| !baseline.iter().any(|b| b.id == c.id)) {
        verdicts.push(Verdict {
            id: c.id.clone(),
            kind: c.kind,
            baseline: None,
            current: Some(c.value),
            limit: None,
            status: Status::New,
            detail: c.detail.clone(),
        });
    }
    let regressions: Vec<String> = verdicts.iter().filter(|v| v.status.is_regression()).map(|v| v.id.clone()).collect();
    Nightly {
        date: date.to_string(),
        passed: regressions.is_empty(),
        regressions,
        verdicts,
        measured: current.measured.clone(),
        baselines: notes,
        tolerances: Tolerances { test_error_points: TEST_ERROR_POINTS, ratio_drop: RATIO_DROP },
    }
}

fn show(kind: Kind, value: Option<f64>) -> String {
    match (kind, value) {
        (_, None) => "—".into(),
        (Kind::TestError, Some(v)) => format!("{v:.2}%"),
        (Kind::Ratio, Some(v)) => format!("{v:.4}"),
    }
}

fn change(v: &Verdict) -> String {
    match (v.kind, v.baseline, v.current) {
        (Kind::TestError, Some(b), Some(c)) => format!("{:+.2} points", c - b),
        (Kind::Ratio, Some(b), Some(c)) if b != 0.0 => format!("{:+.1}%", 100.0 * (c / b - 1.0)),
        _ => "—".into(),
    }
}

impl Nightly {
    /// `report.md`: the outcome, each regression by name, then every figure.
    pub fn markdown(&self) -> String {
        let mut out = format!("# Nightly regression check, {}\n\n", self.date);
        if self.passed {
            out += &format!("**PASS**: {} figures, no regression.\n\n", self.verdicts.len());
        } else {
            out += &format!("**FAIL**: {} regression(s):\n\n", self.regressions.len());
            for v in self.verdicts.iter().filter(|v| v.status.is_regression()) {
                out += &format!("- `{}`: {}\n", v.id, self.sentence(v));
            }
            out += "\n";
        }
        out += "| figure | baseline | tonight | change | worst passing | verdict |\n";
        out += "|---|---:|---:|---:|---:|---|\n";
        for v in &self.verdicts {
            out += &format!(
                "| `{}` | {} | {} | {} | {} | {} |\n",
                v.id,
                show(v.kind, v.baseline),
                show(v.kind, v.current),
                change(v),
                show(v.kind, v.limit),
                v.status.label()
            );
        }
        out += "\nDetails:\n\n";
        for v in &self.verdicts {
            out += &format!("- `{}`: {}\n", v.id, v.detail);
        }
        out += &format!(
            "\nTolerances: a test error may rise by {} points; a ratio to a reference measured in the same run may \
             fall by {:.0}%. Throughput is compared only as such ratios, since machines differ. A figure in the \
             baseline that was not measured tonight is a regression.\n\n",
            self.tolerances.test_error_points,
            100.0 * self.tolerances.ratio_drop
        );
        out += &format!("Tonight: {}\n\n", self.measured);
        for (file, note) in &self.baselines {
            out += &format!("Baseline `{}`: {}\n\n", file.display(), note);
        }
        out
    }

    /// One line per regression, for the terminal.
    pub fn regression_lines(&self) -> Vec<String> {
        self.verdicts
            .iter()
            .filter(|v| v.status.is_regression())
            .map(|v| format!("regression: {}: {}", v.id, self.sentence(v)))
            .collect()
    }

    fn sentence(&self, v: &Verdict) -> String {
        match v.status {
            Status::Missing => format!("in the baseline ({}) but not measured tonight", show(v.kind, v.baseline)),
            _ => format!(
                "{} against a baseline of {} ({}; worst passing {})",
                show(v.kind, v.current),
                show(v.kind, v.baseline),
                change(v),
                show(v.kind, v.limit)
            ),
        }
    }

    /// `report.json`.
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).expect("the nightly report serialises") + "\n"
    }
}

/// What `wrn report nightly` does.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Tonight's figures.
    pub current: Measurements,
    /// The folder of baseline files.
    pub baselines: PathBuf,
    /// Where `report.md`, `report.json` and `measurements.json` go.
    pub out: PathBuf,
    pub date: String,
    /// Also write tonight's figures as baseline files (`<group>.json`) into this folder.
    pub record: Option<PathBuf>,
}

/// Compares tonight with the baselines and writes `report.md`, `report.json` and `measurements.json`
/// (tonight's figures, which `--current` reads back) under `out`; with `record`, writes the baselines
/// first, so the comparison is against them.
pub fn run(options: &Options) -> Result<Nightly, ReportError> {
    let mkdir =
        |dir: &Path| std::fs::create_dir_all(dir).map_err(|source| ReportError::Io { path: dir.into(), source });
    if let Some(dir) = &options.record {
        mkdir(dir)?;
        for (group, set) in options.current.by_group() {
            let text = serde_json::to_string_pretty(&set).expect("measurements serialise") + "\n";
            wrn_fs::atomic_write(&dir.join(format!("{group}.json")), text.as_bytes())?;
        }
    }
    let (notes, baseline) = load_baselines(&options.baselines)?;
    let nightly = compare(&options.date, &options.current, &baseline, notes);
    mkdir(&options.out)?;
    let current = serde_json::to_string_pretty(&options.current).expect("measurements serialise") + "\n";
    wrn_fs::atomic_write(&options.out.join("measurements.json"), current.as_bytes())?;
    wrn_fs::atomic_write(&options.out.join("report.md"), nightly.markdown().as_bytes())?;
    wrn_fs::atomic_write(&options.out.join("report.json"), nightly.json().as_bytes())?;
    Ok(nightly)
}

/// Today's date in UTC as `YYYY-MM-DD` (the civil-from-days algorithm, so no calendar crate is needed).
pub fn utc_date(now: std::time::SystemTime) -> String {
    let days = now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() / 86_400) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}
