//! Putting a report in place as one set: `report.md`, `report.html`, `report.csv` and `plots/` are
//! rendered and drawn first, the plots into a staging folder beside them (`<out>/.report-new-*`); only
//! then is the old `plots/` folder (which the report owns entirely) moved aside, the new one renamed in,
//! and the three files replaced (`wrn_fs`). A failure at any step before the end puts the previous files
//! and plots back, so the folder holds the old report or the new one, never a mix, and never plots an
//! old report drew that the new one does not.
//!
//! The output folder may hold other files (`reports/generated/<scale>/` beside a report of its own):
//! only the report's own files are replaced. `wrn report` holds the folder's lock
//! (`wrn_fs::Lock`) while it writes, so two reports into one folder do not interleave, and the holder
//! clears what an interrupted report left behind (staging folders and temporary files).

use std::path::{Path, PathBuf};

use crate::{html, markdown, plots, table_csv, Report, ReportError, Written};

/// The prefix of a staging folder inside the output folder.
const STAGING: &str = ".report-new-";
/// The report's files beside `plots/`, whose temporary files a crashed write may have left.
const EXTENSIONS: [&str; 3] = ["md", "html", "csv"];

/// Writes `report.md`, `report.html`, `report.csv` and `plots/*.svg|png` under `out` as one set (see
/// the module doc); the previous report stays whole when anything fails.
pub fn write(report: &Report, out: &Path) -> Result<Written, ReportError> {
    std::fs::create_dir_all(out).map_err(|source| ReportError::Io { path: out.to_path_buf(), source })?;
    let _lock = wrn_fs::Lock::acquire(out, "wrn report")?;
    clear_leftovers(out)?;
    let staging = tempfile::Builder::new()
        .prefix(STAGING)
        .tempdir_in(out)
        .map_err(|source| ReportError::Io { path: out.to_path_buf(), source })?;
    let new_plots = staging.path().join("plots");
    std::fs::create_dir(&new_plots).map_err(|source| ReportError::Io { path: new_plots.clone(), source })?;
    let plots = plots::make_plots(&report.tables);
    plots::write_plot_files(&new_plots, &plots)?;
    let plot_dir = out.join("plots");
    let written = Written {
        markdown: out.join("report.md"),
        html: out.join("report.html"),
        csv: out.join("report.csv"),
        plots: plots.all().flat_map(|p| ["svg", "png"].map(|ext| plot_dir.join(format!("{}.{ext}", p.name)))).collect(),
    };
    let files = [
        (written.markdown.clone(), markdown::render(report, &plots)),
        (written.html.clone(), html::render(report, &plots)?),
        (written.csv.clone(), table_csv::render(&report.tables)?),
    ];
    swap_in(out, staging.path(), &files)?;
    // Dropping the staging folder removes the previous plots moved into it.
    drop(staging);
    Ok(written)
}

/// Moves the staged `plots/` in place of `out/plots` and replaces `files`; on a failure, restores what
/// was there before and returns the error.
fn swap_in(out: &Path, staging: &Path, files: &[(PathBuf, String)]) -> Result<(), ReportError> {
    let previous: Vec<Option<Vec<u8>>> = files.iter().map(|(path, _)| std::fs::read(path).ok()).collect();
    let (plots, old_plots) = (out.join("plots"), staging.join("previous-plots"));
    let had_plots = plots.symlink_metadata().is_ok();
    if had_plots {
        rename(&plots, &old_plots)?;
    }
    let restore_plots = || {
        if had_plots {
            let _ = std::fs::remove_dir_all(&plots);
            let _ = std::fs::rename(&old_plots, &plots);
        }
    };
    if let Err(e) = rename(&staging.join("plots"), &plots) {
        restore_plots();
        return Err(e);
    }
    for (i, (path, text)) in files.iter().enumerate() {
        if let Err(e) = wrn_fs::atomic_write(path, text.as_bytes()) {
            for ((path, _), old) in files[..i].iter().zip(&previous) {
                let _ = match old {
                    Some(bytes) => wrn_fs::atomic_write(path, bytes).map_err(|e| e.source),
                    None => std::fs::remove_file(path),
                };
            }
            restore_plots();
            return Err(e.into());
        }
    }
    Ok(())
}

fn rename(from: &Path, to: &Path) -> Result<(), ReportError> {
    std::fs::rename(from, to).map_err(|source| ReportError::Io { path: from.to_path_buf(), source })
}

/// Removes the staging folders and temporary report files an interrupted report left in `out` (only
/// called with the folder's lock held, so no other report is writing them).
fn clear_leftovers(out: &Path) -> Result<(), ReportError> {
    let entries = std::fs::read_dir(out).map_err(|source| ReportError::Io { path: out.to_path_buf(), source })?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let removed = if name.starts_with(STAGING) && path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else if name.starts_with(".tmp-") && EXTENSIONS.iter().any(|ext| name.ends_with(&format!(".{ext}"))) {
            std::fs::remove_file(&path)
        } else {
            continue;
        };
        removed.map_err(|source| ReportError::Io { path, source })?;
    }
    Ok(())
}
