//! Our figures beside the published ones: for each row of each table, the finished runs' median, range
//! and count per metric, the difference from the paper and a verdict within the tolerances of
//! [`tolerance`] (the reasoning is in the crate doc).

use std::collections::BTreeSet;
use std::path::Path;

use wrn_tables::{Finding, Row, Table};

use crate::runs::{read_evaluated, read_runs, Evaluated, Run, RunKind, RunResult};
use crate::ReportError;

/// The median, range and count of one metric over a row's finished runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Stats {
    /// `None` for no values. The median of an even count is the mean of the middle two.
    pub fn of(values: &[f64]) -> Option<Stats> {
        let median = wrn_run::median(values)?;
        let min = values.iter().copied().min_by(f64::total_cmp)?;
        let max = values.iter().copied().max_by(f64::total_cmp)?;
        Some(Stats { median, min, max, n: values.len() })
    }
}

/// Whether a row's figures come from runs at the paper's scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultScale {
    /// `full_scale: true`: the paper's schedule on the real dataset.
    Full,
    /// `full_scale: false`: a shortened schedule, a subset, or other (e.g. synthetic) data.
    Reduced,
    /// At the paper's scale, but departing from the recipe in a setting the row does not have
    /// (`precision=bf16`, another batch size, …): not the paper's experiment.
    OffRecipe,
}

impl ResultScale {
    pub fn as_str(self) -> &'static str {
        match self {
            ResultScale::Full => "full",
            ResultScale::Reduced => "reduced",
            ResultScale::OffRecipe => "off-recipe",
        }
    }
}

/// What a row's figures amount to.
#[derive(Debug, Clone, PartialEq)]
pub enum RowState {
    /// Quoted from another paper: published figures only, nothing of ours.
    Reference(String),
    /// No run folder at all.
    NoRuns,
    /// Run folders exist but none has finished.
    InProgress { runs: usize },
    /// At least one finished run.
    Results {
        scale: ResultScale,
        finished: usize,
        in_progress: usize,
        reduced_not_counted: usize,
        /// The full-scale runs off the recipe, each as `seedN: key=value, …` (counted only when the row has
        /// no run that follows it, and then never judged).
        off_recipe: Vec<String>,
    },
}

/// How one of our figures compares with the published one.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Within the tolerance.
    Agrees,
    /// Outside the tolerance.
    Differs,
    /// There is a published figure and no finished run of ours.
    Missing,
    /// Nothing to judge, and why: a hardware-dependent metric, reduced scale, no published figure, a
    /// reference row.
    NotJudged(&'static str),
}

impl Verdict {
    /// The word in the CSV's `verdict` column.
    pub fn code(&self) -> &'static str {
        match self {
            Verdict::Agrees => "agrees",
            Verdict::Differs => "differs",
            Verdict::Missing => "missing",
            Verdict::NotJudged(_) => "not judged",
        }
    }

    /// The words shown in a table cell.
    pub fn describe(&self) -> String {
        match self {
            Verdict::NotJudged(why) => format!("not judged ({why})"),
            other => other.code().to_string(),
        }
    }
}

/// A tolerance for the difference between our median and the published figure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    /// Absolute, in the metric's unit (points of error, millions of parameters).
    pub limit: f64,
    /// Where it comes from, in a few words.
    pub basis: &'static str,
}

/// The run-to-run standard deviation (points of error) assumed for a dataset and metric.
pub fn spread(dataset: &str, metric: &str) -> Option<f64> {
    match (dataset, metric) {
        ("cifar10", "test_error") => Some(0.15),
        ("cifar100", "test_error") => Some(0.30),
        ("svhn", "test_error") => Some(0.08),
        ("imagenet", "top1_error") => Some(0.20),
        ("imagenet", "top5_error") => Some(0.10),
        _ => None,
    }
}

/// The largest difference from the paper that still "agrees" (see the crate doc). Errors: twice the
/// standard deviation of the difference of two single runs, 2·√2·σ with σ from [`spread`]. Parameters:
/// 0.1 M. `None` for metrics that are never judged.
pub fn tolerance(dataset: &str, metric: &str) -> Option<Tolerance> {
    if metric == "params" {
        return Some(Tolerance { limit: 0.1, basis: "published to 0.1 M, counted for 10 classes even on CIFAR-100" });
    }
    spread(dataset, metric).map(|sigma| Tolerance {
        limit: 2.0 * std::f64::consts::SQRT_2 * sigma,
        basis: "2·√2 × the run-to-run spread of third-party reproductions",
    })
}

/// Whether [`spread`]'s σ for a dataset is assumed rather than taken from reproductions with several
/// seeds (ImageNet and SVHN: single runs are all that is published).
pub fn spread_is_assumed(dataset: &str) -> bool {
    matches!(dataset, "imagenet" | "svhn")
}

/// The standard deviation of the median of `n` independent normal figures, in units of one figure's σ
/// (the mean of the middle two for an even `n`): exact for n ≤ 5, √(π/2n) beyond.
pub fn median_spread(n: usize) -> f64 {
    match n {
        0 | 1 => 1.0,
        2 => std::f64::consts::FRAC_1_SQRT_2,
        3 => 0.6698,
        4 => 0.5959,
        5 => 0.5356,
        n => (std::f64::consts::PI / (2.0 * n as f64)).sqrt(),
    }
}

/// How many runs a published figure summarises, from its row's `statistic` (one when not stated).
pub fn published_runs(statistic: &str) -> usize {
    let words: Vec<&str> = statistic.split_whitespace().collect();
    words.windows(3).find(|w| w[0] == "median" && w[1] == "of").and_then(|w| w[2].parse().ok()).unwrap_or(1)
}

/// The standard deviation of the difference of two independent medians of `a` and `b` runs (ours and a
/// published figure, or two of our rows), each run with spread `sigma`.
pub fn difference_spread(sigma: f64, a: usize, b: usize) -> f64 {
    sigma * (median_spread(a).powi(2) + median_spread(b).powi(2)).sqrt()
}

/// The chance that a difference of spread `sd` exceeds `limit` by chance alone (both sides).
pub fn chance_beyond(limit: f64, sd: f64) -> f64 {
    libm::erfc(limit / (sd * std::f64::consts::SQRT_2))
}

/// Metrics that depend on the hardware: shown, never judged.
pub const HARDWARE_METRICS: &[&str] = &["epoch_seconds", "batch16_ms"];

/// One metric of one row.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    pub metric: String,
    pub unit: String,
    pub published: Option<f64>,
    pub ours: Option<Stats>,
    /// For the top-1 error: the same runs' best epoch (the lowest test error of any epoch). Shown beside
    /// the final figure, never judged: the paper does not say which it reports, and the final epoch is
    /// the recipe's result.
    pub best: Option<Stats>,
    /// Our median minus the published figure.
    pub difference: Option<f64>,
    pub tolerance: Option<Tolerance>,
    pub verdict: Verdict,
    /// For a judged error: the difference in standard deviations of the difference (`d / SD(d)`, SD(d)
    /// from [`difference_spread`]), and the chance that a cell so judged differs by chance alone.
    pub z: Option<ZScore>,
}

/// A judged difference in units of its own spread.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ZScore {
    pub z: f64,
    /// The chance that the difference would exceed the tolerance with no real difference.
    pub chance_differs: f64,
    /// The σ behind it is assumed (see [`spread_is_assumed`]).
    pub assumed: bool,
}

impl Cell {
    /// Whether the cell says anything (a published figure, or a figure of ours).
    pub fn applies(&self) -> bool {
        self.published.is_some() || self.ours.is_some() || self.verdict == Verdict::Missing
    }
}

/// One row of a table with our figures.
#[derive(Debug, Clone, PartialEq)]
pub struct RowReport {
    pub row: Row,
    pub run_key: Option<String>,
    pub state: RowState,
    /// One cell per column of the [`TableReport`].
    pub cells: Vec<Cell>,
    /// The devices the counted runs trained on.
    pub devices: Vec<String>,
    /// Every seed folder found (finished or not), for the curves.
    pub runs: Vec<Run>,
    /// Weights evaluated for the row by `wrn eval`: shown beside the paper, never counted or judged.
    pub evaluated: Vec<Evaluated>,
}

impl RowReport {
    pub fn cell(&self, metric: &str) -> Option<&Cell> {
        self.cells.iter().find(|c| c.metric == metric)
    }

    /// Seed folders of one kind (diverged, incomplete, damaged, ...).
    pub fn count(&self, kind: RunKind) -> usize {
        self.runs.iter().filter(|r| r.kind() == kind).count()
    }

    /// Seed folders whose run diverged (a non-finite loss): never a result, shown as such.
    pub fn diverged(&self) -> usize {
        self.count(RunKind::Diverged)
    }

    /// "reduced scale" or "" (full scale, or no results).
    pub fn scale(&self) -> Option<ResultScale> {
        match self.state {
            RowState::Results { scale, .. } => Some(scale),
            _ => None,
        }
    }

    /// The row's state in words, e.g. "3 runs, 2 in progress".
    pub fn status(&self) -> String {
        match &self.state {
            RowState::Reference(source) => format!("reference: {source}"),
            RowState::NoRuns => "missing: no runs".into(),
            RowState::InProgress { .. } => {
                let running = self.count(RunKind::InProgress);
                let mut parts = Vec::new();
                if running > 0 {
                    parts.push(format!("{running} {} in progress", plural(running, "run", "runs")));
                }
                parts.extend(self.not_counted(""));
                format!("missing: {}", parts.join(", "))
            }
            RowState::Results { scale, finished, in_progress, reduced_not_counted, off_recipe } => {
                let mut s = format!("{finished} {}", plural(*finished, "run", "runs"));
                if *scale == ResultScale::Reduced {
                    s.push_str(", reduced scale: not comparable with the paper");
                }
                if *scale == ResultScale::OffRecipe {
                    s.push_str(&format!(", not the paper's recipe ({}): not judged", off_recipe.join("; ")));
                } else if !off_recipe.is_empty() {
                    s.push_str(&format!(", off the recipe and not counted: {}", off_recipe.join("; ")));
                }
                if *in_progress > 0 {
                    s.push_str(&format!(", {in_progress} in progress"));
                }
                for part in self.not_counted(" (not counted)") {
                    s.push_str(&format!(", {part}"));
                }
                if *reduced_not_counted > 0 {
                    s.push_str(&format!(
                        ", {reduced_not_counted} reduced-scale {} not counted",
                        plural(*reduced_not_counted, "run", "runs")
                    ));
                }
                s
            }
        }
    }

    /// The diverged, incomplete and damaged seed folders in words, each damaged one with its file and
    /// what is wrong with it; `suffix` follows each count.
    fn not_counted(&self, suffix: &str) -> Vec<String> {
        let mut parts = Vec::new();
        if self.diverged() > 0 {
            parts.push(format!("{} diverged{suffix}", self.diverged()));
        }
        let incomplete = self.count(RunKind::Incomplete);
        if incomplete > 0 {
            parts.push(format!("{incomplete} incomplete{suffix}"));
        }
        let damaged: Vec<String> = self
            .runs
            .iter()
            .filter_map(|r| r.damage.as_ref())
            .map(|d| format!("{}: {}", d.file.display(), d.problem))
            .collect();
        if !damaged.is_empty() {
            parts.push(format!(
                "{} damaged{suffix}: {}; remove the folder and run `wrn sweep` again",
                damaged.len(),
                damaged.join("; ")
            ));
        }
        parts
    }
}

fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 {
        one
    } else {
        many
    }
}

/// One table with our figures.
#[derive(Debug, Clone, PartialEq)]
pub struct TableReport {
    pub table: Table,
    /// The table's published metrics, then parameters and time per epoch when the paper omits them.
    pub columns: Vec<(String, String)>,
    pub rows: Vec<RowReport>,
    /// Whether our runs show each of the paper's findings the table states.
    pub findings: Vec<FindingReport>,
}

/// Whether our runs show a finding of the paper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    /// Every comparison goes the paper's way by more than twice its spread.
    Yes,
    /// Some comparison is within twice its spread: the runs cannot tell.
    NotClear,
    /// Some comparison goes the other way by more than twice its spread.
    Contradicted,
    /// Not every row has full-scale runs of the recipe.
    NoRuns,
}

impl Shown {
    pub fn words(self) -> &'static str {
        match self {
            Shown::Yes => "shown",
            Shown::NotClear => "not clear",
            Shown::Contradicted => "contradicted",
            Shown::NoRuns => "not yet tested",
        }
    }
}

/// One comparison of a finding: the row that should be higher, the one that should be lower, and our
/// medians' difference (higher − lower) with its spread, when both rows have full-scale runs.
#[derive(Debug, Clone, PartialEq)]
pub struct PairCheck {
    pub higher: String,
    pub lower: String,
    pub difference: Option<f64>,
    pub spread: Option<f64>,
}

/// A finding of the paper against our runs.
#[derive(Debug, Clone, PartialEq)]
pub struct FindingReport {
    pub finding: Finding,
    pub ours: Shown,
    pub pairs: Vec<PairCheck>,
}

/// Checks a finding on the rows' full-scale figures: each comparison's difference against twice the
/// spread of a difference of two medians (σ of the dataset, the medians' seed counts).
fn check_finding(finding: &Finding, rows: &[RowReport]) -> FindingReport {
    let figure = |id: &str| {
        let r = rows.iter().find(|r| r.row.id == id)?;
        let stats = r.cell(&finding.metric)?.ours.filter(|_| r.scale() == Some(ResultScale::Full))?;
        Some((stats, spread(&r.row.dataset, &finding.metric)?))
    };
    let pairs: Vec<PairCheck> = finding
        .pairs()
        .into_iter()
        .map(|(higher, lower)| {
            let both = figure(higher).zip(figure(lower));
            PairCheck {
                higher: higher.into(),
                lower: lower.into(),
                difference: both.map(|((h, _), (l, _))| h.median - l.median),
                spread: both.map(|((h, sigma), (l, _))| difference_spread(sigma, h.n, l.n)),
            }
        })
        .collect();
    let outcomes: Vec<Option<Shown>> = pairs
        .iter()
        .map(|p| {
            let (d, sd) = (p.difference?, p.spread?);
            Some(if d > 2.0 * sd {
                Shown::Yes
            } else if d < -2.0 * sd {
                Shown::Contradicted
            } else {
                Shown::NotClear
            })
        })
        .collect();
    let ours = if outcomes.iter().any(Option::is_none) {
        Shown::NoRuns
    } else if outcomes.contains(&Some(Shown::Contradicted)) {
        Shown::Contradicted
    } else if outcomes.iter().all(|o| *o == Some(Shown::Yes)) {
        Shown::Yes
    } else {
        Shown::NotClear
    };
    FindingReport { finding: finding.clone(), ours, pairs }
}

impl TableReport {
    /// Rows with at least one finished run.
    pub fn rows_with_results(&self) -> usize {
        self.rows.iter().filter(|r| matches!(r.state, RowState::Results { .. })).count()
    }

    /// The judged errors (cells with a z-score), how many of them differ, and how many would differ by
    /// chance alone, on average, were every one of our figures the paper's experiment exactly.
    pub fn chance(&self) -> (usize, usize, f64) {
        let judged: Vec<&Cell> = self.rows.iter().flat_map(|r| &r.cells).filter(|c| c.z.is_some()).collect();
        let differ = judged.iter().filter(|c| c.verdict == Verdict::Differs).count();
        (judged.len(), differ, judged.iter().filter_map(|c| c.z).map(|z| z.chance_differs).sum())
    }

    /// How many cells agree and differ.
    pub fn verdicts(&self) -> (usize, usize) {
        let cells = self.rows.iter().flat_map(|r| &r.cells);
        let agree = cells.clone().filter(|c| c.verdict == Verdict::Agrees).count();
        (agree, cells.filter(|c| c.verdict == Verdict::Differs).count())
    }
}

/// Our figure of a metric in one finished run; `None` where the run does not measure it.
fn ours(metric: &str, r: &RunResult) -> Option<f64> {
    let imagenet = r.dataset == "imagenet";
    match metric {
        "test_error" if !imagenet => r.final_test_error,
        "top1_error" if imagenet => r.final_test_error,
        "top5_error" if imagenet => r.final_test_top5_error,
        "params" => Some(r.parameters as f64 / 1e6),
        "epoch_seconds" => r.median_epoch_seconds,
        _ => None,
    }
}

/// Compares every row of a table with the run folders under `runs`.
pub fn compare_table(table: &Table, runs: &Path) -> Result<TableReport, ReportError> {
    let mut columns = table.columns.clone();
    for (metric, unit) in [("params", "M"), ("epoch_seconds", "s")] {
        if table.unit(metric).is_none() {
            columns.push((metric.into(), unit.into()));
        }
    }
    let rows = table.rows.iter().map(|row| compare_row(table, row, &columns, runs)).collect::<Result<Vec<_>, _>>()?;
    let findings = table.findings.iter().map(|f| check_finding(f, &rows)).collect();
    Ok(TableReport { table: table.clone(), columns, rows, findings })
}

fn compare_row(table: &Table, row: &Row, columns: &[(String, String)], runs: &Path) -> Result<RowReport, ReportError> {
    let run_key = row.run_key();
    let (found, evaluated) = match &run_key {
        Some(key) => (read_runs(runs, key)?, read_evaluated(runs, key)?),
        None => (Vec::new(), Vec::new()),
    };
    let finished: Vec<&RunResult> = found.iter().filter_map(Run::finished).collect();
    // Diverged, incomplete and damaged folders are neither figures nor in progress.
    let in_progress = found.iter().filter(|r| r.kind() == RunKind::InProgress).count();
    // Full-scale runs, split into those of the recipe and those off it (with what departs).
    let (mut full, mut off, mut off_recipe) = (Vec::new(), Vec::new(), Vec::new());
    for &r in finished.iter().filter(|r| r.full_scale) {
        let departs = departures(row, r);
        if departs.is_empty() {
            full.push(r);
        } else {
            off.push(r);
            off_recipe.push(format!("seed{}: {}", r.seed, departs.join(", ")));
        }
    }
    // Full-scale runs of the recipe, when there are any, are the figures; the others are counted aside.
    // Without them, full-scale runs off the recipe are shown, never judged; then reduced-scale ones.
    let reduced = finished.len() - full.len() - off.len();
    let (counted, scale, reduced_not_counted) = if !full.is_empty() {
        (full, ResultScale::Full, reduced)
    } else if !off.is_empty() {
        (off, ResultScale::OffRecipe, reduced)
    } else {
        (finished.clone(), ResultScale::Reduced, 0)
    };
    let state = match (&row.reference, found.len(), counted.len()) {
        (Some(source), _, _) => RowState::Reference(source.clone()),
        (None, 0, _) => RowState::NoRuns,
        (None, n, 0) => RowState::InProgress { runs: n },
        (None, _, n) => RowState::Results { scale, finished: n, in_progress, reduced_not_counted, off_recipe },
    };
    let cells = columns
        .iter()
        .map(|(metric, unit)| {
            let published = row.published.get(metric).copied();
            let values: Vec<f64> = counted.iter().filter_map(|r| ours(metric, r)).collect();
            let ours = Stats::of(&values);
            // No difference for hardware-dependent metrics, nor against reduced-scale runs.
            let comparable = scale == ResultScale::Full && !HARDWARE_METRICS.contains(&metric.as_str());
            let difference = ours.zip(published).filter(|_| comparable).map(|(o, p)| o.median - p);
            let tolerance = tolerance(&row.dataset, metric);
            let measurable = row.reference.is_none() && ours_applies(metric, &row.dataset);
            let verdict = if row.reference.is_some() {
                Verdict::NotJudged("quoted from another paper")
            } else if HARDWARE_METRICS.contains(&metric.as_str()) {
                Verdict::NotJudged("hardware-dependent")
            } else if published.is_none() {
                Verdict::NotJudged(if table.demo { "demo: no published figure" } else { "no published figure" })
            } else if ours.is_none() {
                if measurable {
                    Verdict::Missing
                } else {
                    Verdict::NotJudged("not measured by wrn")
                }
            } else if scale == ResultScale::Reduced {
                Verdict::NotJudged("reduced scale")
            } else if scale == ResultScale::OffRecipe {
                Verdict::NotJudged("not the recipe")
            } else {
                match (difference, tolerance) {
                    (Some(d), Some(t)) if d.abs() <= t.limit + 1e-9 => Verdict::Agrees,
                    (Some(_), Some(_)) => Verdict::Differs,
                    _ => Verdict::NotJudged("no tolerance for this metric"),
                }
            };
            let z = match (&verdict, difference, spread(&row.dataset, metric), tolerance, ours) {
                (Verdict::Agrees | Verdict::Differs, Some(d), Some(sigma), Some(t), Some(o)) => {
                    let sd = difference_spread(sigma, o.n, published_runs(&row.statistic));
                    let assumed = spread_is_assumed(&row.dataset);
                    Some(ZScore { z: d / sd, chance_differs: chance_beyond(t.limit, sd), assumed })
                }
                _ => None,
            };
            let best = match metric.as_str() {
                "test_error" | "top1_error" if ours_applies(metric, &row.dataset) => {
                    Stats::of(&counted.iter().filter_map(|r| r.best_test_error).collect::<Vec<_>>())
                }
                _ => None,
            };
            Cell {
                metric: metric.clone(),
                unit: unit.clone(),
                published,
                ours,
                best,
                difference,
                tolerance,
                verdict,
                z,
            }
        })
        .collect();
    let devices: BTreeSet<String> = counted.iter().map(|r| r.device.clone()).collect();
    let devices = devices.into_iter().collect();
    Ok(RowReport { row: row.clone(), run_key, state, cells, devices, runs: found, evaluated })
}

/// The settings in which a finished run departs from the paper's recipe that are not its row's, as
/// `key=value`: a run with any is not the paper's experiment. A result that does not record its
/// departures (written before they were recorded) cannot be told apart, and says so.
pub fn departures(row: &Row, r: &RunResult) -> Vec<String> {
    let Some(changes) = &r.recipe_changes else {
        return vec!["departures from the recipe not recorded (result.json predates them)".into()];
    };
    changes
        .iter()
        .filter(|(key, value)| {
            !row.train.get(key.as_str()).and_then(|v| serde_json::to_value(v).ok()).is_some_and(|v| same(&v, value))
        })
        .map(|(key, value)| match value {
            serde_json::Value::String(s) => format!("{key}={s}"),
            other => format!("{key}={other}"),
        })
        .collect()
}

/// JSON values equal as settings: numbers by value (`0` and `0.0` are one dropout), arrays element-wise.
fn same(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b)),
        _ => a == b,
    }
}

/// Whether wrn measures a metric for a dataset (so that a missing figure is a missing run).
fn ours_applies(metric: &str, dataset: &str) -> bool {
    match metric {
        "test_error" => dataset != "imagenet",
        "top1_error" | "top5_error" => dataset == "imagenet",
        "params" | "epoch_seconds" => true,
        _ => false,
    }
}

/// Every table compared with the runs.
pub fn compare(tables: &[Table], runs: &Path) -> Result<Vec<TableReport>, ReportError> {
    tables.iter().map(|t| compare_table(t, runs)).collect()
}
