//! `wrn report collect`: the command reads the paper's tables, leaves a run that is still training with
//! its reason, copies nothing of it and tells the user what to do next.

use std::process::Command;

#[test]
fn collect_leaves_a_run_in_progress_and_says_what_comes_next() {
    let dir = tempfile::tempdir().unwrap();
    let (runs, results) = (dir.path().join("runs"), dir.path().join("results"));
    let tables = wrn_tables::load_dir(&wrn_tables::default_dir()).unwrap();
    let row = tables.iter().flat_map(|t| &t.rows).find(|r| r.id == "wrn-28-10-cifar10").unwrap();
    let seed = runs.join(row.run_key().unwrap()).join("seed1");
    std::fs::create_dir_all(&seed).unwrap();
    std::fs::write(seed.join("metrics.csv"), "").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wrn"))
        .args(["report", "collect", "--runs"])
        .arg(&runs)
        .arg("--results")
        .arg(&results)
        .output()
        .expect("wrn runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("left {}: in progress", seed.display())), "{stdout}");
    assert!(stdout.contains("0 run(s) copied into") && stdout.contains("1 left; now run `make report`"), "{stdout}");
    assert!(!results.exists(), "nothing copied");
}

#[test]
fn a_table_row_that_cannot_train_is_an_error_of_the_report_not_a_missing_row() {
    let dir = tempfile::tempdir().unwrap();
    let tables = dir.path().join("tables");
    std::fs::create_dir_all(&tables).unwrap();
    let table = "title = \"t\"\nsource = \"s\"\nstatistic = \"single run\"\nseeds = 1\n[columns]\ntest_error = \"%\"\n\
                 [[row]]\nid = \"typo\"\nlabel = \"WRN-10-1\"\ndataset = \"cifar10\"\narch = \"wrn-10-1\"\n\
                 train = { batch_sise = 64 }\n";
    std::fs::write(tables.join("mine.toml"), table).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wrn"))
        .args(["report", "--tables"])
        .arg(&tables)
        .arg("--runs")
        .arg(dir.path().join("runs"))
        .arg("--out")
        .arg(dir.path().join("report"))
        .output()
        .expect("wrn runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let file = tables.join("mine.toml");
    assert!(err.contains(&format!("{}: row 'typo' cannot be trained", file.display())), "{err}");
    assert!(err.contains("unknown key 'batch_sise'"), "{err}");
    assert!(!dir.path().join("report").exists(), "no report of a table that cannot be trained");
}
