//! Run folders in the documented format (contract 3), written for the tests: `result.json`,
//! `metrics.csv`, `config.toml`, `environment.json` and `train.log` under `<runs>/<run_key>/seed<N>/`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use wrn_tables::Table;

pub const METRICS_HEADER: &str = "epoch,lr,train_loss,train_error,test_loss,test_error,test_top5_error,images_per_second,data_wait_fraction,epoch_seconds,decode_failures";

/// What a seed folder holds.
#[derive(Clone)]
pub struct Fixture {
    pub dataset: String,
    pub arch: String,
    pub seed: u32,
    /// `None`: no `result.json` (still training).
    pub status: Option<&'static str>,
    pub full_scale: bool,
    pub epochs_planned: u32,
    pub epochs_done: u32,
    pub final_error: f64,
    pub top5: f64,
    pub parameters: i64,
    pub epoch_seconds: f64,
    /// `result.json`'s `recipe_changes`; `None` leaves the field out, as results written before it did.
    pub recipe_changes: Option<serde_json::Value>,
}

impl Fixture {
    pub fn finished(dataset: &str, arch: &str, seed: u32, final_error: f64) -> Fixture {
        Fixture {
            dataset: dataset.into(),
            arch: arch.into(),
            seed,
            status: Some("finished"),
            full_scale: true,
            epochs_planned: 200,
            epochs_done: 200,
            final_error,
            top5: final_error / 4.0,
            parameters: 8_949_210,
            epoch_seconds: 30.0 + seed as f64,
            recipe_changes: Some(serde_json::json!({})),
        }
    }

    /// Departing from the recipe in these settings (`{"precision": "bf16"}`); `None`: not recorded.
    pub fn changes(mut self, changes: Option<serde_json::Value>) -> Fixture {
        self.recipe_changes = changes;
        self
    }

    pub fn reduced(mut self, epochs: u32) -> Fixture {
        self.full_scale = false;
        self.epochs_planned = epochs;
        self.epochs_done = epochs;
        self
    }

    pub fn unfinished(mut self, status: Option<&'static str>, epochs_done: u32) -> Fixture {
        self.status = status;
        self.epochs_done = epochs_done;
        self
    }

    pub fn params(mut self, parameters: i64) -> Fixture {
        self.parameters = parameters;
        self
    }

    /// Writes the seed folder under `runs/<key>/`.
    pub fn write(&self, runs: &Path, key: &str) -> PathBuf {
        let dir = runs.join(key).join(format!("seed{}", self.seed));
        std::fs::create_dir_all(&dir).unwrap();
        let mut csv = String::from(METRICS_HEADER);
        csv.push('\n');
        for e in 1..=self.epochs_done {
            // Error falls from 90% towards the final figure.
            let t = e as f64 / self.epochs_planned.max(1) as f64;
            let err = if e == self.epochs_done && self.status == Some("finished") {
                self.final_error
            } else {
                self.final_error + (90.0 - self.final_error) * (1.0 - t).powi(3)
            };
            csv.push_str(&format!(
                "{e},0.1,{:.4},{:.2},{:.4},{err:.4},{:.4},1500.0,0.02,{:.2},0\n",
                err / 40.0,
                err * 0.8,
                err / 35.0,
                err / 4.0,
                self.epoch_seconds
            ));
        }
        std::fs::write(dir.join("metrics.csv"), csv).unwrap();
        std::fs::write(
            dir.join("config.toml"),
            format!(
                "dataset = \"{}\"\narch = \"{}\"\nseed = {}\n\n[scale]\nepochs = {}\n",
                self.dataset,
                self.arch,
                self.seed,
                if self.full_scale { 1.0 } else { self.epochs_planned as f64 / 200.0 }
            ),
        )
        .unwrap();
        std::fs::write(dir.join("environment.json"), "{\"wrn\": \"0.1.0\", \"device\": \"cpu\"}\n").unwrap();
        std::fs::write(dir.join("train.log"), "epoch 1 done\n").unwrap();
        if let Some(status) = self.status {
            let mut result = serde_json::json!({
                "status": status,
                "dataset": self.dataset,
                "arch": self.arch,
                "seed": self.seed,
                "epochs_planned": self.epochs_planned,
                "epochs_done": self.epochs_done,
                "full_scale": self.full_scale,
                "parameters": self.parameters,
                "final_test_error": self.final_error,
                "final_test_top5_error": self.top5,
                "best_test_error": self.final_error - 0.1,
                "median_epoch_seconds": self.epoch_seconds,
                "device": "cpu",
            });
            if let Some(changes) = &self.recipe_changes {
                result["recipe_changes"] = changes.clone();
            }
            std::fs::write(dir.join("result.json"), serde_json::to_string_pretty(&result).unwrap()).unwrap();
        }
        dir
    }
}

/// A row's state with full-scale recipe results: `finished` counted, `in_progress` running and
/// `reduced_not_counted` reduced-scale runs aside, none off the recipe.
pub fn full_results(finished: usize, in_progress: usize, reduced_not_counted: usize) -> wrn_report::RowState {
    wrn_report::RowState::Results {
        scale: wrn_report::ResultScale::Full,
        finished,
        in_progress,
        reduced_not_counted,
        off_recipe: vec![],
    }
}

/// A small table file in the real format, written to `dir/<id>.toml`.
pub fn write_table(dir: &Path, id: &str, text: &str) -> Table {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(format!("{id}.toml"));
    std::fs::write(&path, text).unwrap();
    Table::load(&path).unwrap()
}

/// A width table with CIFAR-10 and CIFAR-100 rows, a reference row and no time column.
pub const WIDTH: &str = r#"
title = "Test error of WRN-n-k"
source = "arXiv:1605.07146v4, Table 4"
statistic = "median of 5 runs"
seeds = 5
notes = ["A note."]
[columns]
test_error = "%"
params = "M"
[train]
preprocessing = "zca"
dropout = 0.0
[[row]]
id = "wrn-40-4-cifar10"
label = "WRN-40-4"
dataset = "cifar10"
arch = "wrn-40-4"
published = { test_error = 4.97, params = 8.9 }
[[row]]
id = "wrn-16-8-cifar10"
label = "WRN-16-8"
dataset = "cifar10"
arch = "wrn-16-8"
published = { test_error = 4.81, params = 11.0 }
[[row]]
id = "wrn-40-4-cifar100"
label = "WRN-40-4"
dataset = "cifar100"
arch = "wrn-40-4"
published = { test_error = 22.89, params = 8.9 }
[[row]]
id = "wrn-28-10-cifar10"
label = "WRN-28-10"
dataset = "cifar10"
arch = "wrn-28-10"
published = { test_error = 4.17, params = 36.5 }
[[row]]
id = "nin-cifar10"
label = "NIN"
dataset = "cifar10"
published = { test_error = 8.81 }
reference = "Lin et al. 2013"
"#;

/// The run key of a row of a table.
pub fn key(table: &Table, row: &str) -> String {
    table.rows.iter().find(|r| r.id == row).unwrap().run_key().unwrap()
}
