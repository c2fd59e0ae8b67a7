//! `wrn report collect`: the committed results (`reports/results/`, which the README's results section is
//! made from) gathered from a runs folder. For every trainable row of the paper's tables, each seed folder
//! the report counts as a full-scale result of the recipe (finished, `full_scale`, no setting off the
//! row's) has its four small files (`result.json`, `metrics.csv`, `config.toml`, `environment.json`)
//! copied under the same run key and seed, each file replaced atomically (`wrn_fs`); a file already there
//! with the same bytes is left as it is. Every other seed folder is left where it is, with the reason:
//! in progress, diverged, damaged, reduced scale, off the recipe, or missing one of the four files.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use wrn_tables::Table;

use crate::compare::departures;
use crate::runs::{read_runs, RunKind};
use crate::ReportError;

/// The files of a seed folder that make a committed result (no checkpoints, no logs).
pub const FILES: [&str; 4] = [wrn_run::RESULT, wrn_run::METRICS, wrn_run::CONFIG, wrn_run::ENVIRONMENT];

/// What [`collect`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Collected {
    /// Seed folders under the results folder whose files were written or replaced.
    pub written: Vec<PathBuf>,
    /// Seed folders already there with the same bytes.
    pub unchanged: Vec<PathBuf>,
    /// Seed folders of the runs folder not collected, with why.
    pub left: Vec<(PathBuf, String)>,
}

/// Copies every full-scale result of the recipe of `tables`' trainable rows from `runs` into `results`
/// (see the module doc). Rows of different tables that train the same thing are collected once.
pub fn collect(tables: &[Table], runs: &Path, results: &Path) -> Result<Collected, ReportError> {
    let mut done = Collected::default();
    let mut seen = BTreeSet::new();
    let rows = tables.iter().filter(|t| !t.demo).flat_map(|t| t.rows.iter());
    for row in rows {
        let Some(key) = row.run_key() else { continue };
        if !seen.insert(key.clone()) {
            continue;
        }
        for run in read_runs(runs, &key)? {
            let why = match (run.kind(), &run.result) {
                (RunKind::Finished, Some(r)) if !r.full_scale => Some("reduced scale".to_string()),
                (RunKind::Finished, Some(r)) => {
                    let off = departures(row, r);
                    (!off.is_empty()).then(|| format!("off the recipe ({})", off.join(", ")))
                }
                (RunKind::Damaged, _) => Some(match &run.damage {
                    Some(d) => format!("damaged ({}: {})", d.file.display(), d.problem),
                    None => "damaged".to_string(),
                }),
                (kind, _) => Some(kind_words(kind).to_string()),
            };
            let missing = FILES.iter().find(|f| !run.dir.join(f).is_file());
            let why = why.or_else(|| missing.map(|f| format!("no {f}")));
            if let Some(why) = why {
                done.left.push((run.dir.clone(), why));
                continue;
            }
            let dest = results.join(&key).join(format!("seed{}", run.seed));
            let mut changed = false;
            for file in FILES {
                let from = run.dir.join(file);
                let bytes = std::fs::read(&from).map_err(|source| ReportError::Io { path: from.clone(), source })?;
                let to = dest.join(file);
                if std::fs::read(&to).ok().as_deref() == Some(bytes.as_slice()) {
                    continue;
                }
                std::fs::create_dir_all(&dest).map_err(|source| ReportError::Io { path: dest.clone(), source })?;
                wrn_fs::atomic_write(&to, &bytes)?;
                changed = true;
            }
            if changed {
                done.written.push(dest);
            } else {
                done.unchanged.push(dest);
            }
        }
    }
    Ok(done)
}

fn kind_words(kind: RunKind) -> &'static str {
    match kind {
        RunKind::Finished => "finished",
        RunKind::InProgress => "in progress (no finished result.json)",
        RunKind::Incomplete => "incomplete (finished before its last planned epoch)",
        RunKind::Diverged => "diverged",
        RunKind::Damaged => "damaged",
    }
}
