//! The plots' font: `$WRN_FONT` wins over the embedded DejaVu Sans, and a missing or broken font is a clear error, not a blank plot.
//! (Its own test binary: the font is loaded once per process.)

#[path = "it/common.rs"]
mod common;

use common::{key, write_table, Fixture, WIDTH};

#[test]
fn a_missing_or_broken_font_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    std::env::set_var("WRN_FONT", tmp.path().join("nowhere.ttf"));
    let e = wrn_report::plots::font().unwrap_err().to_string();
    assert!(e.contains("WRN_FONT=") && e.contains("nowhere.ttf: No such file or directory"), "{e}");

    let text = tmp.path().join("font.ttf");
    std::fs::write(&text, "not a font").unwrap();
    std::env::set_var("WRN_FONT", &text);
    let (bytes, origin) = wrn_report::plots::font().unwrap();
    assert_eq!((bytes, origin.as_str()), (&b"not a font"[..], text.to_str().unwrap()));
    let table = write_table(&tmp.path().join("tables"), "t4_width", WIDTH);
    let runs = tmp.path().join("runs");
    Fixture::finished("cifar10", "wrn-40-4", 1, 5.0).write(&runs, &key(&table, "wrn-40-4-cifar10"));
    let report = wrn_report::Report::build(&tmp.path().join("tables"), &runs).unwrap();
    let e = wrn_report::write(&report, &tmp.path().join("out")).unwrap_err().to_string();
    assert!(e.contains("font.ttf: not a TrueType/OpenType font"), "{e}");
    // Nothing half-written: the report files come after the plots.
    assert!(!tmp.path().join("out/report.html").exists());
}
