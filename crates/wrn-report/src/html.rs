//! The HTML report (`report.html`): one self-contained page, CSS inline and every plot an inline SVG,
//! so it opens from disk or an attachment with no network and no other file.

use std::fmt::Write;

use crate::compare::{ResultScale, TableReport};
use crate::markdown;
use crate::plots::{Plot, Plots};
use crate::view::{grid, Tone};
use crate::{Report, ReportError};

const STYLE: &str = "body{font-family:'DejaVu Sans',Helvetica,Arial,sans-serif;margin:2em;color:#222;max-width:1400px}\
table{border-collapse:collapse;margin:1em 0;font-size:13px}\
th,td{border:1px solid #ccc;padding:3px 6px;text-align:right}\
th{background:#f0f0f0;white-space:normal;vertical-align:bottom}td:nth-child(-n+3),th:nth-child(-n+3){text-align:left}\
table.results td:nth-child(3){min-width:10em;max-width:24em}table.many{font-size:11px}table.many th,table.many td{padding:2px 3px}\
.wide{overflow-x:auto}code{font-size:92%;background:#f4f4f4;padding:0 .2em}\
td.agrees{background:#e3f5e1}td.differs{background:#fbe0de;font-weight:bold}\
td.missing{color:#a05a00;font-style:italic}td.muted{color:#777}\
.demo{border-left:4px solid #d08a00;background:#fff6e0;padding:.5em 1em}\
figure{display:inline-block;margin:.5em}figcaption{font-size:12px;color:#555}\
details{margin:.5em 0}";

/// Text with Markdown's inline code spans (`` `wrn train` ``) as `<code>`, the rest escaped.
pub fn inline(text: &str) -> String {
    let parts: Vec<&str> = text.split('`').collect();
    if parts.len().is_multiple_of(2) {
        // An unpaired backtick: no spans to trust.
        return escape(text);
    }
    parts
        .iter()
        .enumerate()
        .map(|(i, p)| if i % 2 == 1 { format!("<code>{}</code>", escape(p)) } else { escape(p) })
        .collect()
}

/// Escapes text for HTML.
pub fn escape(text: &str) -> String {
    let mut s = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => s.push_str("&amp;"),
            '<' => s.push_str("&lt;"),
            '>' => s.push_str("&gt;"),
            '"' => s.push_str("&quot;"),
            other => s.push(other),
        }
    }
    s
}

fn figure(out: &mut String, plot: &Plot) -> Result<(), ReportError> {
    let svg = plot.svg()?;
    // Inline: drop an XML declaration if the backend wrote one.
    let svg = svg.find("<svg").map(|i| &svg[i..]).unwrap_or(&svg);
    let _ = writeln!(
        out,
        "<figure id=\"plot-{}\" data-plot=\"{}\">{svg}<figcaption>{}</figcaption></figure>",
        escape(&plot.name),
        escape(&plot.name),
        escape(&plot.title)
    );
    Ok(())
}

/// Simple Markdown-table-to-HTML for the tolerance table of [`markdown::tolerance_text`].
fn tolerance_html() -> String {
    let text = markdown::tolerance_text();
    let mut out = String::new();
    let mut in_table = false;
    for line in text.lines() {
        if line.starts_with('|') {
            if line.starts_with("|---") {
                continue;
            }
            if !in_table {
                out.push_str("<table class=\"tolerance\">");
                in_table = true;
            }
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            out.push_str("<tr>");
            for c in cells {
                let _ = write!(out, "<td>{}</td>", escape(c));
            }
            out.push_str("</tr>");
        } else {
            if in_table {
                out.push_str("</table>");
                in_table = false;
            }
            if !line.trim().is_empty() {
                let para = escape(line).replace("**", "").replace('`', "");
                let _ = write!(out, "<p>{}</p>", para.replace('*', ""));
            }
        }
    }
    if in_table {
        out.push_str("</table>");
    }
    out
}

/// The whole report as one HTML page.
pub fn render(report: &Report, plots: &Plots) -> Result<String, ReportError> {
    let mut s = String::new();
    s.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    s.push_str("<title>wrn report: our results beside the paper's</title>");
    let _ = writeln!(s, "<style>{STYLE}</style></head><body>");
    s.push_str("<h1>wrn report: our results beside the paper's</h1>\n");
    let _ = writeln!(s, "<p>Runs read from <code>{}</code>.</p>", escape(&report.runs.display().to_string()));
    summary(&mut s, report);
    s.push_str("<h2>How figures are judged</h2>\n");
    s.push_str(&tolerance_html());
    for t in &report.tables {
        table_section(&mut s, t, plots)?;
    }
    if let Some(p) = &plots.epoch_time {
        s.push_str("<section id=\"epoch-time\"><h2>Time per epoch</h2>\n");
        figure(&mut s, p)?;
        s.push_str("</section>\n");
    }
    s.push_str("</body></html>\n");
    Ok(s)
}

/// The summary table: one line per paper table, linking to its section.
fn summary(s: &mut String, report: &Report) {
    s.push_str("<table id=\"summary\"><tr><th>Table</th><th>Title</th><th>Rows trained</th><th>Rows with results</th><th>Reduced-scale rows</th><th>Agree</th><th>Differ</th></tr>\n");
    for t in &report.tables {
        let (agree, differ) = t.verdicts();
        let with = t.rows_with_results();
        let reduced = t.rows.iter().filter(|r| r.scale() == Some(ResultScale::Reduced)).count();
        let results =
            if with == 0 { "no runs yet".to_string() } else { format!("{with} of {}", t.table.trainable().count()) };
        let _ = writeln!(
            s,
            "<tr><td><a href=\"#{id}\">{id}</a></td><td>{}</td><td>{}</td><td>{results}</td><td>{reduced}</td><td>{agree}</td><td>{differ}</td></tr>",
            escape(&t.table.title),
            t.table.trainable().count(),
            id = escape(&t.table.id),
        );
    }
    s.push_str("</table>\n");
}

/// One paper table's section: source, notes, the results grid and its plots.
fn table_section(s: &mut String, t: &TableReport, plots: &Plots) -> Result<(), ReportError> {
    let _ = writeln!(s, "<section id=\"{}\" class=\"report-table\">", escape(&t.table.id));
    let _ = writeln!(s, "<h2>{}: {}</h2>", escape(&t.table.id), escape(&t.table.title));
    let _ =
        writeln!(s, "<p>Source: {}. Published figures: {}.</p>", escape(&t.table.source), escape(&t.table.statistic));
    if t.table.demo {
        s.push_str(
            "<p class=\"demo\"><strong>Demo table: smoke-scale runs on synthetic data.</strong> These numbers \
             show that the pipeline trains end to end; they are not comparable with the paper and are never \
             judged.</p>\n",
        );
    }
    let notes = crate::view::notes(t);
    if !notes.is_empty() {
        s.push_str("<ul class=\"notes\">");
        for note in &notes {
            let _ = write!(s, "<li>{}</li>", inline(note));
        }
        s.push_str("</ul>\n");
    }
    let g = grid(t);
    // Tables of many metrics are set tighter, so that they fit a laptop's screen.
    let class = if g.header.len() > 16 { "results many" } else { "results" };
    let _ =
        write!(s, "<div class=\"wide\"><table class=\"{class}\" data-table=\"{}\"><thead><tr>", escape(&t.table.id));
    for h in &g.header {
        let _ = write!(s, "<th>{}</th>", escape(h));
    }
    s.push_str("</tr></thead><tbody>\n");
    for (row, r) in g.rows.iter().zip(&t.rows) {
        let _ = write!(s, "<tr data-row=\"{}\">", escape(&r.row.id));
        for (text, tone) in row {
            if *tone == Tone::Plain {
                let _ = write!(s, "<td>{}</td>", escape(text));
            } else {
                let _ = write!(s, "<td class=\"{}\">{}</td>", tone.class(), escape(text));
            }
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</tbody></table></div>\n");
    if let Some(line) = crate::view::chance_line(t) {
        let _ = writeln!(s, "<p class=\"chance\">{}</p>", escape(&line));
    }
    let findings = crate::view::finding_lines(t);
    if !findings.is_empty() {
        s.push_str("<p>The paper's findings:</p><ul class=\"findings\">");
        for (line, f) in findings.iter().zip(&t.findings) {
            let _ = write!(s, "<li data-shown=\"{}\">{}</li>", f.ours.words(), escape(line));
        }
        s.push_str("</ul>\n");
    }
    let evaluated = crate::view::evaluated_lines(t);
    if !evaluated.is_empty() {
        let _ = write!(s, "<p>{}</p><ul class=\"evaluated\">", escape(crate::view::EVALUATED_HEADING));
        for line in evaluated {
            let _ = write!(s, "<li>{}</li>", inline(&line));
        }
        s.push_str("</ul>\n");
    }
    if let Some(p) = plots.params.get(&t.table.id) {
        figure(s, p)?;
    }
    let mut shown = Vec::new();
    let mut curves = String::new();
    for r in &t.rows {
        let Some(p) = r.run_key.as_ref().and_then(|k| plots.curves.get(k)) else { continue };
        if !shown.contains(&p.name) {
            shown.push(p.name.clone());
            figure(&mut curves, p)?;
        }
    }
    if !curves.is_empty() {
        let _ = write!(
            s,
            "<details open><summary>Test error against epoch ({} configurations)</summary>\n{curves}</details>\n",
            shown.len()
        );
    }
    s.push_str("</section>\n");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_code_spans_become_code_and_everything_else_is_escaped() {
        assert_eq!(
            inline("run `wrn train --set a<b`, then <b>"),
            "run <code>wrn train --set a&lt;b</code>, then &lt;b&gt;"
        );
        assert_eq!(inline("no code"), "no code");
        assert_eq!(inline("one ` backtick"), "one ` backtick");
    }
}
