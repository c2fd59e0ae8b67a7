//! The paper's default CIFAR preprocessing (pylearn2's `make_cifar10_gcn_whitened.py`): global contrast
//! normalisation of each image (subtract its mean, scale it to L2 norm 55), then ZCA whitening with filter
//! bias 0.1, fitted on the training split and applied to both splits.
//!
//! As in pylearn2's `ZCA`: with `X` the contrast-normalised training rows and `m` their mean,
//! `C = (X - m)ᵀ(X - m) / N` (divided by N, not N - 1), `C + bias·I = V diag(λ) Vᵀ`, and
//! `P = V diag(1/√λ) Vᵀ`; a sample `x` becomes `P (x - m)`. The whitened covariance is therefore
//! `I - bias·(C + bias·I)⁻¹`, the identity up to the bias. `P` commutes with any fixed permutation of the
//! pixels, so fitting on HWC vectors (the prepared cache's order) gives the same whitened pixels as
//! fitting on CHW vectors.
//!
//! A fit over CIFAR's 50,000 × 3,072 values takes a while (a 3,072² covariance and its eigendecomposition),
//! so it is written once beside the split (`train.zca`, see [`default_path`]) and reused while the file's
//! own SHA-256 checks and it names the same training split (by the split's checksum) and parameters.
//!
//! ZCA file, version 1, little-endian: magic `WRNZCA\0\0`, version `u32`, `dim` `u32`, samples fitted
//! `u64`, GCN scale `f64`, filter bias `f64`, the training split's SHA-256 as 64 ASCII hex digits, then
//! the mean (`dim` `f32`), `P` (`dim²` `f32`, symmetric), and a trailing SHA-256 of every byte before it.

use std::path::{Path, PathBuf};

use nalgebra::{DMatrix, DVector, SymmetricEigen};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use wrn_data::cache::PreparedSplit;

use crate::error::{Error, Result};

/// pylearn2's `CIFAR10(gcn=55.)`.
pub const GCN_SCALE: f64 = 55.0;
/// pylearn2's `ZCA()` default `filter_bias`.
pub const FILTER_BIAS: f64 = 0.1;
const MAGIC: &[u8; 8] = b"WRNZCA\0\0";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 8 + 4 + 4 + 8 + 8 + 8 + 64;
/// Images per chunk while fitting or whitening a split.
const CHUNK: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ZcaParams {
    /// L2 norm of each image after global contrast normalisation.
    pub gcn_scale: f64,
    /// Added to the covariance's diagonal before the inverse square root.
    pub filter_bias: f64,
}

impl Default for ZcaParams {
    fn default() -> Self {
        ZcaParams { gcn_scale: GCN_SCALE, filter_bias: FILTER_BIAS }
    }
}

/// pylearn2's `global_contrast_normalize(x, scale, subtract_mean=True, use_std=False, sqrt_bias=0,
/// min_divisor=1e-8)` for one sample: subtract the mean, then scale to L2 norm `scale` (a constant sample
/// becomes all zeros).
pub fn global_contrast_normalize(x: &mut [f64], scale: f64) {
    if x.is_empty() {
        return;
    }
    let mean = x.iter().sum::<f64>() / x.len() as f64;
    x.iter_mut().for_each(|v| *v -= mean);
    let norm = x.iter().map(|v| v * v).sum::<f64>().sqrt() / scale;
    let divisor = if norm < 1e-8 { 1.0 } else { norm };
    x.iter_mut().for_each(|v| *v /= divisor);
}

/// Where the ZCA fit of a training split lives: beside it, `<split>.zca`.
pub fn default_path(train: &PreparedSplit) -> PathBuf {
    train.path().with_extension("zca")
}

/// Running sums for a fit: Σx and Σxxᵀ over columns.
struct Moments {
    sum: DVector<f64>,
    outer: DMatrix<f64>,
    n: u64,
}

impl Moments {
    fn new(dim: usize) -> Moments {
        Moments { sum: DVector::zeros(dim), outer: DMatrix::zeros(dim, dim), n: 0 }
    }
    /// Adds the columns of `x` (dim × r).
    fn add(&mut self, x: &DMatrix<f64>) {
        for col in x.column_iter() {
            self.sum += col;
        }
        let xt = x.transpose();
        self.outer.gemm(1.0, x, &xt, 1.0);
        self.n += x.ncols() as u64;
    }
}

/// A fitted ZCA transform.
#[derive(Debug, Clone, PartialEq)]
pub struct Zca {
    pub params: ZcaParams,
    /// Samples the fit saw.
    pub samples: u64,
    /// SHA-256 of the training split it was fitted on (empty when fitted on a matrix).
    pub source_checksum: String,
    mean: DVector<f32>,
    matrix: DMatrix<f32>,
}

impl Zca {
    /// Fits on the columns of `x` (dim × n, each column a sample, used as given: no contrast
    /// normalisation). `params.gcn_scale` is only recorded.
    pub fn fit_columns(x: &DMatrix<f64>, params: ZcaParams) -> Zca {
        let mut m = Moments::new(x.nrows());
        m.add(x);
        Zca::finish(m, params, String::new())
    }

    fn finish(m: Moments, params: ZcaParams, source_checksum: String) -> Zca {
        let n = m.n.max(1) as f64;
        let mean = &m.sum / n;
        let mut cov = m.outer / n - &mean * mean.transpose();
        for i in 0..cov.nrows() {
            cov[(i, i)] += params.filter_bias;
        }
        let eig = SymmetricEigen::new(cov);
        let v = &eig.eigenvectors;
        let mut scaled = v.clone();
        for (j, mut col) in scaled.column_iter_mut().enumerate() {
            col *= 1.0 / eig.eigenvalues[j].max(f64::MIN_POSITIVE).sqrt();
        }
        let p = scaled * v.transpose();
        Zca { params, samples: m.n, source_checksum, mean: mean.cast(), matrix: p.cast() }
    }

    /// Fits on every image of `split`, contrast-normalised (HWC vectors of `h*w*c` values).
    pub fn fit_split(split: &PreparedSplit, params: ZcaParams) -> Result<Zca> {
        let dim = split.image_bytes();
        if split.is_empty() || dim == 0 {
            return Err(Error::Pipeline { path: split.path().into(), detail: "no images to fit ZCA on".into() });
        }
        let mut m = Moments::new(dim);
        let mut chunk = DMatrix::<f64>::zeros(dim, 0);
        for start in (0..split.len()).step_by(CHUNK) {
            let r = CHUNK.min(split.len() - start);
            chunk.resize_mut(dim, r, 0.0);
            chunk.as_mut_slice().par_chunks_mut(dim).enumerate().for_each(|(j, col)| {
                for (v, &b) in col.iter_mut().zip(split.image(start + j)) {
                    *v = f64::from(b);
                }
                global_contrast_normalize(col, params.gcn_scale);
            });
            m.add(&chunk);
        }
        Ok(Zca::finish(m, params, split.checksum()))
    }

    /// The number of values per sample.
    pub fn dim(&self) -> usize {
        self.mean.len()
    }
    /// The training mean (after contrast normalisation).
    pub fn mean(&self) -> &[f32] {
        self.mean.as_slice()
    }
    /// `P`, dim × dim, symmetric.
    pub fn matrix(&self) -> &DMatrix<f32> {
        &self.matrix
    }

    /// Whitens the columns of `x` (dim × r) in place: `x ← P (x - mean)`.
    pub fn whiten_columns(&self, x: &mut DMatrix<f32>) {
        for mut col in x.column_iter_mut() {
            col -= &self.mean;
        }
        *x = &self.matrix * &*x;
    }

    /// Contrast-normalises and whitens every image of `split`: `n * dim` values, each image in the split's
    /// HWC order.
    pub fn whiten_split(&self, split: &PreparedSplit) -> Result<Vec<f32>> {
        let dim = split.image_bytes();
        if dim != self.dim() {
            return Err(Error::Pipeline {
                path: split.path().into(),
                detail: format!("images of {dim} values, but the ZCA fit has {}", self.dim()),
            });
        }
        let mut out = vec![0f32; split.len() * dim];
        for start in (0..split.len()).step_by(CHUNK) {
            let r = CHUNK.min(split.len() - start);
            let mut chunk = DMatrix::<f32>::zeros(dim, r);
            chunk.as_mut_slice().par_chunks_mut(dim).enumerate().for_each_init(
                || vec![0f64; dim],
                |buf, (j, col)| {
                    for (v, &b) in buf.iter_mut().zip(split.image(start + j)) {
                        *v = f64::from(b);
                    }
                    global_contrast_normalize(buf, self.params.gcn_scale);
                    for (o, v) in col.iter_mut().zip(buf.iter()) {
                        *o = *v as f32;
                    }
                },
            );
            self.whiten_columns(&mut chunk);
            out[start * dim..(start + r) * dim].copy_from_slice(chunk.as_slice());
        }
        Ok(out)
    }

    /// Writes the fit to `path` atomically (`wrn_fs`).
    pub fn save(&self, path: &Path) -> Result<()> {
        let io = |source| Error::Io { path: path.into(), source };
        let dim = self.dim();
        let mut bytes = Vec::with_capacity(HEADER_LEN + 4 * (dim + dim * dim) + 32);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&VERSION.to_le_bytes());
        bytes.extend_from_slice(&(dim as u32).to_le_bytes());
        bytes.extend_from_slice(&self.samples.to_le_bytes());
        bytes.extend_from_slice(&self.params.gcn_scale.to_le_bytes());
        bytes.extend_from_slice(&self.params.filter_bias.to_le_bytes());
        let mut checksum = [b'0'; 64];
        let given = self.source_checksum.as_bytes();
        checksum[..given.len().min(64)].copy_from_slice(&given[..given.len().min(64)]);
        bytes.extend_from_slice(&checksum);
        for v in self.mean.iter().chain(self.matrix.iter()) {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        let digest = Sha256::digest(&bytes);
        bytes.extend_from_slice(&digest);
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io)?;
        wrn_fs::atomic_write(path, &bytes).map_err(|e| Error::Io { path: e.path, source: e.source })
    }

    /// Reads a fit written by [`Zca::save`], checking its size, version and SHA-256.
    pub fn load(path: &Path) -> Result<Zca> {
        let err = |detail: String| Error::Zca { path: path.into(), detail };
        let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.into(), source })?;
        if bytes.len() < HEADER_LEN + 32 || &bytes[..8] != MAGIC {
            return Err(err("not a ZCA file (bad magic or too short)".into()));
        }
        let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap());
        let version = u32_at(8);
        if version != VERSION {
            return Err(err(format!("version {version}, this build reads version {VERSION}")));
        }
        let dim = u32_at(12) as usize;
        let expected = HEADER_LEN + 4 * (dim + dim * dim) + 32;
        if bytes.len() != expected {
            return Err(err(format!("{} bytes, expected {expected} for dimension {dim} (truncated?)", bytes.len())));
        }
        let body = bytes.len() - 32;
        if Sha256::digest(&bytes[..body]).as_slice() != &bytes[body..] {
            return Err(err("SHA-256 mismatch: the file is damaged".into()));
        }
        let params = ZcaParams { gcn_scale: f64::from_bits(u64_at(24)), filter_bias: f64::from_bits(u64_at(32)) };
        let source_checksum = String::from_utf8_lossy(&bytes[40..104]).into_owned();
        let floats: Vec<f32> =
            bytes[HEADER_LEN..body].chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        Ok(Zca {
            params,
            samples: u64_at(16),
            source_checksum,
            mean: DVector::from_column_slice(&floats[..dim]),
            matrix: DMatrix::from_column_slice(dim, dim, &floats[dim..]),
        })
    }

    /// The fit of `train` with `params`: read from `path` when that file is intact and was fitted on this
    /// very split with these parameters, otherwise fitted now and written to `path`.
    pub fn fit_or_load(train: &PreparedSplit, path: &Path, params: ZcaParams) -> Result<Zca> {
        if path.exists() {
            match Zca::load(path) {
                Ok(z) if z.source_checksum == train.checksum() && z.params == params => return Ok(z),
                Ok(_) => {
                    tracing::info!("{}: fitted on another split or with other parameters; refitting", path.display())
                }
                Err(e) => tracing::warn!("{e}; refitting"),
            }
        }
        // The eigendecomposition of the 3072 x 3072 covariance dominates: about 90 s for CIFAR on two
        // cores, once per split (the fit is then read from `path`).
        tracing::info!(
            "fitting ZCA on the {} images of {} (a minute or two, once; kept in {})",
            train.len(),
            train.path().display(),
            path.display()
        );
        let z = Zca::fit_split(train, params)?;
        z.save(path)?;
        Ok(z)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(filter_bias: f64) -> ZcaParams {
        ZcaParams { gcn_scale: GCN_SCALE, filter_bias }
    }

    #[test]
    fn contrast_normalisation_by_hand() {
        let mut x = [0.0, 2.0];
        global_contrast_normalize(&mut x, 55.0);
        let s = 55.0 / 2f64.sqrt();
        assert!((x[0] + s).abs() < 1e-12 && (x[1] - s).abs() < 1e-12, "{x:?}");
        let mut flat = [7.0; 5];
        global_contrast_normalize(&mut flat, 55.0);
        assert_eq!(flat, [0.0; 5]);
    }

    #[test]
    fn zca_of_a_small_matrix_with_a_known_answer() {
        // Four samples along two axes rotated by 45°: covariance R diag(2, 0.5) Rᵀ, mean 0.
        let (c, s) = (std::f64::consts::FRAC_1_SQRT_2, std::f64::consts::FRAC_1_SQRT_2);
        let rot = |a: f64, b: f64| [c * a - s * b, s * a + c * b];
        let cols: Vec<f64> = [rot(2.0, 0.0), rot(-2.0, 0.0), rot(0.0, 1.0), rot(0.0, -1.0)].concat();
        let x = DMatrix::from_column_slice(2, 4, &cols);
        let z = Zca::fit_columns(&x, params(0.1));
        let (p1, p2) = (1.0 / 2.1f64.sqrt(), 1.0 / 0.6f64.sqrt());
        let expected = [(p1 + p2) / 2.0, (p1 - p2) / 2.0, (p1 - p2) / 2.0, (p1 + p2) / 2.0];
        for (got, want) in z.matrix().iter().zip(expected) {
            assert!((f64::from(*got) - want).abs() < 1e-6, "{} vs {want}", z.matrix());
        }
        assert!(z.mean().iter().all(|m| m.abs() < 1e-7));
    }

    #[test]
    fn whitened_covariance_is_the_identity_up_to_the_bias() {
        // Correlated 12-dimensional data from a fixed mixing of uniform noise.
        let (dim, n) = (12, 4000);
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut uniform = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        };
        let mix = DMatrix::from_fn(dim, dim, |i, j| if j <= i { 1.0 + (i * j % 5) as f64 } else { 0.3 });
        let noise = DMatrix::from_fn(dim, n, |_, _| uniform());
        let x = &mix * noise + DMatrix::from_fn(dim, n, |i, _| i as f64);
        for bias in [0.1, 1e-6] {
            let z = Zca::fit_columns(&x, params(bias));
            let mut w: DMatrix<f32> = x.clone().cast();
            z.whiten_columns(&mut w);
            let w: DMatrix<f64> = w.cast();
            let mean = w.column_mean();
            let centred = DMatrix::from_fn(dim, n, |i, j| w[(i, j)] - mean[i]);
            let cov_w = &centred * centred.transpose() / n as f64;
            // Independent of the eigendecomposition: I - bias (C + bias I)^-1, with C from the raw data.
            let xm = x.column_mean();
            let xc = DMatrix::from_fn(dim, n, |i, j| x[(i, j)] - xm[i]);
            let cov = &xc * xc.transpose() / n as f64 + DMatrix::identity(dim, dim) * bias;
            let expected = DMatrix::identity(dim, dim) - cov.try_inverse().unwrap() * bias;
            let diff = (&cov_w - &expected).abs().max();
            assert!(diff < 1e-4, "bias {bias}: max difference {diff}\n{cov_w}");
            assert!(mean.abs().max() < 1e-4);
            if bias < 1e-3 {
                assert!((cov_w - DMatrix::<f64>::identity(dim, dim)).abs().max() < 1e-3);
            }
        }
    }
}
