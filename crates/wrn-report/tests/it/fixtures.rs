//! The committed fixture run folders (`tests/fixtures/runs`, written by `make_runs.py`; the browser
//! check renders them) against the paper's real tables: each lands on the row it was made for.

use std::path::Path;

use wrn_report::{ResultScale, RowState, Stats, Verdict};

fn report() -> wrn_report::Report {
    let runs = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/runs");
    wrn_report::Report::build(&wrn_tables::default_dir(), &runs).unwrap()
}

fn row<'a>(report: &'a wrn_report::Report, table: &str, row: &str) -> &'a wrn_report::RowReport {
    let t = report.tables.iter().find(|t| t.table.id == table).unwrap();
    t.rows.iter().find(|r| r.row.id == row).unwrap()
}

#[test]
fn fixture_runs_land_on_their_rows() {
    let report = report();
    let r = row(&report, "t4_width", "wrn-40-4-cifar10");
    let c = r.cell("test_error").unwrap();
    assert_eq!(c.ours, Some(Stats { median: 5.05, min: 4.91, max: 5.22, n: 3 }));
    assert_eq!(c.verdict, Verdict::Agrees);
    assert_eq!(row(&report, "t4_width", "wrn-16-8-cifar10").cell("test_error").unwrap().verdict, Verdict::Differs);
    let r = row(&report, "t4_width", "wrn-28-10-cifar100");
    assert_eq!(r.state, crate::common::full_results(1, 1, 0));
    assert_eq!(r.cell("params").unwrap().verdict, Verdict::Agrees);
    let r = row(&report, "t6_dropout", "wrn-16-4-cifar10");
    assert_eq!(r.scale(), Some(ResultScale::Reduced));
    assert_eq!(r.cell("test_error").unwrap().verdict, Verdict::NotJudged("reduced scale"));
    let r = row(&report, "t8_imagenet_bottleneck", "resnet-50");
    assert_eq!(r.cell("top1_error").unwrap().verdict, Verdict::Agrees);
    assert_eq!(r.cell("top5_error").unwrap().ours.unwrap().median, 7.15);
    assert_eq!(r.cell("batch16_ms").unwrap().ours, None);
    // Rows that share a configuration share its runs (Tables 5 and 6 both train WRN-28-10 with mean/std).
    assert_eq!(row(&report, "t9_best", "wrn-40-10-dropout-cifar10").state, RowState::NoRuns);
}
