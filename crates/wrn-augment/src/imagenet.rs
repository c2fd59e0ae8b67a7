//! The ImageNet recipe of fb.resnet.torch, which the paper used: JPEG bytes from an [`EncodedSource`]
//! are decoded (zune-jpeg, to RGB), cropped and resized (fast_image_resize, bicubic/Catmull-Rom) by a
//! [`Decode`] stage, then the usual [`Op`]s run on the `[0, 1]` values:
//!
//! - train: `RandomSizedCrop(224)` (8–100 % of the area, aspect 3/4–4/3, either orientation, 10 tries,
//!   then the centred square scaled to 224), [`ColorJitter`] (brightness, contrast, saturation 0.4, in a
//!   random order), [`Lighting`] (AlexNet PCA noise, std 0.1, ImageNet eigenvalues and eigenvectors),
//!   mean/std normalisation, horizontal flip with p = 0.5;
//! - val: the shorter side scaled to 256, the centre 224×224, mean/std normalisation.
//!
//! A sample of the prepared shards whose bytes do not decode is damage (every image decoded when the
//! split was prepared): the epoch stops with an error naming the split, the shard and the image
//! ([`EncodedSource::decode_failure`]). One of an in-memory source ([`EncodedImages`]) is logged with its
//! name and index, counted in the batch's `decode_failures`, and replaced by zeros (the dataset mean after
//! normalisation): deterministic, and never a panic. When the window to resize is at least twice the output's size (or, for val, the image at
//! least twice the 256-pixel intermediate), the image is decoded at 1/2, 1/4 or 1/8 scale by
//! jpeg-decoder's reduced IDCT ([`Decode::dct_scale`]) and the window taken in the reduced image; otherwise
//! zune-jpeg decodes it at full size. The loader runs the ops after decoding as one pass,
//! [`ColourAffine`], when they have the recipe's form.

use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fast_image_resize::images::{Image as FirImage, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use rand::seq::SliceRandom;
use rand::Rng;
use rand_distr::{Distribution, Normal};
use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

use crate::error::{Error, Result};
use crate::ops::{DivideValues, HFlip, Image, Normalize, Op, ShapeError};
use crate::rng::SampleRng;

/// Encoded images with labels: what an ImageNet shard reader provides (`wrn_data::encoded::EncodedSplit`,
/// the prepared shards, implements it).
pub trait EncodedSource: Send + Sync {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The encoded (JPEG) bytes of sample `i`.
    fn encoded(&self, i: usize) -> &[u8];
    /// The class index of sample `i`.
    fn label(&self, i: usize) -> u16;
    /// A name for messages (a file name within a shard).
    fn name(&self, i: usize) -> String;
    /// When sample `i` does not decode (`why`): the error that stops the epoch, for a source whose images
    /// all decoded when it was made (a failure now is damage), or `None` to replace the sample by zeros
    /// and count it in the batch's `decode_failures`.
    fn decode_failure(&self, _i: usize, _why: &str) -> Option<Error> {
        None
    }
}

/// Encoded images held in memory (tests, benches, small folders).
#[derive(Debug, Clone, Default)]
pub struct EncodedImages {
    items: Vec<(String, Vec<u8>, u16)>,
}

impl EncodedImages {
    pub fn new() -> EncodedImages {
        EncodedImages::default()
    }
    pub fn push(&mut self, name: impl Into<String>, bytes: Vec<u8>, label: u16) {
        self.items.push((name.into(), bytes, label));
    }

    /// The images of a folder in torchvision's `ImageFolder` layout, `<root>/<class>/<file>`: classes are
    /// the sub-folders in sorted order (class index = position, as `ImageFolder` numbers them) and
    /// samples every `.jpg`/`.jpeg` file (any case) within them, sorted by path; other files are ignored.
    /// Returns the images and the class names. So a peer pipeline and this one can read the same files.
    pub fn from_folder(root: &Path) -> Result<(EncodedImages, Vec<String>)> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { path, source }
        };
        let mut classes: Vec<PathBuf> = std::fs::read_dir(root)
            .map_err(io(root))?
            .map(|e| e.map(|e| e.path()).map_err(io(root)))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .filter(|p| p.is_dir())
            .collect();
        classes.sort();
        let mut images = EncodedImages::new();
        for (label, class) in classes.iter().enumerate() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(class)
                .map_err(io(class))?
                .map(|e| e.map(|e| e.path()).map_err(io(class)))
                .collect::<Result<Vec<_>>>()?;
            files.retain(|p| {
                p.is_file()
                    && p.extension()
                        .and_then(|e| e.to_str())
                        .is_some_and(|e| e.eq_ignore_ascii_case("jpg") || e.eq_ignore_ascii_case("jpeg"))
            });
            files.sort();
            for file in files {
                let bytes = std::fs::read(&file).map_err(io(&file))?;
                images.push(file.strip_prefix(root).unwrap_or(&file).display().to_string(), bytes, label as u16);
            }
        }
        if images.is_empty() {
            return Err(Error::Pipeline {
                path: root.to_path_buf(),
                detail: "no JPEG files in class sub-folders (expected <folder>/<class>/<image>.jpg)".into(),
            });
        }
        let names = classes.iter().map(|c| c.file_name().unwrap_or_default().to_string_lossy().into_owned()).collect();
        Ok((images, names))
    }
}

impl EncodedSource for EncodedImages {
    fn len(&self) -> usize {
        self.items.len()
    }
    fn encoded(&self, i: usize) -> &[u8] {
        &self.items[i].1
    }
    fn label(&self, i: usize) -> u16 {
        self.items[i].2
    }
    fn name(&self, i: usize) -> String {
        self.items[i].0.clone()
    }
}

/// A prepared ImageNet split: the JPEG shards `wrn data prepare` wrote, memory-mapped.
impl EncodedSource for wrn_data::encoded::EncodedSplit {
    fn len(&self) -> usize {
        wrn_data::encoded::EncodedSplit::len(self)
    }
    fn encoded(&self, i: usize) -> &[u8] {
        wrn_data::encoded::EncodedSplit::encoded(self, i)
    }
    fn label(&self, i: usize) -> u16 {
        wrn_data::encoded::EncodedSplit::label(self, i)
    }
    fn name(&self, i: usize) -> String {
        wrn_data::encoded::EncodedSplit::name(self, i).to_string()
    }
    /// Every image decoded when the split was prepared: one that does not now is a damaged shard.
    fn decode_failure(&self, i: usize, why: &str) -> Option<Error> {
        Some(Error::Data(self.damaged(i, why)))
    }
}

/// ImageNet channel mean on the `[0, 1]` scale.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviation on the `[0, 1]` scale.
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];
/// PCA of ImageNet's RGB values (fb.resnet.torch `pca.eigval`).
pub const PCA_EIGVAL: [f32; 3] = [0.2175, 0.0188, 0.0045];
/// Eigenvectors as rows of the matrix `eigvec[i][j]` (fb.resnet.torch `pca.eigvec`).
pub const PCA_EIGVEC: [[f32; 3]; 3] =
    [[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]];

/// A window of the decoded image, in its pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropBox {
    pub x: usize,
    pub y: usize,
    pub width: usize,
    pub height: usize,
}

/// How encoded bytes become a `size x size` RGB sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decode {
    /// fb.resnet.torch `RandomSizedCrop(size)`.
    RandomSizedCrop { size: usize, min_area: f64, ratio: (f64, f64), tries: usize },
    /// fb.resnet.torch `Scale(resize)` (shorter side) then `CenterCrop(size)`.
    ResizeCenterCrop { resize: usize, size: usize },
}

impl Decode {
    pub fn train() -> Decode {
        Decode::RandomSizedCrop { size: 224, min_area: 0.08, ratio: (3.0 / 4.0, 4.0 / 3.0), tries: 10 }
    }
    pub fn val() -> Decode {
        Decode::ResizeCenterCrop { resize: 256, size: 224 }
    }
    /// The side of the square sample.
    pub fn size(&self) -> usize {
        match *self {
            Decode::RandomSizedCrop { size, .. } | Decode::ResizeCenterCrop { size, .. } => size,
        }
    }

    /// The window of a `w x h` image that is scaled to the sample, and the intermediate size it is
    /// scaled to before cropping (`None`: the window is scaled straight to `size x size`).
    pub fn draw(&self, w: usize, h: usize, rng: &mut SampleRng) -> (CropBox, Option<(usize, usize)>) {
        match *self {
            Decode::RandomSizedCrop { min_area, ratio, tries, .. } => {
                let area = (w * h) as f64;
                for _ in 0..tries {
                    let target = rng.gen_range(min_area..1.0) * area;
                    let aspect = rng.gen_range(ratio.0..ratio.1);
                    let mut cw = (target * aspect).sqrt().round() as usize;
                    let mut ch = (target / aspect).sqrt().round() as usize;
                    if rng.gen::<f64>() < 0.5 {
                        std::mem::swap(&mut cw, &mut ch);
                    }
                    if cw >= 1 && ch >= 1 && ch <= h && cw <= w {
                        let y = rng.gen_range(0..=h - ch);
                        let x = rng.gen_range(0..=w - cw);
                        return (CropBox { x, y, width: cw, height: ch }, None);
                    }
                }
                let s = w.min(h);
                (CropBox { x: (w - s) / 2, y: (h - s) / 2, width: s, height: s }, None)
            }
            Decode::ResizeCenterCrop { resize, size } => {
                let (rw, rh) = if w <= h {
                    (resize, ((h as f64 / w as f64) * resize as f64) as usize)
                } else {
                    (((w as f64 / h as f64) * resize as f64) as usize, resize)
                };
                let (rw, rh) = (rw.max(size), rh.max(size));
                (CropBox { x: (rw - size) / 2, y: (rh - size) / 2, width: size, height: size }, Some((rw, rh)))
            }
        }
    }

    /// The DCT scale denominator (1, 2, 4 or 8) to decode a `w x h` image at, for the window `bx` and
    /// intermediate size drawn for it: the largest whose reduced image still holds at least as many
    /// pixels, in each direction, as what the window (or the whole image) is resized to.
    pub fn dct_scale(&self, w: usize, h: usize, bx: &CropBox, intermediate: Option<(usize, usize)>) -> usize {
        let fits = |scale: usize| match intermediate {
            None => bx.width / scale >= self.size() && bx.height / scale >= self.size(),
            Some((rw, rh)) => w / scale >= rw && h / scale >= rh,
        };
        [8, 4, 2].into_iter().find(|&scale| fits(scale)).unwrap_or(1)
    }
}

/// Decodes a `w x h` JPEG at `1/scale` of its size with jpeg-decoder's reduced IDCT (zune-jpeg has none)
/// into `out` as RGB, returning the reduced size; `None` (decode at full size instead) when the image's
/// colour format or size is not what its header said.
fn decode_reduced(bytes: &[u8], w: usize, h: usize, scale: usize, out: &mut Vec<u8>) -> Option<(usize, usize)> {
    let mut decoder = jpeg_decoder::Decoder::new(bytes);
    let (rw, rh) = decoder.scale(w.div_ceil(scale) as u16, h.div_ceil(scale) as u16).ok()?;
    let (rw, rh) = (usize::from(rw), usize::from(rh));
    if (rw, rh) != (w.div_ceil(scale), h.div_ceil(scale)) {
        return None;
    }
    let pixels = decoder.decode().ok()?;
    match decoder.info()?.pixel_format {
        jpeg_decoder::PixelFormat::RGB24 if pixels.len() == rw * rh * 3 => *out = pixels,
        jpeg_decoder::PixelFormat::L8 if pixels.len() == rw * rh => {
            out.clear();
            out.extend(pixels.iter().flat_map(|&v| [v, v, v]));
        }
        _ => return None,
    }
    Some((rw, rh))
}

/// Per-worker buffers for decoding and resizing.
#[derive(Default)]
pub struct DecodeScratch {
    decoded: Vec<u8>,
    scaled: Vec<u8>,
    sample: Vec<u8>,
    resizer: Option<Resizer>,
}

/// Why a sample did not decode.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeError(pub String);

impl Decode {
    /// Decodes `bytes` and loads the `size x size` sample into `img` (values 0–255).
    pub fn run(
        &self,
        bytes: &[u8],
        img: &mut Image,
        scratch: &mut DecodeScratch,
        rng: &mut SampleRng,
    ) -> Result<(), DecodeError> {
        let size = self.size();
        let pixels = self.decode(bytes, scratch, rng)?;
        img.load_hwc_u8(pixels, size, size, 3);
        Ok(())
    }

    /// Decodes `bytes` into the `size x size` RGB sample (HWC bytes, in `scratch`).
    pub fn decode<'s>(
        &self,
        bytes: &[u8],
        scratch: &'s mut DecodeScratch,
        rng: &mut SampleRng,
    ) -> Result<&'s [u8], DecodeError> {
        let options = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::RGB);
        let mut decoder = JpegDecoder::new_with_options(ZCursor::new(bytes), options);
        decoder.decode_headers().map_err(|e| DecodeError(e.to_string()))?;
        let (w, h) = decoder.dimensions().ok_or_else(|| DecodeError("no dimensions".into()))?;
        let len = decoder.output_buffer_size().ok_or_else(|| DecodeError("image too large".into()))?;
        if w == 0 || h == 0 || len != w * h * 3 {
            return Err(DecodeError(format!("{w}x{h} image with {len} output bytes")));
        }
        let size = self.size();
        let (bx, intermediate) = self.draw(w, h, rng);
        // Decode at 1/2, 1/4 or 1/8 scale when what is resized still has at least the output's size there;
        // the window keeps its place in the image, in the reduced image's pixels.
        let reduced = match self.dct_scale(w, h, &bx, intermediate) {
            1 => None,
            scale => decode_reduced(bytes, w, h, scale, &mut scratch.decoded),
        };
        let (w, h, window) = match reduced {
            Some((rw, rh)) => {
                let (fx, fy) = (rw as f64 / w as f64, rh as f64 / h as f64);
                let window = [bx.x as f64 * fx, bx.y as f64 * fy, bx.width as f64 * fx, bx.height as f64 * fy];
                (rw, rh, window)
            }
            None => {
                // Grown, never shrunk: images of varying sizes cost no fill of the buffer.
                if scratch.decoded.len() < len {
                    scratch.decoded.resize(len, 0);
                }
                decoder.decode_into(&mut scratch.decoded[..len]).map_err(|e| DecodeError(e.to_string()))?;
                (w, h, [bx.x as f64, bx.y as f64, bx.width as f64, bx.height as f64])
            }
        };
        let resizer = scratch.resizer.get_or_insert_with(Resizer::new);
        let alg = ResizeAlg::Convolution(FilterType::CatmullRom);
        let err = |e: &dyn std::fmt::Display| DecodeError(format!("resize: {e}"));
        let src =
            ImageRef::new(w as u32, h as u32, &scratch.decoded[..w * h * 3], PixelType::U8x3).map_err(|e| err(&e))?;
        scratch.sample.resize(size * size * 3, 0);
        match intermediate {
            None => {
                let mut dst = FirImage::from_slice_u8(size as u32, size as u32, &mut scratch.sample, PixelType::U8x3)
                    .map_err(|e| err(&e))?;
                let [x, y, width, height] = window;
                let opts = ResizeOptions::new().resize_alg(alg).crop(x, y, width, height);
                resizer.resize(&src, &mut dst, &opts).map_err(|e| err(&e))?;
            }
            Some((rw, rh)) => {
                scratch.scaled.resize(rw * rh * 3, 0);
                let mut dst = FirImage::from_slice_u8(rw as u32, rh as u32, &mut scratch.scaled, PixelType::U8x3)
                    .map_err(|e| err(&e))?;
                resizer.resize(&src, &mut dst, &ResizeOptions::new().resize_alg(alg)).map_err(|e| err(&e))?;
                for y in 0..size {
                    let s = ((bx.y + y) * rw + bx.x) * 3;
                    scratch.sample[y * size * 3..(y + 1) * size * 3].copy_from_slice(&scratch.scaled[s..s + size * 3]);
                }
            }
        }
        Ok(&scratch.sample)
    }
}

/// fb.resnet.torch `ColorJitter`: brightness, contrast and saturation, each applied with a factor
/// `alpha = 1 + U(-v, v)` as a blend `x·alpha + target·(1 - alpha)` (target: 0, the mean grey level,
/// the pixel's grey level; grey = 0.299 R + 0.587 G + 0.114 B), in a random order. Expects 3 channels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ColorJitter {
    pub brightness: f32,
    pub contrast: f32,
    pub saturation: f32,
}

/// The three jitter transforms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Jitter {
    Brightness,
    Contrast,
    Saturation,
}

/// The weights of R, G and B in a pixel's grey level.
const GREY: [f32; 3] = [0.299, 0.587, 0.114];

fn grey(r: f32, g: f32, b: f32) -> f32 {
    GREY[0] * r + GREY[1] * g + GREY[2] * b
}

/// The mean grey level of planes `r`, `g`, `b`: eight `f64` partial sums in a fixed order (so the result
/// does not depend on anything but the pixels, and the loop vectorises).
fn mean_grey(r: &[f32], g: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 8;
    let mut partial = [0f64; LANES];
    let chunks = r.chunks_exact(LANES).zip(g.chunks_exact(LANES)).zip(b.chunks_exact(LANES));
    for ((r, g), b) in chunks {
        for k in 0..LANES {
            partial[k] += f64::from(grey(r[k], g[k], b[k]));
        }
    }
    let tail = r.len() / LANES * LANES;
    let rest: f64 = (tail..r.len()).map(|p| f64::from(grey(r[p], g[p], b[p]))).sum();
    ((partial.iter().sum::<f64>() + rest) / r.len().max(1) as f64) as f32
}

impl Jitter {
    /// Applies this transform with factor `alpha` to a CHW RGB image.
    pub fn apply(self, img: &mut Image, alpha: f32) {
        let plane = img.height * img.width;
        let pixels = &mut img.data[..3 * plane];
        match self {
            Jitter::Brightness => pixels.iter_mut().for_each(|v| *v *= alpha),
            Jitter::Contrast => {
                let (r, rest) = pixels.split_at(plane);
                let (g, b) = rest.split_at(plane);
                let shift = mean_grey(r, g, b) * (1.0 - alpha);
                pixels.iter_mut().for_each(|v| *v = *v * alpha + shift);
            }
            Jitter::Saturation => {
                let (r, rest) = pixels.split_at_mut(plane);
                let (g, b) = rest.split_at_mut(plane);
                for ((r, g), b) in r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut()) {
                    let shift = grey(*r, *g, *b) * (1.0 - alpha);
                    *r = *r * alpha + shift;
                    *g = *g * alpha + shift;
                    *b = *b * alpha + shift;
                }
            }
        }
    }
}

impl Op for ColorJitter {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn name(&self) -> String {
        format!("color-jitter({}, {}, {})", self.brightness, self.contrast, self.saturation)
    }
    fn output_shape(&self, input: [usize; 3]) -> Result<[usize; 3], ShapeError> {
        if input[0] != 3 {
            return Err(ShapeError::NotRgb(input[0]));
        }
        Ok(input)
    }
    fn apply(&self, img: &mut Image, rng: &mut SampleRng) {
        for (t, alpha) in self.draw(rng).into_iter().flatten() {
            t.apply(img, alpha);
        }
    }
}

impl ColorJitter {
    /// The transforms in the order they run, each with its factor, drawn from `rng` (a transform whose
    /// range is 0 is `None`).
    pub fn draw(&self, rng: &mut SampleRng) -> [Option<(Jitter, f32)>; 3] {
        let mut order = [
            (Jitter::Brightness, self.brightness),
            (Jitter::Contrast, self.contrast),
            (Jitter::Saturation, self.saturation),
        ];
        order.shuffle(rng);
        order.map(|(t, var)| (var > 0.0).then(|| (t, 1.0 + rng.gen_range(-var..var))))
    }
}

/// AlexNet PCA lighting noise: `alpha ~ N(0, std)` per component, and every pixel of channel `i` gets
/// `Σ_j eigvec[i][j] · alpha_j · eigval[j]` added.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lighting {
    pub std: f32,
    pub eigval: [f32; 3],
    pub eigvec: [[f32; 3]; 3],
}

impl Lighting {
    pub fn imagenet() -> Lighting {
        Lighting { std: 0.1, eigval: PCA_EIGVAL, eigvec: PCA_EIGVEC }
    }
    /// The per-channel shift for component weights `alpha`.
    pub fn shift(&self, alpha: [f32; 3]) -> [f32; 3] {
        std::array::from_fn(|i| (0..3).map(|j| self.eigvec[i][j] * alpha[j] * self.eigval[j]).sum())
    }
    /// A sample's shift, its component weights drawn from `rng`.
    pub fn draw(&self, rng: &mut SampleRng) -> [f32; 3] {
        let normal = Normal::new(0.0, self.std).expect("checked by output_shape");
        self.shift(std::array::from_fn(|_| normal.sample(rng)))
    }
}

impl Op for Lighting {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn name(&self) -> String {
        format!("lighting({})", self.std)
    }
    fn output_shape(&self, input: [usize; 3]) -> Result<[usize; 3], ShapeError> {
        if input[0] != 3 {
            return Err(ShapeError::NotRgb(input[0]));
        }
        if !(self.std >= 0.0 && self.std.is_finite()) {
            return Err(ShapeError::NoiseStd(self.std));
        }
        Ok(input)
    }
    fn apply(&self, img: &mut Image, rng: &mut SampleRng) {
        let shift = self.draw(rng);
        let plane = img.height * img.width;
        for (ch, values) in img.data.chunks_exact_mut(plane).enumerate() {
            for v in values {
                *v += shift[ch];
            }
        }
    }
}

/// The ImageNet ops after decoding in one pass. Scaling, [`ColorJitter`]'s three transforms,
/// [`Lighting`] and [`Normalize`] each map a pixel's RGB values `x` to `M x + b`, with the same `M` and
/// `b` for every pixel of a sample (contrast's target, the mean grey level, follows from the sample's
/// channel means), so together they are one 3×3 matrix and offset per sample. [`ColourAffine::run`]
/// applies it while it writes the decoded bytes into the batch, mirrored when [`HFlip`] draws a flip:
/// one pass instead of one per op, and no `f32` image in between. The random draws are the ops' own, in
/// their order; the values agree with the ops one by one up to float rounding (a test checks it).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ColourAffine {
    divisor: Option<f32>,
    jitter: Option<ColorJitter>,
    lighting: Option<Lighting>,
    normalize: Option<([f32; 3], [f32; 3])>,
    flip: Option<HFlip>,
}

impl ColourAffine {
    /// The one-pass kernel equivalent to `ops`, when they are `[DivideValues] [ColorJitter] [Lighting]
    /// [Normalize] [HFlip]` (each optional, in this order; normalisation of 3 channels).
    pub fn plan(ops: &[Arc<dyn Op>]) -> Option<ColourAffine> {
        let mut it = ops.iter().map(|op| op.as_any()).peekable();
        let mut plan = ColourAffine::default();
        if let Some(s) = it.peek().and_then(|a| a.downcast_ref::<DivideValues>()) {
            plan.divisor = Some(s.divisor);
            it.next();
        }
        if let Some(j) = it.peek().and_then(|a| a.downcast_ref::<ColorJitter>()) {
            plan.jitter = Some(*j);
            it.next();
        }
        if let Some(l) = it.peek().and_then(|a| a.downcast_ref::<Lighting>()) {
            plan.lighting = Some(*l);
            it.next();
        }
        if let Some(n) = it.peek().and_then(|a| a.downcast_ref::<Normalize>()) {
            plan.normalize = Some((n.mean.as_slice().try_into().ok()?, n.std.as_slice().try_into().ok()?));
            it.next();
        }
        if let Some(f) = it.peek().and_then(|a| a.downcast_ref::<HFlip>()) {
            plan.flip = Some(*f);
            it.next();
        }
        it.next().is_none().then_some(plan)
    }

    /// The sample's map on 0–255 values, as rows `[m_c0, m_c1, m_c2, b_c]` per output channel, and
    /// whether it is mirrored; the ops' random parameters are drawn from `rng`. `mean` gives the
    /// sample's channel means (0–255), needed only for contrast.
    fn draw(&self, mean: impl FnOnce() -> [f64; 3], rng: &mut SampleRng) -> ([[f32; 4]; 3], bool) {
        // Row c: output channel c = Σ_j m[c][j] x_j + m[c][3].
        let mut m = [[0f64; 4]; 3];
        let scale = self.divisor.map_or(1.0, |d| 1.0 / f64::from(d));
        (0..3).for_each(|c| m[c][c] = scale);
        let grey_of = |m: &[[f64; 4]; 3], col: usize| (0..3).map(|c| f64::from(GREY[c]) * m[c][col]).sum::<f64>();
        let mut mean = Some(mean);
        for (t, alpha) in self.jitter.map(|j| j.draw(rng)).into_iter().flatten().flatten() {
            let alpha = f64::from(alpha);
            // Brightness blends with 0, contrast with the mean grey level, saturation with each pixel's.
            let target: [f64; 4] = match t {
                Jitter::Brightness => [0.0; 4],
                Jitter::Contrast => {
                    let mu = mean.take().map(|f| f()).unwrap_or_default();
                    let mu = [mu[0], mu[1], mu[2], 1.0];
                    let level = (0..4).map(|col| grey_of(&m, col) * mu[col]).sum();
                    [0.0, 0.0, 0.0, level]
                }
                Jitter::Saturation => std::array::from_fn(|col| grey_of(&m, col)),
            };
            for row in &mut m {
                for col in 0..4 {
                    row[col] = row[col] * alpha + target[col] * (1.0 - alpha);
                }
            }
        }
        if let Some(l) = &self.lighting {
            let shift = l.draw(rng);
            (0..3).for_each(|c| m[c][3] += f64::from(shift[c]));
        }
        if let Some((mean, std)) = &self.normalize {
            for c in 0..3 {
                let inv = 1.0 / f64::from(std[c]);
                m[c][3] -= f64::from(mean[c]);
                m[c].iter_mut().for_each(|v| *v *= inv);
            }
        }
        let flip = self.flip.is_some_and(|f| f.draw(rng));
        (m.map(|row| row.map(|v| v as f32)), flip)
    }

    /// Writes the `width x height` HWC RGB sample `pixels` into `out` (CHW values), drawing the ops'
    /// parameters from `rng`; `rows` is scratch for one row of each channel.
    pub fn run(
        &self,
        pixels: &[u8],
        [width, height]: [usize; 2],
        rng: &mut SampleRng,
        rows: &mut ColourRows,
        out: &mut [f32],
    ) {
        assert_eq!(pixels.len(), width * height * 3, "sample size");
        assert_eq!(out.len(), width * height * 3, "output size");
        let (m, flip) = self.draw(|| channel_means(pixels), rng);
        rows.bytes.resize(3 * width, 0);
        rows.values.resize(3 * width, 0.0);
        let plane = width * height;
        for (y, src) in pixels.chunks_exact(width * 3).enumerate() {
            // Planar bytes (mirrored if drawn), then values: both loops are simple enough to vectorise.
            let (r, rest) = rows.bytes.split_at_mut(width);
            let (g, b) = rest.split_at_mut(width);
            let planar = r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut());
            if flip {
                planar
                    .zip(src.chunks_exact(3).rev())
                    .for_each(|(((r, g), b), px)| (*r, *g, *b) = (px[0], px[1], px[2]));
            } else {
                planar.zip(src.chunks_exact(3)).for_each(|(((r, g), b), px)| (*r, *g, *b) = (px[0], px[1], px[2]));
            }
            rows.values.iter_mut().zip(&rows.bytes).for_each(|(v, &byte)| *v = f32::from(byte));
            let (r, rest) = rows.values.split_at(width);
            let (g, b) = rest.split_at(width);
            for (c, [mr, mg, mb, shift]) in m.into_iter().enumerate() {
                let dst = &mut out[c * plane + y * width..][..width];
                for (((o, r), g), b) in dst.iter_mut().zip(r).zip(g).zip(b) {
                    *o = mr * r + mg * g + mb * b + shift;
                }
            }
        }
    }
}

/// [`ColourAffine::run`]'s per-worker scratch: one row of each channel, as bytes and as values.
#[derive(Debug, Default)]
pub struct ColourRows {
    bytes: Vec<u8>,
    values: Vec<f32>,
}

/// The mean of each channel of HWC RGB bytes. Sixteen pixels at a time into 48 `u32` lanes, so the
/// loop vectorises; each lane takes one byte per 16 pixels, so it cannot overflow below 2^28 pixels.
fn channel_means(pixels: &[u8]) -> [f64; 3] {
    const LANES: usize = 48;
    assert!(pixels.len() / 3 < 1 << 28, "{} pixels", pixels.len() / 3);
    let mut lanes = [0u32; LANES];
    let chunks = pixels.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        lanes.iter_mut().zip(chunk).for_each(|(l, &v)| *l += u32::from(v));
    }
    let mut sum = [0u64; 3];
    for (k, &l) in lanes.iter().enumerate() {
        sum[k % 3] += u64::from(l);
    }
    for (k, &v) in tail.iter().enumerate() {
        sum[k % 3] += u64::from(v);
    }
    let n = (pixels.len() / 3).max(1) as f64;
    sum.map(|s| s as f64 / n)
}

/// The ops after decoding, for the train (`true`) or val recipe.
pub fn imagenet_ops(train: bool) -> Vec<Arc<dyn Op>> {
    let normalize = Arc::new(Normalize { mean: IMAGENET_MEAN.to_vec(), std: IMAGENET_STD.to_vec() });
    if train {
        vec![
            Arc::new(DivideValues { divisor: 255.0 }),
            Arc::new(ColorJitter { brightness: 0.4, contrast: 0.4, saturation: 0.4 }),
            Arc::new(Lighting::imagenet()),
            normalize,
            Arc::new(HFlip { p: 0.5 }),
        ]
    } else {
        vec![Arc::new(DivideValues { divisor: 255.0 }), normalize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::sample_rng;

    fn rgb(values: &[[f32; 3]]) -> Image {
        let mut img = Image::new();
        let flat: Vec<f32> = values.iter().flatten().copied().collect();
        img.load_hwc_f32(&flat, 1, values.len(), 3);
        img
    }

    #[test]
    fn jitter_transforms_by_hand() {
        let px = [[0.2, 0.4, 0.6], [1.0, 0.0, 0.5]];
        let mut img = rgb(&px);
        Jitter::Brightness.apply(&mut img, 1.5);
        for (got, want) in img.data.iter().zip([0.3, 1.5, 0.6, 0.0, 0.9, 0.75]) {
            assert!((got - want).abs() < 1e-6, "{:?}", img.data);
        }
        let mut img = rgb(&px);
        Jitter::Saturation.apply(&mut img, 0.0);
        let (g0, g1) = (0.299 * 0.2 + 0.587 * 0.4 + 0.114 * 0.6, 0.299 + 0.114 * 0.5);
        for (got, want) in img.data.iter().zip([g0, g1, g0, g1, g0, g1]) {
            assert!((got - want).abs() < 1e-6, "{:?}", img.data);
        }
        let mut img = rgb(&px);
        Jitter::Contrast.apply(&mut img, 0.5);
        let m = (g0 + g1) / 2.0;
        for (got, x) in img.data.iter().zip([0.2, 1.0, 0.4, 0.0, 0.6, 0.5]) {
            assert!((got - (0.5 * x + 0.5 * m)).abs() < 1e-6, "{:?}", img.data);
        }
        // Eleven pixels: the mean's eight-lane part and its tail.
        let px: Vec<[f32; 3]> = (0..11).map(|i| [i as f32 / 11.0, (i * i % 7) as f32 / 7.0, 0.5]).collect();
        let mut img = rgb(&px);
        Jitter::Contrast.apply(&mut img, 0.0);
        let m = px.iter().map(|p| f64::from(grey(p[0], p[1], p[2]))).sum::<f64>() / 11.0;
        assert!(img.data.iter().all(|v| (f64::from(*v) - m).abs() < 1e-6), "{:?} vs {m}", img.data);
    }

    #[test]
    fn the_colour_kernel_agrees_with_the_ops_one_by_one() {
        // 23 × 17: the channel sums' 48-byte lanes and tail, and rows that are no multiple of a vector.
        let (w, h) = (23, 17);
        let pixels: Vec<u8> = (0..w * h * 3).map(|i| ((i * 97 + i / 7 * 13) % 256) as u8).collect();
        let jitter = ColorJitter { brightness: 0.4, contrast: 0.4, saturation: 0.4 };
        for train in [true, false] {
            let ops = imagenet_ops(train);
            let kernel = ColourAffine::plan(&ops).expect("the recipe has a kernel");
            let (mut orders, mut flips) = (std::collections::HashSet::new(), [0usize; 2]);
            let mut rows = ColourRows::default();
            for i in 0..200 {
                let mut want = Image::new();
                want.load_hwc_u8(&pixels, h, w, 3);
                let mut rng = sample_rng(5, 2, i);
                ops.iter().for_each(|op| op.apply(&mut want, &mut rng));
                let next = rng.gen::<u64>();
                let mut got = vec![f32::NAN; w * h * 3];
                let mut rng = sample_rng(5, 2, i);
                kernel.run(&pixels, [w, h], &mut rng, &mut rows, &mut got);
                assert_eq!(rng.gen::<u64>(), next, "the kernel draws what the ops draw");
                let worst = got.iter().zip(&want.data).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                assert!(worst < 1e-4, "train {train}, sample {i}: off by {worst}");
                if train {
                    let mut rng = sample_rng(5, 2, i);
                    orders.insert(jitter.draw(&mut rng).map(|t| t.map(|(t, _)| t)));
                    Lighting::imagenet().draw(&mut rng);
                    flips[usize::from(HFlip { p: 0.5 }.draw(&mut rng))] += 1;
                }
            }
            if train {
                assert_eq!(orders.len(), 6, "every order of the jitter transforms is checked");
                assert!(flips.iter().all(|&n| n > 50), "{flips:?}");
            }
        }
        let flip_first: Vec<Arc<dyn Op>> = vec![Arc::new(HFlip { p: 0.5 }), Arc::new(DivideValues { divisor: 255.0 })];
        assert!(ColourAffine::plan(&flip_first).is_none());
        let grey: Vec<Arc<dyn Op>> = vec![Arc::new(Normalize { mean: vec![0.5], std: vec![0.2] })];
        assert!(ColourAffine::plan(&grey).is_none());
    }

    #[test]
    fn channel_means_by_hand() {
        // 37 pixels: two 16-pixel chunks and a 5-pixel tail.
        let pixels: Vec<u8> = (0..37).flat_map(|p| [p as u8, 255, (p * 7 % 256) as u8]).collect();
        let want = [(0..37).sum::<usize>() as f64 / 37.0, 255.0, (0..37).map(|p| p * 7).sum::<usize>() as f64 / 37.0];
        assert_eq!(channel_means(&pixels), want);
    }

    #[test]
    fn lighting_shift_by_hand() {
        let l = Lighting::imagenet();
        let s = l.shift([1.0, 0.0, 0.0]);
        for i in 0..3 {
            assert!((s[i] - PCA_EIGVEC[i][0] * 0.2175).abs() < 1e-7);
        }
        let s = l.shift([0.0, -2.0, 1.0]);
        assert!((s[1] - (-0.0045 * -2.0 * 0.0188 + -0.8140 * 0.0045)).abs() < 1e-7);
    }

    #[test]
    fn random_sized_crops_respect_area_aspect_and_bounds() {
        let d = Decode::train();
        let (w, h) = (500, 375);
        let mut swapped_or_not = [0usize; 2];
        for i in 0..4000 {
            let (b, inter) = d.draw(w, h, &mut sample_rng(1, 0, i));
            assert!(inter.is_none());
            assert!(b.x + b.width <= w && b.y + b.height <= h, "{b:?}");
            let frac = (b.width * b.height) as f64 / (w * h) as f64;
            let aspect = b.width as f64 / b.height as f64;
            let full = b == CropBox { x: 62, y: 0, width: 375, height: 375 };
            assert!(full || (0.07..=1.01).contains(&frac), "{b:?} area {frac}");
            assert!(full || (0.74..=1.35).contains(&aspect) || (0.74..=1.35).contains(&(1.0 / aspect)), "{b:?}");
            swapped_or_not[usize::from(b.width > b.height)] += 1;
        }
        assert!(swapped_or_not.iter().all(|&c| c > 1000), "{swapped_or_not:?}");
        // A strip where no crop of at least 8 % fits falls back to the centred square.
        let (b, _) = d.draw(2000, 10, &mut sample_rng(1, 0, 0));
        assert_eq!(b, CropBox { x: 995, y: 0, width: 10, height: 10 });
    }

    #[test]
    fn val_scales_the_shorter_side_then_takes_the_centre() {
        let (b, inter) = Decode::val().draw(500, 375, &mut sample_rng(0, 0, 0));
        assert_eq!(inter, Some((341, 256)));
        assert_eq!(b, CropBox { x: 58, y: 16, width: 224, height: 224 });
    }
}
