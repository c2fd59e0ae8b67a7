//! The report over run folders written in the documented format: medians over seeds, ranges and counts,
//! missing and in-progress rows, reduced-scale labelling, verdicts both ways, and the Markdown, HTML,
//! CSV and plot files.

use std::path::Path;

use crate::common::{key, write_table, Fixture, WIDTH};
use wrn_report::{compare, ResultScale, RowState, Stats, Verdict};

fn setup() -> (tempfile::TempDir, wrn_tables::Table) {
    let tmp = tempfile::tempdir().unwrap();
    let table = write_table(&tmp.path().join("tables"), "t4_width", WIDTH);
    (tmp, table)
}

fn row<'a>(t: &'a wrn_report::TableReport, id: &str) -> &'a wrn_report::RowReport {
    t.rows.iter().find(|r| r.row.id == id).unwrap()
}

#[test]
fn ours_is_the_median_over_seeds_with_range_and_count() {
    let (tmp, table) = setup();
    let runs = tmp.path().join("runs");
    let k = key(&table, "wrn-40-4-cifar10");
    for (seed, err) in [(1, 5.30), (2, 4.90), (3, 5.10), (4, 5.60), (5, 5.00)] {
        Fixture::finished("cifar10", "wrn-40-4", seed, err).write(&runs, &k);
    }
    let report = compare(std::slice::from_ref(&table), &runs).unwrap();
    let r = row(&report[0], "wrn-40-4-cifar10");
    let c = r.cell("test_error").unwrap();
    assert_eq!(c.ours, Some(Stats { median: 5.10, min: 4.90, max: 5.60, n: 5 }));
    assert!((c.difference.unwrap() - (5.10 - 4.97)).abs() < 1e-9);
    assert_eq!(r.cell("params").unwrap().ours.unwrap().median, 8.94921);
    // Time per epoch is shown (30 s + seed) but never judged.
    let time = r.cell("epoch_seconds").unwrap();
    assert_eq!(time.ours.unwrap().median, 33.0);
    assert_eq!(time.verdict, Verdict::NotJudged("hardware-dependent"));
    assert_eq!(time.difference, None);
    assert_eq!(r.state, crate::common::full_results(5, 0, 0));
    assert_eq!(r.devices, ["cpu"]);

    // An even count takes the mean of the middle two.
    assert_eq!(Stats::of(&[4.0, 1.0, 3.0, 2.0]).unwrap().median, 2.5);
    assert_eq!(Stats::of(&[]), None);
}

#[test]
fn verdicts_agree_within_the_dataset_tolerance_and_differ_outside_it() {
    let (tmp, table) = setup();
    let runs = tmp.path().join("runs");
    // CIFAR-10 tolerance 2·√2·0.15 ≈ 0.42: 4.97 + 0.40 agrees, 4.81 + 0.80 differs.
    Fixture::finished("cifar10", "wrn-40-4", 1, 5.37).write(&runs, &key(&table, "wrn-40-4-cifar10"));
    Fixture::finished("cifar10", "wrn-16-8", 1, 5.61).params(10_961_370).write(&runs, &key(&table, "wrn-16-8-cifar10"));
    // The same 0.80 on CIFAR-100 (tolerance ≈ 0.85) agrees.
    Fixture::finished("cifar100", "wrn-40-4", 1, 23.69)
        .params(9_000_000)
        .write(&runs, &key(&table, "wrn-40-4-cifar100"));
    // 36.0 M parameters against the published 36.5 M differs.
    Fixture::finished("cifar10", "wrn-28-10", 1, 4.10)
        .params(36_000_000)
        .write(&runs, &key(&table, "wrn-28-10-cifar10"));
    let report = compare(std::slice::from_ref(&table), &runs).unwrap();
    let t = &report[0];
    let verdict = |id: &str, metric: &str| row(t, id).cell(metric).unwrap().verdict.clone();
    assert_eq!(verdict("wrn-40-4-cifar10", "test_error"), Verdict::Agrees);
    assert_eq!(verdict("wrn-16-8-cifar10", "test_error"), Verdict::Differs);
    assert_eq!(verdict("wrn-40-4-cifar100", "test_error"), Verdict::Agrees);
    assert_eq!(verdict("wrn-16-8-cifar10", "params"), Verdict::Agrees);
    assert_eq!(verdict("wrn-28-10-cifar10", "test_error"), Verdict::Agrees);
    assert_eq!(verdict("wrn-28-10-cifar10", "params"), Verdict::Differs);
    // Parameters: 8.95 and 9.00 M against 8.9 (within 0.1 M), 10.96 against 11.0.
    assert_eq!(verdict("wrn-40-4-cifar100", "params"), Verdict::Agrees);
    assert_eq!(t.verdicts(), (6, 2));
    let tol = wrn_report::compare::tolerance("cifar10", "test_error").unwrap().limit;
    assert!((tol - 0.4243).abs() < 1e-3, "{tol}");
}

#[test]
fn rows_without_runs_are_missing_never_zero() {
    let (tmp, table) = setup();
    let runs = tmp.path().join("runs");
    Fixture::finished("cifar10", "wrn-40-4", 1, 5.0).write(&runs, &key(&table, "wrn-40-4-cifar10"));
    let report =
        wrn_report::Report { runs: runs.clone(), tables: compare(std::slice::from_ref(&table), &runs).unwrap() };
    let r = row(&report.tables[0], "wrn-16-8-cifar10");
    assert_eq!(r.state, RowState::NoRuns);
    let c = r.cell("test_error").unwrap();
    assert_eq!((c.ours, c.difference, &c.verdict), (None, None, &Verdict::Missing));

    let out = tmp.path().join("out");
    let written = wrn_report::write(&report, &out).unwrap();
    let md = std::fs::read_to_string(&written.markdown).unwrap();
    let line = md.lines().find(|l| l.starts_with("| WRN-16-8 |")).unwrap();
    assert!(line.contains("missing: no runs") && line.contains("| missing |"), "{line}");
    assert!(!line.contains("0.00"), "a missing row shows no zero: {line}");
    let csv = std::fs::read_to_string(&written.csv).unwrap();
    let line = csv.lines().find(|l| l.starts_with("t4_width,wrn-16-8-cifar10,cifar10,test_error,")).unwrap();
    assert_eq!(line, "t4_width,wrn-16-8-cifar10,cifar10,test_error,%,4.81,,,,0,,missing,,0.4243,missing: no runs,,,");
}

#[test]
fn unfinished_runs_are_in_progress_not_results() {
    let (tmp, table) = setup();
    let runs = tmp.path().join("runs");
    let k = key(&table, "wrn-16-8-cifar10");
    // Still training (no result.json) and interrupted: no figure.
    Fixture::finished("cifar10", "wrn-16-8", 1, 3.0).unfinished(None, 12).write(&runs, &k);
    Fixture::finished("cifar10", "wrn-16-8", 2, 3.0).unfinished(Some("interrupted"), 40).write(&runs, &k);
    let report = compare(std::slice::from_ref(&table), &runs).unwrap();
    let r = row(&report[0], "wrn-16-8-cifar10");
    assert_eq!(r.state, RowState::InProgress { runs: 2 });
    assert_eq!(r.cell("test_error").unwrap().ours, None);
    assert_eq!(r.status(), "missing: 2 runs in progress");
    assert_eq!(r.runs.iter().map(|run| run.epochs.len()).collect::<Vec<_>>(), [12, 40]);

    // A finished seed beside them is the figure; the others are counted as in progress.
    Fixture::finished("cifar10", "wrn-16-8", 3, 4.9).write(&runs, &k);
    let report = compare(std::slice::from_ref(&table), &runs).unwrap();
    let r = row(&report[0], "wrn-16-8-cifar10");
    assert_eq!(r.state, crate::common::full_results(1, 2, 0));
    assert_eq!(r.cell("test_error").unwrap().ours.unwrap(), Stats { median: 4.9, min: 4.9, max: 4.9, n: 1 });
    assert_eq!(r.status(), "1 run, 2 in progress");
}

#[test]
fn diverged_and_short_runs_are_never_figures() {
    let (tmp, table) = setup();
    let runs = tmp.path().join("runs");
    let k = key(&table, "wrn-16-8-cifar10");
    // A diverged run, and one that says "finished" after 150 of 200 epochs: neither is a result.
    Fixture::finished("cifar10", "wrn-16-8", 1, 90.0).unfinished(Some("diverged"), 3).write(&runs, &k);
    Fixture::finished("cifar10", "wrn-16-8", 2, 3.0).unfinished(Some("finished"), 150).write(&runs, &k);
    let report = compare(std::slice::from_ref(&table), &runs).unwrap();
    let r = row(&report[0], "wrn-16-8-cifar10");
    assert_eq!(r.state, RowState::InProgress { runs: 2 });
    assert_eq!(r.cell("test_error").unwrap().ours, None);
    assert_eq!(r.status(), "missing: 1 diverged, 1 incomplete");

    Fixture::finished("cifar10", "wrn-16-8", 3, 4.9).write(&runs, &k);
    Fixture::finished("cifar10", "wrn-16-8", 4, 3.0).unfinished(None, 20).write(&runs, &k);
    let report = compare(std::slice::from_ref(&table), &runs).unwrap();
    let r = row(&report[0], "wrn-16-8-cifar10");
    assert_eq!(r.cell("test_error").unwrap().ours.unwrap(), Stats { median: 4.9, min: 4.9, max: 4.9, n: 1 });
    assert_eq!(r.state, crate::common::full_results(1, 1, 0));
    assert_eq!(r.status(), "1 run, 1 in progress, 1 diverged (not counted), 1 incomplete (not counted)");
}

#[test]
fn a_damaged_folder_is_a_damaged_row_and_the_rest_is_reported() {
    let (tmp, table) = setup();
    let runs = tmp.path().join("runs");
    let k = key(&table, "wrn-40-4-cifar10");
    Fixture::finished("cifar10", "wrn-40-4", 1, 5.0).write(&runs, &k);
    // A result.json cut short, and a metrics.csv with a row that is not a number.
    let cut = Fixture::finished("cifar10", "wrn-40-4", 2, 9.0).write(&runs, &k);
    std::fs::write(cut.join("result.json"), "{\"status\": \"fini").unwrap();
    let bad = Fixture::finished("cifar10", "wrn-40-4", 3, 9.0).write(&runs, &k);
    let metrics = std::fs::read_to_string(bad.join("metrics.csv")).unwrap();
    std::fs::write(bad.join("metrics.csv"), metrics.replacen("\n1,0.1,", "\n1,zero,", 1)).unwrap();
    // A row whose only folder is damaged.
    let only = Fixture::finished("cifar10", "wrn-16-8", 1, 4.0).write(&runs, &key(&table, "wrn-16-8-cifar10"));
    std::fs::write(only.join("result.json"), "").unwrap();

    let report =
        wrn_report::Report { runs: runs.clone(), tables: compare(std::slice::from_ref(&table), &runs).unwrap() };
    let r = row(&report.tables[0], "wrn-40-4-cifar10");
    // Only the sound seed is counted.
    assert_eq!(r.cell("test_error").unwrap().ours.unwrap(), Stats { median: 5.0, min: 5.0, max: 5.0, n: 1 });
    assert_eq!(r.state, crate::common::full_results(1, 0, 0));
    let status = r.status();
    assert!(status.starts_with("1 run, 2 damaged (not counted): "), "{status}");
    assert!(status.contains(&format!("{}: EOF while parsing", cut.join("result.json").display())), "{status}");
    assert!(status.contains(&format!("{}: ", bad.join("metrics.csv").display())), "{status}");
    assert!(status.contains("remove the folder and run `wrn sweep` again"), "{status}");
    let r = row(&report.tables[0], "wrn-16-8-cifar10");
    assert_eq!(r.state, RowState::InProgress { runs: 1 });
    assert!(r.status().starts_with("missing: 1 damaged: ") && r.status().contains("result.json"), "{}", r.status());
    assert_eq!(r.cell("test_error").unwrap().ours, None);

    // Every output is written, and shows the damage.
    let written = wrn_report::write(&report, &tmp.path().join("out")).unwrap();
    let md = std::fs::read_to_string(&written.markdown).unwrap();
    let line = md.lines().find(|l| l.starts_with("| WRN-16-8 |")).unwrap();
    assert!(line.contains("missing: 1 damaged: ") && line.contains("| in progress |"), "{line}");
    let csv = std::fs::read_to_string(&written.csv).unwrap();
    assert!(csv.lines().any(|l| l.starts_with("t4_width,wrn-40-4-cifar10,") && l.contains("2 damaged")), "{csv}");
    assert!(std::fs::read_to_string(&written.html).unwrap().contains("2 damaged (not counted): "));
    // The curve of the damaged metrics.csv is left out; the one beside the cut result.json says damaged.
    let svg =
        written.plots.iter().find(|p| p.ends_with("plots/curve_cifar10_wrn-40-4_dropout_0_preprocessing_zca.svg"));
    let curve = std::fs::read_to_string(svg.unwrap()).unwrap();
    assert!(curve.contains("seed 1") && curve.contains("seed 2, damaged") && !curve.contains("seed 3"));
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn a_new_report_replaces_the_old_one_whole_and_leaves_other_files() {
    let (tmp, table) = setup();
    let runs = tmp.path().join("runs");
    Fixture::finished("cifar10", "wrn-40-4", 1, 5.0).write(&runs, &key(&table, "wrn-40-4-cifar10"));
    let out = tmp.path().join("out");
    let report = |runs: &Path| wrn_report::Report {
        runs: runs.to_path_buf(),
        tables: compare(std::slice::from_ref(&table), runs).unwrap(),
    };
    let first = wrn_report::write(&report(&runs), &out).unwrap();
    // Files the report does not own, and what an interrupted report left behind.
    std::fs::create_dir_all(out.join("smoke")).unwrap();
    std::fs::write(out.join("smoke/report.md"), "another report").unwrap();
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    std::fs::create_dir_all(out.join(".report-new-crashed/plots")).unwrap();
    std::fs::write(out.join(".tmp-abc.md"), "half").unwrap();

    // Without runs the curve and the time plot are not drawn again: they must not linger.
    let second = wrn_report::write(&report(&tmp.path().join("none")), &out).unwrap();
    assert!(first.plots.len() > second.plots.len());
    let expected: Vec<String> =
        second.plots.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    let mut expected_sorted = expected.clone();
    expected_sorted.sort();
    assert_eq!(names(&out.join("plots")), expected_sorted);
    assert_eq!(names(&out), [".lock", "notes.txt", "plots", "report.csv", "report.html", "report.md", "smoke"]);
    assert_eq!(std::fs::read_to_string(out.join("smoke/report.md")).unwrap(), "another report");
    assert!(std::fs::read_to_string(&second.markdown).unwrap().contains("missing: no runs"));
}

#[test]
fn a_report_that_fails_midway_leaves_the_previous_one() {
    let (tmp, table) = setup();
    let runs = tmp.path().join("runs");
    Fixture::finished("cifar10", "wrn-40-4", 1, 5.0).write(&runs, &key(&table, "wrn-40-4-cifar10"));
    let out = tmp.path().join("out");
    let old = wrn_report::Report { runs: runs.clone(), tables: compare(std::slice::from_ref(&table), &runs).unwrap() };
    let written = wrn_report::write(&old, &out).unwrap();
    // report.csv cannot be replaced (a folder with a file in it stands in its way): the last of the files.
    std::fs::remove_file(&written.csv).unwrap();
    std::fs::create_dir_all(written.csv.join("in-the-way")).unwrap();
    let (md, html) = (std::fs::read(&written.markdown).unwrap(), std::fs::read(&written.html).unwrap());
    let old_plots = names(&out.join("plots"));

    let none = tmp.path().join("none");
    let new = wrn_report::Report { runs: none.clone(), tables: compare(std::slice::from_ref(&table), &none).unwrap() };
    let err = wrn_report::write(&new, &out).unwrap_err().to_string();
    assert!(err.contains("report.csv"), "{err}");
    assert_eq!(std::fs::read(&written.markdown).unwrap(), md, "report.md is the previous one");
    assert_eq!(std::fs::read(&written.html).unwrap(), html, "report.html is the previous one");
    assert_eq!(names(&out.join("plots")), old_plots);
    assert_eq!(names(&out), [".lock", "plots", "report.csv", "report.html", "report.md"]);
}

#[test]
fn a_report_into_a_folder_another_report_holds_is_refused() {
    let (tmp, table) = setup();
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let _held = wrn_fs::Lock::acquire(&out, "wrn report").unwrap();
    let none = tmp.path().join("none");
    let report =
        wrn_report::Report { runs: none.clone(), tables: compare(std::slice::from_ref(&table), &none).unwrap() };
    let err = wrn_report::write(&report, &out).unwrap_err().to_string();
    assert!(err.contains("is in use by") && err.contains("(wrn report)"), "{err}");
    assert_eq!(names(&out), [".lock"]);
}

#[test]
fn reduced_scale_runs_are_labelled_and_never_judged() {
    let (tmp, table) = setup();
    let runs = tmp.path().join("runs");
    let k = key(&table, "wrn-40-4-cifar10");
    Fixture::finished("cifar10", "wrn-40-4", 1, 40.0).reduced(4).write(&runs, &k);
    let report =
        wrn_report::Report { runs: runs.clone(), tables: compare(std::slice::from_ref(&table), &runs).unwrap() };
    let r = row(&report.tables[0], "wrn-40-4-cifar10");
    assert_eq!(r.scale(), Some(ResultScale::Reduced));
    for metric in ["test_error", "params"] {
        let c = r.cell(metric).unwrap();
        assert!(c.ours.is_some());
        assert_eq!((c.difference, &c.verdict), (None, &Verdict::NotJudged("reduced scale")), "{metric}");
    }
    let written = wrn_report::write(&report, &tmp.path().join("out")).unwrap();
    let md = std::fs::read_to_string(&written.markdown).unwrap();
    let line = md.lines().find(|l| l.starts_with("| WRN-40-4 (reduced scale) | cifar10 |")).expect("labelled row");
    assert!(line.contains("reduced scale: not comparable with the paper"), "{line}");
    assert!(
        line.contains("not judged: reduced scale") && !line.contains("agrees") && !line.contains("differs"),
        "{line}"
    );
    let csv = std::fs::read_to_string(&written.csv).unwrap();
    let line = csv.lines().find(|l| l.starts_with("t4_width,wrn-40-4-cifar10,cifar10,test_error,")).unwrap();
    let fields: Vec<&str> = line.split(',').collect();
    assert_eq!(fields[6..13], ["40", "40", "40", "1", "", "not judged", "reduced"], "{line}");

    // A full-scale run beside it becomes the figure and the reduced one is only counted aside.
    Fixture::finished("cifar10", "wrn-40-4", 2, 5.0).write(&runs, &k);
    let report = compare(std::slice::from_ref(&table), &runs).unwrap();
    let r = row(&report[0], "wrn-40-4-cifar10");
    assert_eq!(r.state, crate::common::full_results(1, 0, 1));
    assert_eq!(r.cell("test_error").unwrap().ours.unwrap().median, 5.0);
    assert_eq!(r.cell("test_error").unwrap().verdict, Verdict::Agrees);
}

#[test]
fn reference_rows_show_only_the_published_figures() {
    let (tmp, table) = setup();
    let report = compare(std::slice::from_ref(&table), &tmp.path().join("runs")).unwrap();
    let r = row(&report[0], "nin-cifar10");
    assert_eq!(r.state, RowState::Reference("Lin et al. 2013".into()));
    let c = r.cell("test_error").unwrap();
    assert_eq!((c.published, c.ours, &c.verdict), (Some(8.81), None, &Verdict::NotJudged("quoted from another paper")));
    assert!(r.cells.iter().all(|c| c.ours.is_none()));
}

#[test]
fn the_csv_has_one_line_per_row_and_metric_with_the_documented_columns() {
    let (tmp, table) = setup();
    let runs = tmp.path().join("runs");
    Fixture::finished("cifar10", "wrn-40-4", 1, 5.0).write(&runs, &key(&table, "wrn-40-4-cifar10"));
    let report =
        wrn_report::Report { runs: runs.clone(), tables: compare(std::slice::from_ref(&table), &runs).unwrap() };
    let written = wrn_report::write(&report, &tmp.path().join("out")).unwrap();
    let mut reader = csv::Reader::from_path(&written.csv).unwrap();
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(
        header,
        [
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
            "ours_best_median"
        ]
    );
    let lines: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let of = |row: &str| lines.iter().filter(|l| &l[1] == row).map(|l| l[3].to_string()).collect::<Vec<_>>();
    // A row with runs: the published metrics, then time per epoch (not in the table, but ours).
    assert_eq!(of("wrn-40-4-cifar10"), ["test_error", "params", "epoch_seconds"]);
    // Without runs: only what is published; the reference row: its one figure.
    assert_eq!(of("wrn-16-8-cifar10"), ["test_error", "params"]);
    assert_eq!(of("nin-cifar10"), ["test_error"]);
    let l = lines.iter().find(|l| &l[1] == "wrn-40-4-cifar10" && &l[3] == "test_error").unwrap();
    assert_eq!(&l[5], "4.97");
    assert_eq!(&l[6], "5");
    assert!((l[10].parse::<f64>().unwrap() - 0.03).abs() < 1e-9);
    assert_eq!((&l[11], &l[12], &l[14]), ("agrees", "full", "1 run"));
    // z = 0.03 / (0.15·√(1 + 0.5356²)): one run of ours against the paper's median of five; σ measured
    // for CIFAR.
    let sd = 0.15 * (1.0 + 0.5356f64.powi(2)).sqrt();
    assert!((l[15].parse::<f64>().unwrap() - 0.03 / sd).abs() < 1e-9, "{}", &l[15]);
    assert_eq!(&l[16], "false");
    // The best epoch beside the final one (the fixture's best is 0.1 below its last epoch).
    assert!((l[17].parse::<f64>().unwrap() - 4.9).abs() < 1e-9, "{}", &l[17]);
}

#[test]
fn each_judged_error_has_its_z_score_and_each_table_its_chance_differs() {
    use wrn_report::compare::{chance_beyond, difference_spread, median_spread, published_runs};
    // The spread of a median: one run 1, the mean of two 1/√2, a median of five about 0.54.
    assert_eq!(median_spread(1), 1.0);
    assert!((median_spread(2) - 0.5f64.sqrt()).abs() < 1e-12);
    assert!((median_spread(5) - 0.5356).abs() < 1e-4 && median_spread(9) < median_spread(5));
    assert_eq!((published_runs("median of 5 runs"), published_runs("single run")), (5, 1));
    assert_eq!(published_runs("number of runs not stated"), 1);
    assert!((difference_spread(0.15, 1, 5) - 0.15 * (1.0f64 + 0.5356 * 0.5356).sqrt()).abs() < 1e-12);
    // The tolerance is two standard deviations of the difference of two single runs: 4.55% by chance.
    let sigma = 0.15;
    assert!((chance_beyond(2.0 * 2f64.sqrt() * sigma, 2f64.sqrt() * sigma) - 0.0455).abs() < 1e-4);

    let (tmp, table) = setup();
    let runs = tmp.path().join("runs");
    for (seed, err) in [(1, 5.30), (2, 4.90), (3, 5.10)] {
        Fixture::finished("cifar10", "wrn-40-4", seed, err).write(&runs, &key(&table, "wrn-40-4-cifar10"));
    }
    Fixture::finished("cifar10", "wrn-16-8", 1, 5.9).write(&runs, &key(&table, "wrn-16-8-cifar10"));
    let report = compare(std::slice::from_ref(&table), &runs).unwrap();
    let t = &report[0];
    // Three seeds (median spread 0.67σ) against the table's median of five (0.54σ).
    let c = row(t, "wrn-40-4-cifar10").cell("test_error").unwrap();
    let sd = 0.15 * (0.6698f64.powi(2) + 0.5356f64.powi(2)).sqrt();
    let z = c.z.expect("a judged error has a z-score");
    assert!((z.z - (5.10 - 4.97) / sd).abs() < 1e-9 && !z.assumed, "{z:?}");
    assert!((z.chance_differs - chance_beyond(2.0 * 2f64.sqrt() * 0.15, sd)).abs() < 1e-12);
    let far = row(t, "wrn-16-8-cifar10").cell("test_error").unwrap();
    assert_eq!(far.verdict, Verdict::Differs);
    assert!(far.z.unwrap().z > 4.0, "{:?}", far.z);
    // Parameters and times have no z-score; the table adds up its two judged errors.
    assert_eq!(row(t, "wrn-40-4-cifar10").cell("params").unwrap().z, None);
    let (judged, differ, expected) = t.chance();
    assert_eq!((judged, differ), (2, 1));
    assert!((expected - z.chance_differs - far.z.unwrap().chance_differs).abs() < 1e-12);
    let written =
        wrn_report::write(&wrn_report::Report { runs: runs.clone(), tables: report.clone() }, &tmp.path().join("out"))
            .unwrap();
    let md = std::fs::read_to_string(&written.markdown).unwrap();
    assert!(md.contains(&format!("agrees (z = {:+.1})", z.z)) && md.contains("differs (z = +"), "{md}");
    assert!(
        md.contains(&format!("2 judged error figures, 1 differs; by chance alone about {expected:.2} would differ.")),
        "{md}"
    );
    let html = std::fs::read_to_string(&written.html).unwrap();
    assert!(html.contains("<p class=\"chance\">2 judged error figures"), "the HTML says it too");
    // ImageNet's and SVHN's σ are assumed, and say so.
    let svhn = wrn_report::compare::spread_is_assumed("svhn") && wrn_report::compare::spread_is_assumed("imagenet");
    assert!(svhn && !wrn_report::compare::spread_is_assumed("cifar100"));
    assert!(md.contains("| svhn | test_error | 0.08 (assumed) |"), "{md}");
}

fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", path.display());
    assert!(bytes.len() > 8_000, "{} is only {} bytes", path.display(), bytes.len());
    let be = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap());
    (be(16), be(20))
}

#[test]
fn plots_are_written_as_svg_and_png_and_inlined_in_the_html() {
    let (tmp, table) = setup();
    let runs = tmp.path().join("runs");
    for seed in 1..=2 {
        Fixture::finished("cifar10", "wrn-40-4", seed, 5.0 + seed as f64 / 10.0)
            .write(&runs, &key(&table, "wrn-40-4-cifar10"));
    }
    Fixture::finished("cifar100", "wrn-40-4", 1, 23.0).reduced(10).write(&runs, &key(&table, "wrn-40-4-cifar100"));
    let report =
        wrn_report::Report { runs: runs.clone(), tables: compare(std::slice::from_ref(&table), &runs).unwrap() };
    let out = tmp.path().join("out");
    let written = wrn_report::write(&report, &out).unwrap();
    let names: Vec<String> =
        written.plots.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(
        names,
        [
            "curve_cifar10_wrn-40-4_dropout_0_preprocessing_zca.svg",
            "curve_cifar10_wrn-40-4_dropout_0_preprocessing_zca.png",
            "curve_cifar100_wrn-40-4_dropout_0_preprocessing_zca.svg",
            "curve_cifar100_wrn-40-4_dropout_0_preprocessing_zca.png",
            "params_t4_width.svg",
            "params_t4_width.png",
            "epoch_time.svg",
            "epoch_time.png",
        ]
    );
    for p in &written.plots {
        if p.extension().unwrap() == "png" {
            let (w, h) = png_size(p);
            assert!(w >= 600 && h >= 200, "{w}x{h}");
        } else {
            let svg = std::fs::read_to_string(p).unwrap();
            assert!(svg.starts_with("<svg") && svg.contains("<text") && svg.contains("</svg>"), "{}", p.display());
        }
    }
    let curve = std::fs::read_to_string(&written.plots[0]).unwrap();
    assert!(curve.contains("seed 1") && curve.contains("seed 2") && curve.contains("paper, t4_width: 4.97"));
    // The reduced-scale curve is labelled and has no paper line to be compared with.
    let reduced = std::fs::read_to_string(&written.plots[2]).unwrap();
    assert!(reduced.contains("(reduced scale)") && !reduced.contains("paper,"));
    let params = std::fs::read_to_string(&written.plots[4]).unwrap();
    for label in ["paper, cifar10", "ours, cifar10", "paper, cifar100", "ours, cifar100, reduced scale"] {
        assert!(params.contains(label), "{label}");
    }
    assert!(std::fs::read_to_string(&written.plots[6]).unwrap().contains("wrn-40-4 · cifar10 · cpu"));

    let html = std::fs::read_to_string(&written.html).unwrap();
    assert_eq!(html.matches("<svg").count(), 4, "every plot inline");
    assert_eq!(html.matches("<table class=\"results\"").count(), 1);
    for forbidden in ["<script", "<link", "src=", "<img", "href=\"http"] {
        assert!(!html.contains(forbidden), "self-contained: found {forbidden}");
    }
    assert!(html.contains("<td class=\"agrees\">agrees</td>"));
    let md = std::fs::read_to_string(&written.markdown).unwrap();
    assert!(md.contains("![t4_width: test error against parameters](plots/params_t4_width.svg)"));
    // No temporary files are left behind.
    let leftovers: Vec<_> = std::fs::read_dir(out.join("plots"))
        .unwrap()
        .chain(std::fs::read_dir(&out).unwrap())
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn the_demo_table_says_its_numbers_are_smoke_scale_on_synthetic_data() {
    let tmp = tempfile::tempdir().unwrap();
    let tables = wrn_tables::load_dir(&wrn_tables::default_dir()).unwrap();
    let demo = tables.iter().find(|t| t.demo).unwrap().clone();
    let runs = tmp.path().join("runs");
    for (i, r) in demo.rows.iter().enumerate() {
        Fixture::finished("cifar10", r.arch.as_deref().unwrap(), 1, 60.0 - 10.0 * i as f64)
            .reduced(4)
            .write(&runs, &r.run_key().unwrap());
    }
    let report =
        wrn_report::Report { runs: runs.clone(), tables: compare(std::slice::from_ref(&demo), &runs).unwrap() };
    assert!(report.tables[0].rows.iter().all(|r| r.scale() == Some(ResultScale::Reduced)));
    assert_eq!(report.tables[0].verdicts(), (0, 0));
    let written = wrn_report::write(&report, &tmp.path().join("out")).unwrap();
    let md = std::fs::read_to_string(&written.markdown).unwrap();
    assert!(md.contains("**Demo table: smoke-scale runs on synthetic data.**"));
    assert!(md.contains("not comparable with the paper"));
    let html = std::fs::read_to_string(&written.html).unwrap();
    assert!(html.contains("<p class=\"demo\"><strong>Demo table: smoke-scale runs on synthetic data.</strong>"));
}

#[test]
fn a_rows_own_statistic_sets_how_many_runs_its_published_figure_is() {
    // Table 6 gives CIFAR medians of 5 runs and does not say how many its SVHN figures are: a row can say
    // so, and its z-score then counts the published figure as one run.
    let tmp = tempfile::tempdir().unwrap();
    let text = WIDTH.replace(
        "published = { test_error = 4.81, params = 11.0 }",
        "published = { test_error = 4.81, params = 11.0 }\nstatistic = \"number of runs not stated\"",
    );
    let table = write_table(&tmp.path().join("tables"), "t4_width", &text);
    let stat = |id: &str| table.rows.iter().find(|r| r.id == id).unwrap().statistic.clone();
    assert_eq!(stat("wrn-16-8-cifar10"), "number of runs not stated");
    assert_eq!(stat("wrn-40-4-cifar10"), "median of 5 runs", "the table's statistic by default");
    let runs = tmp.path().join("runs");
    Fixture::finished("cifar10", "wrn-40-4", 1, 5.0).write(&runs, &key(&table, "wrn-40-4-cifar10"));
    Fixture::finished("cifar10", "wrn-16-8", 1, 4.9).write(&runs, &key(&table, "wrn-16-8-cifar10"));
    let report = compare(std::slice::from_ref(&table), &runs).unwrap();
    let z = |id: &str| row(&report[0], id).cell("test_error").unwrap().z.expect("judged");
    let (five, one) = (z("wrn-40-4-cifar10"), z("wrn-16-8-cifar10"));
    assert!((five.z - (5.0 - 4.97) / (0.15 * (1.0f64 + 0.5356f64.powi(2)).sqrt())).abs() < 1e-9, "{five:?}");
    assert!((one.z - (4.9 - 4.81) / (0.15 * 2f64.sqrt())).abs() < 1e-9, "{one:?}");
    // The real Table 6: its four SVHN rows say so, its CIFAR rows are medians of 5.
    let t6 = wrn_tables::Table::load(&wrn_tables::default_dir().join("t6_dropout.toml")).unwrap();
    for r in &t6.rows {
        let runs = compare::published_runs(&r.statistic);
        assert_eq!(runs, if r.dataset == "svhn" { 1 } else { 5 }, "{}: {}", r.id, r.statistic);
    }
}

#[test]
fn every_paper_table_reports_without_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let report = wrn_report::Report::build(&wrn_tables::default_dir(), &tmp.path().join("none")).unwrap();
    assert_eq!(report.tables.len(), 9);
    for t in &report.tables {
        for r in &t.rows {
            let expected = if r.row.reference.is_some() { "reference" } else { "missing" };
            assert!(r.status().starts_with(expected), "{} {}: {}", t.table.id, r.row.id, r.status());
        }
    }
    let written = wrn_report::write(&report, &tmp.path().join("out")).unwrap();
    assert!(written.plots.iter().all(|p| p.file_name().unwrap().to_string_lossy().starts_with("params_")));
    // Every published figure as the paper prints it: Table 5's 4.00, Table 7's 9.0, never 9.00 or 4.
    let md = std::fs::read_to_string(&written.markdown).unwrap();
    for t in &report.tables {
        for r in &t.rows {
            for text in r.row.printed.values() {
                assert!(md.contains(&format!("| {text} |")), "{} {}: {text}", t.table.id, r.row.id);
            }
        }
    }
    assert!(md.contains("| 4.00 |") && md.contains("| 9.0 |") && !md.contains("| 9.00 |"));
    // Table 5's plot keeps the methods the paper quotes apart from its own networks.
    let t5 = written.plots.iter().find(|p| p.to_string_lossy().ends_with("params_t5_comparison.svg")).unwrap();
    let svg = std::fs::read_to_string(t5).unwrap();
    assert!(svg.contains("paper, cifar10") && svg.contains("quoted by the paper, cifar10"));
    let csv = std::fs::read_to_string(&written.csv).unwrap();
    assert!(!csv.lines().skip(1).any(|l| l.split(',').nth(11) == Some("agrees")));
}

#[test]
fn runs_off_the_recipe_are_shown_and_never_judged() {
    let (tmp, table) = setup();
    let runs = tmp.path().join("runs");
    let k = key(&table, "wrn-40-4-cifar10");
    let judge = |runs: &Path| {
        let report = compare(std::slice::from_ref(&table), runs).unwrap();
        row(&report[0], "wrn-40-4-cifar10").clone()
    };
    // Full scale, but in bf16 (ZCA is the row's own setting), and a result that predates the record.
    let bf16 = serde_json::json!({"precision": "bf16", "preprocessing": "zca"});
    Fixture::finished("cifar10", "wrn-40-4", 1, 5.0).changes(Some(bf16)).write(&runs, &k);
    Fixture::finished("cifar10", "wrn-40-4", 2, 5.1).changes(None).write(&runs, &k);
    let r = judge(&runs);
    assert_eq!(r.scale(), Some(ResultScale::OffRecipe));
    let c = r.cell("test_error").unwrap();
    assert_eq!((c.ours.map(|s| s.n), c.difference, &c.verdict), (Some(2), None, &Verdict::NotJudged("not the recipe")));
    let status = r.status();
    for part in ["not the paper's recipe", "seed1: precision=bf16", "seed2: departures from the recipe not recorded"] {
        assert!(status.contains(part), "`{part}` missing from: {status}");
    }
    assert!(!status.contains("preprocessing"), "the row's own setting is not a departure: {status}");
    // A run of the recipe with the row's settings (dropout 0 written as an integer) is the figure; the
    // others are named and not counted.
    let own = serde_json::json!({"preprocessing": "zca", "dropout": 0});
    Fixture::finished("cifar10", "wrn-40-4", 3, 4.9).changes(Some(own)).write(&runs, &k);
    let r = judge(&runs);
    assert_eq!(r.scale(), Some(ResultScale::Full));
    let c = r.cell("test_error").unwrap();
    assert_eq!((c.ours.map(|s| (s.n, s.median)), &c.verdict), (Some((1, 4.9)), &Verdict::Agrees));
    assert!(r.status().contains("off the recipe and not counted: seed1: precision=bf16"), "{}", r.status());
    assert_eq!(ResultScale::OffRecipe.as_str(), "off-recipe");
}

#[test]
fn the_papers_findings_are_checked_on_our_full_scale_runs() {
    use wrn_report::Shown;
    let tmp = tempfile::tempdir().unwrap();
    let finding = "\n[[finding]]\nclaim = \"Wider is better\"\nmetric = \"test_error\"\n\
                   falls = [\"wrn-40-4-cifar10\", \"wrn-28-10-cifar10\"]\n";
    let table = write_table(&tmp.path().join("tables"), "t4_width", &format!("{WIDTH}{finding}"));
    let shown = |narrow: &[f64], wide: &[f64]| {
        let runs = tmp.path().join(format!("runs-{}", narrow.len() * 10 + wide.len()));
        let _ = std::fs::remove_dir_all(&runs);
        for (seed, err) in narrow.iter().enumerate() {
            Fixture::finished("cifar10", "wrn-40-4", seed as u32 + 1, *err)
                .write(&runs, &key(&table, "wrn-40-4-cifar10"));
        }
        for (seed, err) in wide.iter().enumerate() {
            Fixture::finished("cifar10", "wrn-28-10", seed as u32 + 1, *err)
                .write(&runs, &key(&table, "wrn-28-10-cifar10"));
        }
        compare(std::slice::from_ref(&table), &runs).unwrap().remove(0)
    };
    assert_eq!(shown(&[5.0], &[]).findings[0].ours, Shown::NoRuns);
    // 5.0 against 4.15, three seeds each: 0.85 against a spread of 0.15·√2·0.67 = 0.14.
    let t = shown(&[5.0, 5.1, 4.9], &[4.1, 4.2, 4.15]);
    let f = &t.findings[0];
    assert_eq!(f.ours, Shown::Yes);
    let sd = 0.15 * (2.0 * 0.6698f64.powi(2)).sqrt();
    assert!((f.pairs[0].difference.unwrap() - 0.85).abs() < 1e-9 && (f.pairs[0].spread.unwrap() - sd).abs() < 1e-9);
    assert_eq!(shown(&[5.0, 5.1, 4.9], &[5.0, 4.9, 5.1]).findings[0].ours, Shown::NotClear);
    assert_eq!(shown(&[5.0, 5.1, 4.9], &[5.6, 5.7, 5.5]).findings[0].ours, Shown::Contradicted);
    // The report says it in words, under the table.
    let runs = tmp.path().join("runs-33");
    let report = wrn_report::Report { runs: runs.clone(), tables: vec![t] };
    let written = wrn_report::write(&report, &tmp.path().join("out")).unwrap();
    let md = std::fs::read_to_string(&written.markdown).unwrap();
    let line = "- Wider is better: shown by our runs (wrn-40-4-cifar10 − wrn-28-10-cifar10 = +0.85 ± 0.14)";
    assert!(md.contains(line), "{md}");
    let html = std::fs::read_to_string(&written.html).unwrap();
    assert!(html.contains("<li data-shown=\"shown\">Wider is better: shown by our runs"), "{html}");
}

/// `result.json` as `wrn eval` writes it.
fn evaluated(top1: f64, top5: f64, full_scale: bool) -> serde_json::Value {
    serde_json::json!({
        "status": "evaluated", "dataset": "imagenet", "arch": "wrn-50-2-bottleneck", "seed": 1,
        "epochs_planned": 0, "epochs_done": 0, "full_scale": full_scale, "parameters": 68_883_240,
        "final_test_error": top1, "final_test_top5_error": top5, "device": "cpu",
        "evaluation": {
            "label": "torchvision-v1", "weights": "wide_resnet50_2.safetensors",
            "weights_sha256": "9fd7c3d6a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c", "format": "state-dict",
            "split": "val", "images": 50000, "loss": 0.87, "images_per_second": 850.0
        }
    })
}

#[test]
fn weights_evaluated_for_a_row_are_shown_beside_the_paper_and_never_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, runs) = (wrn_tables::default_dir(), tmp.path().join("runs"));
    let tables = wrn_tables::load_dir(&dir).unwrap();
    let (_, wide) = wrn_tables::find_row(&tables, "t8:wrn-50-2-bottleneck", &dir).unwrap();
    let (_, r50) = wrn_tables::find_row(&tables, "t8:resnet-50", &dir).unwrap();
    let folder = |row: &wrn_tables::Row, label: &str| {
        let d = runs.join(row.run_key().unwrap()).join(wrn_run::evaluated_folder(label).unwrap());
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    let write = |d: &Path, v: serde_json::Value| std::fs::write(d.join("result.json"), v.to_string()).unwrap();
    write(&folder(wide, "torchvision-v1"), evaluated(21.532, 5.914, true));
    write(&folder(wide, "smoke"), evaluated(60.0, 20.0, false));
    // A trained result copied into a weights folder is not an evaluation; an absent one is still running.
    let wrong = folder(r50, "copied");
    let mut trained = evaluated(1.0, 1.0, true);
    trained["status"] = "finished".into();
    write(&wrong, trained);
    folder(r50, "running");

    let report = wrn_report::Report::build(&dir, &runs).unwrap();
    let t8 = report.tables.iter().find(|t| t.table.id == "t8_imagenet_bottleneck").unwrap();
    let r = row(t8, "wrn-50-2-bottleneck");
    // Never a trained run: the row still has none, and nothing is judged.
    assert_eq!(r.state, RowState::NoRuns);
    assert!(r.cells.iter().all(|c| c.ours.is_none()));
    assert_eq!(r.evaluated.len(), 2);
    let lines = wrn_report::view::evaluated_lines(t8);
    assert_eq!(lines.len(), 4, "{lines:#?}");
    assert!(lines.contains(&"WRN-50-2-bottleneck, weights `torchvision-v1` (state-dict, sha256 9fd7c3d6a1b2…, 50000 val images): top-1 error 21.53% (paper 21.9), top-5 error 5.91% (paper 6.03)".to_string()), "{lines:#?}");
    assert!(lines.iter().any(|l| l.contains("`smoke`") && l.ends_with("; a subset or other data: not comparable")));
    let copied = wrong.join("result.json").display().to_string();
    assert!(lines.iter().any(|l| l.contains(&format!("`copied`: {copied}: not an evaluation written by `wrn eval`"))));
    assert!(lines.iter().any(|l| l.contains("`running`: ") && l.ends_with("absent: evaluating, or stopped")));

    let written = wrn_report::write(&report, &tmp.path().join("out")).unwrap();
    let md = std::fs::read_to_string(&written.markdown).unwrap();
    assert!(md.contains(&format!("{}\n\n- {}", wrn_report::view::EVALUATED_HEADING, lines[0])), "{md}");
    // A row's own note is listed after the table's.
    assert!(md.contains("\n- ResNet-50: Batch norm after the addition, as fb.resnet.torch's published model"));
    let html = std::fs::read_to_string(&written.html).unwrap();
    assert!(html.contains("<ul class=\"evaluated\"><li>ResNet-50, weights <code>copied</code>"), "{html}");
    // The CSV's rows are the table's rows with trained figures only.
    let csv = std::fs::read_to_string(&written.csv).unwrap();
    assert!(!csv.contains("21.532") && !csv.contains("torchvision-v1"));
}
