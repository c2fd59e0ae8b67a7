//! SVHN cropped digits from MATLAB level-5 `.mat` files (`train_32x32.mat`, `test_32x32.mat`,
//! `extra_32x32.mat`), and the writer `wrn data synth svhn` uses.
//!
//! The files are level-5 MAT-files (read by [`crate::mat`]) whose variables are zlib-compressed
//! `miMATRIX` elements. This module accepts:
//!
//! - `X`: dimensions `[32, 32, 3, N]`, `uint8` data, MATLAB column-major, so `X(r, c, ch, n)` is byte
//!   `r + 32c + 1024ch + 3072n`; converted to NHWC.
//! - `y`: `N` elements (`[N, 1]`), stored as `uint8` or `double`, values 1..=10 where 10 is the digit 0;
//!   the class index is `y % 10`.
//!
//! Anything else (another header, a v7.3/HDF5 file, big-endian data, other dimensions or types, a label
//! outside 1..=10, `X` and `y` of different lengths) is an error naming the file and the fault.

use std::io::BufReader;
use std::path::Path;

use rayon::prelude::*;

use crate::cache::{self, Source, SplitData, SplitMeta};
use crate::error::{Error, IoContext, Result};
use crate::manifest::{FileEntry, Manifest};
use crate::prepare::{self as shared, HashingReader, PreparedReport};
use crate::store::Store;

use crate::mat::{self, Value, MI_UINT8};

/// Images (NHWC) and class indices (digit) from an SVHN `.mat` file.
pub fn read_svhn(path: &Path) -> Result<(Vec<u8>, Vec<u16>)> {
    decode(mat::read(path)?, path)
}

/// Reads a split's file as [`read_svhn`] does, hashing every byte as it is read; returns the images,
/// the variables and the file's SHA-256.
fn read_hashed(path: &Path, entry: &FileEntry) -> Result<(Vec<(String, Value)>, String)> {
    let file = shared::open_source(path, entry)?;
    let mut reader = BufReader::with_capacity(1 << 20, HashingReader::new(file));
    let vars = mat::read_from(&mut reader, entry.size, path)?;
    let sha256 = reader.into_inner().finish().at(path)?;
    Ok((vars, sha256))
}

/// Images (NHWC) and class indices from the variables of an SVHN file at `path`.
fn decode(vars: Vec<(String, Value)>, path: &Path) -> Result<(Vec<u8>, Vec<u16>)> {
    let err = |detail: String| Error::Format { path: path.into(), detail };
    let find = |name: &str| {
        vars.iter().find(|(n, _)| n == name).map(|(_, v)| v).ok_or_else(|| err(format!("no variable `{name}`")))
    };
    let (x, y) = (find("X")?, find("y")?);
    let Value::Numeric { dims, mi_type: MI_UINT8, raw: x } = x else {
        return Err(err("`X` is not a uint8 array".into()));
    };
    if dims.len() != 4 || dims[..3] != [32, 32, 3] {
        return Err(err(format!("`X` has dimensions {dims:?}; expected [32, 32, 3, N]")));
    }
    let n = dims[3] as usize;
    let y_values = y.to_f64().ok_or_else(|| err("`y` is not a numeric array".into()))?;
    if y_values.len() != n || y.dims().iter().filter(|&&d| d != 1).count() > 1 {
        return Err(err(format!("`y` has dimensions {:?}; expected [{n}, 1] to match `X`", y.dims())));
    }
    let labels = y_values
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            if (1.0..=10.0).contains(&v) && v.fract() == 0.0 {
                Ok((v as u16) % 10)
            } else {
                Err(err(format!("label {v} of image {i} is outside 1..=10")))
            }
        })
        .collect::<Result<Vec<u16>>>()?;
    let mut images = vec![0u8; n * 3072];
    images.par_chunks_mut(3072).zip(x.par_chunks_exact(3072)).for_each(|(dst, src)| {
        for r in 0..32 {
            for c in 0..32 {
                for ch in 0..3 {
                    dst[(r * 32 + c) * 3 + ch] = src[r + 32 * c + 1024 * ch];
                }
            }
        }
    });
    Ok((images, labels))
}

/// Prepares each split of SVHN from its `.mat` file, hashed as it is read and checked against the
/// manifest's SHA-256 before the split is written.
pub fn prepare(store: &Store, manifest: &Manifest) -> Result<Vec<PreparedReport>> {
    let mut reports = Vec::new();
    for f in &manifest.files {
        let Some(split) = &f.split else { continue };
        let path = store.file_path(manifest, f);
        let (vars, source_sha256) = read_hashed(&path, f)?;
        shared::check_source(&path, f, manifest, &source_sha256)?;
        let (images, labels) = decode(vars, &path)?;
        if Some(&(labels.len() as u64)) != manifest.splits.get(split) {
            return Err(Error::Format {
                path,
                detail: match manifest.splits.get(split) {
                    Some(n) => format!("{} images, the manifest says {n} for `{split}`", labels.len()),
                    None => format!("{} images of a split `{split}` the manifest does not list", labels.len()),
                },
            });
        }
        let meta = SplitMeta {
            dataset: manifest.name.clone(),
            split: split.clone(),
            classes: manifest.classes.names.clone(),
            coarse_classes: vec![],
            sources: vec![Source { file: f.name.clone(), sha256: source_sha256 }],
        };
        let out = cache::split_path(&store.prepared_dir(manifest), split);
        let data = SplitData {
            meta: &meta,
            height: 32,
            width: 32,
            channels: 3,
            images: &images,
            labels: &labels,
            coarse_labels: None,
        };
        let sha256 = cache::write(&out, &data)?;
        reports.push(PreparedReport { split: split.clone(), path: out, images: labels.len(), sha256, notes: vec![] });
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn mat(dir: &Path, name: &str, vars: &[(&str, &[u32], &[u8])]) -> PathBuf {
        let p = dir.join(name);
        let mut bytes = Vec::new();
        let values: Vec<(&str, Value)> = vars.iter().map(|(n, dims, data)| (*n, mat::uint8(dims, data))).collect();
        mat::write(&mut bytes, &values.iter().map(|(n, v)| (*n, v)).collect::<Vec<_>>()).unwrap();
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn column_major_planes_become_nhwc_and_ten_becomes_zero() {
        let dir = tempfile::tempdir().unwrap();
        // Two images; X(r, c, ch, n) = r + 2c + 50ch + 100n (mod 256), at r + 32c + 1024ch + 3072n.
        let mut x = vec![0u8; 2 * 3072];
        for n in 0..2 {
            for ch in 0..3 {
                for c in 0..32 {
                    for r in 0..32 {
                        x[r + 32 * c + 1024 * ch + 3072 * n] = (r + 2 * c + 50 * ch + 100 * n) as u8;
                    }
                }
            }
        }
        let p = mat(dir.path(), "t.mat", &[("X", &[32, 32, 3, 2], &x), ("y", &[2, 1], &[10, 3])]);
        let (images, labels) = read_svhn(&p).unwrap();
        assert_eq!(labels, [0, 3]);
        // image 1, row 4, col 5: channels r + 2c + 50ch + 100.
        let at = 3072 + (4 * 32 + 5) * 3;
        assert_eq!(&images[at..at + 3], &[114, 164, 214]);
    }

    #[test]
    fn unexpected_layouts_name_the_file_and_the_fault() {
        let dir = tempfile::tempdir().unwrap();
        let x = vec![0u8; 3072];
        let cases: Vec<(PathBuf, &str)> = vec![
            (
                mat(dir.path(), "dims.mat", &[("X", &[32, 32, 1, 3], &x), ("y", &[3, 1], &[1, 1, 1])]),
                "expected [32, 32, 3, N]",
            ),
            (mat(dir.path(), "label.mat", &[("X", &[32, 32, 3, 1], &x), ("y", &[1, 1], &[11])]), "label 11 of image 0"),
            (mat(dir.path(), "count.mat", &[("X", &[32, 32, 3, 1], &x), ("y", &[2, 1], &[1, 2])]), "to match `X`"),
            (mat(dir.path(), "noy.mat", &[("X", &[32, 32, 3, 1], &x)]), "no variable `y`"),
        ];
        for (p, expected) in cases {
            let err = read_svhn(&p).unwrap_err().to_string();
            assert!(err.contains(p.file_name().unwrap().to_str().unwrap()) && err.contains(expected), "{err}");
        }
        let hdf5 = dir.path().join("v73.mat");
        std::fs::write(&hdf5, [b"MATLAB 7.3 MAT-file".as_slice(), &[b' '; 200]].concat()).unwrap();
        assert!(read_svhn(&hdf5).unwrap_err().to_string().contains("v7.3/HDF5"));
        let good = mat(dir.path(), "good.mat", &[("X", &[32, 32, 3, 1], &x), ("y", &[1, 1], &[1])]);
        let bytes = std::fs::read(&good).unwrap();
        let cut = dir.path().join("cut.mat");
        std::fs::write(&cut, &bytes[..bytes.len() - 40]).unwrap();
        let err = read_svhn(&cut).unwrap_err().to_string();
        assert!(err.contains("cut.mat") && err.contains("truncated or corrupt"), "{err}");
    }
}
