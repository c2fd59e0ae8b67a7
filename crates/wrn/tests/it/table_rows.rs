//! No table row can rot: every trainable row of every table in `reports/tables/` resolves to a valid
//! experiment at smoke scale, builds its network with the parameter count the table publishes, and
//! takes SGD steps on the CPU (ImageNet networks at 64×64 to keep it short; every layer still runs). Rows that train the same
//! network check it once.

use std::collections::BTreeSet;

use tch::Device;
use wrn_nets::Arch;
use wrn_sweep::SweepScale;
use wrn_train::check::{self, CheckOptions};
use wrn_train::config::Experiment;
use wrn_train::datasets::Dataset;

#[test]
fn every_trainable_row_builds_and_takes_sgd_steps() {
    let tables = wrn_tables::load_dir(&wrn_tables::default_dir()).unwrap();
    let mut seen = BTreeSet::new();
    let mut rows = 0;
    for table in &tables {
        for row in table.trainable() {
            let name = format!("{}/{}", table.id, row.id);
            let mut sets = row.sets();
            sets.extend(SweepScale::Smoke.sets());
            sets.push("device=cpu".into());
            let exp = Experiment::resolve(None, &sets).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(exp.effective_epochs() >= 1, "{name}");
            let arch: Arch = exp.arch.clone();
            let arch = arch.with_classes(exp.dataset.classes()).with_dropout(exp.dropout).unwrap();
            rows += 1;
            // Rows that differ only in classes, dropout or settings share the network's check.
            if !seen.insert(exp.arch.to_string()) {
                continue;
            }
            let imagenet = exp.dataset == Dataset::ImageNet;
            let options =
                CheckOptions { optimizer_step: true, input_side: imagenet.then_some(64), ..CheckOptions::default() };
            let check =
                check::forward_backward(&arch, Device::Cpu, 2, 1, options).unwrap_or_else(|e| panic!("{name}: {e}"));
            if let Some(&published) = row.published.get("params") {
                // The paper rounds to 0.1M and counts 10 classes; 100 classes add up to 0.06M.
                let ours = check.parameters as f64 / 1e6;
                let slack = 0.051 + if exp.dataset == Dataset::Cifar100 { 0.07 } else { 0.0 };
                assert!(
                    (ours - published).abs() <= slack,
                    "{name}: {ours:.3}M parameters, the paper says {published}M"
                );
            }
        }
    }
    let expected: usize = tables.iter().map(|t| t.trainable().count()).sum();
    assert_eq!((rows, expected), (70, 70));
    assert_eq!(seen.len(), 37, "{seen:?}");
}
