//! The report's plots, drawn with plotters as SVG (inlined in the HTML page) and PNG: test error (log scale)
//! against epoch for each configuration (one line per seed), error against parameters for each table
//! that publishes parameters (the widening study: ours and the paper's), and time per epoch per
//! architecture.
//!
//! Text needs a TrueType font, for the PNG glyphs and for laying out both formats: DejaVu Sans, embedded
//! in the binary (the `dejavu` crate), so a report needs no font installed on the machine; `$WRN_FONT`
//! names another `.ttf` file instead.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::compare::{ResultScale, Stats, TableReport};
use crate::runs::RunKind;
use crate::ReportError;

const FONT: &str = "sans-serif";
const SIZE: (u32, u32) = (760, 440);

/// What can stop a plot from being drawn.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlotError {
    /// `$WRN_FONT` names a file that cannot be read.
    #[error(
        "WRN_FONT={}: {message}; point WRN_FONT at a TrueType font file, or unset it to use the embedded \
         DejaVu Sans",
        path.display()
    )]
    FontUnreadable { path: std::path::PathBuf, message: String },
    /// The font's bytes are not a font.
    #[error(
        "{origin}: not a TrueType/OpenType font; point WRN_FONT at a .ttf file, or unset it to use the \
         embedded DejaVu Sans"
    )]
    NotAFont { origin: String },
    /// plotters failed, in its words.
    #[error("drawing a plot: {0}")]
    Draw(String),
}

/// The font's bytes: the file `$WRN_FONT` names, or the embedded DejaVu Sans, and where they came from.
pub fn font() -> Result<(&'static [u8], String), PlotError> {
    match std::env::var_os("WRN_FONT").filter(|p| !p.is_empty()) {
        Some(path) => {
            let path = std::path::PathBuf::from(path);
            let bytes = std::fs::read(&path)
                .map_err(|e| PlotError::FontUnreadable { path: path.clone(), message: e.to_string() })?;
            // plotters keeps fonts for the life of the process.
            Ok((Box::leak(bytes.into_boxed_slice()), path.display().to_string()))
        }
        None => Ok((dejavu::sans::regular(), "DejaVu Sans 2.37 (embedded)".to_string())),
    }
}

/// Loads and registers the font once per process.
fn ensure_font() -> Result<(), PlotError> {
    static LOADED: OnceLock<Result<(), PlotError>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let (bytes, origin) = font()?;
            plotters::style::register_font(FONT, FontStyle::Normal, bytes).map_err(|_| PlotError::NotAFont { origin })
        })
        .clone()
}

/// One plot: its file stem under `plots/`, its title, and what it shows.
pub struct Plot {
    pub name: String,
    pub title: String,
    chart: Chart,
}

impl Plot {
    /// The plot as an SVG document (text drawn as `<text>` elements).
    pub fn svg(&self) -> Result<String, ReportError> {
        let mut out = String::new();
        {
            let root = SVGBackend::with_string(&mut out, self.size()).into_drawing_area();
            draw(&root, &self.title, &self.chart)?;
            root.present().map_err(plot_error)?;
        }
        Ok(out)
    }

    /// Writes the plot as a PNG file, atomically (`wrn_fs`).
    pub fn write_png(&self, path: &Path) -> Result<(), ReportError> {
        let file = wrn_fs::AtomicFile::create(path)?;
        // The backend's errors do not name the file it writes.
        let at = |e: ReportError| match e {
            ReportError::Plot(PlotError::Draw(why)) => {
                ReportError::Plot(PlotError::Draw(format!("writing {}: {why}", path.display())))
            }
            other => other,
        };
        {
            let root = BitMapBackend::new(file.path(), self.size()).into_drawing_area();
            draw(&root, &self.title, &self.chart).map_err(at)?;
            root.present().map_err(plot_error).map_err(at)?;
        }
        Ok(file.commit()?)
    }

    fn size(&self) -> (u32, u32) {
        match &self.chart {
            Chart::Bars { bars, .. } => (SIZE.0 + 140, (120 + 26 * bars.len() as u32).max(200)),
            _ => SIZE,
        }
    }
}

/// Every plot of a report.
#[derive(Default)]
pub struct Plots {
    /// Test error against epoch, by run key.
    pub curves: BTreeMap<String, Plot>,
    /// Error against parameters, by table id.
    pub params: BTreeMap<String, Plot>,
    /// Median time per epoch per architecture, when any run finished.
    pub epoch_time: Option<Plot>,
}

impl Plots {
    pub fn all(&self) -> impl Iterator<Item = &Plot> {
        self.curves.values().chain(self.params.values()).chain(&self.epoch_time)
    }
}

/// What a chart shows, independent of the backend.
enum Chart {
    /// Lines of (x, y) per label; optional horizontal reference lines (label, y).
    Lines { x_desc: String, y_desc: String, lines: Vec<(String, Vec<(f64, f64)>)>, refs: Vec<(String, f64)> },
    /// Points on a log-x axis with a min–max bar each; series (label, filled, [(x, y, lo, hi)]).
    Scatter { x_desc: String, y_desc: String, series: Vec<Series> },
    /// Horizontal bars (label, value).
    Bars { x_desc: String, bars: Vec<(String, f64)> },
}

struct Series {
    label: String,
    filled: bool,
    colour: usize,
    points: Vec<(f64, f64, f64, f64)>,
}

/// A file-name-safe stem for a run key or table id.
pub fn slug(text: &str) -> String {
    text.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '_' }).collect()
}

/// The plots of the compared tables (drawn when asked for SVG or PNG).
pub fn make_plots(tables: &[TableReport]) -> Plots {
    let mut plots = Plots::default();
    for t in tables {
        for r in &t.rows {
            let Some(key) = &r.run_key else { continue };
            if plots.curves.contains_key(key) {
                continue;
            }
            let lines: Vec<(String, Vec<(f64, f64)>)> = r
                .runs
                .iter()
                .filter(|run| !run.epochs.is_empty())
                .map(|run| {
                    let state = match run.kind() {
                        RunKind::Finished => "",
                        RunKind::InProgress => ", in progress",
                        RunKind::Incomplete => ", incomplete",
                        RunKind::Diverged => ", diverged",
                        RunKind::Damaged => ", damaged",
                    };
                    (
                        format!("seed {}{state}", run.seed),
                        run.epochs.iter().map(|e| (e.epoch as f64, e.test_error)).collect(),
                    )
                })
                .collect();
            if lines.is_empty() {
                continue;
            }
            let full = r.scale() == Some(ResultScale::Full);
            // The published figure only beside full-scale curves: reduced-scale ones are not comparable.
            let mut refs = Vec::new();
            if full {
                for other in tables.iter().flat_map(|t| t.rows.iter().map(move |r| (t, r))) {
                    if other.1.run_key.as_ref() == Some(key) {
                        let metric = if other.1.row.dataset == "imagenet" { "top1_error" } else { "test_error" };
                        if let (Some(p), Some(printed)) =
                            (other.1.row.published.get(metric), other.1.row.printed.get(metric))
                        {
                            let label = format!("paper, {}: {printed}", other.0.table.id);
                            if !refs.iter().any(|(_, y)| y == p) {
                                refs.push((label, *p));
                            }
                        }
                    }
                }
            }
            let scale = if full { "" } else { " (reduced scale)" };
            // The row's label, not its run key: keys name every setting and do not fit a title.
            let title = format!("{} on {}: test error by epoch{scale}", r.row.label, r.row.dataset);
            let chart = Chart::Lines { x_desc: "epoch".into(), y_desc: "test error (%)".into(), lines, refs };
            let name = format!("curve_{}", slug(key));
            plots.curves.insert(key.clone(), Plot { name, title, chart });
        }
        if let Some(plot) = params_plot(t) {
            plots.params.insert(t.table.id.clone(), plot);
        }
    }
    plots.epoch_time = epoch_time_plot(tables);
    plots
}

/// Error against parameters for a table that publishes parameters.
fn params_plot(t: &TableReport) -> Option<Plot> {
    t.table.unit("params")?;
    let metric = if t.table.unit("test_error").is_some() { "test_error" } else { "top1_error" };
    let mut datasets: Vec<&str> = Vec::new();
    for r in &t.rows {
        if !datasets.contains(&r.row.dataset.as_str()) {
            datasets.push(&r.row.dataset);
        }
    }
    let mut series = Vec::new();
    for (i, dataset) in datasets.iter().enumerate() {
        let rows = t.rows.iter().filter(|r| r.row.dataset == *dataset);
        // The paper's own networks, and apart from them the other methods it quotes (at the parameter
        // counts it prints, ResNet-1202's transcription error included, as the table's notes say).
        for (quoted, label, colour) in [
            (false, format!("paper, {dataset}"), i),
            (true, format!("quoted by the paper, {dataset}"), i + datasets.len()),
        ] {
            let points: Vec<_> = rows
                .clone()
                .filter(|r| r.row.reference.is_some() == quoted)
                .filter_map(|r| Some((*r.row.published.get("params")?, *r.row.published.get(metric)?)))
                .map(|(x, y)| (x, y, y, y))
                .collect();
            if !points.is_empty() {
                series.push(Series { label, filled: false, colour, points });
            }
        }
        for scale in [ResultScale::Full, ResultScale::Reduced] {
            let ours: Vec<_> = rows
                .clone()
                .filter(|r| r.scale() == Some(scale))
                .filter_map(|r| {
                    let x: Stats = r.cell("params")?.ours?;
                    let y: Stats = r.cell(metric)?.ours?;
                    Some((x.median, y.median, y.min, y.max))
                })
                .collect();
            if !ours.is_empty() {
                let suffix = if scale == ResultScale::Reduced { ", reduced scale" } else { "" };
                series.push(Series {
                    label: format!("ours, {dataset}{suffix}"),
                    filled: true,
                    colour: i,
                    points: ours,
                });
            }
        }
    }
    if series.is_empty() {
        return None;
    }
    let title = format!("{}: {} against parameters", t.table.id, metric.replace('_', " "));
    let chart = Chart::Scatter {
        x_desc: "parameters (M, log scale)".into(),
        y_desc: format!("{} (%)", metric.replace('_', " ")),
        series,
    };
    Some(Plot { name: format!("params_{}", slug(&t.table.id)), title, chart })
}

/// Median time per epoch of every architecture and dataset with finished runs.
fn epoch_time_plot(tables: &[TableReport]) -> Option<Plot> {
    let mut seen = std::collections::BTreeSet::new();
    let mut times: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for r in tables.iter().flat_map(|t| &t.rows) {
        for run in &r.runs {
            let Some(res) = run.finished() else { continue };
            let Some(s) = res.median_epoch_seconds else { continue };
            if seen.insert(run.dir.clone()) {
                let scale = if res.full_scale { "" } else { ", reduced" };
                times.entry(format!("{} · {} · {}{scale}", res.arch, res.dataset, res.device)).or_default().push(s);
            }
        }
    }
    if times.is_empty() {
        return None;
    }
    let bars = times.into_iter().filter_map(|(k, v)| Some((k, Stats::of(&v)?.median))).collect();
    let title = "Median time per epoch by architecture, dataset and device".to_string();
    let chart = Chart::Bars { x_desc: "seconds per epoch".into(), bars };
    Some(Plot { name: "epoch_time".into(), title, chart })
}

/// The legend of a chart's labelled series, in its upper right corner.
fn draw_legend<'a, DB, CT>(c: &mut ChartContext<'a, DB, CT>) -> Result<(), ReportError>
where
    DB: DrawingBackend + 'a,
    CT: CoordTranslate,
{
    c.configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FONT, 13))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
        .map_err(plot_error)
}

fn plot_error<E: std::fmt::Display>(e: E) -> ReportError {
    ReportError::Plot(PlotError::Draw(e.to_string()))
}

/// Writes every plot as `<dir>/<name>.svg` and `<dir>/<name>.png`, each atomically.
pub fn write_plot_files(dir: &Path, plots: &Plots) -> Result<(), ReportError> {
    ensure_font()?;
    for plot in plots.all() {
        wrn_fs::atomic_write(&dir.join(format!("{}.svg", plot.name)), plot.svg()?.as_bytes())?;
        plot.write_png(&dir.join(format!("{}.png", plot.name)))?;
    }
    Ok(())
}

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

fn padded(lo: f64, hi: f64, log: bool) -> Range<f64> {
    if log {
        return (lo / 1.5)..(hi * 1.5);
    }
    let span = (hi - lo).max(hi.abs() * 0.05).max(1e-3);
    (lo - span * 0.08)..(hi + span * 0.08)
}

/// Draws `chart` under `title` on `root`: one step per kind of chart.
fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, title: &str, chart: &Chart) -> Result<(), ReportError> {
    ensure_font()?;
    root.fill(&WHITE).map_err(plot_error)?;
    match chart {
        Chart::Lines { x_desc, y_desc, lines, refs } => draw_lines(root, title, (x_desc, y_desc), lines, refs),
        Chart::Scatter { x_desc, y_desc, series } => draw_scatter(root, title, (x_desc, y_desc), series),
        Chart::Bars { x_desc, bars } => draw_bars(root, title, x_desc, bars),
    }
}

/// Test error (log scale) against epoch: a line per seed and a dashed line per published figure.
fn draw_lines<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    (x_desc, y_desc): (&str, &str),
    lines: &[(String, Vec<(f64, f64)>)],
    refs: &[(String, f64)],
) -> Result<(), ReportError> {
    let caption = (FONT, 17).into_font();
    let xs = lines.iter().flat_map(|(_, l)| l.iter().map(|p| p.0));
    let ys = lines.iter().flat_map(|(_, l)| l.iter().map(|p| p.1)).chain(refs.iter().map(|r| r.1));
    let (x0, x1) = min_max(xs).unwrap_or((0.0, 1.0));
    // Errors on a log axis: the first epochs (near chance) and the last (a few %) both stay legible.
    let (y0, y1) = min_max(ys).unwrap_or((1.0, 100.0));
    let (y0, y1) = (y0.max(0.01), y1.max(y0.max(0.01) * 1.5));
    let mut c = ChartBuilder::on(root)
        .caption(title, caption)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(
            x0.min(1.0)..x1.max(x0 + 1.0),
            ((y0 / 1.15)..(y1 * 1.15)).log_scale().with_key_points(log_ticks(y0 / 1.15, y1 * 1.15)),
        )
        .map_err(plot_error)?;
    // Whole epochs only: one label per epoch up to ten, so none repeats.
    let x_labels = ((x1.max(x0 + 1.0) - x0.min(1.0)).round() as usize + 1).clamp(2, 10);
    c.configure_mesh()
        .x_desc(x_desc)
        .y_desc(format!("{y_desc}, log scale"))
        .x_labels(x_labels)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| tick_label(*y))
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .draw()
        .map_err(plot_error)?;
    for (i, (label, points)) in lines.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let points = points.iter().map(|&(x, y)| (x, y.max(0.01)));
        c.draw_series(LineSeries::new(points, colour.stroke_width(2)))
            .map_err(plot_error)?
            .label(label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2)));
    }
    let (lx0, lx1) = (x0.min(1.0), x1.max(x0 + 1.0));
    for (label, y) in refs {
        let style = BLACK.stroke_width(1);
        c.draw_series(DashedLineSeries::new(vec![(lx0, *y), (lx1, *y)], 6, 4, style))
            .map_err(plot_error)?
            .label(label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
    }
    draw_legend(&mut c)
}

/// Points on a log-x axis, each with its min–max bar: ours filled, the paper's as crosses.
fn draw_scatter<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    (x_desc, y_desc): (&str, &str),
    series: &[Series],
) -> Result<(), ReportError> {
    let caption = (FONT, 17).into_font();
    let pts = series.iter().flat_map(|s| s.points.iter());
    let (x0, x1) = min_max(pts.clone().map(|p| p.0)).unwrap_or((0.1, 1.0));
    let (y0, y1) = min_max(pts.flat_map(|p| [p.2, p.3])).unwrap_or((0.0, 1.0));
    let xr = padded(x0.max(1e-3), x1.max(1e-3), true);
    let mut c = ChartBuilder::on(root)
        .caption(title, caption)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(xr.clone().log_scale().with_key_points(log_ticks(xr.start, xr.end)), padded(y0, y1, false))
        .map_err(plot_error)?;
    c.configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(&|x| tick_label(*x))
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .draw()
        .map_err(plot_error)?;
    for s in series {
        let colour = PALETTE[s.colour % PALETTE.len()];
        let filled = s.filled;
        let style = if filled { colour.filled() } else { colour.stroke_width(2) };
        c.draw_series(
            s.points.iter().filter(|p| p.3 > p.2).map(|p| PathElement::new(vec![(p.0, p.2), (p.0, p.3)], colour)),
        )
        .map_err(plot_error)?;
        let marker = move |x: f64, y: f64| -> DynElement<'static, DB, (f64, f64)> {
            if filled {
                Circle::new((x, y), 5, style).into_dyn()
            } else {
                Cross::new((x, y), 5, style).into_dyn()
            }
        };
        c.draw_series(s.points.iter().map(|p| marker(p.0, p.1))).map_err(plot_error)?.label(s.label.as_str()).legend(
            move |(x, y)| {
                if filled {
                    Circle::new((x + 8, y), 5, style).into_dyn()
                } else {
                    Cross::new((x + 8, y), 5, style).into_dyn()
                }
            },
        );
    }
    draw_legend(&mut c)
}

/// Horizontal bars with their values, labelled on the y axis.
fn draw_bars<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    x_desc: &str,
    bars: &[(String, f64)],
) -> Result<(), ReportError> {
    let caption = (FONT, 17).into_font();
    let max = bars.iter().map(|b| b.1).fold(0.0, f64::max).max(1e-3);
    let n = bars.len();
    let labels: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
    let mut c = ChartBuilder::on(root)
        .caption(title, caption)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(300)
        .build_cartesian_2d(0.0..max * 1.15, 0.0..n as f64)
        .map_err(plot_error)?;
    c.configure_mesh()
        .disable_y_mesh()
        .y_labels(n * 2 + 1)
        .y_label_formatter(&|y| {
            let i = y - 0.5;
            if (i - i.round()).abs() < 1e-6 && i >= 0.0 && (i.round() as usize) < labels.len() {
                labels[labels.len() - 1 - i.round() as usize].clone()
            } else {
                String::new()
            }
        })
        .x_desc(x_desc)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .draw()
        .map_err(plot_error)?;
    c.draw_series(bars.iter().enumerate().map(|(i, (_, v))| {
        let y = (n - 1 - i) as f64;
        Rectangle::new([(0.0, y + 0.2), (*v, y + 0.8)], PALETTE[0].filled())
    }))
    .map_err(plot_error)?;
    c.draw_series(bars.iter().enumerate().map(|(i, (_, v))| {
        let y = (n - 1 - i) as f64;
        Text::new(format!("{v:.1} s"), (*v, y + 0.5), (FONT, 12).into_font().color(&BLACK))
    }))
    .map_err(plot_error)?;
    Ok(())
}

/// Ticks 1-2-5 per decade (and 3) between `lo` and `hi`, for a log axis that spans less than a decade.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut ticks = Vec::new();
    let mut decade = 10f64.powi(lo.max(1e-3).log10().floor() as i32);
    while decade <= hi {
        for m in [1.0, 2.0, 3.0, 5.0] {
            let t = m * decade;
            if t >= lo && t <= hi {
                ticks.push(t);
            }
        }
        decade *= 10.0;
    }
    ticks
}

/// A 1-2-3-5 tick as it reads: `0.3`, `2`, `50`, not `0.30000000000000004`.
fn tick_label(x: f64) -> String {
    let text = format!("{x:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn min_max(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.filter(|v| v.is_finite()).fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dark pixels in a white bitmap after drawing `text` in the plots' font.
    fn ink(text: &str) -> usize {
        let (w, h) = (200u32, 40u32);
        let mut buffer = vec![0u8; (w * h * 3) as usize];
        {
            let root = BitMapBackend::with_buffer(&mut buffer, (w, h)).into_drawing_area();
            root.fill(&WHITE).unwrap();
            ensure_font().unwrap();
            root.draw(&Text::new(text.to_string(), (5, 5), (FONT, 20).into_font().color(&BLACK))).unwrap();
            root.present().unwrap();
        }
        buffer.chunks(3).filter(|p| p.iter().all(|&c| c < 128)).count()
    }

    #[test]
    fn text_is_drawn_with_the_embedded_font_and_no_font_file() {
        // The embedded font is the one in use unless WRN_FONT names another (nothing in these tests sets it).
        assert!(std::env::var_os("WRN_FONT").is_none());
        assert_eq!(font().unwrap().1, "DejaVu Sans 2.37 (embedded)");
        assert_eq!(ink(""), 0);
        let title = ink("test error (%)");
        assert!(title > 100, "{title} dark pixels");
        // Different text, different glyphs.
        assert_ne!(ink("WRN-28-10"), title);
    }
}
