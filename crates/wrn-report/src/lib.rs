//! Reports: reads the paper's tables (`reports/tables/*.toml`, through `wrn-tables`) and the run folders
//! under a runs folder, and writes each table with our figures beside the published ones, as Markdown
//! (`report.md`), one self-contained HTML page with the plots inline (`report.html`), CSV (`report.csv`),
//! and plots as SVG and PNG (`plots/`). It also writes the README's results section ([`readme`]), and
//! judges the nightly run against committed baselines ([`nightly`]).
//!
//! Architecture invariant: this crate does not depend on libtorch nor on the training crates; it reads
//! run folders as files (`result.json`, `metrics.csv`; see [`runs`]), so a report can be made on any
//! machine.
//!
//! # What a row shows
//!
//! For each metric of a table: the published figure; ours, the **median over the row's finished seeds**
//! with its min–max and count n; the difference (our median − published); and a verdict ([`compare`]).
//! A row without any run folder is *missing*, one whose folders have not finished (no `result.json`, or
//! `"status": "interrupted"`) is *in progress*: neither ever shows a figure, and never a zero. Diverged
//! runs, *incomplete* ones (`"finished"` before the last planned epoch) and *damaged* ones (a
//! `result.json` or `metrics.csv` that cannot be read; the row names the file and what is wrong) are
//! shown as such and never counted; one damaged folder never stops the rest of the report. A report is
//! put in place as one set ([`publish`]): an interrupted or failed report leaves the previous one whole. Runs with
//! `full_scale: false` (a shortened schedule, a subset, or other data such as the synthetic demo data) are
//! labelled *reduced scale* and never judged against the paper; when a row has full-scale runs, only those
//! are counted. Parameters and time per epoch are shown for every row, whether the paper gives them or
//! not; time per epoch (and Table 8's time per batch) depends on the hardware: shown, never judged. Rows
//! quoted from other papers show only the published figures. The demo table (`demo = true`) has no
//! published figures: its numbers are smoke-scale on synthetic data, and the report says so.
//!
//! # Tolerance: when a figure "agrees"
//!
//! The paper gives single figures (medians of 5 runs for most CIFAR rows) and no spread, so the tolerance
//! comes from independent reproductions of the same recipes. Their run-to-run standard deviation σ of the
//! test error, in points:
//!
//! - CIFAR-10, σ = 0.15: ZJZLab's PyTorch reproduction reports accuracies of 0.960 ± 0.001–0.002 (0.1 to
//!   0.2 points); a user of the official code (issue #61 of szagoruyko/wide-residual-networks) got 4.20
//!   for WRN-28-10 against the paper's 4.00.
//! - CIFAR-100, σ = 0.30: 18.72 ± 0.24 over 5 runs for WRN-28-10 (DKS's reproduction); ZJZLab 0.800 ± 0.003.
//! - SVHN, σ = 0.08: no third-party spread is published; CIFAR-10's relative spread (about 3–4% of the
//!   error) applied to SVHN's 1.5–2% errors. An assumption, stated as such.
//! - ImageNet, σ = 0.20 top-1 and 0.10 top-5: single runs are usual; torchvision's retrained
//!   WRN-50-2-bottleneck gives 21.49 top-1 against the paper's 21.9 (with a different recipe).
//!
//! A figure agrees when |our median − published| ≤ 2·√2·σ ([`compare::tolerance`]): two standard
//! deviations of the difference between two independent single runs. CIFAR-10 ±0.42, CIFAR-100 ±0.85,
//! SVHN ±0.23, ImageNet ±0.57 top-1 and ±0.28 top-5. A median of 5 seeds against the paper's median of 5
//! varies less than that, so the test is generous for full sweeps and right for single seeds; a verdict of
//! "differs" is therefore rarely noise. Parameters agree within 0.1 M: the paper rounds to 0.1 M and
//! counts Table 4's CIFAR-100 networks with a 10-class classifier (up to 0.07 M fewer).
//!
//! How far a judged error is from the paper, in its own units: z = d / SD(d), where SD(d) combines the
//! spread of our median of n seeds and of the published figure (one run, or a median of five: about
//! 0.54σ; [`compare::median_spread`]). Each judged cell also has the chance that it would differ with no
//! real difference, and a table adds them up ([`compare::TableReport::chance`]), so that a reader can
//! tell one red cell among twenty from a finding. The ImageNet and SVHN σ are assumed (above) and their
//! z-scores say so.

use std::path::{Path, PathBuf};

pub mod collect;
pub mod compare;
pub mod html;
pub mod markdown;
pub mod nightly;
pub mod plots;
pub mod publish;
pub mod readme;
pub mod runs;
pub mod table_csv;
pub mod view;

pub use compare::{compare, FindingReport, ResultScale, RowReport, RowState, Shown, Stats, TableReport, Verdict};
pub use publish::write;

/// What can go wrong while making a report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error(transparent)]
    Tables(#[from] wrn_tables::TableError),
    #[error(transparent)]
    Plot(#[from] plots::PlotError),
    #[error("{path}: {source}")]
    Readme { path: PathBuf, source: readme::MarkerError },
    #[error(transparent)]
    Locked(#[from] wrn_fs::LockError),
}

impl From<wrn_fs::Error> for ReportError {
    fn from(e: wrn_fs::Error) -> ReportError {
        ReportError::Io { path: e.path, source: e.source }
    }
}

impl From<wrn_run::Error> for ReportError {
    fn from(e: wrn_run::Error) -> ReportError {
        match e {
            wrn_run::Error::Io { path, source } => ReportError::Io { path, source },
            wrn_run::Error::Format { path, message } => ReportError::Format { path, message },
        }
    }
}

/// Every table compared with the runs of one runs folder.
pub struct Report {
    pub runs: PathBuf,
    pub tables: Vec<TableReport>,
}

impl Report {
    /// Reads the tables of `tables_dir` and compares them with the run folders under `runs`.
    pub fn build(tables_dir: &Path, runs: &Path) -> Result<Report, ReportError> {
        let tables = wrn_tables::load_dir(tables_dir)?;
        Ok(Report { runs: runs.to_path_buf(), tables: compare(&tables, runs)? })
    }

    /// Like [`Report::build`] for the tables named (`t4` or `t4_width`; see `wrn_tables::select`), or,
    /// when none is named, every paper table (the demo table only when named).
    pub fn select(tables_dir: &Path, runs: &Path, names: &[String]) -> Result<Report, ReportError> {
        let all = wrn_tables::load_dir(tables_dir)?;
        let chosen: Vec<wrn_tables::Table> = if names.is_empty() {
            all.iter().filter(|t| !t.demo).cloned().collect()
        } else {
            wrn_tables::select(&all, names, tables_dir)?.into_iter().cloned().collect()
        };
        Ok(Report { runs: runs.to_path_buf(), tables: compare(&chosen, runs)? })
    }
}

/// The files a report wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    pub markdown: PathBuf,
    pub html: PathBuf,
    pub csv: PathBuf,
    /// Every plot file, SVG and PNG.
    pub plots: Vec<PathBuf>,
}

/// What `wrn report` does, as options.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// The runs folder to report on.
    pub runs: PathBuf,
    /// The paper's tables.
    pub tables: PathBuf,
    /// The tables to report (`t4`, `demo`, ...); empty: every paper table (not the demo).
    pub only: Vec<String>,
    /// Where `report.md`, `report.html`, `report.csv` and `plots/` go; `None` writes no report.
    pub out: Option<PathBuf>,
    /// A README whose results section is rewritten from `results`.
    pub readme: Option<PathBuf>,
    /// The committed results (a runs folder with only the small files of finished runs).
    pub results: PathBuf,
    /// With `readme`: only check that its section is current; fail when it is stale.
    pub check: bool,
}

/// What [`run`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub written: Option<Written>,
    /// The README's section: `Some(true)` rewritten, `Some(false)` already current.
    pub readme_changed: Option<bool>,
    /// Per table: rows with results, agreeing and differing figures.
    pub summary: Vec<(String, usize, usize, usize)>,
}

/// Makes the report and, when asked, rewrites or checks the README's results section.
pub fn run(options: &Options) -> Result<Outcome, ReportError> {
    let mut outcome = Outcome { written: None, readme_changed: None, summary: Vec::new() };
    if let Some(out) = &options.out {
        let report = Report::select(&options.tables, &options.runs, &options.only)?;
        outcome.written = Some(write(&report, out)?);
        outcome.summary = report
            .tables
            .iter()
            .map(|t| {
                let (agree, differ) = t.verdicts();
                (t.table.id.clone(), t.rows_with_results(), agree, differ)
            })
            .collect();
    }
    if let Some(path) = &options.readme {
        let results = Report::build(&options.tables, &options.results)?;
        let shown = options.results.display().to_string();
        let section = readme::section(&results.tables, shown.trim_end_matches('/'));
        if options.check {
            let text =
                std::fs::read_to_string(path).map_err(|source| ReportError::Io { path: path.clone(), source })?;
            let current = readme::is_current(&text, &section)
                .map_err(|source| ReportError::Readme { path: path.clone(), source })?;
            if !current {
                return Err(ReportError::Format {
                    path: path.clone(),
                    message: format!("the results section is stale: regenerate it from {shown} (`make report`)"),
                });
            }
            outcome.readme_changed = Some(false);
        } else {
            outcome.readme_changed = Some(readme::update(path, &section)?);
        }
    }
    Ok(outcome)
}
