//! `wrn eval` from the command line: a trained run's checkpoint evaluated for a row of the demo table
//! lands beside the row's runs as `weights-<label>`, and `wrn report` lists it under the table, never as
//! a run; a label that is not a plain name and a row that does not exist are refused with what to do.

use std::path::Path;
use std::process::{Command, Output};

fn wrn() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wrn"))
}

fn ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{:?}: {}", cmd, String::from_utf8_lossy(&out.stderr));
    out
}

fn sets(list: &[String]) -> Vec<String> {
    list.iter().flat_map(|s| ["--set".to_string(), s.clone()]).collect()
}

#[test]
fn a_checkpoint_evaluated_for_a_row_is_reported_beside_the_paper_not_as_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let (synth, data) = (dir.path().join("synth"), dir.path().join("data"));
    ok(wrn().args(["data", "synth", "cifar10", "--n", "300", "--out"]).arg(&synth));
    let manifest = synth.join("cifar10.toml");
    ok(wrn().arg("data").arg("--data-dir").arg(&data).arg("--manifest").arg(&manifest).args(["fetch", "cifar10"]));
    let data_sets = vec![
        format!("data.dir='{}'", data.display()),
        format!("data.manifest='{}'", manifest.display()),
        "scale.test_subset=48".to_string(),
        "device=cpu".into(),
    ];
    let run = dir.path().join("run");
    let train: Vec<String> =
        ["arch=wrn-10-1", "epochs=1", "batch_size=32", "scale.train_subset=64", "checkpoint_minutes=0"]
            .iter()
            .map(|s| s.to_string())
            .chain(data_sets.clone())
            .collect();
    ok(wrn().arg("train").args(sets(&train)).arg("--out").arg(&run));

    let runs = dir.path().join("runs");
    let checkpoint = run.join("checkpoint.safetensors");
    let eval = |row: &str, extra: &[&str]| {
        let mut cmd = wrn();
        cmd.arg("eval").arg(&checkpoint).args(["--row", row]).args(sets(&data_sets));
        cmd.arg("--runs").arg(&runs).args(extra);
        cmd
    };
    let out = ok(&mut eval("demo:wrn-10-1", &["--label", "mine"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("mine: top-1 error ") && stderr.contains("on 48 images"), "{stderr}");
    let tables = wrn_tables::load_dir(&wrn_tables::default_dir()).unwrap();
    let (_, row) = wrn_tables::find_row(&tables, "demo:wrn-10-1", &wrn_tables::default_dir()).unwrap();
    let folder = runs.join(row.run_key().unwrap()).join("weights-mine");
    let result = wrn_run::RunFolder::at(&folder).read_result().unwrap().unwrap();
    assert_eq!(result.status, wrn_run::Status::Evaluated);
    assert_eq!(result.evaluation.as_ref().unwrap().weights, checkpoint.display().to_string());
    assert!(Path::new(&folder.join("train.log")).exists() && folder.join("config.toml").exists());

    let report = dir.path().join("report");
    ok(wrn().args(["report", "--table", "demo", "--runs"]).arg(&runs).arg("--out").arg(&report));
    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(md.contains("- WRN-10-1, weights `mine` (checkpoint, sha256 "), "{md}");
    let line = md.lines().find(|l| l.starts_with("| WRN-10-1 |")).unwrap();
    assert!(line.contains("missing: no runs"), "the evaluation is not a run: {line}");

    let out = eval("demo:wrn-10-1", &["--label", "../escape"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a plain name"));
    let out = eval("demo:wrn-99-1", &[]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("no trainable row 'wrn-99-1' in demo"), "{stderr}");
    assert!(stderr.contains("wrn-10-1, wrn-10-2, wrn-10-4"), "{stderr}");
}
