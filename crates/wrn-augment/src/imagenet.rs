//! The ImageNet recipe of fb.resnet.torch, which the paper used: JPEG bytes from an [`EncodedSource`]
//! are decoded (zune-jpeg, to RGB), cropped and resized by a [`Decode`] stage, then the usual [`Op`]s run
//! on the `[0, 1]` values:
//!
//! - train: `RandomSizedCrop(224)` (8–100 % of the area, aspect 3/4–4/3, either orientation, 10 tries,
//!   then the centred square scaled to 224), [`ColorJitter`] (brightness, contrast, saturation 0.4, in a
//!   random order), [`Lighting`] (AlexNet PCA noise, std 0.1, ImageNet eigenvalues and eigenvectors),
//!   mean/std normalisation, horizontal flip with p = 0.5;
//! - val: the shorter side scaled to 256, the centre 224×224, mean/std normalisation.
//!
//! How a window is resized is the [`Resampling`]: by default Torch's `image.scale(..., 'bicubic')`, as
//! fb.resnet.torch resized ([`scale_bicubic`]: a 4-tap Catmull-Rom with an align-corners mapping and no
//! antialiasing, on the full-size decode, values neither rounded nor clamped); or, opted into as
//! [`Resampling::Fast`], an antialiased Catmull-Rom on bytes (fast_image_resize) of an image decoded at
//! 1/2, 1/4 or 1/8 scale by jpeg-decoder's reduced IDCT when the window to resize is at least twice the
//! output's size (for val, the image at least twice the 256-pixel intermediate, [`Decode::dct_scale`]).
//!
//! A sample of the prepared shards whose bytes do not decode is damage (every image decoded when the
//! split was prepared): the epoch stops with an error naming the split, the shard and the image
//! ([`EncodedSource::decode_failure`]). One of an in-memory source ([`EncodedImages`]) is logged with its
//! name and index, counted in the batch's `decode_failures`, and replaced by zeros (the dataset mean after
//! normalisation): deterministic, and never a panic. The loader runs the ops after decoding as one pass,
//! [`ColourAffine`], when they have the recipe's form.

use std::any::Any;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
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

/// How a window of a decoded image is resized to the sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Resampling {
    /// Torch's `image.scale(..., 'bicubic')`, which fb.resnet.torch (and so the paper) used
    /// ([`scale_bicubic`]): the full-size decode, no antialiasing, `f32` values neither rounded nor
    /// clamped.
    #[default]
    Torch,
    /// Antialiased Catmull-Rom on bytes (fast_image_resize), of an image decoded at 1/2–1/8 scale by the
    /// reduced IDCT where that still holds the output's pixels: cheaper, and not what the paper ran.
    Fast,
}

impl FromStr for Resampling {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Resampling, String> {
        match s {
            "torch" => Ok(Resampling::Torch),
            "fast" => Ok(Resampling::Fast),
            _ => Err(format!("unknown resampling '{s}'; expected torch (fb.resnet.torch's bicubic) or fast")),
        }
    }
}

impl fmt::Display for Resampling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Resampling::Torch => "torch",
            Resampling::Fast => "fast",
        })
    }
}

/// How encoded bytes become a `size x size` RGB sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decode {
    /// fb.resnet.torch `RandomSizedCrop(size)`.
    RandomSizedCrop { size: usize, min_area: f64, ratio: (f64, f64), tries: usize, resampling: Resampling },
    /// fb.resnet.torch `Scale(resize)` (shorter side) then `CenterCrop(size)`.
    ResizeCenterCrop { resize: usize, size: usize, resampling: Resampling },
}

impl Decode {
    pub fn train() -> Decode {
        Decode::RandomSizedCrop {
            size: 224,
            min_area: 0.08,
            ratio: (3.0 / 4.0, 4.0 / 3.0),
            tries: 10,
            resampling: Resampling::Torch,
        }
    }
    pub fn val() -> Decode {
        Decode::ResizeCenterCrop { resize: 256, size: 224, resampling: Resampling::Torch }
    }
    /// The same stage resizing with `resampling`.
    pub fn with_resampling(mut self, with: Resampling) -> Decode {
        match &mut self {
            Decode::RandomSizedCrop { resampling, .. } | Decode::ResizeCenterCrop { resampling, .. } => {
                *resampling = with
            }
        }
        self
    }
    /// How the stage resizes.
    pub fn resampling(&self) -> Resampling {
        match *self {
            Decode::RandomSizedCrop { resampling, .. } | Decode::ResizeCenterCrop { resampling, .. } => resampling,
        }
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
            Decode::ResizeCenterCrop { resize, size, .. } => {
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
    /// Torch resampling: the rows resized, then the sample, as `f32`.
    rows: Vec<f32>,
    values: Vec<f32>,
}

/// A decoded `size x size` sample, HWC RGB: bytes ([`Resampling::Fast`]) or values 0–255 neither rounded
/// nor clamped ([`Resampling::Torch`]).
#[derive(Debug, Clone, Copy)]
pub enum Sample<'a> {
    U8(&'a [u8]),
    F32(&'a [f32]),
}

impl Sample<'_> {
    pub fn len(&self) -> usize {
        match self {
            Sample::U8(v) => v.len(),
            Sample::F32(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
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
        match self.decode(bytes, scratch, rng)? {
            Sample::U8(pixels) => img.load_hwc_u8(pixels, size, size, 3),
            Sample::F32(values) => img.load_hwc_f32(values, size, size, 3),
        }
        Ok(())
    }

    /// Decodes `bytes` into the `size x size` RGB sample (HWC, in `scratch`).
    pub fn decode<'s>(
        &self,
        bytes: &[u8],
        scratch: &'s mut DecodeScratch,
        rng: &mut SampleRng,
    ) -> Result<Sample<'s>, DecodeError> {
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
        if self.resampling() == Resampling::Torch {
            decode_full(&mut decoder, len, &mut scratch.decoded)?;
            let image = (&scratch.decoded[..len], w, h);
            let (window, out) = match intermediate {
                // The window scaled to the sample.
                None => (bx, [0, 0, size, size, size, size]),
                // The whole image scaled to the intermediate size, of which only the centre is kept.
                Some((rw, rh)) => (CropBox { x: 0, y: 0, width: w, height: h }, [bx.x, bx.y, size, size, rw, rh]),
            };
            scale_bicubic(image, window, out, (&mut scratch.rows, &mut scratch.values));
            return Ok(Sample::F32(&scratch.values));
        }
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
                decode_full(&mut decoder, len, &mut scratch.decoded)?;
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
        Ok(Sample::U8(&scratch.sample))
    }
}

/// Decodes the whole image (`len` bytes of RGB) into `decoded`, grown, never shrunk: images of varying
/// sizes cost no fill of the buffer.
fn decode_full(
    decoder: &mut JpegDecoder<ZCursor<&[u8]>>,
    len: usize,
    decoded: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    if decoded.len() < len {
        decoded.resize(len, 0);
    }
    decoder.decode_into(&mut decoded[..len]).map_err(|e| DecodeError(e.to_string()))
}

/// Torch's `image.scale(src, dst_w, dst_h, 'bicubic')` (torch/image `generic/image.c`,
/// `scaleBicubic`), which fb.resnet.torch's `Scale` and `RandomSizedCrop` call: rows first, then
/// columns, each a 4-tap Catmull-Rom in `f32` with an align-corners mapping (output `i` samples input
/// `i · (n_in − 1)/(n_out − 1)`), the taps beyond an edge extrapolated linearly (`2·p1 − p2`), the last
/// output the last input, and no antialiasing: a downscale samples the input, it does not average it.
///
/// `image` is HWC RGB bytes `(pixels, w, h)`; `window` the part of it scaled, to `full_w x full_h` of
/// which `out = [x, y, w, h, full_w, full_h]` keeps the `w x h` at `(x, y)` (the same values as scaling
/// all of it and cropping after, computed only where kept). The result, HWC RGB `f32` values on the
/// bytes' 0–255 scale, is left in `values`; `rows` is scratch.
pub fn scale_bicubic(
    (pixels, width, _height): (&[u8], usize, usize),
    window: CropBox,
    [ox, oy, ow, oh, full_w, full_h]: [usize; 6],
    (rows, values): (&mut Vec<f32>, &mut Vec<f32>),
) {
    // Rows: each of the window's rows to the kept columns of `full_w`, three channels at a time.
    let across = taps(window.width, full_w, ox..ox + ow);
    rows.clear();
    rows.resize(window.height * ow * 3, 0.0);
    for (y, dst) in rows.chunks_exact_mut(ow * 3).enumerate() {
        let src = &pixels[((window.y + y) * width + window.x) * 3..][..window.width * 3];
        for (px, tap) in dst.chunks_exact_mut(3).zip(&across) {
            for (c, v) in px.iter_mut().enumerate() {
                *v = tap.sample(|i| f32::from(src[i * 3 + c]), window.width);
            }
        }
    }
    // Columns: the kept rows of `full_h`, each from up to four of those rows, whole rows at a time.
    let line = ow * 3;
    values.clear();
    values.resize(oh * line, 0.0);
    for (dst, tap) in values.chunks_exact_mut(line).zip(taps(window.height, full_h, oy..oy + oh)) {
        let row = |i: usize| &rows[i * line..(i + 1) * line];
        match tap {
            Tap::Copy(i) => dst.copy_from_slice(row(i)),
            Tap::Cubic(i, t) => {
                let (r1, r2) = (row(i), row(i + 1));
                let (r0, r3) = ((i > 0).then(|| row(i - 1)), (i + 2 < window.height).then(|| row(i + 2)));
                for (e, v) in dst.iter_mut().enumerate() {
                    let (p1, p2) = (r1[e], r2[e]);
                    let p0 = r0.map_or(2.0 * p1 - p2, |r| r[e]);
                    let p3 = r3.map_or(2.0 * p2 - p1, |r| r[e]);
                    *v = catmull_rom(p0, p1, p2, p3, t);
                }
            }
        }
    }
}

/// Where one output of a line of Torch's `scaleCubic_rowcol` comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Tap {
    /// An input as it is: the same length, the last output, or a single input.
    Copy(usize),
    /// The spline between inputs `i` and `i + 1`, at `t` in [0, 1).
    Cubic(usize, f32),
}

impl Tap {
    /// The output, from the `len` inputs `src(i)`; the taps beyond an edge extrapolated linearly.
    fn sample(self, src: impl Fn(usize) -> f32, len: usize) -> f32 {
        match self {
            Tap::Copy(i) => src(i),
            Tap::Cubic(i, t) => {
                let (p1, p2) = (src(i), src(i + 1));
                let p0 = if i > 0 { src(i - 1) } else { 2.0 * p1 - p2 };
                let p3 = if i + 2 < len { src(i + 2) } else { 2.0 * p2 - p1 };
                catmull_rom(p0, p1, p2, p3, t)
            }
        }
    }
}

/// The taps of the outputs `keep` of a line of `src_len` inputs scaled to `dst_len`, as Torch computes
/// them: output `d` at `d · ((src_len − 1)/(dst_len − 1))` in `f32`, the last output the last input.
fn taps(src_len: usize, dst_len: usize, keep: std::ops::Range<usize>) -> Vec<Tap> {
    let last = dst_len - 1;
    let scale = if dst_len == 1 { (src_len - 1) as f32 } else { (src_len - 1) as f32 / last as f32 };
    keep.map(|d| {
        if src_len == dst_len {
            Tap::Copy(d)
        } else if d == last {
            Tap::Copy(src_len - 1)
        } else if src_len == 1 {
            Tap::Copy(0)
        } else {
            let at = d as f32 * scale;
            // Below src_len − 1 for every d < last; the bound guards the float rounding at the edge.
            let i = (at as usize).min(src_len - 2);
            Tap::Cubic(i, at - i as f32)
        }
    })
    .collect()
}

/// Torch's `cubicInterpolate`: the Catmull-Rom spline through `p1` (t = 0) and `p2` (t = 1).
/// Its last product and sum are in `f64`, as the C code's double literal `0.5` makes them.
fn catmull_rom(p0: f32, p1: f32, p2: f32, p3: f32, t: f32) -> f32 {
    let a1 = p2 - p0;
    let a2 = 2.0 * p0 - 5.0 * p1 + 4.0 * p2 - p3;
    let a3 = 3.0 * (p1 - p2) + p3 - p0;
    (f64::from(p1) + 0.5 * f64::from(t) * f64::from(a1 + t * (a2 + t * a3))) as f32
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
        pixels: Sample,
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
        for y in 0..height {
            // Planar values (mirrored if drawn), through planar bytes for a byte sample: simple enough
            // loops to vectorise.
            match pixels {
                Sample::U8(p) => {
                    planar(&p[y * width * 3..][..width * 3], flip, &mut rows.bytes);
                    rows.values.iter_mut().zip(&rows.bytes).for_each(|(v, &byte)| *v = f32::from(byte));
                }
                Sample::F32(p) => planar(&p[y * width * 3..][..width * 3], flip, &mut rows.values),
            }
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

/// One HWC RGB row as three planes (R, G, B) in `out`, mirrored when `flip`.
fn planar<T: Copy>(src: &[T], flip: bool, out: &mut [T]) {
    let width = src.len() / 3;
    let (r, rest) = out.split_at_mut(width);
    let (g, b) = rest.split_at_mut(width);
    let planes = r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut());
    if flip {
        planes.zip(src.chunks_exact(3).rev()).for_each(|(((r, g), b), px)| (*r, *g, *b) = (px[0], px[1], px[2]));
    } else {
        planes.zip(src.chunks_exact(3)).for_each(|(((r, g), b), px)| (*r, *g, *b) = (px[0], px[1], px[2]));
    }
}

/// [`ColourAffine::run`]'s per-worker scratch: one row of each channel, as bytes and as values.
#[derive(Debug, Default)]
pub struct ColourRows {
    bytes: Vec<u8>,
    values: Vec<f32>,
}

/// The mean of each channel of an HWC RGB sample.
fn channel_means(pixels: Sample) -> [f64; 3] {
    match pixels {
        Sample::U8(bytes) => byte_channel_means(bytes),
        Sample::F32(values) => {
            let mut sum = [0f64; 3];
            for px in values.chunks_exact(3) {
                (0..3).for_each(|c| sum[c] += f64::from(px[c]));
            }
            let n = (values.len() / 3).max(1) as f64;
            sum.map(|s| s / n)
        }
    }
}

/// The mean of each channel of HWC RGB bytes. Sixteen pixels at a time into 48 `u32` lanes, so the
/// loop vectorises; each lane takes one byte per 16 pixels, so it cannot overflow below 2^28 pixels.
fn byte_channel_means(pixels: &[u8]) -> [f64; 3] {
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
        let values: Vec<f32> =
            pixels.iter().enumerate().map(|(i, &p)| f32::from(p) * 1.05 - 6.0 + (i % 3) as f32 * 0.37).collect();
        let jitter = ColorJitter { brightness: 0.4, contrast: 0.4, saturation: 0.4 };
        for train in [true, false] {
            let ops = imagenet_ops(train);
            let kernel = ColourAffine::plan(&ops).expect("the recipe has a kernel");
            let (mut orders, mut flips) = (std::collections::HashSet::new(), [0usize; 2]);
            let mut rows = ColourRows::default();
            for i in 0..200 {
                let mut want = Image::new();
                // Bytes, or (every other sample) values as Torch's resampling leaves them: fractional,
                // and beyond 0–255 where the spline overshoots.
                let sample = if i % 2 == 0 { Sample::U8(&pixels) } else { Sample::F32(&values) };
                match sample {
                    Sample::U8(p) => want.load_hwc_u8(p, h, w, 3),
                    Sample::F32(v) => want.load_hwc_f32(v, h, w, 3),
                }
                let mut rng = sample_rng(5, 2, i);
                ops.iter().for_each(|op| op.apply(&mut want, &mut rng));
                let next = rng.gen::<u64>();
                let mut got = vec![f32::NAN; w * h * 3];
                let mut rng = sample_rng(5, 2, i);
                kernel.run(sample, [w, h], &mut rng, &mut rows, &mut got);
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

    /// A whole output line of `src` scaled to `dst_len`.
    fn line(src: &[f32], dst_len: usize) -> Vec<f32> {
        taps(src.len(), dst_len, 0..dst_len).into_iter().map(|t| t.sample(|i| src[i], src.len())).collect()
    }

    #[test]
    fn torch_bicubic_lines_by_hand() {
        // Align-corners mapping: 4 inputs to 7 outputs sample at 0, 0.5, 1, ..., 3; a straight line stays
        // one, edges included (the outer taps are extrapolated linearly).
        assert_eq!(line(&[0.0, 10.0, 20.0, 30.0], 7), [0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0]);
        // Catmull-Rom at t = 1/2: weights −1/16, 9/16, 9/16, −1/16.
        assert_eq!(line(&[0.0, 16.0, 0.0, 0.0], 7)[3], 9.0);
        assert_eq!(line(&[16.0, 0.0, 0.0, 16.0], 7)[3], -2.0, "overshoot is kept: no clamping");
        // At the first interval the missing left tap is 2·p1 − p2: taps (−16, 0, 16, 0) at t = 1/2 give
        // 0 + ½·½·(32 + ½·(32 + ½·(−32))) = 10 (a3 = 3·(0 − 16) + 0 + 16).
        assert_eq!(line(&[0.0, 16.0, 0.0, 0.0], 7)[1], 10.0);
        // No antialiasing: 9 inputs to 3 outputs take inputs 0, 4 and 8, whatever lies between.
        assert_eq!(line(&[1.0, 99.0, 99.0, 99.0, 2.0, 99.0, 99.0, 99.0, 3.0], 3), [1.0, 2.0, 3.0]);
        // The same length is a copy; one input fills the line.
        assert_eq!(line(&[3.0, 1.0, 4.0], 3), [3.0, 1.0, 4.0]);
        assert_eq!(line(&[7.0], 4), [7.0; 4]);
    }

    #[test]
    fn torch_bicubic_computes_only_what_the_crop_keeps_and_the_same_values() {
        let (w, h) = (37, 29);
        let pixels: Vec<u8> = (0..w * h * 3).map(|i| ((i * 31 + i / 11 * 7) % 256) as u8).collect();
        let whole = CropBox { x: 0, y: 0, width: w, height: h };
        let (mut rows, mut full, mut kept) = (Vec::new(), Vec::new(), Vec::new());
        let (fw, fh) = (50, 40);
        scale_bicubic((&pixels, w, h), whole, [0, 0, fw, fh, fw, fh], (&mut rows, &mut full));
        scale_bicubic((&pixels, w, h), whole, [7, 5, 24, 24, fw, fh], (&mut rows, &mut kept));
        for y in 0..24 {
            for x in 0..24 {
                for c in 0..3 {
                    assert_eq!(kept[(y * 24 + x) * 3 + c], full[((y + 5) * fw + x + 7) * 3 + c]);
                }
            }
        }
        // Corners map to corners; a window is scaled as if it were the whole image.
        assert_eq!(full[0], f32::from(pixels[0]));
        assert_eq!(full[(fh * fw - 1) * 3 + 2], f32::from(pixels[(h * w - 1) * 3 + 2]));
        let window = CropBox { x: 3, y: 4, width: 20, height: 10 };
        let cropped: Vec<u8> = (4..14).flat_map(|y| pixels[(y * w + 3) * 3..(y * w + 23) * 3].to_vec()).collect();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        scale_bicubic((&pixels, w, h), window, [0, 0, 16, 16, 16, 16], (&mut rows, &mut a));
        let whole_crop = CropBox { x: 0, y: 0, width: 20, height: 10 };
        scale_bicubic((&cropped, 20, 10), whole_crop, [0, 0, 16, 16, 16, 16], (&mut rows, &mut b));
        assert_eq!(a, b);
    }

    #[test]
    fn channel_means_by_hand() {
        // 37 pixels: two 16-pixel chunks and a 5-pixel tail.
        let pixels: Vec<u8> = (0..37).flat_map(|p| [p as u8, 255, (p * 7 % 256) as u8]).collect();
        let want = [(0..37).sum::<usize>() as f64 / 37.0, 255.0, (0..37).map(|p| p * 7).sum::<usize>() as f64 / 37.0];
        assert_eq!(channel_means(Sample::U8(&pixels)), want);
        let values: Vec<f32> = pixels.iter().map(|&p| f32::from(p) + 0.5).collect();
        assert_eq!(channel_means(Sample::F32(&values)), want.map(|m| m + 0.5));
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
