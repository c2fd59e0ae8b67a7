//! Experiment configuration: what to train and how, as TOML.
//!
//! Layers, each overriding the one before: the paper's recipe for the dataset ([`Experiment::recipe`]) <
//! the experiment file < `--set key=value` flags (dotted keys, TOML values). Unknown keys are errors at
//! every layer; the resolved configuration is saved as `config.toml` in the run folder, so a run can be
//! repeated from its folder alone.
//!
//! Recipes (recipe.md §2–5): SGD with Nesterov momentum 0.9, dampening 0, weight decay on all parameters,
//! batch 128. CIFAR: lr 0.1 × 0.2 at epochs 60, 120, 160 of 200, weight decay 5e-4, momentum buffers reset
//! at each drop (the Lua code re-creates the optimiser state), mean/std preprocessing, crop+flip.
//! SVHN: lr 0.01 × 0.1 at 80, 120 of 160, /255, no augmentation, dropout 0.4 in the paper's runs. ImageNet
//! (fb.resnet.torch): lr 0.1 × 0.1 at epochs 31 and 61 of 90 (`floor((epoch−1)/30)`), weight decay 1e-4,
//! batch 256 (fb.resnet.torch's TRAINING.md recipes; the paper does not state its own), momentum kept across
//! drops.
//!
//! `scale` shrinks a run for smoke tests and short budgets: `scale.epochs` multiplies the number of epochs
//! and every milestone (rounded, at least 1), `scale.train_subset`/`scale.test_subset` keep the first N
//! samples. A run with any scale other than 1 is labelled reduced-scale in its result.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use toml::Value;

use wrn_augment::Resampling;
use wrn_nets::{Arch, ConvInit};

use crate::datasets::Dataset;
use crate::runtime::DeviceChoice;

/// Errors of reading and resolving a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{origin}: invalid TOML: {message}")]
    Syntax { origin: String, message: String },
    #[error("{origin}: unknown key '{key}'; known keys here: {known}")]
    UnknownKey { origin: String, key: String, known: String },
    #[error("--set {0}: expected key=value, e.g. --set epochs=2")]
    SetSyntax(String),
    #[error("{origin}: '{key}' must be {expected}")]
    Type { origin: String, key: String, expected: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
    #[error("{origin}: '{key}': {message}")]
    Value { origin: String, key: String, message: String },
}

/// Input preprocessing (recipe.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preprocessing {
    /// Per-channel mean/std with the paper's CIFAR constants.
    Meanstd,
    /// Global contrast normalisation + ZCA whitening (the paper's default for Tables 2–4).
    Zca,
    /// Divide by 255 (SVHN).
    Div255,
    /// ImageNet mean/std after the fb.resnet.torch augmentations.
    Imagenet,
}

/// Arithmetic precision of the forward and backward passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    Fp32,
    /// bfloat16 compute with fp32 master weights and fp32 optimiser state.
    Bf16,
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Optimizer {
    pub lr: f64,
    pub momentum: f64,
    pub dampening: f64,
    pub weight_decay: f64,
    pub nesterov: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// 1-indexed epochs at whose start the learning rate is multiplied by `gamma`.
    pub milestones: Vec<u32>,
    pub gamma: f64,
    /// Zero the momentum buffers at each milestone (the official Lua code does).
    pub reset_momentum: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scale {
    /// Multiplies the number of epochs and every milestone.
    pub epochs: f64,
    /// Train on the first N training samples only (all of them when the split is smaller).
    pub train_subset: Option<usize>,
    /// Evaluate on the first N test samples only (all of them when the split is smaller).
    pub test_subset: Option<usize>,
}

impl Scale {
    pub fn is_full(&self) -> bool {
        self.epochs == 1.0 && self.train_subset.is_none() && self.test_subset.is_none()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Data {
    /// Data directory (default: `WRN_DATA_DIR` or `data/` at the repository root).
    pub dir: Option<PathBuf>,
    /// A custom dataset manifest (e.g. the synthetic one written by `wrn data synth`).
    pub manifest: Option<PathBuf>,
    /// Data-pipeline workers (default: the thread plan's).
    pub workers: Option<usize>,
    /// Batches prepared ahead of the training loop.
    pub prefetch: usize,
    /// What the loader hands over (default: `u8` on a GPU where the pipeline delivers it, `f32`
    /// otherwise).
    pub images: Option<BatchImages>,
}

/// The element type of the batches' images: `u8` pixels are normalised on the device (a quarter of the
/// bytes to fill and to copy), `f32` values arrive normalised. Both give the same values (see
/// `wrn_augment::ImageType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchImages {
    U8,
    F32,
}

/// Everything that defines a training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    pub dataset: Dataset,
    /// The network, written by its name, e.g. `wrn-28-10` (see `wrn_nets::Arch`).
    #[serde(with = "by_name")]
    pub arch: Arch,
    pub dropout: f64,
    /// He-normal convolution weights by fan-in (`fan_in`) or fan-out (`fan_out`: the code released with
    /// arXiv v1, behind Tables 2-4, and fb.resnet.torch, behind the ImageNet tables).
    #[serde(default, with = "by_name")]
    pub init: ConvInit,
    /// Batch-norm statistics in training over groups of this many images ("ghost" batch norm), as each
    /// GPU of fb.resnet.torch's 4–8-GPU runs normalised its own share of the batch; absent: over the
    /// whole batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bn_group: Option<u32>,
    pub preprocessing: Preprocessing,
    /// The augmentation of the training split.
    pub augmentation: Augmentation,
    /// How ImageNet windows are resized: `torch` (Torch's bicubic `image.scale`, as fb.resnet.torch) or
    /// `fast` (antialiased, on a reduced-IDCT decode). A run folder written before the key existed reads
    /// as the `fast` it trained with.
    #[serde(default = "resampling_before_recorded", with = "by_name")]
    pub resampling: Resampling,
    /// The prepared splits trained on, read as one in this order (SVHN: `["train", "extra"]`, 604,388
    /// images, as the paper).
    #[serde(default = "train_split_only")]
    pub train_splits: Vec<String>,
    pub epochs: u32,
    pub batch_size: usize,
    /// Drop the last incomplete training batch (the Lua code does).
    pub drop_last: bool,
    pub optimizer: Optimizer,
    pub schedule: Schedule,
    pub seed: u64,
    /// `auto`, `cpu`, `cuda` or `cuda:N` (see [`DeviceChoice`]).
    #[serde(with = "by_name")]
    pub device: DeviceChoice,
    pub precision: Precision,
    /// Weights and batches in channels-last (NHWC) strides, cuDNN's fast layout: the same numbers within
    /// float rounding, so not a departure from the recipe. Absent: on a GPU, not on the CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels_last: Option<bool>,
    /// Capture the training step of a full batch in a CUDA graph and replay it (one process on a GPU):
    /// the same computation without the host's kernel launches.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cuda_graphs: bool,
    pub scale: Scale,
    pub data: Data,
    /// Also write a checkpoint after this many minutes within an epoch (0 disables).
    pub checkpoint_minutes: f64,
    /// Also write a checkpoint every this many steps (0 disables).
    pub checkpoint_steps: usize,
}

impl Experiment {
    /// The paper's recipe for a dataset, with the default architecture of its tables.
    pub fn recipe(dataset: Dataset) -> Experiment {
        let cifar = |dataset| Experiment {
            dataset,
            arch: known_arch("wrn-28-10"),
            dropout: 0.0,
            init: ConvInit::FanIn,
            bn_group: None,
            preprocessing: Preprocessing::Meanstd,
            augmentation: Augmentation::CifarTrain,
            resampling: Resampling::Torch,
            train_splits: train_split_only(),
            epochs: 200,
            batch_size: 128,
            drop_last: true,
            optimizer: Optimizer { lr: 0.1, momentum: 0.9, dampening: 0.0, weight_decay: 5e-4, nesterov: true },
            schedule: Schedule { milestones: vec![60, 120, 160], gamma: 0.2, reset_momentum: true },
            seed: 1,
            device: DeviceChoice::Auto,
            precision: Precision::Fp32,
            channels_last: None,
            cuda_graphs: false,
            scale: Scale { epochs: 1.0, train_subset: None, test_subset: None },
            data: Data { dir: None, manifest: None, workers: None, prefetch: 4, images: None },
            checkpoint_minutes: 10.0,
            checkpoint_steps: 0,
        };
        match dataset {
            Dataset::Cifar10 | Dataset::Cifar100 => cifar(dataset),
            Dataset::Svhn => Experiment {
                arch: known_arch("wrn-16-8"),
                dropout: 0.4,
                preprocessing: Preprocessing::Div255,
                augmentation: Augmentation::None,
                train_splits: vec!["train".into(), "extra".into()],
                epochs: 160,
                optimizer: Optimizer { lr: 0.01, ..cifar(dataset).optimizer },
                schedule: Schedule { milestones: vec![80, 120], gamma: 0.1, reset_momentum: true },
                ..cifar(dataset)
            },
            Dataset::ImageNet => Experiment {
                arch: known_arch("resnet-50-w2"),
                preprocessing: Preprocessing::Imagenet,
                augmentation: Augmentation::ImagenetTrain,
                epochs: 90,
                batch_size: 256,
                drop_last: false,
                optimizer: Optimizer { weight_decay: 1e-4, ..cifar(dataset).optimizer },
                schedule: Schedule { milestones: vec![31, 61], gamma: 0.1, reset_momentum: false },
                ..cifar(dataset)
            },
        }
    }

    /// Resolves recipe < file < `--set` flags. `file` is `(origin, TOML text)`.
    pub fn resolve(file: Option<(&str, &str)>, sets: &[String]) -> Result<Experiment, ConfigError> {
        let mut layers: Vec<(String, toml::Table)> = Vec::new();
        if let Some((origin, text)) = file {
            let table: toml::Table = text
                .parse()
                .map_err(|e: toml::de::Error| ConfigError::Syntax { origin: origin.into(), message: e.to_string() })?;
            layers.push((origin.to_string(), table));
        }
        for set in sets {
            let (key, value) = set.split_once('=').ok_or_else(|| ConfigError::SetSyntax(set.clone()))?;
            let value = parse_value(value.trim());
            let mut table = toml::Table::new();
            insert_dotted(&mut table, key.trim(), value);
            layers.push((format!("--set {set}"), table));
        }
        // The dataset picks the recipe, so it is read first from the layers.
        let mut dataset = Dataset::Cifar10;
        for (origin, table) in &layers {
            if let Some(v) = table.get("dataset") {
                let name = v.as_str().ok_or_else(|| ConfigError::Type {
                    origin: origin.clone(),
                    key: "dataset".into(),
                    expected: "a string".into(),
                })?;
                dataset = Dataset::from_str(name).map_err(|e| ConfigError::Invalid(format!("{origin}: {e}")))?;
            }
        }
        let mut resolved = Value::try_from(Experiment::recipe(dataset)).expect("the recipe serialises");
        let mut origins = std::collections::BTreeMap::new();
        for (origin, table) in layers {
            merge(&mut resolved, table, &origin, "", &mut origins)?;
        }
        // A value of the wrong type or out of its type's range names its key and where it was set.
        let experiment: Experiment = serde_path_to_error::deserialize(resolved).map_err(|e| {
            let key = e.path().to_string();
            let origin = origins
                .iter()
                .filter(|(set, _)| {
                    key == **set || key.starts_with(&format!("{set}.")) || key.starts_with(&format!("{set}["))
                })
                .max_by_key(|(set, _)| set.len())
                .map_or("the recipe".to_string(), |(_, origin)| origin.clone());
            ConfigError::Value { origin, key, message: e.into_inner().message().to_string() }
        })?;
        experiment.validate()?;
        Ok(experiment)
    }

    /// Reads a run folder's `config.toml`, which `wrn train` writes whole: every key must be there (a
    /// missing one is an error naming it, never a value taken from the recipe), and the values in range.
    pub fn load_complete(path: &Path) -> Result<Experiment, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        let experiment: Experiment = toml::from_str(&text).map_err(|e| {
            ConfigError::Invalid(format!(
                "{}: {} (a run folder's configuration is written whole when the run starts; restore it, or start \
                 the run again in a new folder)",
                path.display(),
                e.message()
            ))
        })?;
        experiment.validate()?;
        Ok(experiment)
    }

    /// Reads an experiment file and applies `--set` flags on top.
    pub fn load(path: &Path, sets: &[String]) -> Result<Experiment, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        Experiment::resolve(Some((&path.display().to_string(), &text)), sets)
    }

    /// Checks what the types cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        self.arch.clone().with_dropout(self.dropout).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if self.train_splits.is_empty() {
            return invalid("train_splits must name at least one prepared split".into());
        }
        if self.epochs == 0 || self.batch_size == 0 {
            return invalid("epochs and batch_size must be positive".into());
        }
        if !(self.scale.epochs > 0.0 && self.scale.epochs <= 1.0) {
            return invalid(format!("scale.epochs = {} must be in (0, 1]", self.scale.epochs));
        }
        // Every number in range, NaN and infinities included: a run that cannot learn is refused before
        // it starts, rather than reported as a result.
        let o = &self.optimizer;
        let ranges = [
            ("optimizer.lr", o.lr, o.lr > 0.0, "a positive number"),
            ("optimizer.momentum", o.momentum, (0.0..1.0).contains(&o.momentum), "in [0, 1)"),
            ("optimizer.dampening", o.dampening, (0.0..=1.0).contains(&o.dampening), "in [0, 1]"),
            ("optimizer.weight_decay", o.weight_decay, o.weight_decay >= 0.0, "zero or positive"),
            ("schedule.gamma", self.schedule.gamma, self.schedule.gamma > 0.0, "a positive number"),
            ("checkpoint_minutes", self.checkpoint_minutes, self.checkpoint_minutes >= 0.0, "zero (never) or positive"),
        ];
        for (key, value, in_range, expected) in ranges {
            if !value.is_finite() || !in_range {
                return invalid(format!("{key} = {value} must be {expected}"));
            }
        }
        for (key, subset) in
            [("scale.train_subset", self.scale.train_subset), ("scale.test_subset", self.scale.test_subset)]
        {
            if subset == Some(0) {
                return invalid(format!(
                    "{key} = 0 leaves nothing to train or evaluate on; omit it to use the whole split"
                ));
            }
        }
        if let Some(group) = self.bn_group {
            if group < 2 || group as usize >= self.batch_size {
                return invalid(format!(
                    "bn_group = {group} must be at least 2 and smaller than batch_size ({}); omit it for batch-norm \
                     statistics over the whole batch",
                    self.batch_size
                ));
            }
        }
        if self.optimizer.nesterov && (self.optimizer.momentum <= 0.0 || self.optimizer.dampening != 0.0) {
            return invalid("Nesterov momentum needs momentum > 0 and dampening 0".into());
        }
        if self.schedule.milestones.windows(2).any(|w| w[0] >= w[1]) {
            return invalid(format!("schedule.milestones {:?} must increase", self.schedule.milestones));
        }
        Ok(())
    }

    /// Epochs actually run: `epochs × scale.epochs`, rounded, at least 1.
    pub fn effective_epochs(&self) -> u32 {
        ((self.epochs as f64 * self.scale.epochs).round() as u32).max(1)
    }

    /// Milestones actually used: each scaled like the epochs (rounded, at least 2, since a drop at the
    /// start of epoch 1 would skip the initial learning rate altogether).
    pub fn effective_milestones(&self) -> Vec<u32> {
        self.schedule.milestones.iter().map(|&m| ((m as f64 * self.scale.epochs).round() as u32).max(2)).collect()
    }

    /// The learning rate of a 1-indexed epoch: `lr × gamma^(milestones ≤ epoch)`, as the Lua code applies
    /// a drop at the start of each milestone epoch.
    pub fn lr_at(&self, epoch: u32) -> f64 {
        let drops = self.effective_milestones().iter().filter(|&&m| m <= epoch).count();
        self.optimizer.lr * self.schedule.gamma.powi(drops as i32)
    }

    /// Whether the learning rate drops at the start of this 1-indexed epoch.
    pub fn is_milestone(&self, epoch: u32) -> bool {
        self.effective_milestones().contains(&epoch)
    }

    /// The settings in which this experiment departs from the paper's recipe for its dataset, by dotted
    /// key, with their values (recorded in `result.json`). The architecture and dataset name the run
    /// rather than depart from anything; the seed, the device, the data location and the checkpoints do
    /// not change what is trained; `scale` is recorded as `full_scale`.
    pub fn recipe_changes(&self) -> BTreeMap<String, serde_json::Value> {
        const NOT_THE_RECIPE: [&str; 10] = [
            "dataset",
            "arch",
            "seed",
            "device",
            "data",
            "scale",
            "checkpoint_minutes",
            "checkpoint_steps",
            "channels_last",
            "cuda_graphs",
        ];
        let flat = |e: &Experiment| {
            let mut out = BTreeMap::new();
            flatten("", &Value::try_from(e).expect("an experiment serialises"), &mut out);
            out
        };
        let (ours, recipe) = (flat(self), flat(&Experiment::recipe(self.dataset)));
        // Resampling resizes ImageNet's JPEGs only: elsewhere it changes nothing.
        let applies = |k: &str| k != "resampling" || self.dataset == Dataset::ImageNet;
        ours.into_iter()
            .filter(|(k, _)| !NOT_THE_RECIPE.contains(&k.split('.').next().unwrap_or(k)) && applies(k))
            .filter(|(k, v)| recipe.get(k) != Some(v))
            .map(|(k, v)| (k, serde_json::to_value(v).expect("a TOML value is JSON")))
            .collect()
    }

    /// The resolved configuration as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("an experiment serialises")
    }
}

/// The training split's augmentation: the paper's crop and flip for CIFAR, fb.resnet.torch's for
/// ImageNet, or none (SVHN, and CIFAR without augmentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Augmentation {
    /// A crop offset and a flip drawn for each image.
    CifarTrain,
    /// The same crop and flip drawn per batch, as the code released with arXiv v1 (Tables 2-4): one
    /// crop offset for the whole batch, exactly half of it flipped.
    CifarTrainV1,
    ImagenetTrain,
    None,
}

impl std::fmt::Display for Augmentation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Augmentation::CifarTrain => "cifar-train",
            Augmentation::CifarTrainV1 => "cifar-train-v1",
            Augmentation::ImagenetTrain => "imagenet-train",
            Augmentation::None => "none",
        })
    }
}

/// A recipe's architecture, by a name `wrn_nets::Arch` knows.
fn known_arch(name: &str) -> Arch {
    name.parse().expect("a recipe names a known architecture")
}

/// A value kept in TOML by its name: written with `Display`, read with `FromStr` (whose error, naming
/// the value and what is accepted, becomes the configuration's error).
mod by_name {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<T: Display, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(value)
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// The resampling of ImageNet runs before `resampling` was recorded.
fn resampling_before_recorded() -> Resampling {
    Resampling::Fast
}

/// `value`'s leaves by dotted key (`optimizer.lr`).
fn flatten(prefix: &str, value: &Value, out: &mut BTreeMap<String, Value>) {
    match value {
        Value::Table(t) => {
            for (k, v) in t {
                flatten(&if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") }, v, out);
            }
        }
        leaf => {
            out.insert(prefix.to_string(), leaf.clone());
        }
    }
}

fn train_split_only() -> Vec<String> {
    vec!["train".into()]
}

/// A `--set` value: TOML when it parses as one (numbers, booleans, arrays, quoted strings), else a string.
fn parse_value(text: &str) -> Value {
    format!("v = {text}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| Value::String(text.to_string()))
}

fn insert_dotted(table: &mut toml::Table, key: &str, value: Value) {
    match key.split_once('.') {
        None => {
            table.insert(key.to_string(), value);
        }
        Some((head, rest)) => {
            let entry = table.entry(head.to_string()).or_insert_with(|| Value::Table(toml::Table::new()));
            if let Value::Table(inner) = entry {
                insert_dotted(inner, rest, value);
            }
        }
    }
}

/// Merges `layer` into `base`; every key must already exist in `base` (the recipe has them all).
/// Merges `layer` (from `origin`) into `base`, recording in `origins` where each key it sets came from.
fn merge(
    base: &mut Value,
    layer: toml::Table,
    origin: &str,
    prefix: &str,
    origins: &mut std::collections::BTreeMap<String, String>,
) -> Result<(), ConfigError> {
    let base = base.as_table_mut().expect("tables merge into tables");
    for (key, value) in layer {
        let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        let known = base.keys().cloned().collect::<Vec<_>>().join(", ");
        match (base.get_mut(&key), value) {
            (Some(slot @ Value::Table(_)), Value::Table(inner)) => merge(slot, inner, origin, &path, origins)?,
            (Some(Value::Table(_)), _) => {
                return Err(ConfigError::Type { origin: origin.into(), key: path, expected: "a table".into() })
            }
            (Some(slot), value) => {
                *slot = value;
                origins.insert(path, origin.to_string());
            }
            // Optional values absent from the recipe (serialised as missing) may be set.
            (None, value) if OPTIONAL.contains(&path.as_str()) => {
                base.insert(key, value);
                origins.insert(path, origin.to_string());
            }
            (None, _) => return Err(ConfigError::UnknownKey { origin: origin.into(), key: path, known }),
        }
    }
    Ok(())
}

/// Keys whose default is "not set", so they do not appear in the serialised recipe.
const OPTIONAL: &[&str] = &[
    "bn_group",
    "channels_last",
    "cuda_graphs",
    "scale.train_subset",
    "scale.test_subset",
    "data.dir",
    "data.manifest",
    "data.workers",
    "data.images",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_of_the_wrong_type_names_its_key_and_where_it_was_set() {
        let sets = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let err = Experiment::resolve(None, &sets(&["epochs=3", "optimizer.lr=abc"])).unwrap_err().to_string();
        assert!(
            err.starts_with("--set optimizer.lr=abc: 'optimizer.lr': invalid type: string \"abc\", expected f64"),
            "{err}"
        );
        let err = Experiment::resolve(None, &sets(&["epochs=-1"])).unwrap_err().to_string();
        assert!(err.starts_with("--set epochs=-1: 'epochs': invalid value: integer `-1`, expected u32"), "{err}");
        let file = "batch_size = 128\n[schedule]\nmilestones = [60, \"x\"]\n";
        let err = Experiment::resolve(Some(("exp.toml", file)), &[]).unwrap_err().to_string();
        assert!(err.starts_with("exp.toml: 'schedule.milestones"), "{err}");
        // An integer where the recipe has a float is the float.
        assert_eq!(Experiment::resolve(None, &sets(&["optimizer.lr=1"])).unwrap().optimizer.lr, 1.0);
    }

    #[test]
    fn the_recipes_are_the_papers() {
        let c = Experiment::recipe(Dataset::Cifar100);
        assert_eq!((c.optimizer.lr, c.schedule.gamma, c.epochs, c.batch_size), (0.1, 0.2, 200, 128));
        assert_eq!(c.schedule.milestones, [60, 120, 160]);
        assert!(c.optimizer.nesterov && c.schedule.reset_momentum);
        let s = Experiment::recipe(Dataset::Svhn);
        assert_eq!((s.optimizer.lr, s.schedule.gamma, s.epochs, s.dropout), (0.01, 0.1, 160, 0.4));
        assert_eq!(s.preprocessing, Preprocessing::Div255);
        let i = Experiment::recipe(Dataset::ImageNet);
        assert_eq!((i.optimizer.weight_decay, i.epochs, i.schedule.milestones.clone()), (1e-4, 90, vec![31, 61]));
        for d in Dataset::ALL {
            Experiment::recipe(d).validate().unwrap();
        }
    }

    #[test]
    fn layers_override_in_order() {
        let file = "dataset = 'cifar100'\narch = 'wrn-16-4'\ndropout = 0.3\n[optimizer]\nlr = 0.05\n";
        let e =
            Experiment::resolve(Some(("exp.toml", file)), &["optimizer.lr=0.2".into(), "scale.train_subset=64".into()])
                .unwrap();
        assert_eq!((e.dataset, e.arch.to_string().as_str(), e.dropout), (Dataset::Cifar100, "wrn-16-4", 0.3));
        assert_eq!(e.optimizer.lr, 0.2);
        assert_eq!(e.optimizer.weight_decay, 5e-4, "untouched keys keep the recipe");
        assert_eq!(e.scale.train_subset, Some(64));
        // A --set dataset switches the recipe underneath.
        let e = Experiment::resolve(None, &["dataset=svhn".into()]).unwrap();
        assert_eq!((e.optimizer.lr, e.epochs), (0.01, 160));
        // The resolved TOML reads back to the same experiment.
        assert_eq!(Experiment::resolve(Some(("saved", &e.to_toml())), &[]).unwrap(), e);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors_naming_their_origin() {
        let err = Experiment::resolve(Some(("exp.toml", "lr = 0.1\n")), &[]).unwrap_err().to_string();
        assert!(err.starts_with("exp.toml: unknown key 'lr'; known keys here: "), "{err}");
        let err = Experiment::resolve(None, &["optimizer.momentun=0.8".into()]).unwrap_err().to_string();
        assert!(err.contains("--set optimizer.momentun=0.8: unknown key 'optimizer.momentun'"), "{err}");
        let err = Experiment::resolve(None, &["epochs".into()]).unwrap_err().to_string();
        assert!(err.contains("expected key=value"), "{err}");
        let err = Experiment::resolve(None, &["arch=wrn-27-1".into()]).unwrap_err().to_string();
        assert!(err.contains("the depth must be 6N+4"), "{err}");
        let err = Experiment::resolve(None, &["dataset=mnist".into()]).unwrap_err().to_string();
        assert!(err.contains("unknown dataset 'mnist'"), "{err}");
        let err = Experiment::resolve(Some(("x.toml", "epochs = 'many'")), &[]).unwrap_err().to_string();
        assert_eq!(err, "x.toml: 'epochs': invalid type: string \"many\", expected u32");
        let err = Experiment::resolve(Some(("x.toml", "epochs = [")), &[]).unwrap_err().to_string();
        assert!(err.starts_with("x.toml: invalid TOML"), "{err}");
        // Values with a fixed set of names say which names there are.
        let err = Experiment::resolve(None, &["augmentation=crop".into()]).unwrap_err().to_string();
        assert!(
            err.contains("crop") && err.contains("`cifar-train`, `cifar-train-v1`, `imagenet-train`, `none`"),
            "{err}"
        );
        let err = Experiment::resolve(None, &["device=gpu".into()]).unwrap_err().to_string();
        assert!(err.contains("gpu") && err.contains("cuda:N"), "{err}");
    }

    #[test]
    fn departures_from_the_recipe_are_listed_and_what_does_not_change_training_is_not() {
        let plain = Experiment::resolve(
            None,
            &["seed=3".into(), "device=cpu".into(), "data.workers=2".into(), "checkpoint_minutes=1".into()],
        )
        .unwrap();
        assert!(plain.recipe_changes().is_empty(), "{:?}", plain.recipe_changes());
        let sets = ["preprocessing=zca", "precision=bf16", "optimizer.lr=0.05", "scale.epochs=0.5", "arch=wrn-16-4"];
        let e = Experiment::resolve(None, &sets.map(String::from)).unwrap();
        let changes = e.recipe_changes();
        assert_eq!(changes.keys().collect::<Vec<_>>(), ["optimizer.lr", "precision", "preprocessing"]);
        assert_eq!(changes["optimizer.lr"], serde_json::json!(0.05));
        assert_eq!(changes["precision"], serde_json::json!("bf16"));
        // Against its own dataset's recipe: SVHN's dropout 0.4 is the recipe there.
        assert!(Experiment::resolve(None, &["dataset=svhn".into()]).unwrap().recipe_changes().is_empty());
    }

    #[test]
    fn a_bn_group_is_a_departure_within_the_batch_and_absent_by_default() {
        let recipe = Experiment::recipe(Dataset::ImageNet);
        assert_eq!(recipe.bn_group, None);
        assert!(!recipe.to_toml().contains("bn_group"), "absent from config.toml unless set");
        let e = Experiment::resolve(None, &["dataset=imagenet".into(), "bn_group=32".into()]).unwrap();
        assert_eq!(e.bn_group, Some(32));
        assert_eq!(e.recipe_changes()["bn_group"], serde_json::json!(32));
        assert!(e.to_toml().lines().any(|l| l == "bn_group = 32"));
        for (group, batch) in [(1, 256), (256, 256), (300, 256)] {
            let err = Experiment::resolve(None, &[format!("bn_group={group}"), format!("batch_size={batch}")])
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!("bn_group = {group} must be at least 2 and smaller than batch_size")),
                "{err}"
            );
        }
    }

    #[test]
    fn imagenet_resamples_as_torch_unless_asked_and_older_run_folders_read_as_they_ran() {
        let recipe = Experiment::recipe(Dataset::ImageNet);
        assert_eq!(recipe.resampling, Resampling::Torch);
        assert!(recipe.to_toml().lines().any(|l| l == "resampling = \"torch\""));
        let fast = Experiment::resolve(None, &["dataset=imagenet".into(), "resampling=fast".into()]).unwrap();
        assert_eq!(fast.recipe_changes()["resampling"], serde_json::json!("fast"));
        // CIFAR has no JPEGs to resize: the key changes nothing there, and is no departure.
        let cifar = Experiment::resolve(None, &["resampling=fast".into()]).unwrap();
        assert!(cifar.recipe_changes().is_empty(), "{:?}", cifar.recipe_changes());
        // A run folder written before the key existed resized the fast way.
        let old: String =
            recipe.to_toml().lines().filter(|l| !l.starts_with("resampling =")).map(|l| format!("{l}\n")).collect();
        assert_eq!(toml::from_str::<Experiment>(&old).unwrap().resampling, Resampling::Fast);
        let err = Experiment::resolve(None, &["resampling=lanczos".into()]).unwrap_err().to_string();
        assert!(err.contains("unknown resampling 'lanczos'"), "{err}");
    }

    #[test]
    fn named_values_are_written_as_they_were_given() {
        let e = Experiment::resolve(
            None,
            &[
                "arch=wrn-40-2-b131".into(),
                "device=cuda:1".into(),
                "init=fan_out".into(),
                "augmentation=cifar-train-v1".into(),
            ],
        )
        .unwrap();
        assert_eq!((e.init, e.augmentation), (ConvInit::FanOut, Augmentation::CifarTrainV1));
        assert_eq!((e.arch.to_string(), e.device), ("wrn-40-2-b131".to_string(), DeviceChoice::Cuda(1)));
        let text = e.to_toml();
        for line in [
            "arch = \"wrn-40-2-b131\"",
            "device = \"cuda:1\"",
            "init = \"fan_out\"",
            "augmentation = \"cifar-train-v1\"",
        ] {
            assert!(text.lines().any(|l| l == line), "`{line}` missing from:\n{text}");
        }
        assert_eq!(toml::from_str::<Experiment>(&text).unwrap(), e);
        // A run folder written before `init` existed reads as the fan-in it was trained with.
        let old: String = text.lines().filter(|l| !l.starts_with("init =")).map(|l| format!("{l}\n")).collect();
        assert_eq!(toml::from_str::<Experiment>(&old).unwrap().init, ConvInit::FanIn);
    }

    #[test]
    fn a_run_folders_configuration_must_be_complete() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        let smoke = Experiment::resolve(None, &["arch=wrn-16-4".into(), "scale.epochs=0.01".into()]).unwrap();
        std::fs::write(&path, smoke.to_toml()).unwrap();
        assert_eq!(Experiment::load_complete(&path).unwrap(), smoke);
        // A key gone is named; the recipe's 200 epochs or WRN-28-10 never fill the gap.
        let without_epochs: String =
            smoke.to_toml().lines().filter(|l| !l.starts_with("epochs =")).map(|l| format!("{l}\n")).collect();
        std::fs::write(&path, without_epochs).unwrap();
        let err = Experiment::load_complete(&path).unwrap_err().to_string();
        assert!(err.contains("config.toml") && err.contains("missing field `epochs`"), "{err}");
        std::fs::write(&path, "").unwrap();
        let err = Experiment::load_complete(&path).unwrap_err().to_string();
        assert!(err.contains("missing field"), "{err}");
    }

    #[test]
    fn numbers_that_cannot_train_are_refused_naming_the_key() {
        for (set, message) in [
            ("optimizer.lr=nan", "optimizer.lr = NaN must be a positive number"),
            ("optimizer.lr=inf", "optimizer.lr = inf must be a positive number"),
            ("optimizer.lr=-0.1", "optimizer.lr = -0.1 must be a positive number"),
            ("optimizer.momentum=nan", "optimizer.momentum = NaN must be in [0, 1)"),
            ("optimizer.momentum=1.5", "optimizer.momentum = 1.5 must be in [0, 1)"),
            ("optimizer.weight_decay=nan", "optimizer.weight_decay = NaN must be zero or positive"),
            ("optimizer.weight_decay=-5e-4", "optimizer.weight_decay = -0.0005 must be zero or positive"),
            ("schedule.gamma=nan", "schedule.gamma = NaN must be a positive number"),
            ("schedule.gamma=inf", "schedule.gamma = inf must be a positive number"),
            ("dropout=nan", "dropout NaN is not in [0, 1)"),
            ("checkpoint_minutes=-inf", "checkpoint_minutes = -inf must be zero (never) or positive"),
            ("scale.epochs=nan", "scale.epochs = NaN must be in (0, 1]"),
            ("scale.train_subset=0", "scale.train_subset = 0 leaves nothing to train or evaluate on"),
            ("scale.test_subset=0", "scale.test_subset = 0 leaves nothing to train or evaluate on"),
        ] {
            let err = Experiment::resolve(None, &[set.to_string()]).unwrap_err().to_string();
            assert!(err.contains(message), "{set}: {err}");
        }
        // The same from a file, as a table row's settings arrive.
        let err = Experiment::resolve(Some(("row.toml", "[optimizer]\nlr = nan\n")), &[]).unwrap_err().to_string();
        assert!(err.contains("optimizer.lr = NaN must be a positive number"), "{err}");
        // The paper's recipes are in range.
        for dataset in [Dataset::Cifar10, Dataset::Svhn, Dataset::ImageNet] {
            Experiment::recipe(dataset).validate().unwrap();
        }
    }

    #[test]
    fn the_learning_rate_follows_the_recipe_at_every_epoch() {
        // CIFAR (recipe.md §2, confirmed by the official WRN-40-4 log: epoch 60 logs lr 0.02).
        let c = Experiment::recipe(Dataset::Cifar10);
        let lr: Vec<f64> = (1..=200).map(|e| c.lr_at(e)).collect();
        let expect = |e: usize| match e {
            1..=59 => 0.1,
            60..=119 => 0.02,
            120..=159 => 0.004,
            _ => 0.0008,
        };
        for (i, &got) in lr.iter().enumerate() {
            assert!((got - expect(i + 1)).abs() < 1e-12, "epoch {}: {got}", i + 1);
        }
        assert!(c.is_milestone(60) && c.is_milestone(160) && !c.is_milestone(59));
        // SVHN: 0.01, x0.1 at 80 and 120.
        let s = Experiment::recipe(Dataset::Svhn);
        assert_eq!([s.lr_at(79), s.lr_at(80), s.lr_at(120)].map(|x| (x * 1e6).round()), [10000.0, 1000.0, 100.0]);
        // ImageNet: floor((epoch-1)/30) drops.
        let i = Experiment::recipe(Dataset::ImageNet);
        for e in 1..=90u32 {
            let want = 0.1 * 0.1f64.powi(((e - 1) / 30) as i32);
            assert!((i.lr_at(e) - want).abs() < 1e-12, "epoch {e}");
        }
    }

    #[test]
    fn scale_shrinks_epochs_and_milestones_together() {
        let e = Experiment::resolve(None, &["scale.epochs=0.01".into()]).unwrap();
        assert_eq!(e.effective_epochs(), 2);
        assert_eq!(e.effective_milestones(), [2, 2, 2]);
        let e = Experiment::resolve(None, &["scale.epochs=0.1".into()]).unwrap();
        assert_eq!((e.effective_epochs(), e.effective_milestones()), (20, vec![6, 12, 16]));
        assert!(!e.scale.is_full());
        assert!(Experiment::resolve(None, &["scale.epochs=2".into()]).is_err());
    }
}
