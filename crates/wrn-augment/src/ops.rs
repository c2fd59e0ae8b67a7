//! The operations a pipeline is made of. Each is a small type implementing [`Op`]: it states the shape it
//! produces from the shape it gets, draws its random parameters from the sample's stream, and transforms
//! an [`Image`] (planar CHW `f32`) in place. Buffers live in the worker's `Image` and are reused from one
//! sample to the next, so the hot path allocates nothing once the buffers have grown.

use std::any::Any;
use std::fmt;

use rand::Rng;

use crate::rng::{BatchDraw, SampleRng};

/// A sample in flight: `channels` planes of `height * width` values, plus a scratch buffer of the same
/// kind for operations that cannot work in place.
#[derive(Debug, Clone, Default)]
pub struct Image {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// CHW values.
    pub data: Vec<f32>,
    scratch: Vec<f32>,
}

impl Image {
    pub fn new() -> Image {
        Image::default()
    }

    /// `[channels, height, width]`.
    pub fn shape(&self) -> [usize; 3] {
        [self.channels, self.height, self.width]
    }

    /// Loads an HWC `u8` image (as stored in the prepared cache), keeping the 0–255 scale.
    pub fn load_hwc_u8(&mut self, src: &[u8], height: usize, width: usize, channels: usize) {
        assert_eq!(src.len(), height * width * channels, "source size");
        self.set_shape(channels, height, width);
        let plane = height * width;
        if channels == 3 {
            let (r, rest) = self.data.split_at_mut(plane);
            let (g, b) = rest.split_at_mut(plane);
            for (((px, r), g), b) in src.chunks_exact(3).zip(r).zip(g).zip(b) {
                *r = f32::from(px[0]);
                *g = f32::from(px[1]);
                *b = f32::from(px[2]);
            }
        } else {
            for (p, px) in src.chunks_exact(channels).enumerate() {
                for (ch, &v) in px.iter().enumerate() {
                    self.data[ch * plane + p] = f32::from(v);
                }
            }
        }
    }

    /// Loads an HWC `f32` image (a preprocessed split, e.g. ZCA-whitened).
    pub fn load_hwc_f32(&mut self, src: &[f32], height: usize, width: usize, channels: usize) {
        assert_eq!(src.len(), height * width * channels, "source size");
        self.set_shape(channels, height, width);
        let plane = height * width;
        for (p, px) in src.chunks_exact(channels).enumerate() {
            for (ch, &v) in px.iter().enumerate() {
                self.data[ch * plane + p] = v;
            }
        }
    }

    fn set_shape(&mut self, channels: usize, height: usize, width: usize) {
        (self.channels, self.height, self.width) = (channels, height, width);
        self.data.resize(channels * height * width, 0.0);
    }

    /// Gives an operation a scratch buffer of `[c, h, w]`; after writing it, call [`Image::commit`].
    fn scratch_for(&mut self, c: usize, h: usize, w: usize) -> Vec<f32> {
        let mut s = std::mem::take(&mut self.scratch);
        s.resize(c * h * w, 0.0);
        s
    }

    /// Makes `scratch` (filled with a `[c, h, w]` image) the current data.
    fn commit(&mut self, scratch: Vec<f32>, c: usize, h: usize, w: usize) {
        self.scratch = std::mem::replace(&mut self.data, scratch);
        (self.channels, self.height, self.width) = (c, h, w);
    }
}

/// Why an op cannot take an input shape, or why its own parameters make no sense.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ShapeError {
    #[error("reflect padding of {pad} needs an image larger than {height}x{width}")]
    PaddingTooLarge { pad: usize, height: usize, width: usize },
    #[error("a {crop_height}x{crop_width} crop does not fit in {height}x{width}")]
    CropTooLarge { crop_height: usize, crop_width: usize, height: usize, width: usize },
    #[error("flip probability {0} is not in [0, 1]")]
    FlipProbability(f64),
    #[error("{means} means and {stds} stds for {channels} channels")]
    ChannelCount { means: usize, stds: usize, channels: usize },
    #[error("standard deviations must be positive: {}", list(.0))]
    NonPositiveStd(Vec<f32>),
    #[error("cannot divide by {0}")]
    Divisor(f32),
    #[error("needs 3 channels, got {0}")]
    NotRgb(usize),
    #[error("standard deviation {0} is not a finite non-negative number")]
    NoiseStd(f32),
}

/// `[1.0, 2.5]`, for messages.
fn list(values: &[f32]) -> String {
    format!("{values:?}")
}

/// One step of a pipeline.
pub trait Op: Send + Sync + fmt::Debug {
    /// For recognising op sequences that have a one-pass kernel ([`Fused`], [`crate::imagenet::ColourAffine`]).
    fn as_any(&self) -> &dyn Any;
    /// A short name, e.g. `reflect-pad(4)`.
    fn name(&self) -> String;
    /// The `[c, h, w]` this op produces from an input of `input`, or why it cannot take that input.
    fn output_shape(&self, input: [usize; 3]) -> Result<[usize; 3], ShapeError>;
    /// Transforms `img` in place, drawing any random parameter from `rng` (always the same number of
    /// draws for a given input shape, so later ops see the same stream whatever this op decides).
    fn apply(&self, img: &mut Image, rng: &mut SampleRng);
    /// [`Op::apply`] in a pipeline that draws per batch ([`crate::Draws::PerBatch`]): a crop draws from
    /// the batch's shared stream and a flip follows the batch's choice; ops without such parameters
    /// apply as usual.
    fn apply_in_batch(&self, img: &mut Image, rng: &mut SampleRng, _batch: &BatchDraw) {
        self.apply(img, rng)
    }
}

/// Index of `i` (may be out of `0..n`) under torch's `reflect` padding: the edge pixel is not repeated,
/// so `-1` maps to `1` and `n` to `n - 2`. Requires `-n < i < 2n - 1`.
pub fn reflect_index(i: isize, n: usize) -> usize {
    let n = n as isize;
    let r = if i < 0 {
        -i
    } else if i >= n {
        2 * (n - 1) - i
    } else {
        i
    };
    r as usize
}

/// Reflection padding of `pad` pixels on every side (torch `ReflectionPad2d`, numpy `reflect`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReflectPad {
    pub pad: usize,
}

impl Op for ReflectPad {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn name(&self) -> String {
        format!("reflect-pad({})", self.pad)
    }
    fn output_shape(&self, [c, h, w]: [usize; 3]) -> Result<[usize; 3], ShapeError> {
        if self.pad >= h || self.pad >= w {
            return Err(ShapeError::PaddingTooLarge { pad: self.pad, height: h, width: w });
        }
        Ok([c, h + 2 * self.pad, w + 2 * self.pad])
    }
    fn apply(&self, img: &mut Image, _rng: &mut SampleRng) {
        let (c, h, w, p) = (img.channels, img.height, img.width, self.pad);
        let (ph, pw) = (h + 2 * p, w + 2 * p);
        let mut out = img.scratch_for(c, ph, pw);
        for ch in 0..c {
            let src = &img.data[ch * h * w..(ch + 1) * h * w];
            let dst = &mut out[ch * ph * pw..(ch + 1) * ph * pw];
            for (y, row_out) in dst.chunks_exact_mut(pw).enumerate() {
                let sy = reflect_index(y as isize - p as isize, h);
                let row = &src[sy * w..(sy + 1) * w];
                for x in 0..p {
                    row_out[x] = row[p - x];
                    row_out[p + w + x] = row[w - 2 - x];
                }
                row_out[p..p + w].copy_from_slice(row);
            }
        }
        img.commit(out, c, ph, pw);
    }
}

/// A uniformly random `height x width` window: every offset in `0..=H-height` x `0..=W-width` is equally
/// likely (81 offsets for 32 out of 40). Draws the row offset, then the column offset.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomCrop {
    pub height: usize,
    pub width: usize,
}

impl RandomCrop {
    /// The offsets this op uses for an input of `h x w`, drawn from `rng`.
    pub fn draw(&self, h: usize, w: usize, rng: &mut SampleRng) -> (usize, usize) {
        let dy = rng.gen_range(0..=h - self.height);
        let dx = rng.gen_range(0..=w - self.width);
        (dy, dx)
    }

    /// The offsets the whole batch shares for an input of `h x w`, drawn from a copy of its stream.
    pub fn draw_in_batch(&self, h: usize, w: usize, batch: &BatchDraw) -> (usize, usize) {
        self.draw(h, w, &mut batch.shared.clone())
    }
}

impl Op for RandomCrop {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn name(&self) -> String {
        format!("random-crop({}x{})", self.height, self.width)
    }
    fn output_shape(&self, [c, h, w]: [usize; 3]) -> Result<[usize; 3], ShapeError> {
        if self.height > h || self.width > w {
            return Err(ShapeError::CropTooLarge {
                crop_height: self.height,
                crop_width: self.width,
                height: h,
                width: w,
            });
        }
        Ok([c, self.height, self.width])
    }
    fn apply(&self, img: &mut Image, rng: &mut SampleRng) {
        let (dy, dx) = self.draw(img.height, img.width, rng);
        crop(img, dy, dx, self.height, self.width);
    }
    fn apply_in_batch(&self, img: &mut Image, _rng: &mut SampleRng, batch: &BatchDraw) {
        let (dy, dx) = self.draw_in_batch(img.height, img.width, batch);
        crop(img, dy, dx, self.height, self.width);
    }
}

/// The centred `height x width` window (offsets rounded down).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CenterCrop {
    pub height: usize,
    pub width: usize,
}

impl Op for CenterCrop {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn name(&self) -> String {
        format!("center-crop({}x{})", self.height, self.width)
    }
    fn output_shape(&self, input: [usize; 3]) -> Result<[usize; 3], ShapeError> {
        RandomCrop { height: self.height, width: self.width }.output_shape(input)
    }
    fn apply(&self, img: &mut Image, _rng: &mut SampleRng) {
        let (dy, dx) = ((img.height - self.height) / 2, (img.width - self.width) / 2);
        crop(img, dy, dx, self.height, self.width);
    }
}

fn crop(img: &mut Image, dy: usize, dx: usize, ch_: usize, cw: usize) {
    let (c, h, w) = (img.channels, img.height, img.width);
    let mut out = img.scratch_for(c, ch_, cw);
    for ch in 0..c {
        let src = &img.data[ch * h * w..(ch + 1) * h * w];
        let dst = &mut out[ch * ch_ * cw..(ch + 1) * ch_ * cw];
        for (y, row_out) in dst.chunks_exact_mut(cw).enumerate() {
            let s = (dy + y) * w + dx;
            row_out.copy_from_slice(&src[s..s + cw]);
        }
    }
    img.commit(out, c, ch_, cw);
}

/// Mirrors the image left-right with probability `p` (one draw per sample).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HFlip {
    pub p: f64,
}

impl HFlip {
    /// Whether this op flips, drawn from `rng`.
    pub fn draw(&self, rng: &mut SampleRng) -> bool {
        rng.gen_bool(self.p)
    }
}

impl Op for HFlip {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn name(&self) -> String {
        format!("hflip({})", self.p)
    }
    fn output_shape(&self, input: [usize; 3]) -> Result<[usize; 3], ShapeError> {
        if !(0.0..=1.0).contains(&self.p) {
            return Err(ShapeError::FlipProbability(self.p));
        }
        Ok(input)
    }
    fn apply(&self, img: &mut Image, rng: &mut SampleRng) {
        if self.draw(rng) {
            mirror(img);
        }
    }
    fn apply_in_batch(&self, img: &mut Image, _rng: &mut SampleRng, batch: &BatchDraw) {
        if batch.flip {
            mirror(img);
        }
    }
}

fn mirror(img: &mut Image) {
    for row in img.data.chunks_exact_mut(img.width) {
        row.reverse();
    }
}

/// Per-channel `(x - mean[c]) / std[c]`, computed as `(x - mean[c]) * (1 / std[c])`.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalize {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Normalize {
    /// The paper's CIFAR constants on the 0–255 scale (used for CIFAR-10 and CIFAR-100 alike).
    pub fn cifar() -> Normalize {
        Normalize { mean: CIFAR_MEAN.to_vec(), std: CIFAR_STD.to_vec() }
    }
}

/// CIFAR per-channel mean on the 0–255 scale (the paper's `meanstd` preprocessing).
pub const CIFAR_MEAN: [f32; 3] = [125.3, 123.0, 113.9];
/// CIFAR per-channel standard deviation on the 0–255 scale.
pub const CIFAR_STD: [f32; 3] = [63.0, 62.1, 66.7];

impl Op for Normalize {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn name(&self) -> String {
        format!("normalize(mean {:?}, std {:?})", self.mean, self.std)
    }
    fn output_shape(&self, input: [usize; 3]) -> Result<[usize; 3], ShapeError> {
        if self.mean.len() != input[0] || self.std.len() != input[0] {
            return Err(ShapeError::ChannelCount { means: self.mean.len(), stds: self.std.len(), channels: input[0] });
        }
        if self.std.iter().any(|&s| s <= 0.0 || !s.is_finite()) {
            return Err(ShapeError::NonPositiveStd(self.std.clone()));
        }
        Ok(input)
    }
    fn apply(&self, img: &mut Image, _rng: &mut SampleRng) {
        let plane = img.height * img.width;
        for (ch, values) in img.data.chunks_exact_mut(plane).enumerate() {
            let (m, inv) = (self.mean[ch], 1.0 / self.std[ch]);
            for v in values {
                *v = (*v - m) * inv;
            }
        }
    }
}

/// Divides every value by `divisor` (SVHN: 255, into [0, 1]); a true division, correctly rounded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DivideValues {
    pub divisor: f32,
}

impl Op for DivideValues {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn name(&self) -> String {
        format!("scale(1/{})", self.divisor)
    }
    fn output_shape(&self, input: [usize; 3]) -> Result<[usize; 3], ShapeError> {
        if self.divisor == 0.0 || !self.divisor.is_finite() {
            return Err(ShapeError::Divisor(self.divisor));
        }
        Ok(input)
    }
    fn apply(&self, img: &mut Image, _rng: &mut SampleRng) {
        for v in &mut img.data {
            *v /= self.divisor;
        }
    }
}

/// The per-value step a [`Fused`] chain ends with. A loader delivering `u8` batches leaves it to the
/// consumer ([`crate::Loader::deferred_step`]), which applies it with the same expression on its side.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueStep {
    /// The byte value as it is.
    None,
    /// `(v - mean[c]) * inv_std[c]`, exactly as [`Normalize`] computes it.
    Normalize { mean: Vec<f32>, inv_std: Vec<f32> },
    /// `v / divisor`, exactly as [`DivideValues`].
    Divide(f32),
}

impl ValueStep {
    /// The output value of byte `v` in channel `ch`.
    pub fn apply(&self, v: u8, ch: usize) -> f32 {
        let v = f32::from(v);
        match self {
            ValueStep::None => v,
            ValueStep::Normalize { mean, inv_std } => (v - mean[ch]) * inv_std[ch],
            ValueStep::Divide(d) => v / d,
        }
    }
}

/// One pass from `u8` HWC pixels to the op chain's `f32` CHW output, for chains of the form
/// `[ReflectPad] [RandomCrop] [HFlip] [Normalize | DivideValues]` (each optional, in this order): the CIFAR and
/// SVHN presets. It draws the same random numbers in the same order as the ops themselves and computes
/// every value with the same expression, so its output is bit-identical to running the ops one by one
/// (a test checks it); it only skips the intermediate images. [`Fused::run_bytes`] stops before the value
/// step and writes the bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Fused {
    pad: usize,
    crop: Option<RandomCrop>,
    flip: Option<HFlip>,
    post: ValueStep,
    /// `post.apply(v, ch)` for every byte `v`, per channel (3 channels; empty otherwise).
    lut: Vec<[f32; 256]>,
}

impl Fused {
    /// The fused kernel equivalent to `ops`, when there is one.
    pub fn plan(ops: &[std::sync::Arc<dyn Op>]) -> Option<Fused> {
        let mut it = ops.iter().map(|o| o.as_any()).peekable();
        let mut fused = Fused { pad: 0, crop: None, flip: None, post: ValueStep::None, lut: vec![] };
        if let Some(pad) = it.peek().and_then(|a| a.downcast_ref::<ReflectPad>()).map(|p| p.pad) {
            fused.pad = pad;
            it.next();
        }
        if let Some(crop) = it.peek().and_then(|a| a.downcast_ref::<RandomCrop>()).copied() {
            fused.crop = Some(crop);
            it.next();
        }
        if let Some(flip) = it.peek().and_then(|a| a.downcast_ref::<HFlip>()).copied() {
            fused.flip = Some(flip);
            it.next();
        }
        if let Some(a) = it.next() {
            if let Some(n) = a.downcast_ref::<Normalize>() {
                let inv_std = n.std.iter().map(|s| 1.0 / s).collect();
                fused.post = ValueStep::Normalize { mean: n.mean.clone(), inv_std };
            } else if let Some(s) = a.downcast_ref::<DivideValues>() {
                fused.post = ValueStep::Divide(s.divisor);
            } else {
                return None;
            }
        }
        if !matches!(&fused.post, ValueStep::Normalize { mean, .. } if mean.len() != 3) {
            fused.lut = (0..3).map(|ch| std::array::from_fn(|v| fused.post.apply(v as u8, ch))).collect();
        }
        it.next().is_none().then_some(fused)
    }

    /// The value step the chain ends with.
    pub fn value_step(&self) -> &ValueStep {
        &self.post
    }

    /// Runs the chain on an HWC `u8` image of `[c, h, w]` (already checked by the ops' `output_shape`),
    /// writing the CHW output into `out`. `cols` is a reusable buffer.
    ///
    /// One pass: padding, crop and mirror only decide which source pixel each output pixel reads, so they
    /// become a source row per output row and a table of source columns per sample (reflection and
    /// mirror folded in), and each output value is its source byte looked up in the channel's table.
    pub fn run(&self, src: &[u8], shape: [usize; 3], draw: Draw, cols: &mut Vec<usize>, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if shape[0] == 3 && std::arch::is_x86_feature_detected!("ssse3") {
            // SAFETY: the CPU has SSSE3.
            return unsafe { self.run_rgb_ssse3(src, shape, draw, cols, out) };
        }
        match (shape[0], &self.lut[..]) {
            (3, [l0, l1, l2]) => {
                let lut = |v: u8, ch: usize| [l0, l1, l2][ch][usize::from(v)];
                self.gather(src, shape, draw, cols, out, lut)
            }
            _ => self.gather(src, shape, draw, cols, out, |v, ch| self.post.apply(v, ch)),
        }
    }

    /// [`Fused::run`] without the value step: the CHW bytes the step would turn into values (the same
    /// random draws, so `post.apply` of each byte is the value `run` writes).
    pub fn run_bytes(&self, src: &[u8], shape: [usize; 3], draw: Draw, cols: &mut Vec<usize>, out: &mut [u8]) {
        self.gather(src, shape, draw, cols, out, |v, _| v)
    }

    /// [`Fused::run`] for 3 channels with SSSE3: where an output row reads consecutive source pixels
    /// (everywhere but the reflected border), four pixels at a time are one 16-byte load, one byte shuffle
    /// per channel into four 32-bit lanes and four values stored at once; the border and a row's last
    /// pixels go through the table. The same draws and the same `f32` operations per value as the table
    /// (a conversion of the byte, then `(v - mean) * inv_std` or `v / divisor`), so the same bits.
    ///
    /// # Safety
    /// The CPU must support SSSE3.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "ssse3")]
    unsafe fn run_rgb_ssse3(
        &self,
        src: &[u8],
        [c, h, w]: [usize; 3],
        draw: Draw,
        cols: &mut Vec<usize>,
        out: &mut [f32],
    ) {
        let Placement { dy, dx, oh, ow, flip } = self.place([c, h, w], draw, cols);
        let p = self.pad as isize;
        // The output columns whose source column is inside the image (not reflected) read one run of
        // consecutive source pixels, ascending, or descending when mirrored.
        let [iw, iow, idx] = [w, ow, dx].map(|v| v as isize);
        let (lo, hi) = if flip { (iow + idx - p - iw, iow + idx - p) } else { (p - idx, iw + p - idx) };
        let (lo, hi) = (lo.clamp(0, iow) as usize, hi.clamp(0, iow) as usize);
        let lut = |v: u8, ch: usize| self.lut[ch][usize::from(v)];
        let plane = oh * ow;
        let (r, rest) = out.split_at_mut(plane);
        let (g, b) = rest.split_at_mut(plane);
        let outs = r.chunks_exact_mut(ow).zip(g.chunks_exact_mut(ow)).zip(b.chunks_exact_mut(ow));
        for (y, ((r, g), b)) in outs.enumerate() {
            let row = reflect_index((y + dy) as isize - p, h) * w * c;
            // SAFETY: SSSE3 is present (the caller's promise); `vector_run` bounds its loads by `src` and
            // its stores by the rows.
            let done = unsafe {
                simd::vector_run(
                    src,
                    row + cols.get(lo).copied().unwrap_or(0),
                    flip,
                    hi - lo,
                    &self.post,
                    [&mut r[lo..], &mut g[lo..], &mut b[lo..]],
                )
            };
            for x in (0..lo).chain(lo + done..ow) {
                let px = &src[row + cols[x]..][..3];
                (r[x], g[x], b[x]) = (lut(px[0], 0), lut(px[1], 1), lut(px[2], 2));
            }
        }
    }

    /// Draws the crop and the flip for an image of `[c, h, w]` and fills `cols` with the source byte
    /// offset (within a row) of each output column, reflection and mirror folded in.
    fn place(&self, [c, h, w]: [usize; 3], draw: Draw, cols: &mut Vec<usize>) -> Placement {
        let (ph, pw) = (h + 2 * self.pad, w + 2 * self.pad);
        let (oh, ow) = self.crop.map_or((ph, pw), |crop| (crop.height, crop.width));
        // The crop is drawn before the flip, as the ops one by one draw them.
        let ((dy, dx), flip) = match draw {
            Draw::Sample(rng) => {
                (self.crop.map_or((0, 0), |crop| crop.draw(ph, pw, rng)), self.flip.is_some_and(|f| f.draw(rng)))
            }
            Draw::Batch(batch) => {
                (self.crop.map_or((0, 0), |crop| crop.draw_in_batch(ph, pw, batch)), self.flip.is_some() && batch.flip)
            }
        };
        cols.clear();
        cols.extend((0..ow).map(|x| {
            let x = if flip { ow - 1 - x } else { x };
            reflect_index((x + dx) as isize - self.pad as isize, w) * c
        }));
        Placement { dy, dx, oh, ow, flip }
    }

    fn gather<T: Copy>(
        &self,
        src: &[u8],
        [c, h, w]: [usize; 3],
        draw: Draw,
        cols: &mut Vec<usize>,
        out: &mut [T],
        value: impl Fn(u8, usize) -> T,
    ) {
        let Placement { dy, oh, ow, .. } = self.place([c, h, w], draw, cols);
        let p = self.pad as isize;
        let rows = (0..oh).map(|y| &src[reflect_index((y + dy) as isize - p, h) * w * c..][..w * c]);
        let plane = oh * ow;
        if c == 3 {
            // One pixel's three bytes per step (the presets' images).
            let (r, rest) = out.split_at_mut(plane);
            let (g, b) = rest.split_at_mut(plane);
            let outs = r.chunks_exact_mut(ow).zip(g.chunks_exact_mut(ow)).zip(b.chunks_exact_mut(ow));
            for (row, ((r, g), b)) in rows.zip(outs) {
                for (((&sx, r), g), b) in cols.iter().zip(r).zip(g).zip(b) {
                    let px = &row[sx..sx + 3];
                    (*r, *g, *b) = (value(px[0], 0), value(px[1], 1), value(px[2], 2));
                }
            }
        } else {
            for (y, row) in rows.enumerate() {
                for ch in 0..c {
                    let o = &mut out[ch * plane + y * ow..][..ow];
                    for (v, &sx) in o.iter_mut().zip(cols.iter()) {
                        *v = value(row[sx + ch], ch);
                    }
                }
            }
        }
    }
}

/// Where a fused chain's crop and flip come from: the sample's own stream, or its batch's shared draws
/// ([`crate::Draws::PerBatch`]).
pub enum Draw<'a> {
    Sample(&'a mut SampleRng),
    Batch(&'a BatchDraw),
}

/// A sample's drawn window in the padded image (`oh x ow` at `(dy, dx)`) and whether it is mirrored.
struct Placement {
    dy: usize,
    dx: usize,
    oh: usize,
    ow: usize,
    flip: bool,
}

/// The vector part of [`Fused::run_rgb_ssse3`].
#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    use super::ValueStep;

    /// Writes the values of `n` RGB pixels into the channel rows `out`: output pixel `k` is the source
    /// pixel at byte `first + 3k`, or `first - 3k` when `mirrored`. Works four pixels at a time while a
    /// 16-byte load stays inside `src`, and returns how many pixels it wrote from the first (at most `n`;
    /// 0 when `n < 4`).
    ///
    /// # Safety
    /// The CPU must support SSSE3.
    #[inline]
    #[target_feature(enable = "ssse3")]
    pub unsafe fn vector_run(
        src: &[u8],
        first: usize,
        mirrored: bool,
        n: usize,
        step: &ValueStep,
        out: [&mut [f32]; 3],
    ) -> usize {
        // Byte k of the 16 loaded goes to 32-bit lane k / 4 where the mask holds its index; -1 clears.
        let lanes = |order: [i8; 4], ch: i8| {
            let [a, b, c, d] = order.map(|o| o + ch);
            _mm_setr_epi8(a, -1, -1, -1, b, -1, -1, -1, c, -1, -1, -1, d, -1, -1, -1)
        };
        let order = if mirrored { [9, 6, 3, 0] } else { [0, 3, 6, 9] };
        let masks = [lanes(order, 0), lanes(order, 1), lanes(order, 2)];
        let n = n.min(out.iter().map(|o| o.len()).min().unwrap_or(0));
        if n < 4 {
            return 0;
        }
        // The step (of 3 channels) as vectors: `(v - sub) * mul`, with `None` as `(v - 0) * 1`, or `v / div`
        // (no multiplication by a reciprocal).
        let (sub, mul, div) = match step {
            ValueStep::Normalize { mean, inv_std } => {
                (std::array::from_fn(|c| _mm_set1_ps(mean[c])), std::array::from_fn(|c| _mm_set1_ps(inv_std[c])), None)
            }
            ValueStep::None => ([_mm_setzero_ps(); 3], [_mm_set1_ps(1.0); 3], None),
            ValueStep::Divide(d) => ([_mm_setzero_ps(); 3], [_mm_setzero_ps(); 3], Some(_mm_set1_ps(*d))),
        };
        // Groups of four from pixel 0, the last one moved back to end at pixel n (it rewrites a few values
        // with the same bits rather than leave them to the table).
        let mut done = 0;
        for at in (0..n - 3).step_by(4).chain([n - 4]) {
            // The leftmost source byte of these four pixels.
            let start = if mirrored { first.checked_sub(3 * at + 9) } else { Some(first + 3 * at) };
            let Some(start) = start.filter(|s| s + 16 <= src.len()) else { break };
            let bytes = _mm_loadu_si128(src.as_ptr().add(start).cast());
            for ch in 0..3 {
                let v = _mm_cvtepi32_ps(_mm_shuffle_epi8(bytes, masks[ch]));
                let v = match div {
                    None => _mm_mul_ps(_mm_sub_ps(v, sub[ch]), mul[ch]),
                    Some(d) => _mm_div_ps(v, d),
                };
                _mm_storeu_ps(out[ch].as_mut_ptr().add(at), v);
            }
            done = at + 4;
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::sample_rng;

    fn image(c: usize, h: usize, w: usize, values: &[f32]) -> Image {
        Image { channels: c, height: h, width: w, data: values.to_vec(), scratch: vec![] }
    }

    #[test]
    fn reflect_padding_matches_hand_computed_values() {
        // One 3x4 channel, values 1..=12, padded by 2 (the edge pixel is not repeated).
        let src: Vec<f32> = (1..=12).map(|v| v as f32).collect();
        let mut img = image(1, 3, 4, &src);
        ReflectPad { pad: 2 }.apply(&mut img, &mut sample_rng(0, 0, 0));
        #[rustfmt::skip]
        let expected: [f32; 7 * 8] = [
            11., 10.,  9., 10., 11., 12., 11., 10.,
             7.,  6.,  5.,  6.,  7.,  8.,  7.,  6.,
             3.,  2.,  1.,  2.,  3.,  4.,  3.,  2.,
             7.,  6.,  5.,  6.,  7.,  8.,  7.,  6.,
            11., 10.,  9., 10., 11., 12., 11., 10.,
             7.,  6.,  5.,  6.,  7.,  8.,  7.,  6.,
             3.,  2.,  1.,  2.,  3.,  4.,  3.,  2.,
        ];
        assert_eq!(img.shape(), [1, 7, 8]);
        assert_eq!(img.data, expected);
    }

    #[test]
    fn reflect_padding_of_a_cifar_image_at_every_border() {
        // Pixel (y, x) of channel ch holds 1000*ch + 32*y + x, so every source position is recognisable.
        let src: Vec<f32> = (0..3 * 32 * 32).map(|i| (1000 * (i / 1024) + i % 1024) as f32).collect();
        let mut img = image(3, 32, 32, &src);
        ReflectPad { pad: 4 }.apply(&mut img, &mut sample_rng(0, 0, 0));
        assert_eq!(img.shape(), [3, 40, 40]);
        let at = |ch: usize, y: usize, x: usize| img.data[ch * 1600 + y * 40 + x];
        let src_at = |ch: usize, y: usize, x: usize| (1000 * ch + 32 * y + x) as f32;
        // Corners: padded (0,0) is source (4,4); padded (39,39) is source (27,27); (3,36) is (1,30).
        assert_eq!(at(0, 0, 0), src_at(0, 4, 4));
        assert_eq!(at(1, 39, 39), src_at(1, 27, 27));
        assert_eq!(at(2, 3, 36), src_at(2, 1, 30));
        // Each border next to the image mirrors the pixel one in from the edge, never the edge itself.
        for i in 0..32 {
            assert_eq!(at(0, 3, 4 + i), src_at(0, 1, i), "top");
            assert_eq!(at(0, 36, 4 + i), src_at(0, 30, i), "bottom");
            assert_eq!(at(2, 4 + i, 3), src_at(2, i, 1), "left");
            assert_eq!(at(2, 4 + i, 36), src_at(2, i, 30), "right");
            assert_eq!(at(1, 4 + i, 4 + i), src_at(1, i, i), "interior");
        }
    }

    #[test]
    fn padding_wider_than_the_image_is_refused() {
        let refused = ReflectPad { pad: 4 }.output_shape([3, 4, 8]).unwrap_err();
        assert_eq!(refused, ShapeError::PaddingTooLarge { pad: 4, height: 4, width: 8 });
        assert!(refused.to_string().contains("larger than 4x8"), "{refused}");
        assert_eq!(ReflectPad { pad: 4 }.output_shape([3, 32, 32]), Ok([3, 40, 40]));
    }

    #[test]
    fn crop_flip_normalise_and_scale_by_hand() {
        let src: Vec<f32> = (0..2 * 3 * 3).map(|v| v as f32).collect();
        let mut img = image(2, 3, 3, &src);
        CenterCrop { height: 1, width: 2 }.apply(&mut img, &mut sample_rng(0, 0, 0));
        // Offsets (1, 0): row 1, columns 0..2 of each channel.
        assert_eq!((img.shape(), img.data.clone()), ([2, 1, 2], vec![3., 4., 12., 13.]));
        let mut rng = sample_rng(0, 0, 0);
        let flips = (0..64).map(|_| HFlip { p: 0.5 }.draw(&mut rng)).collect::<Vec<_>>();
        let first_flip = flips.iter().position(|&f| f).unwrap();
        let mut rng = sample_rng(0, 0, 0);
        for _ in 0..first_flip {
            HFlip { p: 0.5 }.draw(&mut rng);
        }
        HFlip { p: 0.5 }.apply(&mut img, &mut rng);
        assert_eq!(img.data, vec![4., 3., 13., 12.]);
        Normalize { mean: vec![3.0, 10.0], std: vec![2.0, 4.0] }.apply(&mut img, &mut rng);
        assert_eq!(img.data, vec![0.5, 0.0, 0.75, 0.5]);
        let mut px = image(1, 1, 2, &[255.0, 51.0]);
        DivideValues { divisor: 255.0 }.apply(&mut px, &mut rng);
        assert_eq!(px.data, vec![1.0, 0.2]);
        assert_eq!(HFlip { p: 1.5 }.output_shape([1, 1, 1]), Err(ShapeError::FlipProbability(1.5)));
        assert!(Normalize::cifar().output_shape([1, 32, 32]).unwrap_err().to_string().contains("3 means"));
    }

    #[test]
    fn the_fused_kernel_is_bit_identical_to_the_ops_one_by_one() {
        use std::sync::Arc;
        type Chain = Vec<Arc<dyn Op>>;
        let chains: Vec<(Chain, [usize; 3])> = vec![
            (
                vec![
                    Arc::new(ReflectPad { pad: 4 }),
                    Arc::new(RandomCrop { height: 32, width: 32 }),
                    Arc::new(HFlip { p: 0.5 }),
                    Arc::new(Normalize::cifar()),
                ],
                [3, 32, 32],
            ),
            (vec![Arc::new(Normalize::cifar())], [3, 32, 32]),
            (vec![Arc::new(DivideValues { divisor: 255.0 })], [3, 32, 32]),
            (
                vec![
                    Arc::new(ReflectPad { pad: 2 }),
                    Arc::new(RandomCrop { height: 7, width: 5 }),
                    Arc::new(HFlip { p: 0.3 }),
                ],
                [2, 6, 9],
            ),
            (vec![Arc::new(RandomCrop { height: 3, width: 3 }), Arc::new(DivideValues { divisor: 7.0 })], [1, 5, 4]),
            // Rows of 5 and 11 pixels: a vector group and the rest, the reflected border on either side.
            (
                vec![
                    Arc::new(ReflectPad { pad: 2 }),
                    Arc::new(RandomCrop { height: 7, width: 11 }),
                    Arc::new(HFlip { p: 0.5 }),
                    Arc::new(DivideValues { divisor: 3.0 }),
                ],
                [3, 6, 9],
            ),
            (vec![Arc::new(ReflectPad { pad: 1 }), Arc::new(RandomCrop { height: 4, width: 5 })], [3, 6, 9]),
        ];
        for (ops, [c, h, w]) in chains {
            let fused = Fused::plan(&ops).unwrap_or_else(|| panic!("no kernel for {ops:?}"));
            let out_shape = ops.iter().try_fold([c, h, w], |s, op| op.output_shape(s)).unwrap();
            let len: usize = out_shape.iter().product();
            let (mut img, mut cols, mut out) = (Image::new(), Vec::new(), vec![0f32; len]);
            for i in 0..200u64 {
                let src: Vec<u8> = (0..c * h * w).map(|k| (k as u64 * 37 + i * 101) as u8).collect();
                img.load_hwc_u8(&src, h, w, c);
                let mut rng = sample_rng(9, 1, i);
                for op in &ops {
                    op.apply(&mut img, &mut rng);
                }
                fused.run(&src, [c, h, w], Draw::Sample(&mut sample_rng(9, 1, i)), &mut cols, &mut out);
                assert_eq!(img.shape(), out_shape);
                assert!(img.data.iter().zip(&out).all(|(a, b)| a.to_bits() == b.to_bits()), "{ops:?} sample {i}");
                // The bytes before the value step, turned into values by it, are the same values.
                let mut bytes = vec![0u8; len];
                fused.run_bytes(&src, [c, h, w], Draw::Sample(&mut sample_rng(9, 1, i)), &mut cols, &mut bytes);
                let plane = out_shape[1] * out_shape[2];
                let step = fused.value_step();
                let values = bytes.iter().enumerate().map(|(k, &v)| step.apply(v, k / plane));
                assert!(values.zip(&out).all(|(a, b)| a.to_bits() == b.to_bits()), "bytes of {ops:?} sample {i}");
                // Drawing per batch: the same agreement, with the batch's crop and flip.
                let batch = crate::rng::batch_draws(9, 1, i / 8, 8).swap_remove((i % 8) as usize);
                img.load_hwc_u8(&src, h, w, c);
                for op in &ops {
                    op.apply_in_batch(&mut img, &mut sample_rng(9, 1, i), &batch);
                }
                fused.run(&src, [c, h, w], Draw::Batch(&batch), &mut cols, &mut out);
                assert!(img.data.iter().zip(&out).all(|(a, b)| a.to_bits() == b.to_bits()), "{ops:?} batch {i}");
            }
        }
        // Chains outside the pattern use the ops themselves.
        let flip_first: Vec<Arc<dyn Op>> = vec![Arc::new(HFlip { p: 0.5 }), Arc::new(ReflectPad { pad: 1 })];
        assert!(Fused::plan(&flip_first).is_none());
        let twice: Vec<Arc<dyn Op>> = vec![Arc::new(Normalize::cifar()), Arc::new(DivideValues { divisor: 2.0 })];
        assert!(Fused::plan(&twice).is_none());
    }

    #[test]
    fn hwc_bytes_become_chw_planes() {
        let mut img = Image::new();
        img.load_hwc_u8(&[1, 2, 3, 4, 5, 6], 1, 2, 3);
        assert_eq!(img.data, vec![1., 4., 2., 5., 3., 6.]);
        img.load_hwc_f32(&[1., 2., 3., 4.], 2, 1, 2);
        assert_eq!((img.shape(), img.data.clone()), ([2, 2, 1], vec![1., 3., 2., 4.]));
    }
}
