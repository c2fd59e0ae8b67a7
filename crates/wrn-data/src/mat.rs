//! A reader for MATLAB level-5 MAT-files (the v5/v6/v7 family; not v7.3/HDF5): what SVHN's `.mat`
//! files and ImageNet's devkit `meta.mat` are.
//!
//! A file is a 128-byte header (text, subsystem offset, version `0x0100`, endian mark `IM` for
//! little-endian) and then data elements, each an 8-byte tag (type, byte count) or a 4-byte "small"
//! tag, padded to 8 bytes. Variables are `miMATRIX` elements, usually wrapped in `miCOMPRESSED` (zlib),
//! which are streamed through the decoder without holding the compressed bytes. Supported: real numeric
//! arrays (any integer type, single, double), char arrays, cell arrays and struct arrays; sparse, complex
//! and object arrays are refused. Every fault is an error naming the file.

use std::collections::BTreeMap;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use flate2::read::ZlibDecoder;

use crate::error::{Error, IoContext, Result};

pub const MI_INT8: u32 = 1;
pub const MI_UINT8: u32 = 2;
pub const MI_INT16: u32 = 3;
pub const MI_UINT16: u32 = 4;
pub const MI_INT32: u32 = 5;
pub const MI_UINT32: u32 = 6;
pub const MI_SINGLE: u32 = 7;
pub const MI_DOUBLE: u32 = 9;
pub const MI_INT64: u32 = 12;
pub const MI_UINT64: u32 = 13;
pub const MI_MATRIX: u32 = 14;
pub const MI_COMPRESSED: u32 = 15;
pub const MI_UTF8: u32 = 16;
pub const MX_CELL: u8 = 1;
pub const MX_STRUCT: u8 = 2;
pub const MX_CHAR: u8 = 4;
pub const MX_DOUBLE: u8 = 6;
pub const MX_UINT8: u8 = 9;

/// One value of a MAT-file.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A real numeric array: its dimensions, the element type of the stored data (`MI_*`) and the raw
    /// little-endian bytes (column-major).
    Numeric {
        dims: Vec<u32>,
        mi_type: u32,
        raw: Vec<u8>,
    },
    Char {
        dims: Vec<u32>,
        text: String,
    },
    Cell {
        dims: Vec<u32>,
        items: Vec<Value>,
    },
    /// Elements in column-major order, each a map from field name to value.
    Struct {
        dims: Vec<u32>,
        items: Vec<BTreeMap<String, Value>>,
    },
    /// A zero-byte matrix element.
    Empty,
}

fn width(mi_type: u32) -> Option<usize> {
    Some(match mi_type {
        MI_INT8 | MI_UINT8 => 1,
        MI_INT16 | MI_UINT16 => 2,
        MI_INT32 | MI_UINT32 | MI_SINGLE => 4,
        MI_DOUBLE | MI_INT64 | MI_UINT64 => 8,
        _ => return None,
    })
}

impl Value {
    /// The values of a numeric array as `f64`.
    pub fn to_f64(&self) -> Option<Vec<f64>> {
        let Value::Numeric { mi_type, raw, .. } = self else { return None };
        let w = width(*mi_type)?;
        Some(
            raw.chunks_exact(w)
                .map(|c| match *mi_type {
                    MI_INT8 => f64::from(c[0] as i8),
                    MI_UINT8 => f64::from(c[0]),
                    MI_INT16 => f64::from(i16::from_le_bytes([c[0], c[1]])),
                    MI_UINT16 => f64::from(u16::from_le_bytes([c[0], c[1]])),
                    MI_INT32 => f64::from(i32::from_le_bytes(c.try_into().unwrap())),
                    MI_UINT32 => f64::from(u32::from_le_bytes(c.try_into().unwrap())),
                    MI_SINGLE => f64::from(f32::from_le_bytes(c.try_into().unwrap())),
                    MI_INT64 => i64::from_le_bytes(c.try_into().unwrap()) as f64,
                    MI_UINT64 => u64::from_le_bytes(c.try_into().unwrap()) as f64,
                    _ => f64::from_le_bytes(c.try_into().unwrap()),
                })
                .collect(),
        )
    }

    /// A scalar number.
    pub fn scalar(&self) -> Option<f64> {
        self.to_f64().filter(|v| v.len() == 1).map(|v| v[0])
    }

    pub fn text(&self) -> Option<&str> {
        match self {
            Value::Char { text, .. } => Some(text),
            _ => None,
        }
    }

    pub fn dims(&self) -> &[u32] {
        match self {
            Value::Numeric { dims, .. }
            | Value::Char { dims, .. }
            | Value::Cell { dims, .. }
            | Value::Struct { dims, .. } => dims,
            Value::Empty => &[],
        }
    }
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
    /// Reads a sub-element: (type, data without padding).
    fn element(&mut self, what: &str, limit: u64) -> Result<(u32, Vec<u8>)> {
        let first = self.u32(what)?;
        let (kind, n, padded) = if first >> 16 != 0 {
            (first & 0xffff, first >> 16, 4)
        } else {
            let n = self.u32(what)?;
            (first, n, (n as usize).div_ceil(8) * 8)
        };
        if u64::from(n) > limit {
            return Err(self.err(format!("{what}: {n} bytes, more than the {limit} that remain")));
        }
        let mut buf = vec![0u8; padded];
        self.exact(&mut buf, what)?;
        buf.truncate(n as usize);
        Ok((kind, buf))
    }

    /// Reads an `miMATRIX` element including its tag; returns (name, value).
    fn matrix_element(&mut self, limit: u64) -> Result<(String, Value)> {
        let kind = self.u32("matrix tag")?;
        let size = self.u32("matrix size")?;
        if kind != MI_MATRIX {
            return Err(self.err(format!("element of type {kind} where a matrix was expected")));
        }
        if u64::from(size) > limit {
            return Err(self.err(format!("matrix of {size} bytes inside {limit}")));
        }
        if size == 0 {
            return Ok((String::new(), Value::Empty));
        }
        self.matrix(u64::from(size))
    }

    /// The body of an `miMATRIX` of `size` bytes.
    fn matrix(&mut self, size: u64) -> Result<(String, Value)> {
        let (kind, flags) = self.element("array flags", 8)?;
        if kind != MI_UINT32 || flags.len() != 8 {
            return Err(self.err(format!("array flags of type {kind}; expected miUINT32, 8 bytes")));
        }
        let (class, complex) = (flags[0], flags[1] & 0x08 != 0);
        let (kind, dims) = self.element("dimensions", 256)?;
        if kind != MI_INT32 || dims.is_empty() || dims.len() % 4 != 0 {
            return Err(self.err(format!("dimensions of type {kind}; expected miINT32")));
        }
        let dims: Vec<u32> = dims.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect();
        let count = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(u64::from(d))).unwrap_or(u64::MAX);
        let (kind, name) = self.element("array name", 4096)?;
        if kind != MI_INT8 {
            return Err(self.err(format!("array name of type {kind}; expected miINT8")));
        }
        let name = String::from_utf8_lossy(&name).into_owned();
        if complex {
            return Err(self.err(format!("variable `{name}` is complex")));
        }
        let value = match class {
            MX_CELL => {
                let items = (0..count).map(|_| self.matrix_element(size).map(|(_, v)| v)).collect::<Result<_>>()?;
                Value::Cell { dims, items }
            }
            MX_STRUCT => {
                let (_, len) = self.element("field name length", 4)?;
                let len = u32::from_le_bytes(len.get(..4).and_then(|b| b.try_into().ok()).unwrap_or([0; 4])) as usize;
                let (_, names) = self.element("field names", size)?;
                if len == 0 || names.len() % len != 0 {
                    return Err(
                        self.err(format!("struct `{name}`: field names of {} bytes in {len}-byte slots", names.len()))
                    );
                }
                let fields: Vec<String> = names
                    .chunks(len)
                    .map(|c| String::from_utf8_lossy(c.split(|&b| b == 0).next().unwrap_or_default()).into_owned())
                    .collect();
                let mut items = Vec::with_capacity(count.min(1 << 20) as usize);
                for _ in 0..count {
                    let mut item = BTreeMap::new();
                    for f in &fields {
                        item.insert(f.clone(), self.matrix_element(size)?.1);
                    }
                    items.push(item);
                }
                Value::Struct { dims, items }
            }
            MX_CHAR => {
                let (kind, raw) = self.element(&format!("char data of `{name}`"), size)?;
                let text = match kind {
                    MI_UTF8 | MI_UINT8 | MI_INT8 => String::from_utf8_lossy(&raw).into_owned(),
                    MI_UINT16 => {
                        let units: Vec<u16> = raw.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
                        String::from_utf16_lossy(&units)
                    }
                    _ => return Err(self.err(format!("char array `{name}` stored as type {kind}"))),
                };
                Value::Char { dims, text }
            }
            3..=15 => {
                let (mi_type, raw) = self.element(&format!("data of `{name}`"), size)?;
                let w = width(mi_type).ok_or_else(|| self.err(format!("`{name}`: data of type {mi_type}")))?;
                if raw.len() as u64 != count * w as u64 {
                    return Err(self.err(format!(
                        "`{name}`: {} data bytes for dimensions {dims:?} of {w}-byte values",
                        raw.len()
                    )));
                }
                Value::Numeric { dims, mi_type, raw }
            }
            other => return Err(self.err(format!("variable `{name}`: array class {other} is not supported"))),
        };
        Ok((name, value))
    }
}

/// Reads every top-level variable of a level-5 MAT-file, in file order.
pub fn read(path: &Path) -> Result<Vec<(String, Value)>> {
    let file = std::fs::File::open(path).at(path)?;
    read_from(BufReader::with_capacity(1 << 20, file), path)
}

/// Like [`read`], from any reader (an archive member); `origin` names it in errors.
pub fn read_from(reader: impl Read, origin: &Path) -> Result<Vec<(String, Value)>> {
    let path = origin;
    let mut r = Reader { inner: reader, path: path.into() };
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
                vars.push(z.matrix_element(u64::MAX)?);
                let drained = std::io::copy(&mut z.inner, &mut std::io::sink());
                let mut rest = z.inner.into_inner();
                let drained = drained.and_then(|_| std::io::copy(&mut rest, &mut std::io::sink()));
                drained.map_err(|e| r.err(format!("compressed element: {e} (truncated or corrupt)")))?;
            }
            MI_MATRIX => vars.push(r.matrix(u64::from(n))?),
            other => return Err(r.err(format!("top-level element of type {other}; expected miMATRIX or miCOMPRESSED"))),
        }
    }
    Ok(vars)
}

fn put_element(out: &mut Vec<u8>, kind: u32, data: &[u8]) {
    out.extend(kind.to_le_bytes());
    out.extend((data.len() as u32).to_le_bytes());
    out.extend(data);
    out.resize(out.len().div_ceil(8) * 8, 0);
}

fn numeric_class(mi_type: u32) -> u8 {
    match mi_type {
        MI_INT8 => 8,
        MI_UINT8 => MX_UINT8,
        MI_INT16 => 10,
        MI_UINT16 => 11,
        MI_INT32 => 12,
        MI_UINT32 => 13,
        MI_INT64 => 14,
        MI_UINT64 => 15,
        MI_SINGLE => 7,
        _ => MX_DOUBLE,
    }
}

/// The `miMATRIX` element (tag included) of `value` named `name`: what [`read_from`] reads back. Char
/// arrays are written as UTF-16 code units (as MATLAB does), struct field names in 32-byte slots, in
/// the (sorted) order of the items' maps.
pub fn matrix_element(name: &str, value: &Value) -> Vec<u8> {
    let mut body = Vec::new();
    let (class, dims) = match value {
        Value::Empty => return [MI_MATRIX.to_le_bytes(), 0u32.to_le_bytes()].concat(),
        Value::Numeric { dims, mi_type, .. } => (numeric_class(*mi_type), dims),
        Value::Char { dims, .. } => (MX_CHAR, dims),
        Value::Cell { dims, .. } => (MX_CELL, dims),
        Value::Struct { dims, .. } => (MX_STRUCT, dims),
    };
    put_element(&mut body, MI_UINT32, &[class, 0, 0, 0, 0, 0, 0, 0]);
    put_element(&mut body, MI_INT32, &dims.iter().flat_map(|d| d.to_le_bytes()).collect::<Vec<u8>>());
    put_element(&mut body, MI_INT8, name.as_bytes());
    match value {
        Value::Empty => unreachable!("returned above"),
        Value::Numeric { mi_type, raw, .. } => put_element(&mut body, *mi_type, raw),
        Value::Char { text, .. } => {
            let units: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
            put_element(&mut body, MI_UINT16, &units);
        }
        Value::Cell { items, .. } => items.iter().for_each(|v| body.extend(matrix_element("", v))),
        Value::Struct { items, .. } => {
            let fields: Vec<&String> = items.first().map(|i| i.keys().collect()).unwrap_or_default();
            // The field-name length as a small element, then the names in 32-byte slots.
            body.extend((4u32 << 16 | MI_INT32).to_le_bytes());
            body.extend(32u32.to_le_bytes());
            let mut names = vec![0u8; 32 * fields.len()];
            for (i, f) in fields.iter().enumerate() {
                let b = &f.as_bytes()[..f.len().min(31)];
                names[32 * i..32 * i + b.len()].copy_from_slice(b);
            }
            put_element(&mut body, MI_INT8, &names);
            for item in items {
                for f in &fields {
                    body.extend(matrix_element("", item.get(*f).unwrap_or(&Value::Empty)));
                }
            }
        }
    }
    let mut out = Vec::with_capacity(body.len() + 8);
    put_element(&mut out, MI_MATRIX, &body);
    out
}

/// Writes a level-5 MAT-file (header, then each variable zlib-compressed, as `save -v7` does).
pub fn write(out: &mut impl Write, vars: &[(&str, &Value)]) -> std::io::Result<()> {
    let mut header = b"MATLAB 5.0 MAT-file, Platform: GLNXA64, Created on: Thu Jan  1 00:00:00 1970".to_vec();
    header.resize(116, b' ');
    header.extend([0u8; 8]);
    header.extend(0x0100u16.to_le_bytes());
    header.extend(b"IM");
    out.write_all(&header)?;
    for (name, value) in vars {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&matrix_element(name, value))?;
        let compressed = z.finish()?;
        out.write_all(&MI_COMPRESSED.to_le_bytes())?;
        out.write_all(&(compressed.len() as u32).to_le_bytes())?;
        out.write_all(&compressed)?;
    }
    Ok(())
}

/// A `dims` numeric array of doubles.
pub fn doubles(dims: &[u32], values: &[f64]) -> Value {
    Value::Numeric {
        dims: dims.to_vec(),
        mi_type: MI_DOUBLE,
        raw: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

/// A 1xN char array.
pub fn chars(text: &str) -> Value {
    Value::Char { dims: vec![1, text.encode_utf16().count() as u32], text: text.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `tests/fixtures/meta_scipy.mat` was written by `scipy.io.savemat(..., do_compression=True)`: a
    /// 3x1 struct array `synsets` shaped like the ImageNet devkit's, as an independent writer makes it.
    #[test]
    fn reads_a_struct_array_written_by_scipy() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/meta_scipy.mat");
        let vars = read(&path).unwrap();
        assert_eq!(vars.len(), 1);
        let (name, Value::Struct { dims, items }) = &vars[0] else { panic!("{vars:?}") };
        assert_eq!((name.as_str(), dims.as_slice(), items.len()), ("synsets", &[3, 1][..], 3));
        assert_eq!(items[0]["WNID"].text(), Some("n02119789"));
        assert_eq!(items[1]["words"].text(), Some("tench"));
        assert_eq!(items[2]["ILSVRC2012_ID"].scalar(), Some(1001.0));
        assert_eq!(items[2]["children"].to_f64(), Some(vec![1.0, 2.0]));
        assert_eq!(items[0]["num_children"].scalar(), Some(0.0));
    }

    #[test]
    fn written_values_read_back_identically() {
        let mut item = BTreeMap::new();
        item.insert("ILSVRC2012_ID".to_string(), doubles(&[1, 1], &[7.0]));
        item.insert("WNID".to_string(), chars("n01751748"));
        item.insert("children".to_string(), doubles(&[1, 2], &[3.0, 4.0]));
        item.insert("leafless".to_string(), doubles(&[0, 0], &[]));
        item.insert("words".to_string(), chars("sea snake, façade"));
        let mut other = item.clone();
        other.insert("WNID".to_string(), chars("n01440764"));
        let synsets = Value::Struct { dims: vec![2, 1], items: vec![item, other] };
        let cell = Value::Cell { dims: vec![1, 2], items: vec![chars("a"), Value::Empty] };
        let bytes = Value::Numeric { dims: vec![3, 1], mi_type: MI_UINT8, raw: vec![1, 2, 250] };
        let mut file = Vec::new();
        write(&mut file, &[("synsets", &synsets), ("c", &cell), ("y", &bytes)]).unwrap();
        let vars = read_from(file.as_slice(), Path::new("written.mat")).unwrap();
        assert_eq!(vars, vec![("synsets".into(), synsets), ("c".into(), cell), ("y".into(), bytes)]);
        // Damage is an error naming the file, never a panic.
        let err = read_from(&file[..file.len() - 9], Path::new("written.mat")).unwrap_err().to_string();
        assert!(err.contains("written.mat"), "{err}");
    }
}
