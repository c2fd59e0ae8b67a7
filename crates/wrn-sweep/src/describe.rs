//! The plan in words, before a sweep runs: a summary line; with `--dry-run` every run with its state
//! and estimated time; then the totals by the basis of their estimates (finished seeds of the row, a
//! measured pace, or the paper's Titan X pace) and the time from start to end for the runs at once.
//! The price of a run at a pace comes from the caller (the trainer's cost model needs libtorch).

use std::fmt::Write as _;
use std::path::Path;

use crate::plan::{measured_seconds, Plan, PlannedRun, PriceError, RunState, SweepError, SweepScale};

/// How pending runs without a finished seed of their row are priced.
pub struct Pricing<'a> {
    /// The device whose measured pace prices them; `None`: the paper's Titan X pace.
    pub measured_on: Option<String>,
    /// Seconds a run of these `wrn train` settings takes at that pace.
    pub seconds: &'a mut dyn FnMut(&[String]) -> Result<f64, PriceError>,
}

/// A run's state in words: new, resume after epoch N, finished, conflict.
pub fn state_words(run: &PlannedRun) -> String {
    match &run.state {
        RunState::New => "new".into(),
        RunState::Resume => {
            let done = wrn_run::RunFolder::at(&run.dir).read_metrics().map_or(0, |m| m.len());
            format!("resume after epoch {done}")
        }
        RunState::Finished => "finished".into(),
        RunState::Conflict(_) => "conflict".into(),
    }
}

/// Device time, in GPU-hours or, below one, GPU-minutes.
pub fn hours(seconds: f64) -> String {
    if seconds >= 3600.0 {
        format!("{:.1} GPU-hours", seconds / 3600.0)
    } else {
        format!("{:.1} GPU-minutes", seconds / 60.0)
    }
}

/// What a pending run is estimated to take, and on what basis.
fn estimate(run: &PlannedRun, pricing: &mut Pricing, basis: &str) -> Result<(f64, String), SweepError> {
    if let Some(s) = measured_seconds(run) {
        return Ok((s, "finished seeds of this row".to_string()));
    }
    let seconds =
        (pricing.seconds)(&run.sets).map_err(|source| SweepError::Price { rows: run.rows.join(", "), source })?;
    Ok((seconds, basis.to_string()))
}

/// The plan of a sweep of `tables` into `runs` (see the module doc); `list` names every run, and
/// `parallel` runs at a time give the time from start to end.
pub fn describe(
    plan: &Plan,
    tables: &[&str],
    runs: &Path,
    scale: SweepScale,
    pricing: &mut Pricing,
    list: bool,
    parallel: usize,
) -> Result<String, SweepError> {
    let mut s = format!(
        "sweep of {} at scale {scale} into {}: {} runs ({} new, {} to resume, {} finished, {} conflicting)\n",
        tables.join(", "),
        runs.display(),
        plan.runs.len(),
        plan.count(&RunState::New),
        plan.count(&RunState::Resume),
        plan.count(&RunState::Finished),
        plan.conflicts().count()
    );
    let basis = match &pricing.measured_on {
        Some(device) => format!("measured pace of {device}"),
        None => "the paper's Titan X pace".to_string(),
    };
    let mut totals: Vec<(String, f64)> = Vec::new();
    for run in &plan.runs {
        let pending = matches!(run.state, RunState::New | RunState::Resume);
        let estimate = if pending { Some(estimate(run, pricing, &basis)?) } else { None };
        if list {
            let _ = writeln!(
                s,
                "  {:<34} {:<8} {:<16} seed {:<2} {:<22} {}",
                run.rows.join(", "),
                run.dataset,
                run.arch,
                run.seed,
                state_words(run),
                estimate.as_ref().map_or(String::new(), |(s, b)| format!("{} ({b})", hours(*s)))
            );
        }
        if let Some((seconds, basis)) = estimate {
            match totals.iter_mut().find(|(b, _)| *b == basis) {
                Some((_, total)) => *total += seconds,
                None => totals.push((basis, seconds)),
            }
        }
    }
    totals_text(&mut s, &totals, parallel, pricing.measured_on.is_some());
    for run in plan.conflicts() {
        if let RunState::Conflict(why) = &run.state {
            let _ = writeln!(s, "conflict: {why}");
        }
    }
    Ok(s)
}

/// The estimate in all, by basis, and from start to end on `parallel` runs at a time.
fn totals_text(s: &mut String, totals: &[(String, f64)], parallel: usize, measured: bool) {
    if totals.is_empty() {
        return;
    }
    let parts: Vec<String> = totals.iter().map(|(b, s)| format!("{} by {b}", hours(*s))).collect();
    let all: f64 = totals.iter().map(|(_, s)| s).sum();
    let _ = writeln!(s, "estimate: {} in all: {}", hours(all), parts.join(" + "));
    if parallel > 1 {
        let _ = writeln!(
            s,
            "  on {parallel} runs at a time: about {:.1} hours from start to end",
            all / 3600.0 / parallel as f64
        );
    }
    if !measured {
        s.push_str(
            "  (the Titan X pace is the paper's Figure 4, 312 ms per 32 WRN-28-10 images; a current GPU is several \
             times faster: `wrn sweep --calibrate` measures this machine's)\n",
        );
    }
}
