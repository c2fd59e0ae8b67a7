//! Saving and loading network weights as safetensors.
//!
//! [`save`] writes every variable of a store (parameters and BN running statistics) plus a
//! `num_batches_tracked` counter beside each BN layer, as PyTorch's `state_dict` has, so a file saved from
//! an ImageNet network loads into torchvision's model with `strict=True`. The file is written to a
//! temporary name and put in place by `wrn_fs`, so a crash never leaves a half-written file under the
//! final name.
//! [`load`] fills a store from a file and reports every missing, unexpected or mis-shaped tensor at once,
//! naming the file; `num_batches_tracked` entries are accepted and ignored.
//!
//! The names are torchvision's for the ImageNet networks and the official PyTorch port's for the CIFAR
//! ones, so their state dicts load as they are. The authors' exported WRN-50-2 (`wide-resnet-50-2-export`
//! of their functional model zoo) has its batch norm folded into convolutions with biases;
//! [`from_authors_export`] renames it to these names with a batch norm that adds the bias and does
//! nothing else.

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
    #[error(
        "{path} does not fit this network (weights of another architecture or class count?):{}",
        problems.iter().map(|p| format!("\n  - {p}")).collect::<String>()
    )]
    Mismatch { path: PathBuf, problems: Vec<String> },
}

const BN_COUNTER: &str = "num_batches_tracked";

/// Whether `names` are those of the authors' exported WRN-50-2: convolutions with biases, named
/// `conv0`, `group<g>.block<b>.conv<i>` and `conv_dim`.
pub fn is_authors_export<'a>(mut names: impl Iterator<Item = &'a String>) -> bool {
    names.any(|n| n == "group0.block0.conv0.bias")
}

/// The authors' exported WRN-50-2 under this network's (torchvision's) names: each convolution's weight
/// as it is, and after it a batch norm of weight 1, running mean 0 and running variance `1 − eps` whose
/// bias is the convolution's, so it adds the bias and nothing else (`eps` is the batch norm's, 1e-5).
/// `conv0` → `conv1`/`bn1`; `group<g>.block<b>.conv<i>` → `layer<g+1>.<b>.conv<i+1>`/`bn<i+1>`;
/// `conv_dim` → `downsample.0`/`downsample.1`; `fc` as it is. An unknown name is an error.
pub fn from_authors_export(file: &BTreeMap<String, Tensor>) -> Result<BTreeMap<String, Tensor>, String> {
    const EPS: f64 = 1e-5;
    let mut out = BTreeMap::new();
    for (name, t) in file {
        let (base, what) = name.rsplit_once('.').ok_or_else(|| format!("unexpected {name}"))?;
        let (conv, bn) = match base.split('.').collect::<Vec<_>>().as_slice() {
            ["fc"] => {
                out.insert(name.clone(), t.shallow_clone());
                continue;
            }
            ["conv0"] => ("conv1".to_string(), "bn1".to_string()),
            [group, block, conv] => {
                let g: u32 =
                    group.strip_prefix("group").and_then(|g| g.parse().ok()).ok_or(format!("unexpected {name}"))?;
                let b: u32 =
                    block.strip_prefix("block").and_then(|b| b.parse().ok()).ok_or(format!("unexpected {name}"))?;
                let prefix = format!("layer{}.{b}", g + 1);
                match conv.strip_prefix("conv").ok_or(format!("unexpected {name}"))? {
                    "_dim" => (format!("{prefix}.downsample.0"), format!("{prefix}.downsample.1")),
                    i => {
                        let i: u32 = i.parse().map_err(|_| format!("unexpected {name}"))?;
                        (format!("{prefix}.conv{}", i + 1), format!("{prefix}.bn{}", i + 1))
                    }
                }
            }
            _ => return Err(format!("unexpected {name}")),
        };
        match what {
            "weight" => {
                out.insert(format!("{conv}.weight"), t.shallow_clone());
            }
            "bias" => {
                let ones = t.ones_like();
                out.insert(format!("{bn}.weight"), ones.shallow_clone());
                out.insert(format!("{bn}.bias"), t.shallow_clone());
                out.insert(format!("{bn}.running_mean"), t.zeros_like());
                out.insert(format!("{bn}.running_var"), ones * (1.0 - EPS));
            }
            _ => return Err(format!("unexpected {name}")),
        }
    }
    Ok(out)
}

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
    fill(vs, path, &read.into_iter().collect())
}

/// Fills every variable of `vs` from `file`, the tensors read from `path` (named in errors), as [`load`]
/// does: every missing, unexpected or mis-shaped tensor reported at once, nothing changed unless all fit.
pub fn fill(vs: &mut VarStore, path: &Path, file: &BTreeMap<String, Tensor>) -> Result<(), WeightsError> {
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
