//! The run folder (contract 3, owned by `wrn-run`) as the trainer uses it: [`RunDir`] is a
//! [`wrn_run::RunFolder`] held by this process (its lock, for as long as the `RunDir` lives) that also
//! saves and loads the checkpoint, whose tensors need libtorch.
//!
//! A checkpoint is a safetensors file of `model.*`, `momentum.*` and `state.*` tensors whose metadata
//! holds `wrn.sha256`: the SHA-256 of every tensor's name, dtype, shape and bytes, in name order (see
//! [`digest`]), checked on every load, so a flipped bit anywhere in the file is refused rather than
//! resumed. A new checkpoint is written to a temporary file and put in place by `wrn_fs`, moving the
//! latest to `checkpoint.prev.safetensors` first; a load that finds the latest damaged, absent or
//! unloadable falls back to that one and says why.

use std::collections::HashMap;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use safetensors::tensor::{Dtype, SafeTensorError, SafeTensors, View};
use sha2::{Digest, Sha256};
use tch::nn::VarStore;
use tch::Tensor;
pub use wrn_run::{EpochMetrics, RunFolder, RunResult, Status, CHECKPOINT, CHECKPOINT_PREV, METRIC_COLUMNS};

/// Errors of reading and writing a run folder.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Folder(#[from] wrn_run::Error),
    #[error(transparent)]
    Locked(#[from] wrn_fs::LockError),
    #[error("{}: {source}", path.display())]
    Torch { path: PathBuf, source: tch::TchError },
    #[error("{}: {why}", path.display())]
    Checkpoint { path: PathBuf, why: String },
    #[error(
        "no checkpoint to resume from: {latest}; {previous}. Restore one from a copy, or start the run again in a \
         new folder (`wrn train <run>/config.toml --out NEW`)"
    )]
    NoUsableCheckpoint { latest: String, previous: String },
}

impl From<wrn_fs::Error> for RunError {
    fn from(e: wrn_fs::Error) -> RunError {
        RunError::Folder(e.into())
    }
}

/// A run folder held by this process, with the checkpoint.
#[derive(Debug)]
pub struct RunDir {
    folder: RunFolder,
    /// None for a replica, which neither holds the folder nor writes it.
    _lock: Option<wrn_fs::Lock>,
    /// Whether the next checkpoint keeps the latest as the previous one: not when a load refused it.
    keep_latest: AtomicBool,
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

/// A checkpoint loaded into a network.
#[derive(Debug)]
pub struct Restored {
    /// The optimiser and training state tensors, by name (all but the network's).
    pub state: HashMap<String, Tensor>,
    pub progress: Progress,
    /// Why the latest checkpoint was not used and the previous one was, when that happened.
    pub fallback: Option<String>,
}

/// The prefix of the network's tensors in a checkpoint.
pub const MODEL_PREFIX: &str = "model.";
/// The metadata key of a checkpoint's checksum.
pub const CHECKSUM_KEY: &str = "wrn.sha256";

impl RunDir {
    /// Creates (or opens) the folder and takes its lock for `wrn train`; a folder another process holds
    /// is refused with [`wrn_fs::LockError::Held`] naming it, before anything is written.
    pub fn create(root: &Path) -> Result<RunDir, RunError> {
        RunDir::create_for(root, "wrn train")
    }

    /// [`RunDir::create`] for another command (`what`, as the lock names its holder).
    pub fn create_for(root: &Path, what: &str) -> Result<RunDir, RunError> {
        let folder = RunFolder::create(root)?;
        let lock = folder.lock(what)?;
        Ok(RunDir { folder, _lock: Some(lock), keep_latest: AtomicBool::new(true) })
    }

    /// The folder as a rank other than 0 of a run over several processes uses it: it reads the
    /// checkpoint, and writes nothing (rank 0 holds the folder and writes it: [`RunFolder::replica`]).
    pub fn replica(root: &Path) -> RunDir {
        RunDir { folder: RunFolder::replica(root), _lock: None, keep_latest: AtomicBool::new(true) }
    }

    /// Writes the checkpoint: every variable of `vs`, the optimiser state, and the progress. The latest
    /// checkpoint becomes the previous one, unless a load found it unusable.
    pub fn save_checkpoint(
        &self,
        vs: &VarStore,
        optimiser: Vec<(String, Tensor)>,
        progress: Progress,
    ) -> Result<(), RunError> {
        if !self.writes() {
            return Ok(());
        }
        let mut named: Vec<(String, Tensor)> =
            vs.variables().into_iter().map(|(n, t)| (format!("{MODEL_PREFIX}{n}"), t)).collect();
        named.extend(optimiser);
        named.push(("state.epoch".into(), Tensor::from(progress.epoch as i64)));
        named.push(("state.step".into(), Tensor::from(progress.step as i64)));
        let file = wrn_fs::AtomicFile::create(&self.file(CHECKPOINT))?;
        write_checkpoint_to(file.path(), &self.file(CHECKPOINT), &named)?;
        if self.keep_latest.load(Ordering::SeqCst) {
            file.commit_keeping(&self.file(CHECKPOINT_PREV))?;
        } else {
            file.commit()?;
        }
        self.keep_latest.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Loads the latest checkpoint into `vs`, or the previous one when the latest is absent, damaged or
    /// not of this network (saying why in [`Restored::fallback`]); an error naming both when neither loads.
    pub fn load_checkpoint(&self, vs: &mut VarStore) -> Result<Restored, RunError> {
        let (latest, previous) = (self.file(CHECKPOINT), self.file(CHECKPOINT_PREV));
        let why_latest = match restore(&latest, vs) {
            Ok((state, progress)) => return Ok(Restored { state, progress, fallback: None }),
            Err(why) => why,
        };
        match restore(&previous, vs) {
            Ok((state, progress)) => {
                self.keep_latest.store(false, Ordering::SeqCst);
                let fallback = format!(
                    "{}: {why_latest}; resuming from {} (epoch {} step {}) instead",
                    latest.display(),
                    previous.display(),
                    progress.epoch,
                    progress.step
                );
                Ok(Restored { state, progress, fallback: Some(fallback) })
            }
            Err(why_previous) => Err(RunError::NoUsableCheckpoint {
                latest: format!("{}: {why_latest}", latest.display()),
                previous: format!("{}: {why_previous}", previous.display()),
            }),
        }
    }
}

/// Reads the checkpoint at `path` into `vs`: its state tensors and progress, or why it cannot be used.
fn restore(path: &Path, vs: &mut VarStore) -> Result<(HashMap<String, Tensor>, Progress), String> {
    let mut rest = HashMap::new();
    let mut model = HashMap::new();
    for (name, t) in read_checkpoint(path).map_err(|e| e.to_string())? {
        match name.strip_prefix(MODEL_PREFIX) {
            Some(n) => model.insert(n.to_string(), t),
            None => rest.insert(name, t),
        };
    }
    let mut variables = vs.variables();
    for (name, var) in &variables {
        let saved = model.get(name).ok_or_else(|| format!("no tensor for {name}: a checkpoint of another network?"))?;
        if saved.size() != var.size() {
            return Err(format!("{name} has shape {:?}, the network {:?}", saved.size(), var.size()));
        }
    }
    for (name, var) in &mut variables {
        tch::no_grad(|| var.copy_(&model[name]));
    }
    let scalar = |key: &str| rest.get(key).map(|t| t.int64_value(&[])).ok_or_else(|| format!("missing {key}"));
    let progress = Progress { epoch: scalar("state.epoch")? as u32, step: scalar("state.step")? as usize };
    Ok((rest, progress))
}

/// A tensor's bytes as safetensors writes them.
struct Raw {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &Raw {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// The checksum of named tensors: SHA-256 over each one's name, dtype, shape and bytes, in name order.
pub fn digest<'a>(tensors: impl IntoIterator<Item = (&'a str, Dtype, &'a [usize], &'a [u8])>) -> String {
    let mut sorted: Vec<_> = tensors.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut hash = Sha256::new();
    for (name, dtype, shape, data) in sorted {
        let dtype = format!("{dtype:?}");
        for field in [name.as_bytes(), dtype.as_bytes()] {
            hash.update((field.len() as u64).to_le_bytes());
            hash.update(field);
        }
        hash.update((shape.len() as u64).to_le_bytes());
        shape.iter().for_each(|&d| hash.update((d as u64).to_le_bytes()));
        hash.update((data.len() as u64).to_le_bytes());
        hash.update(data);
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `named` tensors (copied to the CPU) as a checkpoint with its checksum to `path` in place
/// (through `wrn_fs`: the latest checkpoint, if any, is replaced, not kept).
pub fn write_checkpoint(path: &Path, named: &[(String, Tensor)]) -> Result<(), RunError> {
    let file = wrn_fs::AtomicFile::create(path)?;
    write_checkpoint_to(file.path(), path, named)?;
    Ok(file.commit()?)
}

/// Writes the checkpoint file at `tmp`, to become `target` (named in errors).
fn write_checkpoint_to(tmp: &Path, target: &Path, named: &[(String, Tensor)]) -> Result<(), RunError> {
    let torch = |source| RunError::Torch { path: target.to_path_buf(), source };
    let mut raw = Vec::with_capacity(named.len());
    for (name, tensor) in named {
        let t = tensor.to_device(tch::Device::Cpu).contiguous();
        let dtype = Dtype::try_from(t.kind()).map_err(torch)?;
        let mut data = vec![0u8; t.numel() * t.kind().elt_size_in_bytes()];
        t.f_copy_data_u8(&mut data, t.numel()).map_err(torch)?;
        let shape = t.size().iter().map(|&d| d as usize).collect();
        raw.push((name.as_str(), Raw { dtype, shape, data }));
    }
    let sum = digest(raw.iter().map(|(n, r)| (*n, r.dtype, r.shape.as_slice(), r.data.as_slice())));
    let metadata = Some(HashMap::from([(CHECKSUM_KEY.to_string(), sum)]));
    safetensors::tensor::serialize_to_file(raw.iter().map(|(n, r)| (*n, r)), &metadata, tmp).map_err(|e| {
        RunError::Checkpoint { path: target.to_path_buf(), why: format!("cannot write it: {}", words(&e)) }
    })
}

/// Reads a checkpoint, checking its checksum: its tensors, or an error naming the file and what is wrong.
pub fn read_checkpoint(path: &Path) -> Result<Vec<(String, Tensor)>, RunError> {
    let damaged = |why: String| RunError::Checkpoint { path: path.to_path_buf(), why };
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(damaged("absent".into())),
        Err(e) => return Err(damaged(format!("cannot be read: {e}"))),
    };
    let unreadable = |e: SafeTensorError| damaged(format!("is not a complete safetensors file: {}", words(&e)));
    let (_, metadata) = SafeTensors::read_metadata(&bytes).map_err(unreadable)?;
    let recorded = metadata.metadata().as_ref().and_then(|m| m.get(CHECKSUM_KEY)).cloned().ok_or_else(|| {
        damaged(format!("has no checksum ({CHECKSUM_KEY}): not a checkpoint written by this version of wrn"))
    })?;
    let file = SafeTensors::deserialize(&bytes).map_err(unreadable)?;
    let views = file.tensors();
    let actual = digest(views.iter().map(|(n, v)| (n.as_str(), v.dtype(), v.shape(), v.data())));
    if actual != recorded {
        return Err(damaged(format!(
            "fails its checksum (its tensors hash to {actual}, the file records {recorded}): the file is damaged"
        )));
    }
    views
        .into_iter()
        .map(|(name, view)| Tensor::try_from(view).map(|t| (name, t)))
        .collect::<Result<_, _>>()
        .map_err(|source| RunError::Torch { path: path.to_path_buf(), source })
}

/// A safetensors error in words.
fn words(e: &SafeTensorError) -> String {
    match e {
        SafeTensorError::IoError(e) => e.to_string(),
        SafeTensorError::JsonError(e) => format!("its header is not valid JSON ({e})"),
        SafeTensorError::HeaderTooSmall | SafeTensorError::HeaderTooLarge | SafeTensorError::InvalidHeaderLength => {
            "its header length is wrong (a truncated or overwritten file)".into()
        }
        SafeTensorError::InvalidHeader
        | SafeTensorError::InvalidHeaderStart
        | SafeTensorError::InvalidHeaderDeserialization
        | SafeTensorError::MetadataIncompleteBuffer => "its header does not parse".into(),
        SafeTensorError::TensorNotFound(name) => format!("tensor {name} is missing"),
        SafeTensorError::InvalidOffset(name) => format!("tensor {name} lies outside the file"),
        _ => "a tensor's dtype, shape and size disagree".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn, Device};

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        names
    }

    #[test]
    fn a_checkpoint_restores_weights_optimiser_state_and_progress() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::create(dir.path()).unwrap();
        let vs = VarStore::new(Device::Cpu);
        let w = vs.root().var("w", &[3], nn::Init::Randn { mean: 0.0, stdev: 1.0 });
        let momentum = vec![("momentum.w".to_string(), Tensor::from_slice(&[1.0f32, 2.0, 3.0]))];
        run.save_checkpoint(&vs, momentum, Progress { epoch: 3, step: 17 }).unwrap();
        // Written to a temporary file and put in place: nothing else is left in the folder but the lock.
        assert_eq!(names(dir.path()), [".lock", CHECKPOINT]);
        // The network's tensors are stored under their names, as any safetensors reader sees them.
        let plain: HashMap<String, Tensor> =
            Tensor::read_safetensors(run.file(CHECKPOINT)).unwrap().into_iter().collect();
        assert!(plain["model.w"].equal(&w));

        let mut fresh = VarStore::new(Device::Cpu);
        let w2 = fresh.root().var("w", &[3], nn::Init::Const(0.0));
        let restored = run.load_checkpoint(&mut fresh).unwrap();
        assert_eq!((restored.progress, restored.fallback), (Progress { epoch: 3, step: 17 }, None));
        assert!(w2.equal(&w));
        assert!(restored.state["momentum.w"].equal(&Tensor::from_slice(&[1.0f32, 2.0, 3.0])));

        let mut other = VarStore::new(Device::Cpu);
        let _v = other.root().var("v", &[3], nn::Init::Const(0.0));
        let err = run.load_checkpoint(&mut other).unwrap_err().to_string();
        assert!(err.contains("checkpoint.safetensors: no tensor for v: a checkpoint of another network?"), "{err}");
        assert!(err.contains("checkpoint.prev.safetensors: absent"), "{err}");
    }

    /// Flips one bit of the last byte of `path` (a tensor's data).
    fn flip_last_byte(path: &Path) {
        let mut bytes = std::fs::read(path).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn a_damaged_latest_checkpoint_falls_back_to_the_previous_one_and_both_damaged_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::create(dir.path()).unwrap();
        let vs = VarStore::new(Device::Cpu);
        let mut w = vs.root().var("w", &[4], nn::Init::Const(1.0));
        run.save_checkpoint(&vs, vec![], Progress { epoch: 1, step: 2 }).unwrap();
        tch::no_grad(|| w.copy_(&Tensor::from_slice(&[5.0f32, 6.0, 7.0, 8.0])));
        run.save_checkpoint(&vs, vec![], Progress { epoch: 1, step: 4 }).unwrap();
        assert_eq!(names(dir.path()), [".lock", CHECKPOINT_PREV, CHECKPOINT]);

        // One flipped bit in the latest: refused, and the previous one is restored, saying why.
        flip_last_byte(&run.file(CHECKPOINT));
        let mut fresh = VarStore::new(Device::Cpu);
        let w2 = fresh.root().var("w", &[4], nn::Init::Const(0.0));
        let restored = run.load_checkpoint(&mut fresh).unwrap();
        assert_eq!(restored.progress, Progress { epoch: 1, step: 2 });
        assert!(w2.equal(&Tensor::from_slice(&[1.0f32; 4])));
        let why = restored.fallback.unwrap();
        assert!(why.contains("checkpoint.safetensors: fails its checksum"), "{why}");
        assert!(why.contains("resuming from") && why.contains("checkpoint.prev.safetensors (epoch 1 step 2)"), "{why}");
        let err = read_checkpoint(&run.file(CHECKPOINT)).unwrap_err().to_string();
        assert!(err.contains("fails its checksum") && err.contains("the file is damaged"), "{err}");

        // The next checkpoint replaces the damaged one and keeps the good previous one.
        run.save_checkpoint(&vs, vec![], Progress { epoch: 1, step: 6 }).unwrap();
        let previous: HashMap<String, Tensor> =
            read_checkpoint(&run.file(CHECKPOINT_PREV)).unwrap().into_iter().collect();
        assert_eq!(previous["state.step"].int64_value(&[]), 2);

        // Both damaged (or written without a checksum): an error naming both files.
        flip_last_byte(&run.file(CHECKPOINT));
        let plain = [("model.w".to_string(), Tensor::from_slice(&[1.0f32; 4]))];
        Tensor::write_safetensors(&plain, run.file(CHECKPOINT_PREV)).unwrap();
        let err = run.load_checkpoint(&mut fresh).unwrap_err().to_string();
        assert!(err.starts_with("no checkpoint to resume from: "), "{err}");
        assert!(err.contains("checkpoint.safetensors: fails its checksum"), "{err}");
        assert!(err.contains("checkpoint.prev.safetensors: has no checksum (wrn.sha256)"), "{err}");
        std::fs::write(run.file(CHECKPOINT), b"\x08\0\0\0\0\0\0\0{}").unwrap();
        let err = read_checkpoint(&run.file(CHECKPOINT)).unwrap_err().to_string();
        assert!(err.contains("is not a complete safetensors file"), "{err}");
    }

    #[test]
    fn a_folder_is_trained_by_one_process_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::create(dir.path()).unwrap();
        let err = RunDir::create(dir.path()).unwrap_err().to_string();
        assert!(err.contains("is in use by") && err.contains("(wrn train)"), "{err}");
        drop(run);
        RunDir::create(dir.path()).unwrap();
    }

    #[test]
    fn the_checksum_covers_names_dtypes_shapes_and_bytes() {
        let base = digest([("a", Dtype::F32, &[2usize][..], &[0u8; 8][..])]);
        assert_eq!(base.len(), 64);
        assert_ne!(base, digest([("b", Dtype::F32, &[2usize][..], &[0u8; 8][..])]));
        assert_ne!(base, digest([("a", Dtype::I32, &[2usize][..], &[0u8; 8][..])]));
        assert_ne!(base, digest([("a", Dtype::F32, &[1usize, 2][..], &[0u8; 8][..])]));
        assert_ne!(base, digest([("a", Dtype::F32, &[2usize][..], &[0, 0, 0, 0, 0, 0, 0, 1][..])]));
    }
}
