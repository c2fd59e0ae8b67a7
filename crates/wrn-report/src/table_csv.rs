//! The CSV report (`report.csv`): one line per table row × metric, for spreadsheets and scripts.
//! Columns: [`COLUMNS`]. Figures of ours are empty (never zero) when a row has no finished run; `n` is
//! the number of finished runs counted; `difference` and `verdict` are empty or "not judged" where no
//! comparison is made (reduced scale, hardware-dependent metrics, reference rows).

use crate::compare::TableReport;
use crate::ReportError;

pub const COLUMNS: &[&str] = &[
    "table",
    "row",
    "dataset",
    "metric",
    "unit",
    "published",
    "ours_median",
    "ours_min",
    "ours_max",
    "n",
    "difference",
    "verdict",
    "scale",
    "tolerance",
    "status",
    "z",
    "sigma_assumed",
    "ours_best_median",
];

fn opt(v: Option<f64>) -> String {
    v.map(|v| format!("{v}")).unwrap_or_default()
}

/// The CSV text of every table.
pub fn render(tables: &[TableReport]) -> Result<String, ReportError> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let err = |e: csv::Error| ReportError::Format { path: "report.csv".into(), message: e.to_string() };
    w.write_record(COLUMNS).map_err(err)?;
    for t in tables {
        for r in &t.rows {
            for c in r.cells.iter().filter(|c| c.applies()) {
                let scale = r.scale().map(|s| s.as_str()).unwrap_or_default();
                w.write_record([
                    t.table.id.as_str(),
                    r.row.id.as_str(),
                    r.row.dataset.as_str(),
                    c.metric.as_str(),
                    c.unit.as_str(),
                    r.row.printed.get(&c.metric).map(String::as_str).unwrap_or_default(),
                    &opt(c.ours.map(|s| s.median)),
                    &opt(c.ours.map(|s| s.min)),
                    &opt(c.ours.map(|s| s.max)),
                    &c.ours.map(|s| s.n).unwrap_or(0).to_string(),
                    &opt(c.difference),
                    c.verdict.code(),
                    scale,
                    &c.tolerance.map(|t| format!("{:.4}", t.limit)).unwrap_or_default(),
                    &r.status(),
                    &opt(c.z.map(|z| z.z)),
                    &c.z.map(|z| z.assumed.to_string()).unwrap_or_default(),
                    &opt(c.best.map(|s| s.median)),
                ])
                .map_err(err)?;
            }
        }
    }
    let bytes =
        w.into_inner().map_err(|e| ReportError::Format { path: "report.csv".into(), message: e.to_string() })?;
    Ok(String::from_utf8(bytes).expect("CSV of UTF-8 fields"))
}
