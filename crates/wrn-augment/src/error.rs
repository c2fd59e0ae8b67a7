//! The errors of the augmentation stage: each names the file or the setting at fault and what is wrong.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "unknown preset {0:?}; expected one of cifar-train, cifar-train:zca, cifar-test, cifar-test:zca, svhn, \
         imagenet-train, imagenet-val"
    )]
    UnknownPreset(String),
    #[error("{path}: {detail}")]
    Pipeline { path: PathBuf, detail: String },
    #[error("invalid loader configuration: {0}")]
    Config(String),
    #[error("ZCA file {path}: {detail}")]
    Zca { path: PathBuf, detail: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Data(#[from] wrn_data::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
