//! The Markdown report (`report.md`): a summary of every table, how verdicts are given, then each table
//! with our figures beside the paper's and links to its plots.

use std::fmt::Write;

use crate::compare::{ResultScale, TableReport};
use crate::plots::Plots;
use crate::view::{grid, Grid, EVALUATED_HEADING};
use crate::Report;

/// Escapes the characters that would break a Markdown table cell.
pub fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

pub fn table(g: &Grid) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "| {} |", g.header.iter().map(|h| cell(h)).collect::<Vec<_>>().join(" | "));
    let align: Vec<&str> = g.header.iter().enumerate().map(|(i, _)| if i < 3 { "---" } else { "---:" }).collect();
    let _ = writeln!(s, "|{}|", align.join("|"));
    for row in &g.rows {
        let _ = writeln!(s, "| {} |", row.iter().map(|(t, _)| cell(t)).collect::<Vec<_>>().join(" | "));
    }
    s
}

/// What the verdicts mean, for the report and the README.
pub fn tolerance_text() -> String {
    let mut s = String::from(
        "A row's figure is the median over its finished seeds' final epoch (range and count beside it, and \
         the median of their best epoch where it is lower: the paper does not say which it reports); Δ is ours \
         minus the paper's, so a positive Δ of an error is an error higher than published. It **agrees** \
         with the paper when it is within the tolerance below, and **differs** otherwise. Rows without \
         finished runs are *missing*; rows trained at reduced scale or on other data are labelled and \
         never judged; time per epoch depends on the hardware and is shown, never judged.\n\n",
    );
    s.push_str("| Dataset | Metric | Run-to-run σ | Tolerance |\n|---|---|---:|---:|\n");
    for (dataset, metric) in [
        ("cifar10", "test_error"),
        ("cifar100", "test_error"),
        ("svhn", "test_error"),
        ("imagenet", "top1_error"),
        ("imagenet", "top5_error"),
    ] {
        let sigma = crate::compare::spread(dataset, metric).unwrap_or_default();
        let tol = crate::compare::tolerance(dataset, metric).map(|t| t.limit).unwrap_or_default();
        let assumed = if crate::compare::spread_is_assumed(dataset) { " (assumed)" } else { "" };
        let _ = writeln!(s, "| {dataset} | {metric} | {sigma:.2}{assumed} | ±{tol:.2} |");
    }
    s.push_str("| any | params | — | ±0.10 M |\n\n");
    s.push_str(
        "Tolerance = 2·√2·σ: two standard deviations of the difference between two independent single \
         runs (medians of several seeds differ less, so it is generous for them). σ comes from third-party \
         reproductions; see the `wrn-report` crate documentation for the sources; for ImageNet and SVHN, \
         where only single runs are published, it is assumed.\n\n\
         Beside each verdict, z is the difference in standard deviations of the difference: σ·√(m² + p²), \
         with m and p the spread of a median of our n seeds and of the paper's figure (1 for one run or where \
         the paper does not say how many, 0.54 for a median of five). Below each table, the number of figures that would differ by chance alone, on \
         average, if every one of ours were the paper's experiment exactly: a table of many judged figures \
         may show one or two red cells with nothing wrong.\n",
    );
    s
}

fn summary_line(t: &TableReport) -> String {
    let trainable = t.table.trainable().count();
    let with = t.rows_with_results();
    let (agree, differ) = t.verdicts();
    let reduced = t.rows.iter().filter(|r| r.scale() == Some(ResultScale::Reduced)).count();
    let results = if with == 0 { "no runs yet".to_string() } else { format!("{with} of {trainable}") };
    let reduced = if reduced > 0 { format!("{reduced} (not judged)") } else { "0".into() };
    format!("| {} | {} | {trainable} | {results} | {reduced} | {agree} | {differ} |", t.table.id, cell(&t.table.title))
}

/// The whole report as Markdown; plots are linked as `plots/<name>.svg`.
pub fn render(report: &Report, plots: &Plots) -> String {
    let mut s = String::from("# wrn report: our results beside the paper's\n\n");
    let _ = writeln!(s, "Runs read from `{}`.\n", report.runs.display());
    s.push_str("| Table | Title | Rows trained | Rows with results | Reduced-scale rows | Agree | Differ |\n");
    s.push_str("|---|---|---:|---:|---:|---:|---:|\n");
    for t in &report.tables {
        s.push_str(&summary_line(t));
        s.push('\n');
    }
    s.push_str("\n## How figures are judged\n\n");
    s.push_str(&tolerance_text());
    for t in &report.tables {
        let _ = writeln!(s, "\n## {}: {}\n", t.table.id, t.table.title);
        let _ = writeln!(s, "Source: {}. Published figures: {}.\n", t.table.source, t.table.statistic);
        if t.table.demo {
            s.push_str(
                "> **Demo table: smoke-scale runs on synthetic data.** These numbers show that the pipeline \
                 trains end to end; they are not comparable with the paper and are never judged.\n\n",
            );
        }
        let notes = crate::view::notes(t);
        for note in &notes {
            let _ = writeln!(s, "- {note}");
        }
        if !notes.is_empty() {
            s.push('\n');
        }
        s.push_str(&table(&grid(t)));
        if let Some(line) = crate::view::chance_line(t) {
            let _ = writeln!(s, "\n{line}");
        }
        let findings = crate::view::finding_lines(t);
        if !findings.is_empty() {
            s.push_str("\nThe paper's findings:\n\n");
            for line in findings {
                let _ = writeln!(s, "- {line}");
            }
        }
        let evaluated = crate::view::evaluated_lines(t);
        if !evaluated.is_empty() {
            s.push_str(&format!("\n{EVALUATED_HEADING}\n\n"));
            for line in evaluated {
                let _ = writeln!(s, "- {line}");
            }
        }
        if let Some(p) = plots.params.get(&t.table.id) {
            let _ = writeln!(s, "\n![{}](plots/{}.svg)", p.title, p.name);
        }
        let curves: Vec<_> = t.rows.iter().filter_map(|r| plots.curves.get(r.run_key.as_ref()?)).collect();
        if !curves.is_empty() {
            s.push_str("\nTest error against epoch: ");
            let mut seen = Vec::new();
            let links: Vec<String> = curves
                .into_iter()
                .filter(|p| {
                    let new = !seen.contains(&p.name);
                    seen.push(p.name.clone());
                    new
                })
                .map(|p| format!("[{}](plots/{}.svg)", p.title, p.name))
                .collect();
            s.push_str(&links.join(", "));
            s.push('\n');
        }
    }
    if let Some(p) = &plots.epoch_time {
        let _ = writeln!(s, "\n## Time per epoch\n\n![{}](plots/{}.svg)", p.title, p.name);
    }
    s
}
