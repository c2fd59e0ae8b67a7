//! Saving and loading network weights as safetensors.
//!
//! [`save`] writes every variable of a store (parameters and BN running statistics) plus a
//! `num_batches_tracked` counter beside each BN layer, as PyTorch's `state_dict` has, so a file saved from
//! an ImageNet network loads into torchvision's model with `strict=True`. The file is written to a
//! temporary name and put in place by `wrn_fs`, so a crash never leaves a half-written file under the
//! final name.
//! [`load`] fills a store from a file and reports every missing, unexpected or mis-shaped tensor at once,
//! naming the file; `num_batches_tracked` entries are accepted and ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tch::nn::VarStore;
use tch::Tensor;

/// Errors of [`save`] and [`load`].
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("cannot read weights from {path}: {source}")]
    Read { path: PathBuf, source: tch::TchError },
    #[error("cannot write weights to {path}: {source}")]
    Write { path: PathBuf, source: tch::TchError },
    #[error("cannot write weights to {}", .0)]
    Place(#[from] wrn_fs::Error),
    #[error("{path} does not fit this network:{}", problems.iter().map(|p| format!("\n  - {p}")).collect::<String>())]
    Mismatch { path: PathBuf, problems: Vec<String> },
}

const BN_COUNTER: &str = "num_batches_tracked";

/// Writes all variables of `vs` to `path` (safetensors), atomically.
pub fn save(vs: &VarStore, path: &Path) -> Result<(), WeightsError> {
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    let counters: Vec<(String, Tensor)> = named
        .iter()
        .filter_map(|(name, _)| name.strip_suffix(".running_mean"))
        .map(|bn| (format!("{bn}.{BN_COUNTER}"), Tensor::from(0i64)))
        .collect();
    named.extend(counters);
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let file = wrn_fs::AtomicFile::create(path)?;
    Tensor::write_safetensors(&named, file.path())
        .map_err(|source| WeightsError::Write { path: path.to_path_buf(), source })?;
    Ok(file.commit()?)
}

/// Fills every variable of `vs` from `path` (safetensors). Nothing is changed unless every tensor fits.
pub fn load(vs: &mut VarStore, path: &Path) -> Result<(), WeightsError> {
    let read = Tensor::read_safetensors(path).map_err(|source| WeightsError::Read { path: path.into(), source })?;
    let file: BTreeMap<String, Tensor> = read.into_iter().collect();
    let variables = vs.variables();
    let mut names: Vec<&String> = variables.keys().collect();
    names.sort();
    let mut problems = Vec::new();
    for name in &names {
        match file.get(*name) {
            None => problems.push(format!("missing {name}")),
            Some(t) if t.size() != variables[*name].size() => problems.push(format!(
                "{name} has shape {:?} in the file, {:?} in the network",
                t.size(),
                variables[*name].size()
            )),
            Some(_) => {}
        }
    }
    let unexpected = file.keys().filter(|name| !variables.contains_key(*name) && !name.ends_with(BN_COUNTER));
    problems.extend(unexpected.map(|name| format!("unexpected {name}")));
    if !problems.is_empty() {
        return Err(WeightsError::Mismatch { path: path.into(), problems });
    }
    tch::no_grad(|| {
        for (name, var) in &variables {
            let mut var = var.shallow_clone();
            var.copy_(&file[name].to_kind(var.kind()).to_device(var.device()));
        }
    });
    Ok(())
}
