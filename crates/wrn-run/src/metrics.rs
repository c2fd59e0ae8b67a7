//! `metrics.csv`: one row per finished epoch, in the column order of [`METRIC_COLUMNS`].

use std::path::Path;

use serde::{Deserialize, Serialize};

/// One finished epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: u32,
    pub lr: f64,
    pub train_loss: f64,
    /// Top-1 training error in %, on the augmented batches seen during the epoch.
    pub train_error: f64,
    pub test_loss: f64,
    pub test_error: f64,
    pub test_top5_error: f64,
    /// Training images per second over the epoch (data waits included).
    pub images_per_second: f64,
    /// Fraction of the epoch's training time spent waiting for batches.
    pub data_wait_fraction: f64,
    pub epoch_seconds: f64,
    /// Images the data pipeline could not decode and replaced (ImageNet).
    pub decode_failures: u64,
}

/// The columns of `metrics.csv`, in order (the fields of [`EpochMetrics`]).
pub const METRIC_COLUMNS: [&str; 11] = [
    "epoch",
    "lr",
    "train_loss",
    "train_error",
    "test_loss",
    "test_error",
    "test_top5_error",
    "images_per_second",
    "data_wait_fraction",
    "epoch_seconds",
    "decode_failures",
];

/// The file's text: the header, then the rows.
pub(crate) fn csv_text(rows: &[EpochMetrics]) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    for row in rows {
        w.serialize(row).expect("metrics serialise");
    }
    if rows.is_empty() {
        w.write_record(METRIC_COLUMNS).expect("header");
    }
    String::from_utf8(w.into_inner().expect("in memory")).expect("utf-8")
}

pub(crate) fn read(path: &Path) -> Result<Vec<EpochMetrics>, csv::Error> {
    csv::Reader::from_path(path)?.deserialize().collect()
}
