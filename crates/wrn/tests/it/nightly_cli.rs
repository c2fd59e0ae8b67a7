//! `wrn report nightly`: the exit status and the named regressions of the comparison step of
//! `ci/nightly.sh`, fed recorded baselines and a night with a regression injected.

use std::path::Path;
use std::process::{Command, Output};

fn nightly(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wrn")).args(["report", "nightly"]).args(args).output().expect("wrn runs")
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

const NIGHT: &str = r#"{"measured": "test", "metrics": [
  {"id": "demo/wrn-10-1/test_error", "kind": "test_error", "value": 15.5},
  {"id": "bench/train/wrn-16-2/ratio_to_reference", "kind": "ratio", "value": 0.5}]}"#;

#[test]
fn a_regressed_night_exits_non_zero_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let (baselines, night) = (dir.path().join("baselines"), dir.path().join("night.json"));
    write(&night, NIGHT);
    let s = |p: &Path| p.to_str().unwrap().to_string();

    // Recording the night as the baselines: a pass against itself, one file per group.
    let out = nightly(&[
        "--current",
        &s(&night),
        "--baselines",
        &s(&baselines),
        "--out",
        &s(&dir.path().join("r1")),
        "--record",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(baselines.join("demo.json").exists() && baselines.join("bench.json").exists());

    // The same night again passes; with the training ratio halved it fails and names the figure.
    let out = nightly(&["--current", &s(&night), "--baselines", &s(&baselines), "--out", &s(&dir.path().join("r2"))]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    write(&night, &NIGHT.replace("\"value\": 0.5", "\"value\": 0.25"));
    let r3 = dir.path().join("r3");
    let out =
        nightly(&["--current", &s(&night), "--baselines", &s(&baselines), "--out", &s(&r3), "--date", "2025-03-04"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("regression: bench/train/wrn-16-2/ratio_to_reference: 0.2500 against a baseline of 0.5000"),
        "{stderr}"
    );
    assert!(!stderr.contains("demo/wrn-10-1"), "{stderr}");
    let md = std::fs::read_to_string(r3.join("report.md")).unwrap();
    assert!(md.starts_with("# Nightly regression check, 2025-03-04") && md.contains("**FAIL**: 1 regression(s)"));
    assert!(r3.join("report.json").exists() && r3.join("measurements.json").exists());
}

#[test]
fn missing_baselines_are_an_error_not_a_pass() {
    let dir = tempfile::tempdir().unwrap();
    let night = dir.path().join("night.json");
    write(&night, NIGHT);
    let out = nightly(&[
        "--current",
        night.to_str().unwrap(),
        "--baselines",
        dir.path().join("absent").to_str().unwrap(),
        "--out",
        dir.path().join("r").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("absent"));
}
