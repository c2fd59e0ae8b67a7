//! The run folder (contract 3, owned by `wrn-run`) as the trainer uses it: [`RunDir`] is a
//! [`wrn_run::RunFolder`] that also saves and loads the checkpoint, whose tensors need libtorch:
//! `model.*`, `momentum.*` and `state.*` tensors in `checkpoint.safetensors`, written to a temporary file
//! and put in place by `wrn_fs`.

use std::collections::HashMap;
use std::ops::Deref;
use std::path::{Path, PathBuf};

use tch::nn::VarStore;
use tch::Tensor;
pub use wrn_run::{EpochMetrics, RunFolder, RunResult, Status, CHECKPOINT, METRIC_COLUMNS};

/// Errors of reading and writing a run folder.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Folder(#[from] wrn_run::Error),
    #[error("{}: {source}", path.display())]
    Torch { path: PathBuf, source: tch::TchError },
}

impl From<wrn_fs::Error> for RunError {
    fn from(e: wrn_fs::Error) -> RunError {
        RunError::Folder(e.into())
    }
}

/// A run folder, with the checkpoint.
#[derive(Debug, Clone)]
pub struct RunDir {
    folder: RunFolder,
}

impl Deref for RunDir {
    type Target = RunFolder;
    fn deref(&self) -> &RunFolder {
        &self.folder
    }
}

/// The training state a checkpoint restores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The 1-indexed epoch in progress (or the next one, when `step` is 0).
    pub epoch: u32,
    /// Training steps of that epoch already taken.
    pub step: usize,
}

const MODEL_PREFIX: &str = "model.";

impl RunDir {
    /// Creates (or opens) the folder.
    pub fn create(root: &Path) -> Result<RunDir, RunError> {
        Ok(RunDir { folder: RunFolder::create(root)? })
    }

    /// Writes the checkpoint: every variable of `vs`, the optimiser state, and the progress.
    pub fn save_checkpoint(
        &self,
        vs: &VarStore,
        optimiser: Vec<(String, Tensor)>,
        progress: Progress,
    ) -> Result<(), RunError> {
        let path = self.file(CHECKPOINT);
        let mut named: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .map(|(n, t)| (format!("{MODEL_PREFIX}{n}"), t.to_device(tch::Device::Cpu).contiguous()))
            .collect();
        named.extend(optimiser.into_iter().map(|(n, t)| (n, t.to_device(tch::Device::Cpu).contiguous())));
        named.push(("state.epoch".into(), Tensor::from(progress.epoch as i64)));
        named.push(("state.step".into(), Tensor::from(progress.step as i64)));
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let file = wrn_fs::AtomicFile::create(&path)?;
        Tensor::write_safetensors(&named, file.path()).map_err(|source| RunError::Torch { path, source })?;
        Ok(file.commit()?)
    }

    /// Loads the checkpoint into `vs`; returns the optimiser state (by name) and the progress.
    pub fn load_checkpoint(&self, vs: &mut VarStore) -> Result<(HashMap<String, Tensor>, Progress), RunError> {
        let path = self.file(CHECKPOINT);
        let named = Tensor::read_safetensors(&path).map_err(|source| RunError::Torch { path: path.clone(), source })?;
        let mut rest = HashMap::new();
        let mut model = HashMap::new();
        for (name, t) in named {
            match name.strip_prefix(MODEL_PREFIX) {
                Some(n) => {
                    model.insert(n.to_string(), t);
                }
                None => {
                    rest.insert(name, t);
                }
            }
        }
        let format = |message: String| RunError::Folder(wrn_run::Error::Format { path: path.clone(), message });
        let mut variables = vs.variables();
        for (name, var) in &mut variables {
            let saved = model
                .get(name)
                .ok_or_else(|| format(format!("no tensor for {name}: a checkpoint of another network?")))?;
            if saved.size() != var.size() {
                return Err(format(format!("{name} has shape {:?}, the network {:?}", saved.size(), var.size())));
            }
            tch::no_grad(|| var.copy_(saved));
        }
        let scalar = |key: &str| -> Result<i64, RunError> {
            rest.get(key).map(|t| t.int64_value(&[])).ok_or_else(|| format(format!("missing {key}")))
        };
        let progress = Progress { epoch: scalar("state.epoch")? as u32, step: scalar("state.step")? as usize };
        Ok((rest, progress))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn, Device};

    #[test]
    fn a_checkpoint_restores_weights_optimiser_state_and_progress() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::create(dir.path()).unwrap();
        let vs = VarStore::new(Device::Cpu);
        let w = vs.root().var("w", &[3], nn::Init::Randn { mean: 0.0, stdev: 1.0 });
        let momentum = vec![("momentum.w".to_string(), Tensor::from_slice(&[1.0f32, 2.0, 3.0]))];
        run.save_checkpoint(&vs, momentum, Progress { epoch: 3, step: 17 }).unwrap();
        // Written to a temporary file and put in place: nothing else is left in the folder.
        let names: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert_eq!(names, [CHECKPOINT]);

        let mut fresh = VarStore::new(Device::Cpu);
        let w2 = fresh.root().var("w", &[3], nn::Init::Const(0.0));
        let (state, progress) = run.load_checkpoint(&mut fresh).unwrap();
        assert_eq!(progress, Progress { epoch: 3, step: 17 });
        assert!(w2.equal(&w));
        assert!(state["momentum.w"].equal(&Tensor::from_slice(&[1.0f32, 2.0, 3.0])));

        let mut other = VarStore::new(Device::Cpu);
        let _v = other.root().var("v", &[3], nn::Init::Const(0.0));
        let err = run.load_checkpoint(&mut other).unwrap_err().to_string();
        assert!(err.contains("no tensor for v"), "{err}");
    }
}
