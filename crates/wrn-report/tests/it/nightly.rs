//! The nightly regression check: figures collected from run folders and benchmark outputs, verdicts
//! against a baseline for a passing night and a regressed one, each regression named in `report.md`,
//! `report.json` and the terminal lines, and recorded baselines.

use std::path::{Path, PathBuf};

use crate::common::Fixture;
use wrn_report::nightly::{self, Kind, Measurements, Metric, Status};

fn tables_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../reports/tables")
}

fn demo() -> wrn_tables::Table {
    wrn_tables::Table::load(&tables_dir().join("demo.toml")).unwrap()
}

fn metric(id: &str, kind: Kind, value: f64) -> Metric {
    Metric { id: id.into(), kind, value, detail: format!("detail of {id}") }
}

fn baseline() -> Vec<Metric> {
    vec![
        metric("demo/wrn-10-1/test_error", Kind::TestError, 40.0),
        metric("demo/wrn-10-2/test_error", Kind::TestError, 30.0),
        metric("bench/pipeline/cifar-train/ratio_to_plain", Kind::Ratio, 0.20),
        metric("bench/train/wrn-16-2/ratio_to_reference", Kind::Ratio, 0.50),
    ]
}

fn night(values: &[(&str, Kind, f64)]) -> Measurements {
    Measurements { measured: "tonight".into(), metrics: values.iter().map(|(id, k, v)| metric(id, *k, *v)).collect() }
}

fn status(n: &nightly::Nightly, id: &str) -> Status {
    n.verdicts.iter().find(|v| v.id == id).unwrap_or_else(|| panic!("no verdict for {id}")).status
}

#[test]
fn a_night_within_tolerance_passes() {
    // Error up 4.9 points and down 3; ratios down 24% and up 10%: all within tolerance.
    let current = night(&[
        ("demo/wrn-10-1/test_error", Kind::TestError, 44.9),
        ("demo/wrn-10-2/test_error", Kind::TestError, 27.0),
        ("bench/pipeline/cifar-train/ratio_to_plain", Kind::Ratio, 0.152),
        ("bench/train/wrn-16-2/ratio_to_reference", Kind::Ratio, 0.55),
    ]);
    let n = nightly::compare("2025-01-02", &current, &baseline(), vec![]);
    assert!(n.passed, "{:?}", n.regressions);
    assert!(n.regressions.is_empty() && n.regression_lines().is_empty());
    assert!(n.verdicts.iter().all(|v| v.status == Status::Pass), "{:?}", n.verdicts);
    assert!(n.markdown().contains("**PASS**: 4 figures, no regression."));
}

#[test]
fn a_regressed_night_fails_and_names_each_regression() {
    let current = night(&[
        // Up 8 points: regressed.
        ("demo/wrn-10-1/test_error", Kind::TestError, 48.0),
        // demo/wrn-10-2 did not finish: missing.
        // Down 40%: regressed.
        ("bench/pipeline/cifar-train/ratio_to_plain", Kind::Ratio, 0.12),
        // Up 40%: improved, a pass.
        ("bench/train/wrn-16-2/ratio_to_reference", Kind::Ratio, 0.70),
        // Not in the baseline: new, never a failure.
        ("demo/wrn-10-4/test_error", Kind::TestError, 25.0),
    ]);
    let n = nightly::compare("2025-01-02", &current, &baseline(), vec![]);
    assert!(!n.passed);
    assert_eq!(
        n.regressions,
        ["demo/wrn-10-1/test_error", "demo/wrn-10-2/test_error", "bench/pipeline/cifar-train/ratio_to_plain"]
    );
    assert_eq!(status(&n, "demo/wrn-10-1/test_error"), Status::Regressed);
    assert_eq!(status(&n, "demo/wrn-10-2/test_error"), Status::Missing);
    assert_eq!(status(&n, "bench/pipeline/cifar-train/ratio_to_plain"), Status::Regressed);
    assert_eq!(status(&n, "bench/train/wrn-16-2/ratio_to_reference"), Status::Improved);
    assert_eq!(status(&n, "demo/wrn-10-4/test_error"), Status::New);

    let lines = n.regression_lines();
    assert_eq!(lines.len(), 3);
    assert!(lines[0].contains("demo/wrn-10-1/test_error") && lines[0].contains("48.00%"), "{}", lines[0]);
    assert!(lines[0].contains("+8.00 points") && lines[0].contains("worst passing 45.00%"), "{}", lines[0]);
    assert!(lines[1].contains("demo/wrn-10-2/test_error") && lines[1].contains("not measured tonight"));
    assert!(lines[2].contains("ratio_to_plain") && lines[2].contains("-40.0%"), "{}", lines[2]);

    let md = n.markdown();
    assert!(md.contains("**FAIL**: 3 regression(s):"), "{md}");
    for id in &n.regressions {
        assert!(md.contains(&format!("- `{id}`: ")), "{id} not named in\n{md}");
    }
    assert!(md.contains("| `demo/wrn-10-4/test_error` | — | 25.00% | — | — | new |"), "{md}");
    assert!(md.contains("| `bench/train/wrn-16-2/ratio_to_reference` | 0.5000 | 0.7000 | +40.0% | 0.3750 | improved |"));
}

#[test]
fn tolerances_are_inclusive_at_the_limit_and_non_finite_figures_regress() {
    assert_eq!(nightly::judge(Kind::TestError, 30.0, 35.0), Status::Pass);
    assert_eq!(nightly::judge(Kind::TestError, 30.0, 35.01), Status::Regressed);
    assert_eq!(nightly::judge(Kind::TestError, 30.0, 24.9), Status::Improved);
    assert_eq!(nightly::judge(Kind::Ratio, 0.5, 0.375), Status::Pass);
    assert_eq!(nightly::judge(Kind::Ratio, 0.5, 0.374), Status::Regressed);
    assert_eq!(nightly::judge(Kind::Ratio, 0.4, f64::NAN), Status::Regressed);
    assert_eq!(nightly::judge(Kind::TestError, 30.0, f64::INFINITY), Status::Regressed);
}

#[test]
fn test_errors_come_from_finished_runs_of_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let table = demo();
    let key = |row: &str| table.rows.iter().find(|r| r.id == row).unwrap().run_key().unwrap();
    Fixture::finished("cifar10", "wrn-10-1", 0, 41.5).reduced(5).write(dir.path(), &key("wrn-10-1"));
    Fixture::finished("cifar10", "wrn-10-2", 0, 33.0).reduced(5).write(dir.path(), &key("wrn-10-2"));
    // WRN-10-4 is still training: no figure, so a baseline that has one reports it missing.
    Fixture::finished("cifar10", "wrn-10-4", 0, 20.0)
        .reduced(5)
        .unfinished(None, 3)
        .write(dir.path(), &key("wrn-10-4"));
    let metrics = nightly::accuracy(&table, dir.path()).unwrap();
    let got: Vec<(&str, f64)> = metrics.iter().map(|m| (m.id.as_str(), m.value)).collect();
    assert_eq!(got, [("demo/wrn-10-1/test_error", 41.5), ("demo/wrn-10-2/test_error", 33.0)]);
    assert!(metrics.iter().all(|m| m.kind == Kind::TestError));
    assert!(metrics[0].detail.starts_with("WRN-10-1: final test error (%) after 5 epochs"), "{}", metrics[0].detail);
}

const PIPELINE_JSON: &str = r#"{"benchmark": "pipeline", "split": "d/train.wrnc", "preset": "cifar-train",
  "plain_preset": "cifar-test", "images": 2000, "batch": 128, "workers": 1, "rounds": 5,
  "images_per_second": 50000.0, "copy_images_per_second": 250000.0, "plain_images_per_second": 90000.0,
  "ratio_to_copy": 0.2, "ratio_to_plain": 0.5556}"#;

const TRAIN_JSON: &str = r#"{"benchmark": "train", "rounds": 3, "ratio_to_reference": 0.45,
  "reference": {"workload": "512x512 f32 matmul", "flops_per_second": 1.0e11},
  "train": {"arch": "wrn-16-2", "device": "cpu", "precision": "fp32", "channels_last": false, "batch": 32,
    "steps": 3, "parameters": 691674, "mult_adds_per_image": 101000000, "loss": 2.3,
    "images_per_second": 74.0, "optimizer_step": true, "device_memory_in_use_bytes": null}}"#;

#[test]
fn benchmark_outputs_give_their_ratios() {
    let dir = tempfile::tempdir().unwrap();
    let (p, t, other) = (dir.path().join("p.json"), dir.path().join("t.json"), dir.path().join("o.json"));
    std::fs::write(&p, PIPELINE_JSON).unwrap();
    std::fs::write(&t, TRAIN_JSON).unwrap();
    std::fs::write(&other, r#"{"images_per_second": 3.0}"#).unwrap();
    let pm = nightly::bench(&p).unwrap();
    assert_eq!((pm.id.as_str(), pm.kind, pm.value), ("bench/pipeline/cifar-train/ratio_to_plain", Kind::Ratio, 0.5556));
    assert!(pm.detail.contains("50000 images/s ÷ cifar-test 90000 images/s"), "{}", pm.detail);
    assert!(pm.detail.contains("copy bound 250000 images/s (ratio 0.200, not judged)"), "{}", pm.detail);
    let tm = nightly::bench(&t).unwrap();
    assert_eq!((tm.id.as_str(), tm.value), ("bench/train/wrn-16-2/ratio_to_reference", 0.45));
    // 74 images/s × 6 × 101 M multiply-adds = 44.84 GFLOP/s.
    assert!(tm.detail.contains("44.84 GFLOP/s") && tm.detail.contains("100.0 GFLOP/s"), "{}", tm.detail);
    let err = nightly::bench(&other).unwrap_err().to_string();
    assert!(err.contains("o.json") && err.contains("not a `wrn bench"), "{err}");
}

#[test]
fn run_writes_the_reports_and_records_baselines() {
    let dir = tempfile::tempdir().unwrap();
    let baselines = dir.path().join("baselines");
    let good = Measurements { measured: "recorded on the test machine".into(), metrics: baseline() };
    // Recording writes one file per group, then compares against them: a pass.
    let recorded = nightly::run(&nightly::Options {
        current: good.clone(),
        baselines: baselines.clone(),
        out: dir.path().join("night1"),
        date: "2025-01-01".into(),
        record: Some(baselines.clone()),
    })
    .unwrap();
    assert!(recorded.passed);
    let bench = Measurements::load(&baselines.join("bench.json")).unwrap();
    assert_eq!(bench.measured, "recorded on the test machine");
    assert_eq!(bench.metrics, baseline()[2..]);
    assert_eq!(Measurements::load(&baselines.join("demo.json")).unwrap().metrics, baseline()[..2]);

    // A regressed night against the recorded baselines.
    let mut bad = good.clone();
    bad.metrics[1].value = 60.0;
    let out = dir.path().join("night2");
    let n = nightly::run(&nightly::Options {
        current: bad.clone(),
        baselines: baselines.clone(),
        out: out.clone(),
        date: "2025-01-02".into(),
        record: None,
    })
    .unwrap();
    assert_eq!(n.regressions, ["demo/wrn-10-2/test_error"]);
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.starts_with("# Nightly regression check, 2025-01-02"));
    assert!(md.contains("- `demo/wrn-10-2/test_error`: 60.00% against a baseline of 30.00%"), "{md}");
    assert!(md.contains("recorded on the test machine"));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["passed"], false);
    assert_eq!(json["regressions"], serde_json::json!(["demo/wrn-10-2/test_error"]));
    assert_eq!(json["tolerances"]["test_error_points"], 5.0);
    let v = json["verdicts"].as_array().unwrap().iter().find(|v| v["id"] == "demo/wrn-10-2/test_error").unwrap();
    assert_eq!(
        (v["status"].as_str(), v["baseline"].as_f64(), v["current"].as_f64()),
        (Some("regressed"), Some(30.0), Some(60.0))
    );
    // Tonight's figures are kept, and read back give the same verdicts.
    assert_eq!(Measurements::load(&out.join("measurements.json")).unwrap(), bad);
}

#[test]
fn the_same_figure_in_two_baseline_files_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let set = serde_json::to_string(&Measurements { measured: String::new(), metrics: baseline() }).unwrap();
    std::fs::write(dir.path().join("a.json"), &set).unwrap();
    std::fs::write(dir.path().join("b.json"), &set).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a baseline").unwrap();
    let err = nightly::load_baselines(dir.path()).unwrap_err().to_string();
    assert!(err.contains("b.json") && err.contains("demo/wrn-10-1/test_error") && err.contains("a.json"), "{err}");
}

#[test]
fn dates_are_civil_utc_days() {
    let at = |s: u64| nightly::utc_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(s));
    assert_eq!(at(0), "1970-01-01");
    assert_eq!(at(951_782_400), "2000-02-29");
    assert_eq!(at(1_700_000_000), "2023-11-14");
    assert_eq!(at(1_735_689_599), "2024-12-31");
}
