//! `wrn report collect`: the committed results gathered from a runs folder: the four small files of each
//! full-scale result of the recipe, nothing else, and the README section made from them.

use std::path::Path;

use crate::common::{key, write_table, Fixture, WIDTH};
use wrn_report::collect::{collect, FILES};

#[test]
fn full_scale_results_of_the_recipe_are_copied_and_every_other_run_is_left_with_its_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let table = write_table(&tmp.path().join("tables"), "t4_width", WIDTH);
    let (runs, results) = (tmp.path().join("runs"), tmp.path().join("results"));
    let k404 = key(&table, "wrn-40-4-cifar10");
    let k168 = key(&table, "wrn-16-8-cifar10");
    let k28 = key(&table, "wrn-28-10-cifar10");
    Fixture::finished("cifar10", "wrn-40-4", 1, 5.1).write(&runs, &k404);
    Fixture::finished("cifar10", "wrn-40-4", 2, 4.9).write(&runs, &k404);
    Fixture::finished("cifar10", "wrn-40-4", 3, 5.0).unfinished(None, 120).write(&runs, &k404);
    Fixture::finished("cifar10", "wrn-16-8", 1, 4.8).reduced(10).write(&runs, &k168);
    Fixture::finished("cifar10", "wrn-16-8", 2, 4.8)
        .changes(Some(serde_json::json!({"precision": "bf16"})))
        .write(&runs, &k168);
    let no_env = Fixture::finished("cifar10", "wrn-28-10", 1, 4.2).write(&runs, &k28);
    std::fs::remove_file(no_env.join("environment.json")).unwrap();

    let done = collect(std::slice::from_ref(&table), &runs, &results).unwrap();
    let seed = |k: &str, s: u32| results.join(k).join(format!("seed{s}"));
    assert_eq!(done.written, vec![seed(&k404, 1), seed(&k404, 2)]);
    for s in [1, 2] {
        let mut names: Vec<String> = std::fs::read_dir(seed(&k404, s))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["config.toml", "environment.json", "metrics.csv", "result.json"], "no logs, no checkpoints");
        for f in FILES {
            let original = std::fs::read(runs.join(&k404).join(format!("seed{s}")).join(f)).unwrap();
            assert_eq!(std::fs::read(seed(&k404, s).join(f)).unwrap(), original, "{f}");
        }
    }
    let left: Vec<(String, &str)> =
        done.left.iter().map(|(d, why)| (d.strip_prefix(&runs).unwrap().display().to_string(), why.as_str())).collect();
    let why = |k: &str, s: u32| {
        let at = Path::new(k).join(format!("seed{s}")).display().to_string();
        left.iter().find(|(d, _)| *d == at).map(|(_, w)| w.to_string()).unwrap_or_else(|| panic!("{at}: {left:?}"))
    };
    assert!(why(&k404, 3).starts_with("in progress"));
    assert_eq!(why(&k168, 1), "reduced scale");
    assert!(why(&k168, 2).starts_with("off the recipe (") && why(&k168, 2).contains("precision"), "{left:?}");
    assert_eq!(why(&k28, 1), "no environment.json");
    assert_eq!(left.len(), 4);
    assert!(!results.join(&k168).exists() && !results.join(&k28).exists());

    // Again: nothing to write. A result that changed (a re-run of the seed) is replaced.
    let again = collect(std::slice::from_ref(&table), &runs, &results).unwrap();
    assert_eq!((again.written.len(), again.unchanged.len()), (0, 2));
    Fixture::finished("cifar10", "wrn-40-4", 2, 4.7).write(&runs, &k404);
    let rerun = collect(std::slice::from_ref(&table), &runs, &results).unwrap();
    assert_eq!((rerun.written, rerun.unchanged.len()), (vec![seed(&k404, 2)], 1));

    // The README section made from the collected folder lists the row with both seeds.
    let report = wrn_report::compare(std::slice::from_ref(&table), &results).unwrap();
    let text = wrn_report::readme::section(&report, "reports/results");
    assert!(text.contains("| WRN-40-4 | cifar10 | 4.97 | 4.90 [4.70–5.10] n=2"), "{text}");
}
