//! SVHN cropped digits from MATLAB level-5 `.mat` files (`train_32x32.mat`, `test_32x32.mat`,
//! `extra_32x32.mat`), and the writer `wrn data synth svhn` uses.
//!
//! A level-5 file is a 128-byte header (text, subsystem offset, version `0x0100`, endian mark `IM` for
//! little-endian) and then data elements, each an 8-byte tag (type, byte count) or a 4-byte "small"
//! tag, padded to 8 bytes. SVHN's variables are `miCOMPRESSED` (zlib) elements, each holding one
//! `miMATRIX` with four sub-elements: array flags, dimensions, name, real data. The reader streams each
//! compressed element through zlib without holding the compressed bytes, and accepts:
//!
//! - `X`: dimensions `[32, 32, 3, N]`, `uint8` data, MATLAB column-major, so `X(r, c, ch, n)` is byte
//!   `r + 32c + 1024ch + 3072n`; converted to NHWC.
//! - `y`: `N` elements (`[N, 1]`), stored as `uint8` or `double`, values 1..=10 where 10 is the digit 0;
//!   the class index is `y % 10`.
//!
//! Anything else (another header, a v7.3/HDF5 file, big-endian data, other dimensions or types, a label
//! outside 1..=10, `X` and `y` of different lengths) is an error naming the file and the fault.

use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use flate2::read::ZlibDecoder;
use rayon::prelude::*;

use crate::cache::{self, Source, SplitData, SplitMeta};
use crate::cifar::PreparedReport;
use crate::error::{Error, IoContext, Result};
use crate::manifest::Manifest;
use crate::store::Store;

const MI_INT8: u32 = 1;
const MI_UINT8: u32 = 2;
const MI_INT32: u32 = 5;
const MI_UINT32: u32 = 6;
const MI_DOUBLE: u32 = 9;
const MI_MATRIX: u32 = 14;
const MI_COMPRESSED: u32 = 15;
const MX_DOUBLE: u8 = 6;
const MX_UINT8: u8 = 9;

/// One numeric variable read from a `.mat` file.
#[derive(Debug, Clone, PartialEq)]
pub struct Variable {
    pub name: String,
    pub dims: Vec<u32>,
    /// Values converted to `u8` (doubles must be integers in 0..=255).
    pub data: Vec<u8>,
}

struct Reader<R: Read> {
    inner: R,
    path: PathBuf,
}

impl<R: Read> Reader<R> {
    fn err(&self, detail: String) -> Error {
        Error::Format { path: self.path.clone(), detail }
    }
    fn exact(&mut self, buf: &mut [u8], what: &str) -> Result<()> {
        self.inner.read_exact(buf).map_err(|e| self.err(format!("{what}: {e} (truncated or corrupt)")))
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        let mut b = [0u8; 4];
        self.exact(&mut b, what)?;
        Ok(u32::from_le_bytes(b))
    }
    /// Reads a tag; returns (type, byte count, small): small elements hold their data in the next 4 bytes.
    fn tag(&mut self, what: &str) -> Result<(u32, u32, bool)> {
        let first = self.u32(what)?;
        if first >> 16 != 0 {
            Ok((first & 0xffff, first >> 16, true))
        } else {
            Ok((first, self.u32(what)?, false))
        }
    }
    /// Reads a sub-element's data (and its padding).
    fn element(&mut self, what: &str, limit: u32) -> Result<(u32, Vec<u8>)> {
        let (kind, n, small) = self.tag(what)?;
        if n > limit {
            return Err(self.err(format!("{what}: {n} bytes, more than the {limit} expected")));
        }
        let padded = if small { 4 } else { (n as usize).div_ceil(8) * 8 };
        let mut buf = vec![0u8; padded];
        self.exact(&mut buf, what)?;
        buf.truncate(n as usize);
        Ok((kind, buf))
    }
}

/// Parses one `miMATRIX` (its tag already read) from `r`.
fn matrix<R: Read>(r: &mut Reader<R>, size: u32) -> Result<Variable> {
    let (kind, flags) = r.element("array flags", 8)?;
    if kind != MI_UINT32 || flags.len() != 8 {
        return Err(r.err(format!("array flags of type {kind}, {} bytes; expected miUINT32, 8 bytes", flags.len())));
    }
    let class = flags[0];
    let complex = flags[1] & 0x08 != 0;
    let (kind, dims) = r.element("dimensions", 64)?;
    if kind != MI_INT32 || dims.is_empty() || dims.len() % 4 != 0 {
        return Err(r.err(format!("dimensions of type {kind}; expected miINT32")));
    }
    let dims: Vec<u32> = dims.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect();
    let (kind, name) = r.element("array name", 64)?;
    if kind != MI_INT8 {
        return Err(r.err(format!("array name of type {kind}; expected miINT8")));
    }
    let name = String::from_utf8_lossy(&name).into_owned();
    if complex || !(class == MX_UINT8 || class == MX_DOUBLE) {
        return Err(
            r.err(format!("variable `{name}`: class {class} (complex: {complex}); expected real uint8 or double"))
        );
    }
    let count = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(u64::from(d))).unwrap_or(u64::MAX);
    let (kind, n, small) = r.tag("real data")?;
    let width = match kind {
        MI_UINT8 => 1,
        MI_DOUBLE => 8,
        _ => return Err(r.err(format!("variable `{name}`: data of type {kind}; expected miUINT8 or miDOUBLE"))),
    };
    if u64::from(n) != count * width || u64::from(n) > u64::from(size) {
        return Err(r.err(format!("variable `{name}`: {n} data bytes for dimensions {dims:?} of {width}-byte values")));
    }
    let mut raw = vec![0u8; if small { 4 } else { n as usize }];
    r.exact(&mut raw, &format!("variable `{name}` data"))?;
    raw.truncate(n as usize);
    let data = if width == 1 {
        raw
    } else {
        let mut out = Vec::with_capacity(count as usize);
        for c in raw.chunks_exact(8) {
            let v = f64::from_le_bytes(c.try_into().unwrap());
            if !(0.0..=255.0).contains(&v) || v.fract() != 0.0 {
                return Err(r.err(format!("variable `{name}`: value {v} is not an integer in 0..=255")));
            }
            out.push(v as u8);
        }
        out
    };
    Ok(Variable { name, dims, data })
}

/// Reads every numeric variable of a level-5 `.mat` file, streaming compressed elements.
pub fn read_mat(path: &Path) -> Result<Vec<Variable>> {
    let file = std::fs::File::open(path).at(path)?;
    let mut r = Reader { inner: BufReader::with_capacity(1 << 20, file), path: path.into() };
    let mut header = [0u8; 128];
    r.exact(&mut header, "header")?;
    if !header.starts_with(b"MATLAB 5.0 MAT-file") {
        let hint = if header.starts_with(b"MATLAB 7.3") { " (a v7.3/HDF5 file)" } else { "" };
        return Err(r.err(format!("not a MATLAB level-5 MAT-file{hint}")));
    }
    if &header[126..128] != b"IM" || u16::from_le_bytes([header[124], header[125]]) != 0x0100 {
        return Err(r.err("expected version 0x0100 and little-endian mark `IM`".into()));
    }
    let mut vars = Vec::new();
    loop {
        let mut first = [0u8; 4];
        match r.inner.read(&mut first[..1]) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return Err(r.err(format!("reading an element: {e}"))),
        }
        r.exact(&mut first[1..], "element tag")?;
        let kind = u32::from_le_bytes(first);
        let n = r.u32("element size")?;
        match kind {
            MI_COMPRESSED => {
                let taken = (&mut r.inner).take(u64::from(n));
                let mut z = Reader { inner: ZlibDecoder::new(taken), path: path.into() };
                let (inner_kind, size, _) = z.tag("compressed element")?;
                if inner_kind != MI_MATRIX {
                    return Err(z.err(format!("compressed element of type {inner_kind}; expected miMATRIX")));
                }
                vars.push(matrix(&mut z, size)?);
                // Drain what is left of the compressed element (normally nothing).
                let drained = std::io::copy(&mut z.inner, &mut std::io::sink());
                let mut rest = z.inner.into_inner();
                let drained = drained.and_then(|_| std::io::copy(&mut rest, &mut std::io::sink()));
                drained.map_err(|e| r.err(format!("compressed element: {e} (truncated or corrupt)")))?;
            }
            MI_MATRIX => {
                vars.push(matrix(&mut r, n)?);
            }
            other => return Err(r.err(format!("top-level element of type {other}; expected miMATRIX or miCOMPRESSED"))),
        }
    }
    Ok(vars)
}

/// Images (NHWC) and class indices (digit) from an SVHN `.mat` file.
pub fn read_svhn(path: &Path) -> Result<(Vec<u8>, Vec<u16>)> {
    let vars = read_mat(path)?;
    let err = |detail: String| Error::Format { path: path.into(), detail };
    let x = vars.iter().find(|v| v.name == "X").ok_or_else(|| err("no variable `X`".into()))?;
    let y = vars.iter().find(|v| v.name == "y").ok_or_else(|| err("no variable `y`".into()))?;
    if x.dims.len() != 4 || x.dims[..3] != [32, 32, 3] {
        return Err(err(format!("`X` has dimensions {:?}; expected [32, 32, 3, N]", x.dims)));
    }
    let n = x.dims[3] as usize;
    if y.data.len() != n || y.dims.iter().filter(|&&d| d != 1).count() > 1 {
        return Err(err(format!("`y` has dimensions {:?}; expected [{n}, 1] to match `X`", y.dims)));
    }
    let labels = y
        .data
        .iter()
        .enumerate()
        .map(|(i, &v)| match v {
            1..=10 => Ok(u16::from(v % 10)),
            _ => Err(err(format!("label {v} of image {i} is outside 1..=10"))),
        })
        .collect::<Result<Vec<u16>>>()?;
    let mut images = vec![0u8; n * 3072];
    images.par_chunks_mut(3072).zip(x.data.par_chunks_exact(3072)).for_each(|(dst, src)| {
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

/// Prepares each split of SVHN from its (verified) `.mat` file.
pub fn prepare(store: &Store, manifest: &Manifest) -> Result<Vec<PreparedReport>> {
    let mut reports = Vec::new();
    for f in &manifest.files {
        let Some(split) = &f.split else { continue };
        let path = store.file_path(manifest, f);
        crate::verify::ensure_verified(&path, f, None)?;
        let (images, labels) = read_svhn(&path)?;
        if Some(&(labels.len() as u64)) != manifest.splits.get(split) {
            return Err(Error::Format {
                path,
                detail: format!(
                    "{} images, the manifest says {:?} for `{split}`",
                    labels.len(),
                    manifest.splits.get(split)
                ),
            });
        }
        let meta = SplitMeta {
            dataset: manifest.name.clone(),
            split: split.clone(),
            classes: manifest.classes.names.clone(),
            coarse_classes: vec![],
            sources: vec![Source { file: f.name.clone(), sha256: f.sha256.clone() }],
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
        reports.push(PreparedReport { split: split.clone(), path: out, images: labels.len(), sha256 });
    }
    Ok(reports)
}

fn pad8(v: &mut Vec<u8>) {
    while v.len() % 8 != 0 {
        v.push(0);
    }
}

/// One `miMATRIX` of `uint8` values, uncompressed.
pub fn matrix_bytes(name: &str, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend(MI_UINT32.to_le_bytes());
    body.extend(8u32.to_le_bytes());
    body.extend(u32::from(MX_UINT8).to_le_bytes());
    body.extend(0u32.to_le_bytes());
    body.extend(MI_INT32.to_le_bytes());
    body.extend((4 * dims.len() as u32).to_le_bytes());
    dims.iter().for_each(|d| body.extend(d.to_le_bytes()));
    pad8(&mut body);
    if name.len() <= 4 {
        body.extend(((name.len() as u32) << 16 | MI_INT8).to_le_bytes());
        let mut padded = name.as_bytes().to_vec();
        padded.resize(4, 0);
        body.extend(padded);
    } else {
        body.extend(MI_INT8.to_le_bytes());
        body.extend((name.len() as u32).to_le_bytes());
        body.extend(name.as_bytes());
        pad8(&mut body);
    }
    body.extend(MI_UINT8.to_le_bytes());
    body.extend((data.len() as u32).to_le_bytes());
    body.extend(data);
    pad8(&mut body);
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend(MI_MATRIX.to_le_bytes());
    out.extend((body.len() as u32).to_le_bytes());
    out.extend(body);
    out
}

/// A level-5 `.mat` file holding `vars` (name, dimensions, uint8 data), each as a zlib-compressed
/// element, as MATLAB's `save` writes SVHN's files.
pub fn write_mat(out: &mut impl Write, vars: &[(&str, &[u32], &[u8])]) -> std::io::Result<()> {
    let mut header = b"MATLAB 5.0 MAT-file, Platform: GLNXA64, Created on: Thu Jan  1 00:00:00 1970".to_vec();
    header.resize(116, b' ');
    header.extend([0u8; 8]);
    header.extend(0x0100u16.to_le_bytes());
    header.extend(b"IM");
    out.write_all(&header)?;
    for (name, dims, data) in vars {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&matrix_bytes(name, dims, data))?;
        let compressed = z.finish()?;
        out.write_all(&MI_COMPRESSED.to_le_bytes())?;
        out.write_all(&(compressed.len() as u32).to_le_bytes())?;
        out.write_all(&compressed)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mat(dir: &Path, name: &str, vars: &[(&str, &[u32], &[u8])]) -> PathBuf {
        let p = dir.join(name);
        let mut bytes = Vec::new();
        write_mat(&mut bytes, vars).unwrap();
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
