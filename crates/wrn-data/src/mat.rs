//! A reader for MATLAB level-5 MAT-files (the v5/v6/v7 family; not v7.3/HDF5): what SVHN's `.mat`
//! files and ImageNet's devkit `meta.mat` are.
//!
//! A file is a 128-byte header (text, subsystem offset, version `0x0100`, endian mark `IM` for
//! little-endian) and then data elements, each an 8-byte tag (type, byte count) or a 4-byte "small"
//! tag, padded to 8 bytes. Variables are `miMATRIX` elements, usually wrapped in `miCOMPRESSED` (zlib),
//! which are streamed through the decoder without holding the compressed bytes. Supported: real numeric
//! arrays (any integer type, single, double), char arrays, cell arrays and struct arrays; sparse, complex
//! and object arrays are refused. Every fault is an error naming the file.
//!
//! Hostile or damaged files cost work in proportion to their size: every size and element count a
//! file claims is checked against the bytes that remain before it is trusted (a compressed element
//! bounds what it holds by zlib's largest expansion, 1032 to 1), data is read as it arrives rather than
//! allocated from a claim, a struct array with no fields may have at most 65536 elements, and a
//! variable or struct field that appears twice is an error.

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

/// The most a zlib stream can expand: 1032 bytes out per byte in (deflate's limit), so a compressed
/// element of `n` bytes bounds the matrix inside it by `1032 n`.
const ZLIB_RATIO: u64 = 1032;
/// The most elements read of a struct array with no fields, whose elements take no bytes in the file.
const MAX_EMPTY_STRUCT: u64 = 1 << 16;

/// A reader that knows how far it has read: every size a file claims is checked against the bytes
/// that remain before it is trusted, so damaged or hostile files cost work in proportion to their size.
struct Reader<R: Read> {
    inner: R,
    path: PathBuf,
    /// Bytes read so far.
    pos: u64,
}

impl<R: Read> Reader<R> {
    fn new(inner: R, path: &Path) -> Reader<R> {
        Reader { inner, path: path.into(), pos: 0 }
    }
    fn err(&self, detail: String) -> Error {
        Error::Format { path: self.path.clone(), detail }
    }
    fn exact(&mut self, buf: &mut [u8], what: &str) -> Result<()> {
        self.inner.read_exact(buf).map_err(|e| self.err(format!("{what}: {e} (truncated or corrupt)")))?;
        self.pos += buf.len() as u64;
        Ok(())
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        let mut b = [0u8; 4];
        self.exact(&mut b, what)?;
        Ok(u32::from_le_bytes(b))
    }
    /// Bytes left before `end`.
    fn left(&self, end: u64) -> u64 {
        end.saturating_sub(self.pos)
    }
    /// Reads `n` bytes, growing the buffer only as they arrive (a size claimed is not allocated up front).
    fn bytes(&mut self, n: u64, what: &str) -> Result<Vec<u8>> {
        let mut buf = Vec::with_capacity(n.min(1 << 20) as usize);
        let read = (&mut self.inner).take(n).read_to_end(&mut buf);
        read.map_err(|e| self.err(format!("{what}: {e} (truncated or corrupt)")))?;
        self.pos += buf.len() as u64;
        if (buf.len() as u64) < n {
            return Err(self.err(format!("{what}: {} of {n} bytes present (truncated)", buf.len())));
        }
        Ok(buf)
    }
    /// Reads a sub-element that must end by `end`: (type, data without padding).
    fn element(&mut self, what: &str, end: u64) -> Result<(u32, Vec<u8>)> {
        let first = self.u32(what)?;
        let (kind, n, padded) = if first >> 16 != 0 {
            (first & 0xffff, u64::from(first >> 16), 4)
        } else {
            let n = u64::from(self.u32(what)?);
            (first, n, n.div_ceil(8) * 8)
        };
        if n > self.left(end) {
            return Err(self.err(format!("{what}: {n} bytes, more than the {} that remain", self.left(end))));
        }
        let mut buf = self.bytes(padded.min(self.left(end).max(n)), what)?;
        buf.truncate(n as usize);
        Ok((kind, buf))
    }

    /// Reads an `miMATRIX` element including its tag, which must end by `end`; returns (name, value).
    fn matrix_element(&mut self, end: u64) -> Result<(String, Value)> {
        let kind = self.u32("matrix tag")?;
        let size = self.u32("matrix size")?;
        if kind != MI_MATRIX {
            return Err(self.err(format!("element of type {kind} where a matrix was expected")));
        }
        if u64::from(size) > self.left(end) {
            return Err(self.err(format!("matrix of {size} bytes, more than the {} that remain", self.left(end))));
        }
        if size == 0 {
            return Ok((String::new(), Value::Empty));
        }
        self.matrix(self.pos + u64::from(size))
    }

    /// The body of an `miMATRIX` ending at `end`.
    fn matrix(&mut self, end: u64) -> Result<(String, Value)> {
        let (kind, flags) = self.element("array flags", end.min(self.pos + 16))?;
        if kind != MI_UINT32 || flags.len() != 8 {
            return Err(self.err(format!("array flags of type {kind}; expected miUINT32, 8 bytes")));
        }
        let (class, complex) = (flags[0], flags[1] & 0x08 != 0);
        let (kind, dims) = self.element("dimensions", end.min(self.pos + 8 + 256))?;
        if kind != MI_INT32 || dims.is_empty() || dims.len() % 4 != 0 {
            return Err(self.err(format!("dimensions of type {kind}; expected miINT32")));
        }
        let dims: Vec<u32> = dims.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect();
        let count = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(u64::from(d))).unwrap_or(u64::MAX);
        let (kind, name) = self.element("array name", end.min(self.pos + 8 + 4096))?;
        if kind != MI_INT8 {
            return Err(self.err(format!("array name of type {kind}; expected miINT8")));
        }
        let name = String::from_utf8_lossy(&name).into_owned();
        if complex {
            return Err(self.err(format!("variable `{name}` is complex")));
        }
        let value = match class {
            MX_CELL => self.cell(&name, dims, count, end)?,
            MX_STRUCT => self.structure(&name, dims, count, end)?,
            MX_CHAR => self.char_array(&name, dims, end)?,
            3..=15 => self.numeric(&name, dims, count, end)?,
            other => return Err(self.err(format!("variable `{name}`: array class {other} is not supported"))),
        };
        Ok((name, value))
    }

    /// Checks that `count` elements of at least `each` bytes fit in what remains before `end`.
    fn fits(&self, what: &str, name: &str, count: u64, each: u64, end: u64) -> Result<()> {
        if count.saturating_mul(each) > self.left(end) {
            return Err(self.err(format!(
                "{what} `{name}` claims {count} elements, more than the {} bytes that remain can hold",
                self.left(end)
            )));
        }
        Ok(())
    }

    fn cell(&mut self, name: &str, dims: Vec<u32>, count: u64, end: u64) -> Result<Value> {
        self.fits("cell array", name, count, 8, end)?;
        let mut items = Vec::new();
        for _ in 0..count {
            items.push(self.matrix_element(end)?.1);
        }
        Ok(Value::Cell { dims, items })
    }

    fn structure(&mut self, name: &str, dims: Vec<u32>, count: u64, end: u64) -> Result<Value> {
        let (_, len) = self.element("field name length", end.min(self.pos + 16))?;
        let len = u32::from_le_bytes(len.get(..4).and_then(|b| b.try_into().ok()).unwrap_or([0; 4])) as usize;
        let (_, names) = self.element("field names", end)?;
        if len == 0 || names.len() % len != 0 {
            return Err(self.err(format!("struct `{name}`: field names of {} bytes in {len}-byte slots", names.len())));
        }
        let fields: Vec<String> = names
            .chunks(len)
            .map(|c| String::from_utf8_lossy(c.split(|&b| b == 0).next().unwrap_or_default()).into_owned())
            .collect();
        if let Some(twice) = fields.iter().enumerate().find(|(i, f)| fields[..*i].contains(f)) {
            return Err(self.err(format!("struct `{name}`: field `{}` appears twice", twice.1)));
        }
        if fields.is_empty() && count > MAX_EMPTY_STRUCT {
            return Err(self.err(format!(
                "struct `{name}` has no fields and claims {count} elements (at most {MAX_EMPTY_STRUCT} are read)"
            )));
        }
        self.fits("struct", name, count, 8 * fields.len() as u64, end)?;
        let mut items = Vec::new();
        for _ in 0..count {
            let mut item = BTreeMap::new();
            for f in &fields {
                item.insert(f.clone(), self.matrix_element(end)?.1);
            }
            items.push(item);
        }
        Ok(Value::Struct { dims, items })
    }

    fn char_array(&mut self, name: &str, dims: Vec<u32>, end: u64) -> Result<Value> {
        let (kind, raw) = self.element(&format!("char data of `{name}`"), end)?;
        let text = match kind {
            MI_UTF8 | MI_UINT8 | MI_INT8 => String::from_utf8_lossy(&raw).into_owned(),
            MI_UINT16 => {
                let units: Vec<u16> = raw.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
                String::from_utf16_lossy(&units)
            }
            _ => return Err(self.err(format!("char array `{name}` stored as type {kind}"))),
        };
        Ok(Value::Char { dims, text })
    }

    fn numeric(&mut self, name: &str, dims: Vec<u32>, count: u64, end: u64) -> Result<Value> {
        let (mi_type, raw) = self.element(&format!("data of `{name}`"), end)?;
        let w = width(mi_type).ok_or_else(|| self.err(format!("`{name}`: data of type {mi_type}")))?;
        if raw.len() as u64 != count.saturating_mul(w as u64) {
            return Err(
                self.err(format!("`{name}`: {} data bytes for dimensions {dims:?} of {w}-byte values", raw.len()))
            );
        }
        Ok(Value::Numeric { dims, mi_type, raw })
    }
}

/// Reads every top-level variable of a level-5 MAT-file, in file order.
pub fn read(path: &Path) -> Result<Vec<(String, Value)>> {
    let file = std::fs::File::open(path).at(path)?;
    let len = file.metadata().at(path)?.len();
    read_from(BufReader::with_capacity(1 << 20, file), len, path)
}

/// Like [`read`], from any reader of `len` bytes (an archive member); `origin` names it in errors.
/// Variables are refused when a name appears twice.
pub fn read_from(reader: impl Read, len: u64, origin: &Path) -> Result<Vec<(String, Value)>> {
    let mut r = Reader::new(reader, origin);
    read_header(&mut r)?;
    let mut vars: Vec<(String, Value)> = Vec::new();
    loop {
        let mut first = [0u8; 4];
        match r.inner.read(&mut first[..1]) {
            Ok(0) => break,
            Ok(_) => r.pos += 1,
            Err(e) => return Err(r.err(format!("reading an element: {e}"))),
        }
        r.exact(&mut first[1..], "element tag")?;
        let kind = u32::from_le_bytes(first);
        let n = u64::from(r.u32("element size")?);
        if n > len.saturating_sub(r.pos) {
            return Err(r.err(format!(
                "element of {n} bytes, more than the {} left in the file (truncated or corrupt)",
                len.saturating_sub(r.pos)
            )));
        }
        let (name, value) = match kind {
            MI_COMPRESSED => compressed(&mut r, n)?,
            MI_MATRIX => r.matrix(r.pos + n)?,
            other => return Err(r.err(format!("top-level element of type {other}; expected miMATRIX or miCOMPRESSED"))),
        };
        if vars.iter().any(|(v, _)| *v == name) {
            return Err(r.err(format!("variable `{name}` appears twice; a MAT-file holds each variable once")));
        }
        vars.push((name, value));
    }
    Ok(vars)
}

/// The 128-byte header: the text, the version and the endian mark.
fn read_header<R: Read>(r: &mut Reader<R>) -> Result<()> {
    let mut header = [0u8; 128];
    r.exact(&mut header, "header")?;
    if !header.starts_with(b"MATLAB 5.0 MAT-file") {
        let hint = if header.starts_with(b"MATLAB 7.3") { " (a v7.3/HDF5 file)" } else { "" };
        return Err(r.err(format!("not a MATLAB level-5 MAT-file{hint}")));
    }
    if &header[126..128] != b"IM" || u16::from_le_bytes([header[124], header[125]]) != 0x0100 {
        return Err(r.err("expected version 0x0100 and little-endian mark `IM`".into()));
    }
    Ok(())
}

/// An `miCOMPRESSED` element of `n` bytes: the matrix inside, streamed through the decoder (bounded by
/// what `n` bytes can expand to), then the rest of the element read over.
fn compressed<R: Read>(r: &mut Reader<R>, n: u64) -> Result<(String, Value)> {
    let taken = (&mut r.inner).take(n);
    let mut z = Reader::new(ZlibDecoder::new(taken), &r.path);
    let var = z.matrix_element(n.saturating_mul(ZLIB_RATIO))?;
    let mut rest = z.inner.into_inner();
    let drained = std::io::copy(&mut rest, &mut std::io::sink());
    let left = rest.limit();
    drained.map_err(|e| r.err(format!("compressed element: {e} (truncated or corrupt)")))?;
    if left > 0 {
        return Err(r.err(format!("compressed element: {left} of its {n} bytes missing (truncated)")));
    }
    r.pos += n;
    Ok(var)
}

/// One data element: up to 4 bytes in MATLAB's small format (size and type in one word, the data in
/// the next), as `save` writes a short name; else a tag of two words and the data padded to 8 bytes.
fn put_element(out: &mut Vec<u8>, kind: u32, data: &[u8]) {
    if !data.is_empty() && data.len() <= 4 {
        out.extend(((data.len() as u32) << 16 | kind).to_le_bytes());
        out.extend(data);
        out.resize(out.len().div_ceil(8) * 8, 0);
        return;
    }
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

/// A `dims` numeric array of bytes (`uint8`), as SVHN's images and labels are stored.
pub fn uint8(dims: &[u32], values: &[u8]) -> Value {
    Value::Numeric { dims: dims.to_vec(), mi_type: MI_UINT8, raw: values.to_vec() }
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
        let vars = read_from(file.as_slice(), file.len() as u64, Path::new("written.mat")).unwrap();
        assert_eq!(vars, vec![("synsets".into(), synsets), ("c".into(), cell), ("y".into(), bytes)]);
        // Damage is an error naming the file, never a panic.
        let err = read_from(&file[..file.len() - 9], file.len() as u64 - 9, Path::new("written.mat"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("written.mat"), "{err}");
    }

    /// A level-5 file holding `body` as one zlib-compressed top-level element.
    fn compressed_file(body: &[u8]) -> Vec<u8> {
        let mut file = Vec::new();
        write(&mut file, &[]).unwrap();
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(body).unwrap();
        let packed = z.finish().unwrap();
        file.extend(MI_COMPRESSED.to_le_bytes());
        file.extend((packed.len() as u32).to_le_bytes());
        file.extend(packed);
        file
    }

    fn read_err(file: &[u8]) -> String {
        let started = std::time::Instant::now();
        let err = read_from(file, file.len() as u64, Path::new("hostile.mat")).unwrap_err().to_string();
        assert!(started.elapsed().as_secs() < 5, "{err}: took {:?}", started.elapsed());
        assert!(err.starts_with("hostile.mat: "), "{err}");
        err
    }

    #[test]
    fn sizes_a_file_claims_are_bounded_by_the_bytes_that_remain() {
        // A struct with no fields and 65535x65535 elements, which take no bytes: refused, not looped over.
        let empty = Value::Struct { dims: vec![65535, 65535], items: vec![] };
        let file = compressed_file(&matrix_element("synsets", &empty));
        assert!(file.len() < 200);
        let err = read_err(&file);
        assert!(err.contains("struct `synsets` has no fields and claims 4294836225 elements"), "{err}");
        // The same shape uncompressed.
        let mut raw = Vec::new();
        write(&mut raw, &[]).unwrap();
        raw.extend(matrix_element("synsets", &empty));
        assert!(read_err(&raw).contains("claims 4294836225 elements"));
        // A cell array claiming more elements than its bytes can hold.
        let cell = Value::Cell { dims: vec![60000, 60000], items: vec![] };
        let err = read_err(&compressed_file(&matrix_element("c", &cell)));
        assert!(err.contains("cell array `c` claims 3600000000 elements, more than the"), "{err}");
        // A matrix claiming 4 GiB inside a few compressed bytes.
        let mut huge = matrix_element("x", &doubles(&[1, 1], &[1.0]));
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        let err = read_err(&compressed_file(&huge));
        assert!(err.contains("matrix of 4294967295 bytes, more than the"), "{err}");
        // Numeric data claiming 4 GiB in a small uncompressed file: refused before anything is allocated.
        let mut raw = Vec::new();
        write(&mut raw, &[]).unwrap();
        raw.extend(MI_MATRIX.to_le_bytes());
        raw.extend(u32::MAX.to_le_bytes());
        raw.extend([0u8; 64]);
        assert!(read_err(&raw).contains("element of 4294967295 bytes, more than the 64 left in the file"));
    }

    #[test]
    fn a_variable_or_a_field_stored_twice_is_refused() {
        let y = doubles(&[1, 1], &[1.0]);
        let mut file = Vec::new();
        write(&mut file, &[("X", &y), ("y", &y), ("y", &y)]).unwrap();
        let err = read_err(&file);
        assert!(err.contains("variable `y` appears twice"), "{err}");
        let mut item = BTreeMap::new();
        item.insert("WNID".to_string(), chars("n01440764"));
        item.insert("WNIE".to_string(), chars("n01440764"));
        let mut body = matrix_element("synsets", &Value::Struct { dims: vec![1, 1], items: vec![item] });
        let at = body.windows(4).position(|w| w == b"WNIE").unwrap();
        body[at + 3] = b'D';
        let err = read_err(&compressed_file(&body));
        assert!(err.contains("struct `synsets`: field `WNID` appears twice"), "{err}");
    }
}
