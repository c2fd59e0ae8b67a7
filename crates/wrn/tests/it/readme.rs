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

/// The README's main job needs no root: `make demo`, `make report`, `make results` and `make nightly` run no system
/// package manager, directly or through the scripts they call (the plots' font is embedded).
#[test]
fn the_main_job_installs_no_system_package() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let installers = ["apt-get", "apt install", "dpkg -i", "dnf ", "yum ", "zypper", "pacman -S", "sudo "];
    for target in ["demo", "report", "results", "nightly"] {
        let out = std::process::Command::new("make")
            .args(["-n", "--no-print-directory", target])
            .current_dir(&root)
            .env_remove("MAKEFLAGS")
            .output()
            .expect("make runs");
        assert!(out.status.success(), "make -n {target}: {}", String::from_utf8_lossy(&out.stderr));
        let recipe = String::from_utf8(out.stdout).unwrap();
        assert!(recipe.contains("target/release/wrn") || recipe.contains("WRN_BIN"), "{target}: {recipe}");
        // The commands, and every script of the repository they run.
        let mut texts = vec![(format!("make -n {target}"), recipe.clone())];
        for word in recipe.split_whitespace().filter(|w| w.starts_with("ci/") && w.ends_with(".sh")) {
            texts.push((word.to_string(), std::fs::read_to_string(root.join(word)).unwrap()));
        }
        for (what, text) in texts {
            // What runs, not what a message advises: double-quoted text and comments are left out.
            let code: String = text.lines().map(|l| without_quotes_and_comment(l) + "\n").collect();
            for installer in installers {
                assert!(!code.contains(installer), "{what} (for make {target}) runs `{installer}`");
            }
        }
    }
}

/// A shell line without its double-quoted parts and its comment.
fn without_quotes_and_comment(line: &str) -> String {
    let mut out = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            '#' if !quoted => break,
            c if !quoted => out.push(c),
            _ => {}
        }
    }
    out
}

#[test]
fn quoted_advice_is_not_a_command() {
    assert_eq!(without_quotes_and_comment(r#"die "run: sudo apt-get install x" # apt-get"#), "die  ");
    assert_eq!(without_quotes_and_comment("apt-get install -y x"), "apt-get install -y x");
}
