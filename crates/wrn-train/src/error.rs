//! What can stop a training run, each error naming the file or setting it is about and what to do.

use std::path::PathBuf;

use crate::config::ConfigError;
use crate::run::RunError;
use crate::runtime::RuntimeError;
use crate::world::WorldError;

/// Errors of a training run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Data(#[from] wrn_data::Error),
    #[error(transparent)]
    Augment(#[from] wrn_augment::Error),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error(transparent)]
    World(#[from] WorldError),
    #[error("{dataset} is not prepared in {dir}: run `wrn data fetch {dataset}` (or `wrn data prepare`) first")]
    NotPrepared { dataset: String, dir: PathBuf },
    /// `why` names the file and what to run.
    #[error("{dataset}'s prepared {split} split cannot be used: {why}")]
    DamagedSplit { dataset: String, split: String, why: String },
    #[error("{0} already holds a run; continue it with `wrn train --resume {0}` or choose another --out")]
    RunExists(PathBuf),
    #[error("{0} has no checkpoint to resume from")]
    NoCheckpoint(PathBuf),
    #[error(
        "{images} training images at batch_size {batch} (drop_last {drop_last}) make no training step per epoch: \
         lower batch_size or raise scale.train_subset"
    )]
    NoSteps { images: usize, batch: usize, drop_last: bool },
    #[error("CUDA graphs: {0}; set cuda_graphs = false to train without them")]
    CudaGraph(String),
    #[error("{path}: {detail}; restore it from a copy, or start the run again in a new folder")]
    Damaged { path: PathBuf, detail: String },
}

impl From<wrn_run::Error> for TrainError {
    fn from(e: wrn_run::Error) -> TrainError {
        TrainError::Run(e.into())
    }
}
