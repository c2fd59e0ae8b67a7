//! A table of the report as a grid of text cells, shared by the Markdown and HTML writers: the header,
//! and per row the published figure, ours (median [min–max] n), the difference and the verdict of each
//! metric.

use crate::compare::{Cell, ResultScale, RowReport, RowState, TableReport, Verdict, HARDWARE_METRICS};

/// How a cell should look (the HTML writer turns it into a CSS class).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Plain,
    Agrees,
    Differs,
    Missing,
    Muted,
}

impl Tone {
    pub fn class(self) -> &'static str {
        match self {
            Tone::Plain => "",
            Tone::Agrees => "agrees",
            Tone::Differs => "differs",
            Tone::Missing => "missing",
            Tone::Muted => "muted",
        }
    }
}

/// The grid of one table.
pub struct Grid {
    pub header: Vec<String>,
    pub rows: Vec<Vec<(String, Tone)>>,
}

/// A metric's name for a header, with its unit.
pub fn metric_title(metric: &str, unit: &str) -> String {
    let name = match metric {
        "test_error" => "test error",
        "top1_error" => "top-1 error",
        "top5_error" => "top-5 error",
        "params" => "params",
        "epoch_seconds" => "time/epoch",
        "batch16_ms" => "time/batch 16",
        "map" => "mAP",
        other => other,
    };
    format!("{name} ({unit})")
}

/// Decimal places a metric is shown with.
pub fn precision(metric: &str) -> usize {
    match metric {
        "epoch_seconds" | "map" => 1,
        "batch16_ms" => 0,
        _ => 2,
    }
}

pub fn number(metric: &str, v: f64) -> String {
    format!("{v:.*}", precision(metric))
}

/// A row's published figure of `metric` as the paper prints it ("4.00", "3.8"), or "—".
pub fn published_text(row: &wrn_tables::Row, metric: &str) -> String {
    row.printed.get(metric).cloned().unwrap_or_else(|| "—".into())
}

/// Ours: "4.21 [4.05–4.40] n=5", with the best epoch's median where it is lower ("…, best epoch 4.12"),
/// or what stands in for it when there is no figure.
pub fn ours_text(row: &RowReport, cell: &Cell) -> (String, Tone) {
    match (&cell.ours, &row.state) {
        (Some(s), _) => {
            let range = if s.max > s.min {
                format!(" [{}–{}]", number(&cell.metric, s.min), number(&cell.metric, s.max))
            } else {
                String::new()
            };
            let best = match cell.best {
                Some(b) if b.median < s.median => format!(", best epoch {}", number(&cell.metric, b.median)),
                _ => String::new(),
            };
            (format!("{}{range} n={}{best}", number(&cell.metric, s.median), s.n), Tone::Plain)
        }
        (None, RowState::Reference(_)) => ("reference".into(), Tone::Muted),
        (None, RowState::NoRuns) => ("missing".into(), Tone::Missing),
        (None, RowState::InProgress { .. }) => ("in progress".into(), Tone::Missing),
        (None, RowState::Results { .. }) => ("—".into(), Tone::Muted),
    }
}

pub fn verdict_text(cell: &Cell) -> (String, Tone) {
    match &cell.verdict {
        Verdict::Agrees => (format!("agrees{}", z_text(cell)), Tone::Agrees),
        Verdict::Differs => (format!("differs{}", z_text(cell)), Tone::Differs),
        Verdict::Missing => ("missing".into(), Tone::Missing),
        Verdict::NotJudged(why @ ("reduced scale" | "not the recipe")) => (format!("not judged: {why}"), Tone::Muted),
        Verdict::NotJudged(_) => ("—".into(), Tone::Muted),
    }
}

/// Each of the table's findings in a line: the claim, whether our runs show it, and the comparisons
/// (ours `a − b = +0.41 ± 0.19`, the spread being one standard deviation of the difference).
pub fn finding_lines(t: &TableReport) -> Vec<String> {
    t.findings
        .iter()
        .map(|f| {
            let pairs: Vec<String> = f
                .pairs
                .iter()
                .map(|p| match (p.difference, p.spread) {
                    (Some(d), Some(sd)) => format!("{} − {} = {d:+.2} ± {sd:.2}", p.higher, p.lower),
                    _ => format!("{} vs {}: no full-scale runs", p.higher, p.lower),
                })
                .collect();
            format!("{}: {} by our runs ({})", f.finding.claim, f.ours.words(), pairs.join("; "))
        })
        .collect()
}

/// The table's notes, then each row's own (`label: note`), as the report lists them under the title.
pub fn notes(t: &TableReport) -> Vec<String> {
    let rows = t.rows.iter().filter_map(|r| r.row.note.as_ref().map(|n| format!("{}: {n}", r.row.label)));
    t.table.notes.iter().cloned().chain(rows).collect()
}

/// The heading of a table's evaluated weights.
pub const EVALUATED_HEADING: &str = "Evaluated from weights, not trained by wrn (shown, never judged):";

/// Each evaluation of published weights (`wrn eval --row`) of the table's rows in a line: the weights,
/// the figures beside the paper's, and whether the data was the whole real split; or what is wrong with
/// the folder. Never a verdict: these weights were not trained by wrn.
pub fn evaluated_lines(t: &TableReport) -> Vec<String> {
    let mut lines = Vec::new();
    for r in &t.rows {
        for e in &r.evaluated {
            let line = match &e.result {
                Err(damage) => {
                    format!("{}, weights `{}`: {}: {}", r.row.label, e.label, damage.file.display(), damage.problem)
                }
                Ok(result) => {
                    let eval = result.evaluation.as_ref().expect("an evaluation");
                    let metrics: &[(&str, &str, Option<f64>)] = if r.row.dataset == "imagenet" {
                        &[
                            ("top-1 error", "top1_error", result.final_test_error),
                            ("top-5 error", "top5_error", result.final_test_top5_error),
                        ]
                    } else {
                        &[("test error", "test_error", result.final_test_error)]
                    };
                    let figures: Vec<String> = metrics
                        .iter()
                        .filter_map(|(words, metric, ours)| {
                            let ours = ours.as_ref()?;
                            Some(match r.row.printed.get(*metric) {
                                Some(p) => format!("{words} {ours:.2}% (paper {p})"),
                                None => format!("{words} {ours:.2}%"),
                            })
                        })
                        .collect();
                    let scope = if result.full_scale { "" } else { "; a subset or other data: not comparable" };
                    // Weights of another network than the row trains (torchvision's standard ResNet-50 for
                    // fb's variant) say which.
                    let arch = match &r.row.arch {
                        Some(a) if *a != result.arch => format!("{}, ", result.arch),
                        _ => String::new(),
                    };
                    format!(
                        "{}, weights `{}` ({arch}{}, sha256 {}…, {} {} images): {}{scope}",
                        r.row.label,
                        e.label,
                        eval.format,
                        &eval.weights_sha256[..eval.weights_sha256.len().min(12)],
                        eval.images,
                        eval.split,
                        figures.join(", ")
                    )
                }
            };
            lines.push(line);
        }
    }
    lines
}

/// How many of a table's judged errors would differ by chance alone, in words; `None` when none is
/// judged.
pub fn chance_line(t: &TableReport) -> Option<String> {
    let (judged, differ, expected) = t.chance();
    (judged > 0).then(|| {
        format!(
            "{judged} judged error {}, {differ} {}; by chance alone about {expected:.2} would differ.",
            if judged == 1 { "figure" } else { "figures" },
            if differ == 1 { "differs" } else { "differ" }
        )
    })
}

/// ` (z = +0.4)`, with `, σ assumed` where the spread behind it is; empty without a z-score.
fn z_text(cell: &Cell) -> String {
    match cell.z {
        Some(z) if z.assumed => format!(" (z = {:+.1}, σ assumed)", z.z),
        Some(z) => format!(" (z = {:+.1})", z.z),
        None => String::new(),
    }
}

fn judged(metric: &str) -> bool {
    !HARDWARE_METRICS.contains(&metric) && metric != "map"
}

/// The row's label with its scale: reduced-scale rows say so.
pub fn row_label(row: &RowReport) -> String {
    match row.scale() {
        Some(ResultScale::Reduced) => format!("{} (reduced scale)", row.row.label),
        Some(ResultScale::OffRecipe) => format!("{} (off-recipe)", row.row.label),
        _ => row.row.label.clone(),
    }
}

pub fn grid(t: &TableReport) -> Grid {
    let mut header = vec!["Row".to_string(), "Dataset".to_string(), "Runs".to_string()];
    for (metric, unit) in &t.columns {
        let title = metric_title(metric, unit);
        header.push(format!("{title}: paper"));
        header.push(format!("{title}: ours"));
        if judged(metric) {
            header.push("Δ".into());
            header.push("verdict".into());
        }
    }
    let rows = t
        .rows
        .iter()
        .map(|r| {
            let status_tone = match r.state {
                RowState::NoRuns | RowState::InProgress { .. } => Tone::Missing,
                RowState::Reference(_) => Tone::Muted,
                RowState::Results { scale: ResultScale::Reduced | ResultScale::OffRecipe, .. } => Tone::Muted,
                RowState::Results { .. } => Tone::Plain,
            };
            let mut cells =
                vec![(row_label(r), Tone::Plain), (r.row.dataset.clone(), Tone::Plain), (r.status(), status_tone)];
            for cell in &r.cells {
                cells.push((published_text(&r.row, &cell.metric), Tone::Plain));
                cells.push(ours_text(r, cell));
                if judged(&cell.metric) {
                    let diff = cell.difference.map(|d| format!("{d:+.*}", precision(&cell.metric)));
                    cells.push((diff.unwrap_or_default(), Tone::Plain));
                    cells.push(verdict_text(cell));
                }
            }
            cells
        })
        .collect();
    Grid { header, rows }
}
