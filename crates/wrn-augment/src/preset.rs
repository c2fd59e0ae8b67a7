//! The paper's recipes as named presets (`cifar-train`, `cifar-test`, `svhn`, `imagenet-train`,
//! `imagenet-val`) and [`Pipeline`], the ordered list of [`Op`]s a loader applies to each sample.
//!
//! - `cifar-train`: reflect padding of 4 (the edge pixel is not repeated), a uniformly random 32×32 crop
//!   (81 offsets), horizontal flip with p = 0.5, then the paper's per-channel mean/std. With `:zca`
//!   (`cifar-train:zca`) the same crop and flip run on contrast-normalised, ZCA-whitened pixels (the
//!   official code whitens the dataset first and augments the whitened images) and nothing follows.
//! - `cifar-train-v1` (and `cifar-train-v1:zca`): the same ops drawn per batch, as the code released
//!   with arXiv v1 ran them (`augmentation.lua` at `0a4c364`, behind Tables 2-4): one crop offset for
//!   the whole batch, and exactly half of the batch, a random half, flipped ([`Draws::PerBatch`]).
//! - `cifar-test`: the same normalisation, no augmentation (`cifar-test:zca` with the training fit).
//! - `svhn`: no augmentation, values divided by 255.
//! - `imagenet-train`, `imagenet-val`: fb.resnet.torch's recipe over JPEG bytes ([`crate::imagenet`]),
//!   resized as Torch's bicubic `image.scale`; `imagenet-train:fast` and `imagenet-val:fast` resize
//!   with the cheaper antialiased path ([`Resampling::Fast`]).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::imagenet::{imagenet_ops, Decode, Resampling};
use crate::ops::{DivideValues, Fused, HFlip, Normalize, Op, RandomCrop, ReflectPad, ShapeError};
use crate::zca::Zca;

/// How CIFAR pixels are normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Norm {
    /// Per-channel mean/std with the paper's constants ([`crate::ops::CIFAR_MEAN`], [`crate::ops::CIFAR_STD`]).
    #[default]
    MeanStd,
    /// Global contrast normalisation + ZCA fitted on the training split ([`crate::zca`]).
    Zca,
}

/// A named recipe of the paper.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Preset {
    CifarTrain(Norm),
    /// `cifar-train` drawn per batch, as the code released with arXiv v1.
    CifarTrainV1(Norm),
    CifarTest(Norm),
    Svhn,
    ImagenetTrain(Resampling),
    ImagenetVal(Resampling),
}

impl Preset {
    pub const ALL: [Preset; 11] = [
        Preset::CifarTrain(Norm::MeanStd),
        Preset::CifarTrain(Norm::Zca),
        Preset::CifarTrainV1(Norm::MeanStd),
        Preset::CifarTrainV1(Norm::Zca),
        Preset::CifarTest(Norm::MeanStd),
        Preset::CifarTest(Norm::Zca),
        Preset::Svhn,
        Preset::ImagenetTrain(Resampling::Torch),
        Preset::ImagenetTrain(Resampling::Fast),
        Preset::ImagenetVal(Resampling::Torch),
        Preset::ImagenetVal(Resampling::Fast),
    ];

    /// Whether the preset draws random numbers (augments).
    pub fn is_random(&self) -> bool {
        matches!(self, Preset::CifarTrain(_) | Preset::CifarTrainV1(_) | Preset::ImagenetTrain(_))
    }

    /// The normalisation of a CIFAR preset.
    pub fn norm(&self) -> Option<Norm> {
        match self {
            Preset::CifarTrain(n) | Preset::CifarTrainV1(n) | Preset::CifarTest(n) => Some(*n),
            _ => None,
        }
    }
}

impl FromStr for Preset {
    type Err = Error;
    fn from_str(s: &str) -> Result<Preset> {
        let (name, norm, fast) = match s.split_once(':') {
            None => (s, None, false),
            Some((name, "meanstd")) => (name, Some(Norm::MeanStd), false),
            Some((name, "zca")) => (name, Some(Norm::Zca), false),
            Some((name, "fast")) => (name, None, true),
            Some(_) => return Err(Error::UnknownPreset(s.into())),
        };
        let resampling = if fast { Resampling::Fast } else { Resampling::Torch };
        let preset = match name {
            "cifar-train" if !fast => Preset::CifarTrain(norm.unwrap_or_default()),
            "cifar-train-v1" if !fast => Preset::CifarTrainV1(norm.unwrap_or_default()),
            "cifar-test" if !fast => Preset::CifarTest(norm.unwrap_or_default()),
            "svhn" if norm.is_none() && !fast => Preset::Svhn,
            "imagenet-train" if norm.is_none() => Preset::ImagenetTrain(resampling),
            "imagenet-val" if norm.is_none() => Preset::ImagenetVal(resampling),
            _ => return Err(Error::UnknownPreset(s.into())),
        };
        Ok(preset)
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let suffix = |n: &Norm| if *n == Norm::Zca { ":zca" } else { "" };
        match self {
            Preset::CifarTrain(n) => write!(f, "cifar-train{}", suffix(n)),
            Preset::CifarTrainV1(n) => write!(f, "cifar-train-v1{}", suffix(n)),
            Preset::CifarTest(n) => write!(f, "cifar-test{}", suffix(n)),
            Preset::Svhn => f.write_str("svhn"),
            Preset::ImagenetTrain(r) => write!(f, "imagenet-train{}", fast_suffix(r)),
            Preset::ImagenetVal(r) => write!(f, "imagenet-val{}", fast_suffix(r)),
        }
    }
}

/// `:fast` for the fast resampling, nothing for Torch's.
fn fast_suffix(r: &Resampling) -> &'static str {
    if *r == Resampling::Fast {
        ":fast"
    } else {
        ""
    }
}

/// Where a pipeline's samples come from before its first op.
#[derive(Debug, Clone)]
pub enum Source {
    /// The prepared cache's `u8` pixels, as 0–255 values.
    Pixels,
    /// The split contrast-normalised and whitened with this fit (computed once when the loader is made).
    Whitened(Arc<Zca>),
    /// Encoded (JPEG) images, decoded, cropped and resized by this stage ([`crate::imagenet`]).
    Jpeg(Decode),
}

/// Whose random draws a pipeline's crop and flip make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Draws {
    /// Each sample its own, from its stream (seed, epoch, index).
    #[default]
    PerSample,
    /// The batch's: one crop offset for every sample of the batch, and exactly half of the batch flipped
    /// (see [`crate::rng::batch_draws`]), as Torch's `nn.RandomCrop` and `BatchFlip` of the code released
    /// with arXiv v1 did.
    PerBatch,
}

/// The ordered ops a loader applies to each sample, after loading it from its [`Source`].
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub source: Source,
    pub ops: Vec<Arc<dyn Op>>,
    pub draws: Draws,
    /// The preset it was built from, if any.
    pub preset: Option<Preset>,
}

impl Pipeline {
    /// A custom pipeline over the prepared pixels.
    pub fn new(ops: Vec<Arc<dyn Op>>) -> Pipeline {
        Pipeline { source: Source::Pixels, ops, draws: Draws::PerSample, preset: None }
    }

    /// Whether a loader can deliver this pipeline's batches as `u8` ([`crate::ImageType::U8`]): pixels
    /// through padding, crops and flips ending in at most one normalisation or scaling.
    pub fn delivers_u8(&self) -> bool {
        matches!(self.source, Source::Pixels) && Fused::plan(&self.ops).is_some()
    }

    /// The preset's pipeline. ZCA presets need the training split's fit (see [`Zca::fit_or_load`]).
    pub fn from_preset(preset: Preset, zca: Option<Arc<Zca>>) -> Result<Pipeline> {
        let augment: Vec<Arc<dyn Op>> = vec![
            Arc::new(ReflectPad { pad: 4 }),
            Arc::new(RandomCrop { height: 32, width: 32 }),
            Arc::new(HFlip { p: 0.5 }),
        ];
        let (source, ops): (Source, Vec<Arc<dyn Op>>) = match preset {
            Preset::CifarTrain(Norm::MeanStd) | Preset::CifarTrainV1(Norm::MeanStd) => {
                (Source::Pixels, augment.into_iter().chain([Arc::new(Normalize::cifar()) as Arc<dyn Op>]).collect())
            }
            Preset::CifarTest(Norm::MeanStd) => (Source::Pixels, vec![Arc::new(Normalize::cifar())]),
            Preset::CifarTrain(Norm::Zca) | Preset::CifarTrainV1(Norm::Zca) | Preset::CifarTest(Norm::Zca) => {
                let zca = zca
                    .ok_or_else(|| Error::Config(format!("preset {preset} needs the ZCA fit of the training split")))?;
                let ops = if preset.is_random() { augment } else { vec![] };
                (Source::Whitened(zca), ops)
            }
            Preset::Svhn => (Source::Pixels, vec![Arc::new(DivideValues { divisor: 255.0 })]),
            Preset::ImagenetTrain(r) => (Source::Jpeg(Decode::train().with_resampling(r)), imagenet_ops(true)),
            Preset::ImagenetVal(r) => (Source::Jpeg(Decode::val().with_resampling(r)), imagenet_ops(false)),
        };
        let draws = if matches!(preset, Preset::CifarTrainV1(_)) { Draws::PerBatch } else { Draws::PerSample };
        Ok(Pipeline { source, ops, draws, preset: Some(preset) })
    }

    /// The `[c, h, w]` of a sample after every op, from an input of `input`, or which op refuses it.
    pub fn output_shape(&self, input: [usize; 3]) -> std::result::Result<[usize; 3], OpRefused> {
        self.ops
            .iter()
            .try_fold(input, |shape, op| op.output_shape(shape).map_err(|why| OpRefused { op: op.name(), why }))
    }
}

/// An op of a pipeline that refuses the shape it gets: its name and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{op}: {why}")]
pub struct OpRefused {
    pub op: String,
    pub why: ShapeError,
}

impl fmt::Display for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Source::Pixels => f.write_str("pixels")?,
            Source::Whitened(_) => f.write_str("gcn+zca")?,
            Source::Jpeg(d) => write!(f, "jpeg -> {d:?}")?,
        }
        for op in &self.ops {
            write!(f, " -> {}", op.name())?;
        }
        if self.draws == Draws::PerBatch {
            f.write_str(" (drawn per batch)")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_parse_and_print_round_trip() {
        for p in Preset::ALL {
            assert_eq!(p.to_string().parse::<Preset>().unwrap(), p);
        }
        assert_eq!("cifar-train:meanstd".parse::<Preset>().unwrap(), Preset::CifarTrain(Norm::MeanStd));
        for bad in ["cifar", "svhn:zca", "cifar-train:pca", ""] {
            let err = bad.parse::<Preset>().unwrap_err().to_string();
            assert!(err.contains("unknown preset") && err.contains("cifar-train"), "{err}");
        }
    }

    #[test]
    fn preset_pipelines_have_the_recipe_ops_and_shapes() {
        let train = Pipeline::from_preset(Preset::CifarTrain(Norm::MeanStd), None).unwrap();
        assert_eq!(
            train.to_string(),
            "pixels -> reflect-pad(4) -> random-crop(32x32) -> hflip(0.5) -> normalize(mean [125.3, 123.0, 113.9], \
             std [63.0, 62.1, 66.7])"
        );
        assert_eq!(train.output_shape([3, 32, 32]), Ok([3, 32, 32]));
        let refused = train.output_shape([1, 32, 32]).unwrap_err();
        assert_eq!(refused.why, ShapeError::ChannelCount { means: 3, stds: 3, channels: 1 });
        assert_eq!(
            refused.to_string(),
            "normalize(mean [125.3, 123.0, 113.9], std [63.0, 62.1, 66.7]): 3 means and 3 stds for 1 channels"
        );
        let svhn = Pipeline::from_preset(Preset::Svhn, None).unwrap();
        assert_eq!(svhn.to_string(), "pixels -> scale(1/255)");
        let err = Pipeline::from_preset(Preset::CifarTest(Norm::Zca), None).unwrap_err().to_string();
        assert!(err.contains("needs the ZCA fit"), "{err}");
    }
}
