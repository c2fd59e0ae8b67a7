//! The README's results section: spliced between its markers, and kept current: this test fails when
//! the committed results (`reports/results/`) or the tables changed and `make report` was not run.

use std::path::Path;

use wrn_report::readme::{is_current, section, splice, END, START};

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

#[test]
fn the_section_is_replaced_between_the_markers_only() {
    let readme = format!("# T\n\nbefore\n{START}\nold\n{END}\nafter\n");
    let new = splice(&readme, "new text\n").unwrap();
    assert_eq!(new, format!("# T\n\nbefore\n{START}\nnew text\n{END}\nafter\n"));
    assert!(is_current(&new, "new text\n").unwrap());
    assert!(!is_current(&new, "newer text\n").unwrap());
    assert!(splice("no markers", "x").unwrap_err().to_string().contains("no <!-- results:start --> marker"));
    assert!(splice(&format!("{END}{START}"), "x").unwrap_err().to_string().contains("comes before"));
}

#[test]
fn without_full_scale_results_the_section_says_so_and_lists_every_table() {
    let tmp = tempfile::tempdir().unwrap();
    let report = wrn_report::Report::build(&wrn_tables::default_dir(), tmp.path()).unwrap();
    let text = section(&report.tables, "reports/results");
    assert!(text.contains("**No full-scale results are committed yet.**"));
    for id in ["t2_block_type", "t4_width", "t8_imagenet_bottleneck", "t9_best"] {
        let line = text.lines().find(|l| l.starts_with(&format!("| {id} |"))).unwrap();
        assert!(line.contains("| no runs yet | 0 | 0 |"), "{line}");
    }
    assert!(!text.contains("| demo |"), "the demo table is not a result");
}

#[test]
fn full_scale_results_are_listed_with_their_verdicts_and_reduced_ones_are_not() {
    let runs = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/runs");
    let report = wrn_report::Report::build(&wrn_tables::default_dir(), &runs).unwrap();
    let text = section(&report.tables, "reports/results");
    assert!(!text.contains("No full-scale results"));
    assert!(
        text.contains(
            "| WRN-40-4 | cifar10 | 4.97 | 5.05 [4.91–5.22] n=3, best epoch 4.95 | agrees (z = +0.4) | 8.9 | 8.95 n=3 | agrees |"
        ),
        "{text}"
    );
    assert!(text.contains("| WRN-16-8 | cifar10 | 4.81 | 5.71 n=1, best epoch 5.61 | differs (z = +4.2) |"), "{text}");
    let t6 = text.lines().find(|l| l.starts_with("| t6_dropout |")).unwrap();
    assert!(t6.contains("no runs yet (1 reduced-scale, not judged)"), "{t6}");
    assert!(!text.contains("WRN-16-4 |"), "a reduced-scale row is not listed");
}

#[test]
fn the_readme_results_section_is_current() {
    let report = wrn_report::Report::build(&root().join("reports/tables"), &root().join("reports/results")).unwrap();
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let current = is_current(&readme, &section(&report.tables, "reports/results")).unwrap();
    assert!(current, "README.md's results section is stale: run `make report` and commit README.md");
}

#[test]
fn run_writes_the_chosen_tables_and_rewrites_or_checks_the_readme() {
    let tmp = tempfile::tempdir().unwrap();
    let readme = tmp.path().join("README.md");
    std::fs::write(&readme, format!("# X\n{START}\nstale\n{END}\n")).unwrap();
    let mut options = wrn_report::Options {
        runs: Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/runs"),
        tables: wrn_tables::default_dir(),
        only: vec!["t4".into(), "demo".into()],
        out: Some(tmp.path().join("out")),
        readme: Some(readme.clone()),
        results: tmp.path().join("results"),
        check: true,
    };
    let e = wrn_report::run(&options).unwrap_err().to_string();
    assert!(e.contains("the results section is stale"), "{e}");
    assert!(std::fs::read_to_string(&readme).unwrap().contains("stale"), "--check writes nothing");

    options.check = false;
    let outcome = wrn_report::run(&options).unwrap();
    assert_eq!(outcome.readme_changed, Some(true));
    let ids: Vec<&str> = outcome.summary.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(ids, ["t4_width", "demo"], "in the order asked");
    assert_eq!(outcome.summary[0], ("t4_width".to_string(), 3, 5, 1));
    let text = std::fs::read_to_string(&readme).unwrap();
    assert!(text.contains("**No full-scale results are committed yet.**") && !text.contains("\nstale\n"));

    options.check = true;
    options.only.clear();
    let outcome = wrn_report::run(&options).unwrap();
    assert_eq!(outcome.readme_changed, Some(false));
    assert_eq!(outcome.summary.len(), 8, "every paper table, not the demo");
}
