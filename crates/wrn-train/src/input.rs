//! The data a run trains on, opened and carried to its device: the augmentation presets of a recipe,
//! the prepared splits behind the training and test loaders (or ImageNet's encoded shards), each split
//! checked against the manifest first (a damaged one is named as such), and `Input`, which copies a
//! batch into pinned host memory and onto the device, normalising `u8` pixels there.

use std::sync::Arc;

use tch::{Device, Kind, Tensor};
use wrn_augment::{Batch, ImageType, Loader, LoaderConfig, Norm, Pipeline, Preset, Shard, ValueStep, Zca, ZcaParams};
use wrn_data::store::Store;

use crate::config::{Augmentation, BatchImages, ConfigError, Experiment, Precision, Preprocessing};
use crate::datasets::Dataset;
use crate::error::TrainError;
use crate::runtime::ThreadPlan;

/// The augmentation presets of an experiment's training and test splits.
pub fn presets(exp: &Experiment) -> Result<(Preset, Preset), ConfigError> {
    let invalid = |m: String| Err(ConfigError::Invalid(m));
    match exp.dataset {
        Dataset::Cifar10 | Dataset::Cifar100 => {
            let norm = match exp.preprocessing {
                Preprocessing::Meanstd => Norm::MeanStd,
                Preprocessing::Zca => Norm::Zca,
                p => return invalid(format!("preprocessing {p:?} does not apply to CIFAR (meanstd or zca)")),
            };
            let train = match exp.augmentation {
                Augmentation::CifarTrain => Preset::CifarTrain(norm),
                Augmentation::CifarTrainV1 => Preset::CifarTrainV1(norm),
                Augmentation::None => Preset::CifarTest(norm),
                a => {
                    return invalid(format!(
                        "augmentation '{a}' does not apply to CIFAR (cifar-train, cifar-train-v1 or none)"
                    ))
                }
            };
            Ok((train, Preset::CifarTest(norm)))
        }
        Dataset::Svhn => match (exp.preprocessing, exp.augmentation) {
            (Preprocessing::Div255, Augmentation::None) => Ok((Preset::Svhn, Preset::Svhn)),
            _ => invalid("SVHN takes preprocessing div255 and augmentation none, as in the paper".into()),
        },
        Dataset::ImageNet => Ok((Preset::ImagenetTrain(exp.resampling), Preset::ImagenetVal(exp.resampling))),
    }
}

pub(crate) struct Data {
    pub(crate) train: Loader,
    pub(crate) test: Loader,
    pub(crate) classes: i64,
}

/// The element type of the loaders' batches: as configured, else `u8` where the batches go to a GPU and
/// the pipeline delivers them.
fn image_type(exp: &Experiment, device: Device, pipeline: &Pipeline) -> ImageType {
    match exp.data.images {
        Some(BatchImages::U8) => ImageType::U8,
        Some(BatchImages::F32) => ImageType::F32,
        None if device.is_cuda() && pipeline.delivers_u8() => ImageType::U8,
        None => ImageType::F32,
    }
}

/// The data of `exp`, each batch cut to `shard`'s part (one rank's, of a run over several processes).
pub(crate) fn open_data(exp: &Experiment, plan: &ThreadPlan, device: Device, shard: Shard) -> Result<Data, TrainError> {
    let manifests = wrn_data::ops::manifests(Some(exp.dataset.name()), exp.data.manifest.as_deref())?;
    let manifest = &manifests[0];
    let dir = exp.data.dir.clone().unwrap_or_else(wrn_data::dirs::data_dir);
    let store = Store::new(dir.clone());
    if !store.is_prepared(manifest) {
        // A split that is there but damaged (cut short, of another count or other sources) is said as such.
        let status = store.status(manifest);
        if let Some(split) = status.prepared.into_iter().find(|p| p.damaged.is_some()) {
            let (dataset, path) = (&manifest.name, split.path.display().to_string());
            let mut why = split.damaged.unwrap_or_default();
            if !why.contains(&path) {
                why = format!("{path} {why}");
            }
            if !why.contains("`wrn data ") {
                why.push_str(&format!("; run `wrn data prepare {dataset}` to prepare it again"));
            }
            return Err(TrainError::DamagedSplit { dataset: dataset.clone(), split: split.split, why });
        }
        return Err(TrainError::NotPrepared { dataset: manifest.name.clone(), dir });
    }
    if exp.dataset == Dataset::ImageNet {
        return open_imagenet(exp, plan, (device, shard), &store, manifest);
    }
    if let Some(split) = exp.train_splits.iter().find(|s| !manifest.splits.contains_key(*s) || *s == "test") {
        let splits: Vec<&str> = manifest.splits.keys().map(String::as_str).filter(|s| *s != "test").collect();
        return Err(ConfigError::Invalid(format!(
            "train_splits: {} has no training split '{split}' (its training splits: {})",
            manifest.name,
            splits.join(", ")
        ))
        .into());
    }
    let train_parts = exp
        .train_splits
        .iter()
        .map(|split| store.open_split(manifest, split).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()?;
    let train = train_parts[0].clone();
    let train_len: usize = train_parts.iter().map(|p| p.len()).sum();
    let test = Arc::new(store.open_split(manifest, "test")?);
    let classes = train.meta.classes.len() as i64;
    let (train_preset, test_preset) = presets(exp)?;
    let zca = match exp.preprocessing {
        Preprocessing::Zca => {
            let path = wrn_augment::zca::default_path(&train);
            Some(Arc::new(Zca::fit_or_load(&train, &path, ZcaParams::default())?))
        }
        _ => None,
    };
    let workers = exp.data.workers.unwrap_or(plan.data_workers);
    // A subset is "at most this many": a smoke scale asks for more images than a small split may hold.
    let (train_subset, test_subset) =
        (exp.scale.train_subset.map(|n| n.min(train_len)), exp.scale.test_subset.map(|n| n.min(test.len())));
    let config = |shuffle, drop_last, subset, pipeline: &Pipeline| LoaderConfig {
        batch_size: exp.batch_size,
        seed: exp.seed,
        shuffle,
        drop_last,
        workers,
        prefetch: exp.data.prefetch.max(1),
        subset,
        image_type: image_type(exp, device, pipeline),
        shard,
    };
    let (train_pipeline, test_pipeline) =
        (Pipeline::from_preset(train_preset, zca.clone())?, Pipeline::from_preset(test_preset, zca)?);
    let train_config = config(true, exp.drop_last, train_subset, &train_pipeline);
    let test_config = config(false, false, test_subset, &test_pipeline);
    let train = Loader::concat(train_parts, train_pipeline, train_config)?;
    let test = Loader::new(test, test_pipeline, test_config)?;
    Ok(Data { train, test, classes })
}

/// ImageNet: JPEG shards decoded by the loader, evaluated on the val split. The class count is the
/// prepared data's (1000 for ILSVRC2012, fewer for synthetic data).
fn open_imagenet(
    exp: &Experiment,
    plan: &ThreadPlan,
    (device, shard): (Device, Shard),
    store: &Store,
    manifest: &wrn_data::manifest::Manifest,
) -> Result<Data, TrainError> {
    let train = Arc::new(store.open_encoded(manifest, "train")?);
    let val = Arc::new(store.open_encoded(manifest, "val")?);
    let classes = train.meta.classes.len() as i64;
    let (train_preset, val_preset) = presets(exp)?;
    let config = |shuffle, drop_last, subset: Option<usize>, len: usize, pipeline: &Pipeline| LoaderConfig {
        batch_size: exp.batch_size,
        seed: exp.seed,
        shuffle,
        drop_last,
        workers: exp.data.workers.unwrap_or(plan.data_workers),
        prefetch: exp.data.prefetch.max(1),
        // "At most this many": a smoke scale may ask for more images than a small split holds.
        subset: subset.map(|n| n.min(len)),
        image_type: image_type(exp, device, pipeline),
        shard,
    };
    let (train_name, val_name) = (train.path().display().to_string(), val.path().display().to_string());
    let (train_pipeline, val_pipeline) =
        (Pipeline::from_preset(train_preset, None)?, Pipeline::from_preset(val_preset, None)?);
    let train_config = config(true, exp.drop_last, exp.scale.train_subset, train.len(), &train_pipeline);
    let val_config = config(false, false, exp.scale.test_subset, val.len(), &val_pipeline);
    let train = Loader::from_encoded(train, &train_name, train_pipeline, train_config)?;
    let test = Loader::from_encoded(val, &val_name, val_pipeline, val_config)?;
    Ok(Data { train, test, classes })
}

/// How a loader's batches become input tensors on the device.
pub(crate) struct Input {
    pub(crate) device: Device,
    precision: Precision,
    /// Batches in channels-last strides, for a network whose weights are.
    pub(crate) channels_last: bool,
    /// For a loader delivering `u8`, its deferred value step as tensors on the device.
    step: Option<DeviceStep>,
}

/// [`ValueStep`] on the device, computed with the same expression as on the CPU.
enum DeviceStep {
    None,
    /// `(v - mean) * inv_std`, both `[1, c, 1, 1]`.
    Normalize {
        mean: Tensor,
        inv_std: Tensor,
    },
    /// `v / divisor`, a one-element tensor (a true division, not a multiplication by the reciprocal).
    Divide(Tensor),
}

impl Input {
    pub(crate) fn new(loader: &Loader, device: Device, precision: Precision, channels_last: bool) -> Input {
        let step = loader.deferred_step().map(|step| DeviceStep::new(step, device));
        Input { device, precision, channels_last, step }
    }

    /// Copies a batch to the device (on CUDA: one copy of the loader's buffer into page-locked memory,
    /// then an asynchronous transfer). `u8` images are copied as bytes and turned into values there. The
    /// images come in the precision's compute dtype: bf16 images make the network compute in bf16 on its
    /// f32 weights.
    pub(crate) fn batch(&self, batch: &Batch) -> (Tensor, Tensor) {
        let shape: Vec<i64> = batch.shape.iter().map(|&d| d as i64).collect();
        let (x, y) = match self.device {
            Device::Cpu => {
                let x = match &batch.images {
                    wrn_augment::BatchImages::U8(v) => Tensor::from_slice(v),
                    wrn_augment::BatchImages::F32(v) => Tensor::from_slice(v),
                };
                (x.view(shape.as_slice()), Tensor::from_slice(&batch.labels))
            }
            device => {
                let x = match &batch.images {
                    wrn_augment::BatchImages::U8(v) => to_device_pinned(v, &shape, Kind::Uint8, device),
                    wrn_augment::BatchImages::F32(v) => to_device_pinned(v, &shape, Kind::Float, device),
                };
                (x, to_device_pinned(&batch.labels, &[batch.labels.len() as i64], Kind::Int64, device))
            }
        };
        let x = match &self.step {
            None => x,
            Some(step) => step.apply(&x),
        };
        (self.laid_out(x), y)
    }

    /// Images as the network takes them: channels-last strides and the compute dtype where the run asks.
    fn laid_out(&self, x: Tensor) -> Tensor {
        let x = if self.channels_last { wrn_nets::layout::channels_last(&x) } else { x };
        match self.precision {
            Precision::Fp32 => x,
            Precision::Bf16 => wrn_nets::layout::bf16(&x),
        }
    }

    /// `n` blank images of `shape` (`[c, h, w]`), as [`Input::batch`] delivers images.
    pub(crate) fn blank(&self, n: i64, [c, h, w]: [usize; 3]) -> Tensor {
        self.laid_out(Tensor::zeros([n, c as i64, h as i64, w as i64], (Kind::Float, self.device)))
    }
}

impl DeviceStep {
    fn new(step: &ValueStep, device: Device) -> DeviceStep {
        let channels = |v: &[f32]| Tensor::from_slice(v).view([1, -1, 1, 1]).to_device(device);
        match step {
            ValueStep::None => DeviceStep::None,
            ValueStep::Normalize { mean, inv_std } => {
                DeviceStep::Normalize { mean: channels(mean), inv_std: channels(inv_std) }
            }
            ValueStep::Divide(d) => DeviceStep::Divide(Tensor::from_slice(&[*d]).to_device(device)),
        }
    }

    /// The value step on `u8` pixels already on the device, with the CPU's expression.
    fn apply(&self, x: &Tensor) -> Tensor {
        match self {
            DeviceStep::None => x.to_kind(Kind::Float),
            DeviceStep::Normalize { mean, inv_std } => (x.to_kind(Kind::Float) - mean) * inv_std,
            DeviceStep::Divide(d) => x.to_kind(Kind::Float) / d,
        }
    }
}

/// Normalises `u8` pixels on `device` exactly as the runner does for a loader whose value step is
/// `step` (for checks that compare it with the CPU's).
pub fn normalise_on_device(pixels: &Tensor, step: &ValueStep, device: Device) -> Tensor {
    DeviceStep::new(step, device).apply(&pixels.to_device(device))
}

/// Copies host values to `device`: once into page-locked memory (`aten::_pin_memory`, from libtorch's
/// caching host allocator, which reuses a block only once the transfer that read it has completed), then
/// without blocking the host.
fn to_device_pinned<T: tch::kind::Element>(values: &[T], shape: &[i64], kind: Kind, device: Device) -> Tensor {
    let strides = contiguous_strides(shape);
    // SAFETY: `values` holds exactly `shape`'s element count of `kind` values and outlives the borrowed
    // tensor, which `_pin_memory` copies from before this function returns.
    let borrowed = unsafe { Tensor::from_blob(values.as_ptr() as *const u8, shape, &strides, kind, Device::Cpu) };
    debug_assert_eq!(borrowed.numel(), values.len());
    borrowed.internal_pin_memory(device).to_device_(device, kind, true, false)
}

fn contiguous_strides(shape: &[i64]) -> Vec<i64> {
    let mut strides = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    strides
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_follow_the_dataset_and_preprocessing() {
        let e = Experiment::recipe(Dataset::Cifar10);
        assert_eq!(presets(&e).unwrap(), (Preset::CifarTrain(Norm::MeanStd), Preset::CifarTest(Norm::MeanStd)));
        let e = Experiment::resolve(None, &["preprocessing=zca".into(), "augmentation=none".into()]).unwrap();
        assert_eq!(presets(&e).unwrap(), (Preset::CifarTest(Norm::Zca), Preset::CifarTest(Norm::Zca)));
        assert_eq!(presets(&Experiment::recipe(Dataset::Svhn)).unwrap(), (Preset::Svhn, Preset::Svhn));
        let e = Experiment::resolve(None, &["preprocessing=div255".into()]).unwrap();
        assert!(presets(&e).unwrap_err().to_string().contains("does not apply to CIFAR"));
    }
}
