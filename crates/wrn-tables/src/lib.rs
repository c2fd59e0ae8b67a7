//! The paper's tables as data (contract 4): `reports/tables/*.toml`, one file per table. Each row names
//! the configuration to train (dataset, architecture, `wrn train --set` keys) and the published figures
//! with their units; rows the paper quotes from other work carry a `reference` and nothing to train.
//!
//! The sweep reads these files to know what to run, the report to know what to compare. Both find a
//! row's runs through [`Row::run_key`]: the dataset, the architecture and the row's training settings,
//! so rows of different tables that train the same thing share their runs.
//!
//! File format (see `reports/tables/t4_width.toml`):
//!
//! ```toml
//! title = "..."                # what the table shows
//! source = "arXiv:1605.07146v4, Table 4"
//! statistic = "median of 5 runs"  # what a published figure is
//! seeds = 5                    # seeds to train per row (a row may override)
//! notes = ["..."]              # caveats, including the paper's known inconsistencies
//! [columns]                    # the published metrics and their units
//! test_error = "%"
//! [train]                      # `wrn train --set` keys shared by every trainable row
//! preprocessing = "zca"
//! [[row]]
//! id = "wrn-40-4-cifar10"      # unique in the table
//! label = "WRN-40-4"
//! dataset = "cifar10"
//! arch = "wrn-40-4"            # absent for reference rows
//! train = { dropout = 0.3 }    # optional, over the table's [train]
//! published = { test_error = 4.97, params = 8.9 }
//! statistic = "..."            # optional: what this row's figures are, where the table's does not hold
//! reference = "..."            # quoted from another paper: not trained
//! note = "..."
//! [[finding]]                  # a claim of the paper that the table's rows test
//! claim = "Error falls as width grows at depth 40"
//! metric = "test_error"
//! falls = ["wrn-40-1-cifar10", "wrn-40-2-cifar10"]  # or lowest = [best, others...]
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The metrics a table may publish, with what each means.
pub const METRICS: &[(&str, &str)] = &[
    ("test_error", "top-1 test error (%) after the last epoch"),
    ("top1_error", "top-1 validation error (%), single centre crop"),
    ("top5_error", "top-5 validation error (%), single centre crop"),
    ("params", "parameters (millions)"),
    ("epoch_seconds", "seconds per training epoch (hardware-dependent)"),
    ("batch16_ms", "milliseconds per batch of 16 (hardware-dependent)"),
    ("map", "COCO mean average precision (%)"),
];

/// The datasets rows may name; only the first four can be trained.
pub const DATASETS: &[&str] = &["cifar10", "cifar100", "svhn", "imagenet", "coco"];

/// What is wrong with a table file.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("no table '{name}' in {dir} (tables there: {available})")]
    Unknown { name: String, dir: PathBuf, available: String },
    #[error("no trainable row '{row}' in {table} (its rows: {available}); name a row as TABLE:ROW, e.g. t8:wrn-50-2-bottleneck")]
    UnknownRow { row: String, table: String, available: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TableFile {
    title: String,
    source: String,
    statistic: String,
    seeds: u32,
    #[serde(default)]
    demo: bool,
    #[serde(default)]
    notes: Vec<String>,
    columns: BTreeMap<String, String>,
    #[serde(default)]
    train: toml::Table,
    #[serde(rename = "row")]
    rows: Vec<RowFile>,
    #[serde(default, rename = "finding")]
    findings: Vec<FindingFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FindingFile {
    claim: String,
    metric: String,
    falls: Option<Vec<String>>,
    lowest: Option<Vec<String>>,
}

/// How a finding orders its rows' figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FindingKind {
    /// The metric falls from each row to the next.
    Falls,
    /// The first row's metric is below every other row's.
    Lowest,
}

/// One of the paper's findings that a table tests with its own rows (Table 4: error falls as the width
/// grows at a fixed depth): a report says whether our runs show it, as well as each figure.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub claim: String,
    pub metric: String,
    pub kind: FindingKind,
    /// Row ids of the table, trainable, at least two.
    pub rows: Vec<String>,
}

impl Finding {
    /// The pairs the finding compares, as (should be higher, should be lower).
    pub fn pairs(&self) -> Vec<(&str, &str)> {
        match self.kind {
            FindingKind::Falls => self.rows.windows(2).map(|w| (w[0].as_str(), w[1].as_str())).collect(),
            FindingKind::Lowest => self.rows[1..].iter().map(|r| (r.as_str(), self.rows[0].as_str())).collect(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RowFile {
    id: String,
    label: String,
    dataset: String,
    arch: Option<String>,
    #[serde(default)]
    train: toml::Table,
    seeds: Option<u32>,
    #[serde(default)]
    published: BTreeMap<String, toml::Spanned<f64>>,
    statistic: Option<String>,
    reference: Option<String>,
    note: Option<String>,
}

/// One paper table.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// The file stem, e.g. `t4_width`.
    pub id: String,
    pub title: String,
    pub source: String,
    /// What a published figure is (e.g. "median of 5 runs").
    pub statistic: String,
    /// wrn's own demo table (synthetic data): no published figures, never part of `--all`.
    pub demo: bool,
    pub notes: Vec<String>,
    /// Published metric → unit, in the file's order of importance.
    pub columns: Vec<(String, String)>,
    /// The paper's findings the rows test.
    pub findings: Vec<Finding>,
    pub rows: Vec<Row>,
}

/// One row of a table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub id: String,
    pub label: String,
    pub dataset: String,
    /// The network to train; `None` for reference rows.
    pub arch: Option<String>,
    /// `wrn train --set` keys (dotted) and values: the table's `[train]` with the row's on top.
    pub train: BTreeMap<String, toml::Value>,
    pub seeds: u32,
    pub published: BTreeMap<String, f64>,
    /// Each published figure as the file writes it, which is as the paper prints it ("4.00", "3.8"): a
    /// report shows the paper's decimals, never more or fewer.
    pub printed: BTreeMap<String, String>,
    /// What the row's published figures are: the table's `statistic` unless the row says otherwise (Table
    /// 6 gives medians of 5 runs on CIFAR and does not say how many runs its SVHN figures are).
    pub statistic: String,
    /// Where a quoted figure comes from; such rows are not trained.
    pub reference: Option<String>,
    pub note: Option<String>,
}

impl Row {
    /// Whether wrn trains this row.
    pub fn trainable(&self) -> bool {
        self.arch.is_some() && self.reference.is_none()
    }

    /// Where this row's runs live under a runs folder: `<dataset>/<arch>[,key=value]...`, the settings
    /// in key order. `None` for reference rows.
    pub fn run_key(&self) -> Option<String> {
        let arch = self.arch.as_ref().filter(|_| self.trainable())?;
        let mut key = format!("{}/{}", self.dataset, arch);
        for (k, v) in &self.train {
            key.push_str(&format!(",{k}={}", plain(v)));
        }
        Some(key)
    }

    /// The `--set key=value` arguments that train this row (dataset and architecture included).
    pub fn sets(&self) -> Vec<String> {
        let mut sets = vec![format!("dataset={}", self.dataset)];
        if let Some(arch) = &self.arch {
            sets.push(format!("arch={arch}"));
        }
        sets.extend(self.train.iter().map(|(k, v)| format!("{k}={v}")));
        sets
    }

    /// The run folder of one seed under a runs folder.
    pub fn run_dir(&self, runs: &Path, seed: u32) -> Option<PathBuf> {
        Some(runs.join(self.run_key()?).join(format!("seed{seed}")))
    }
}

/// A TOML value as it reads in a folder name: strings unquoted, arrays joined by `+`.
fn plain(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Array(items) => items.iter().map(plain).collect::<Vec<_>>().join("+"),
        // `0.0` and `0` name the same setting.
        toml::Value::Float(x) => format!("{x}"),
        other => other.to_string(),
    }
}

/// Flattens nested tables into dotted keys (`schedule = { milestones = [3] }` → `schedule.milestones`).
fn flatten(prefix: &str, table: &toml::Table, out: &mut BTreeMap<String, toml::Value>) {
    for (k, v) in table {
        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match v {
            toml::Value::Table(inner) => flatten(&key, inner, out),
            other => {
                out.insert(key, other.clone());
            }
        }
    }
}

/// A finding of a table file, checked against the table's rows and columns.
fn finding(f: FindingFile, rows: &[Row], columns: &BTreeMap<String, String>) -> Result<Finding, String> {
    let at = |m: String| format!("finding '{}': {m}", f.claim);
    let (kind, ids) = match (f.falls, f.lowest) {
        (Some(ids), None) => (FindingKind::Falls, ids),
        (None, Some(ids)) => (FindingKind::Lowest, ids),
        _ => return Err(at("give exactly one of falls = [rows] or lowest = [best, others]".into())),
    };
    if !columns.contains_key(&f.metric) {
        return Err(at(format!("metric '{}' is not one of the table's [columns]", f.metric)));
    }
    if ids.len() < 2 {
        return Err(at("a finding compares at least two rows".into()));
    }
    for id in &ids {
        match rows.iter().find(|r| &r.id == id) {
            None => return Err(at(format!("no row '{id}'"))),
            Some(r) if !r.trainable() => return Err(at(format!("row '{id}' is not trained"))),
            Some(_) => {}
        }
    }
    Ok(Finding { claim: f.claim, metric: f.metric, kind, rows: ids })
}

/// Keys a row may not set through `train`: they have fields of their own or belong to the sweep.
const RESERVED: &[&str] = &["dataset", "arch", "seed", "device", "scale", "data"];

impl Table {
    /// Parses one table file; `id` is its file stem.
    pub fn parse(id: &str, path: &Path, text: &str) -> Result<Table, TableError> {
        let invalid = |message: String| TableError::Invalid { path: path.to_path_buf(), message };
        let file: TableFile = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        if file.seeds == 0 {
            return Err(invalid("seeds must be at least 1".into()));
        }
        let known: BTreeSet<&str> = METRICS.iter().map(|(m, _)| *m).collect();
        for metric in file.columns.keys() {
            if !known.contains(metric.as_str()) {
                return Err(invalid(format!("unknown metric '{metric}' in [columns] (known: {})", metric_list())));
            }
        }
        let mut defaults = BTreeMap::new();
        flatten("", &file.train, &mut defaults);
        let mut ids = BTreeSet::new();
        let mut rows = Vec::new();
        for r in file.rows {
            let at = |m: String| invalid(format!("row '{}': {m}", r.id));
            if !ids.insert(r.id.clone()) {
                return Err(at("the id appears twice".into()));
            }
            if !DATASETS.contains(&r.dataset.as_str()) {
                return Err(at(format!("unknown dataset '{}' (known: {})", r.dataset, DATASETS.join(", "))));
            }
            for metric in r.published.keys() {
                if !file.columns.contains_key(metric) {
                    return Err(at(format!("published '{metric}' is not one of the table's [columns]")));
                }
            }
            if r.arch.is_none() && r.reference.is_none() {
                return Err(at("a row needs an arch to train or a reference for its quoted figures".into()));
            }
            let mut train = BTreeMap::new();
            if r.reference.is_none() {
                train = defaults.clone();
                flatten("", &r.train, &mut train);
                if r.dataset == "coco" {
                    return Err(at("COCO rows cannot be trained; give a reference".into()));
                }
            } else if !r.train.is_empty() {
                return Err(at("a reference row has nothing to train".into()));
            }
            for key in train.keys() {
                let top = key.split('.').next().unwrap_or_default();
                if RESERVED.contains(&top) {
                    return Err(at(format!(
                        "'{key}' cannot be set by a table (dataset and arch have fields; seed, device, scale and \
                         data are the sweep's)"
                    )));
                }
            }
            let seeds = r.seeds.unwrap_or(file.seeds);
            if seeds == 0 {
                return Err(at("seeds must be at least 1".into()));
            }
            rows.push(Row {
                id: r.id,
                label: r.label,
                dataset: r.dataset,
                arch: r.arch,
                train,
                seeds,
                printed: r.published.iter().map(|(k, v)| (k.clone(), text[v.span()].trim().to_string())).collect(),
                published: r.published.into_iter().map(|(k, v)| (k, v.into_inner())).collect(),
                statistic: r.statistic.unwrap_or_else(|| file.statistic.clone()),
                reference: r.reference,
                note: r.note,
            });
        }
        let findings = file
            .findings
            .into_iter()
            .map(|f| finding(f, &rows, &file.columns))
            .collect::<Result<_, _>>()
            .map_err(invalid)?;
        // Keep the file's column order as written (TOML tables are read sorted; re-read the order).
        let columns = column_order(text, &file.columns);
        Ok(Table {
            id: id.to_string(),
            title: file.title,
            source: file.source,
            statistic: file.statistic,
            demo: file.demo,
            notes: file.notes,
            columns,
            rows,
            findings,
        })
    }

    /// Reads one table file.
    pub fn load(path: &Path) -> Result<Table, TableError> {
        let text = std::fs::read_to_string(path).map_err(|source| TableError::Read { path: path.into(), source })?;
        let id = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        Table::parse(&id, path, &text)
    }

    /// The unit of a published metric.
    pub fn unit(&self, metric: &str) -> Option<&str> {
        self.columns.iter().find(|(m, _)| m == metric).map(|(_, u)| u.as_str())
    }

    /// The rows wrn trains.
    pub fn trainable(&self) -> impl Iterator<Item = &Row> {
        self.rows.iter().filter(|r| r.trainable())
    }
}

fn metric_list() -> String {
    METRICS.iter().map(|(m, _)| *m).collect::<Vec<_>>().join(", ")
}

/// The `[columns]` keys in the order the file writes them.
fn column_order(text: &str, columns: &BTreeMap<String, String>) -> Vec<(String, String)> {
    let mut in_columns = false;
    let mut order = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_columns = line == "[columns]";
            continue;
        }
        if in_columns {
            if let Some((key, _)) = line.split_once('=') {
                let key = key.trim().trim_matches('"');
                if let Some(unit) = columns.get(key) {
                    order.push((key.to_string(), unit.clone()));
                }
            }
        }
    }
    for (k, v) in columns {
        if !order.iter().any(|(m, _)| m == k) {
            order.push((k.clone(), v.clone()));
        }
    }
    order
}

/// All tables of a folder, sorted by id.
pub fn load_dir(dir: &Path) -> Result<Vec<Table>, TableError> {
    let read = |source| TableError::Read { path: dir.into(), source };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(read)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    paths.iter().map(|p| Table::load(p)).collect()
}

/// Picks tables by id (`t4_width`) or by the part before the first `_` (`t4`).
pub fn select<'a>(tables: &'a [Table], names: &[String], dir: &Path) -> Result<Vec<&'a Table>, TableError> {
    names
        .iter()
        .map(|name| {
            tables.iter().find(|t| &t.id == name || t.id.split('_').next() == Some(name.as_str())).ok_or_else(|| {
                TableError::Unknown {
                    name: name.clone(),
                    dir: dir.into(),
                    available: tables.iter().map(|t| t.id.as_str()).collect::<Vec<_>>().join(", "),
                }
            })
        })
        .collect()
}

/// The row `TABLE:ROW` names (a table as [`select`] takes it, a trainable row's id), and its table.
pub fn find_row<'a>(tables: &'a [Table], name: &str, dir: &Path) -> Result<(&'a Table, &'a Row), TableError> {
    let (table, row) = name.split_once(':').unwrap_or((name, ""));
    let table = select(tables, &[table.to_string()], dir)?[0];
    let found = table.trainable().find(|r| r.id == row);
    found.map(|r| (table, r)).ok_or_else(|| TableError::UnknownRow {
        row: row.into(),
        table: table.id.clone(),
        available: table.trainable().map(|r| r.id.as_str()).collect::<Vec<_>>().join(", "),
    })
}

/// The folder of the paper's tables: `reports/tables` under the working directory when it exists (a
/// checkout), else the one in the repository this crate was built from.
pub fn default_dir() -> PathBuf {
    let local = Path::new("reports/tables");
    if local.is_dir() {
        return local.to_path_buf();
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.ancestors().nth(2).unwrap_or(manifest).join("reports/tables")
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.id, self.source, self.title)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = r#"
title = "t"
source = "s"
statistic = "median of 5 runs"
seeds = 5
[columns]
test_error = "%"
params = "M"
[train]
preprocessing = "zca"
dropout = 0.0
[[row]]
id = "a"
label = "WRN-28-10"
dataset = "cifar10"
arch = "wrn-28-10"
train = { dropout = 0.3, schedule = { milestones = [3, 5] } }
seeds = 1
published = { test_error = 4.17, params = 36.5 }
[[row]]
id = "nin"
label = "NIN"
dataset = "cifar10"
published = { test_error = 8.81 }
reference = "Lin et al."
"#;

    fn small() -> Table {
        Table::parse("t4_small", Path::new("t4_small.toml"), SMALL).unwrap()
    }

    #[test]
    fn rows_merge_the_table_settings_and_name_their_runs() {
        let t = small();
        assert_eq!(t.columns, vec![("test_error".into(), "%".into()), ("params".into(), "M".into())]);
        let a = &t.rows[0];
        assert_eq!(a.seeds, 1);
        assert_eq!(a.run_key().unwrap(), "cifar10/wrn-28-10,dropout=0.3,preprocessing=zca,schedule.milestones=3+5");
        assert_eq!(
            a.sets(),
            ["dataset=cifar10", "arch=wrn-28-10", "dropout=0.3", "preprocessing=\"zca\"", "schedule.milestones=[3, 5]"]
        );
        assert_eq!(
            a.run_dir(Path::new("runs"), 2).unwrap(),
            Path::new("runs").join(a.run_key().unwrap()).join("seed2")
        );
        let nin = &t.rows[1];
        assert!(!nin.trainable() && nin.run_key().is_none() && nin.train.is_empty());
        assert_eq!(nin.seeds, 5);
        assert_eq!(t.trainable().count(), 1);
    }

    #[test]
    fn published_figures_keep_the_papers_decimals_and_rows_may_say_what_they_are() {
        let text = SMALL
            .replace(
                "published = { test_error = 4.17, params = 36.5 }",
                "published = { test_error = 4.00, params = 36 }",
            )
            .replace("reference = \"Lin et al.\"", "reference = \"Lin et al.\"\nstatistic = \"single run\"");
        let t = Table::parse("t", Path::new("t.toml"), &text).unwrap();
        let (a, nin) = (&t.rows[0], &t.rows[1]);
        assert_eq!((a.published["test_error"], a.published["params"]), (4.0, 36.0));
        assert_eq!((a.printed["test_error"].as_str(), a.printed["params"].as_str()), ("4.00", "36"));
        assert_eq!(nin.printed["test_error"], "8.81");
        assert_eq!((a.statistic.as_str(), nin.statistic.as_str()), ("median of 5 runs", "single run"));
    }

    #[test]
    fn mistakes_name_the_file_and_the_row() {
        let bad = |from: &str, to: &str| {
            let text = SMALL.replacen(from, to, 1);
            Table::parse("x", Path::new("reports/tables/x.toml"), &text).unwrap_err().to_string()
        };
        let e = bad("published = { test_error = 4.17", "published = { top9 = 1.0, test_error = 4.17");
        assert!(e.starts_with("reports/tables/x.toml: row 'a': published 'top9'"), "{e}");
        let e = bad("id = \"nin\"", "id = \"a\"");
        assert!(e.contains("row 'a': the id appears twice"), "{e}");
        let e = bad("dataset = \"cifar10\"", "dataset = \"mnist\"");
        assert!(e.contains("unknown dataset 'mnist'"), "{e}");
        let e = bad("dropout = 0.3,", "seed = 3, dropout = 0.3,");
        assert!(e.contains("'seed' cannot be set by a table"), "{e}");
        let e = bad("reference = \"Lin et al.\"", "");
        assert!(e.contains("row 'nin': a row needs an arch"), "{e}");
        let e = bad("params = \"M\"", "params = \"M\"\nflops = \"G\"");
        assert!(e.contains("unknown metric 'flops'"), "{e}");
        let e = bad("statistic", "statistics");
        assert!(e.contains("unknown field `statistics`"), "{e}");
    }

    #[test]
    fn tables_are_selected_by_id_or_short_name() {
        let tables = vec![small()];
        let dir = Path::new("reports/tables");
        assert_eq!(select(&tables, &["t4".into()], dir).unwrap()[0].id, "t4_small");
        assert_eq!(select(&tables, &["t4_small".into()], dir).unwrap().len(), 1);
        let e = select(&tables, &["t7".into()], dir).unwrap_err().to_string();
        assert_eq!(e, "no table 't7' in reports/tables (tables there: t4_small)");
    }
}
