//! The README's networks table must say what `wrn model summary` says: a stale row fails here.

use std::path::Path;

use tch::nn;
use wrn_nets::Arch;

#[test]
fn the_networks_table_matches_the_summaries() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md")).unwrap();
    let start = readme.find("<!-- networks-table:start -->").expect("start marker");
    let end = readme.find("<!-- networks-table:end -->").expect("end marker");
    let rows: Vec<Vec<&str>> = readme[start..end]
        .lines()
        .filter(|l| l.starts_with("| ") && l.contains('`'))
        .map(|l| l.trim_matches('|').split('|').map(str::trim).collect())
        .collect();
    assert_eq!(rows.len(), 33, "every trained row of Tables 2-4 and 6-8");
    for row in rows {
        let name = row[1].trim_matches('`');
        let arch: Arch = name.parse().unwrap();
        let classes = if matches!(arch, Arch::ImageNet(_)) { 1000 } else { 10 };
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let total = arch.with_classes(classes).build(&vs.root()).tally().total();
        let expected = [
            wrn_nets::tally::group_digits(total.parameters),
            format!("{:.1}M", total.parameters as f64 / 1e6),
            format!("{:.2} G", total.mult_adds as f64 / 1e9),
            format!("{:.1} MiB", total.activation_bytes as f64 / (1u64 << 20) as f64),
        ];
        assert_eq!([row[2], row[3], row[5], row[6]], expected.each_ref().map(String::as_str), "{name}");
        assert_eq!(row[3], row[4], "{name}: ours and the paper's rounded counts differ");
    }
}
