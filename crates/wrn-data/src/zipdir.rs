//! Zip archives read in place: the central directory listed without touching any member, and a file
//! reader that several threads can clone to read members of one zip at once through the `zip` crate.
//!
//! [`read_central_directory`] finds the end-of-central-directory record (and its zip64 form), then
//! streams the central directory once, handing each entry's name, sizes, CRC-32, compression method,
//! encryption flag and Unix mode to a callback. Nothing else of the file is read, so listing the 1.4
//! million members of ImageNet's Kaggle zip costs one sequential read of about 150 MB; the `zip` crate's
//! per-entry metadata would read every local header, one seek each. Multi-disk archives are refused.
//!
//! [`SharedFile`] reads at explicit offsets (`pread`), with a small buffer of its own: clones share the
//! open file but not a cursor, so a `zip::ZipArchive<SharedFile>` clones cheaply (the parsed directory
//! is shared too) and each worker thread reads its members independently.

use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, IoContext, Result};

const EOCD: u32 = 0x0605_4b50;
const ZIP64_LOCATOR: u32 = 0x0706_4b50;
const ZIP64_EOCD: u32 = 0x0606_4b50;
const CENTRAL: u32 = 0x0201_4b50;
/// Compression methods the `zip` crate reads here: stored and deflate.
pub const STORED: u16 = 0;
pub const DEFLATED: u16 = 8;

/// One central-directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CentralEntry {
    /// The member's path as stored (`/`-separated; directories end in `/`).
    pub name: String,
    pub method: u16,
    pub encrypted: bool,
    pub crc32: u32,
    pub compressed_size: u64,
    /// Uncompressed size.
    pub size: u64,
    /// The Unix mode, when the archive was made on Unix.
    pub unix_mode: Option<u32>,
}

impl CentralEntry {
    pub fn is_dir(&self) -> bool {
        self.name.ends_with('/')
    }

    pub fn is_symlink(&self) -> bool {
        self.unix_mode.is_some_and(|m| m & 0o170_000 == 0o120_000)
    }
}

/// Whether the file starts like a zip (a local header, or the end record of an empty zip).
pub fn is_zip(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok()
        && (magic == *b"PK\x03\x04" || magic == *b"PK\x05\x06")
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}

/// Where the central directory is: (offset in the file, size, number of entries).
fn locate(file: &mut std::fs::File, path: &Path) -> Result<(u64, u64, u64)> {
    let err = |detail: String| Error::Archive { path: path.into(), detail };
    let len = file.metadata().at(path)?.len();
    let tail_len = len.min(22 + 65_535);
    let mut tail = vec![0u8; tail_len as usize];
    file.seek(SeekFrom::Start(len - tail_len)).at(path)?;
    file.read_exact(&mut tail).at(path)?;
    // The last end record whose comment runs exactly to the end of the file, else the last one at all.
    let candidates: Vec<usize> =
        (0..tail.len().saturating_sub(21)).rev().filter(|&i| u32_at(&tail, i) == EOCD).collect();
    let at = candidates
        .iter()
        .copied()
        .find(|&i| i + 22 + usize::from(u16_at(&tail, i + 20)) == tail.len())
        .or_else(|| candidates.first().copied())
        .ok_or_else(|| err("not a zip, or truncated: no end-of-central-directory record".into()))?;
    let eocd_pos = len - tail_len + at as u64;
    let e = &tail[at..at + 22];
    if u16_at(e, 4) != 0 || u16_at(e, 6) != 0 {
        return Err(err("a multi-disk (split) zip; join its parts into one file first".into()));
    }
    let (mut entries, mut size, mut offset) =
        (u64::from(u16_at(e, 10)), u64::from(u32_at(e, 12)), u64::from(u32_at(e, 16)));
    let mut end = eocd_pos;
    if eocd_pos >= 20 {
        let mut loc = [0u8; 20];
        file.seek(SeekFrom::Start(eocd_pos - 20)).at(path)?;
        file.read_exact(&mut loc).at(path)?;
        if u32_at(&loc, 0) == ZIP64_LOCATOR {
            let record_pos = u64_at(&loc, 8);
            // The record's recorded offset may be shifted by data before the archive; it sits right
            // before the locator.
            let mut rec = [0u8; 56];
            let actual = (eocd_pos - 20).checked_sub(56).ok_or_else(|| err("zip64 locator without a record".into()))?;
            let mut found = None;
            for pos in [record_pos, actual] {
                if pos + 56 <= len {
                    file.seek(SeekFrom::Start(pos)).at(path)?;
                    file.read_exact(&mut rec).at(path)?;
                    if u32_at(&rec, 0) == ZIP64_EOCD {
                        found = Some(pos);
                        break;
                    }
                }
            }
            let pos = found.ok_or_else(|| err("zip64 end record not found where its locator points".into()))?;
            if u32_at(&rec, 16) != 0 || u32_at(&rec, 20) != 0 {
                return Err(err("a multi-disk (split) zip; join its parts into one file first".into()));
            }
            (entries, size, offset) = (u64_at(&rec, 32), u64_at(&rec, 40), u64_at(&rec, 48));
            end = pos;
        }
    }
    // Data before the archive (a self-extractor's stub) shifts every recorded offset by the same amount.
    let shift = end.checked_sub(offset.saturating_add(size)).ok_or_else(|| {
        err(format!("the central directory ({size} bytes at {offset}) runs past its end record (truncated?)"))
    })?;
    Ok((offset + shift, size, entries))
}

/// Streams the central directory of the zip at `path`, calling `each` for every entry in stored order;
/// returns the number of entries. An error from `each` stops the walk and is returned.
pub fn read_central_directory(path: &Path, mut each: impl FnMut(&CentralEntry) -> Result<()>) -> Result<u64> {
    let err = |detail: String| Error::Archive { path: path.into(), detail };
    let mut file = std::fs::File::open(path).at(path)?;
    let (start, size, entries) = locate(&mut file, path)?;
    file.seek(SeekFrom::Start(start)).at(path)?;
    let mut dir = BufReader::with_capacity(1 << 20, file.take(size));
    let mut fixed = [0u8; 46];
    let mut variable = Vec::new();
    let mut count = 0u64;
    loop {
        match dir.read_exact(&mut fixed[..4]) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(Error::Io { path: path.into(), error: e }),
        }
        if u32_at(&fixed, 0) != CENTRAL {
            return Err(err(format!("central directory entry {} has a bad signature (damaged zip)", count + 1)));
        }
        dir.read_exact(&mut fixed[4..])
            .map_err(|_| err(format!("central directory entry {} is cut short (damaged zip)", count + 1)))?;
        let (name_len, extra_len, comment_len) =
            (usize::from(u16_at(&fixed, 28)), usize::from(u16_at(&fixed, 30)), usize::from(u16_at(&fixed, 32)));
        variable.resize(name_len + extra_len + comment_len, 0);
        dir.read_exact(&mut variable)
            .map_err(|_| err(format!("central directory entry {} is cut short (damaged zip)", count + 1)))?;
        let name = String::from_utf8_lossy(&variable[..name_len]).into_owned();
        let (mut csize, mut usize_) = (u64::from(u32_at(&fixed, 20)), u64::from(u32_at(&fixed, 24)));
        // Zip64 extra field: the 64-bit values of the fields saturated in the fixed part, in order.
        let mut extra = &variable[name_len..name_len + extra_len];
        while extra.len() >= 4 {
            let (id, len) = (u16_at(extra, 0), usize::from(u16_at(extra, 2)));
            let body = extra.get(4..4 + len).unwrap_or(&[]);
            if id == 0x0001 {
                let mut values = body.chunks_exact(8).map(|c| u64_at(c, 0));
                if usize_ == 0xFFFF_FFFF {
                    usize_ = values.next().ok_or_else(|| err(format!("member `{name}`: zip64 size missing")))?;
                }
                if csize == 0xFFFF_FFFF {
                    csize = values.next().ok_or_else(|| err(format!("member `{name}`: zip64 size missing")))?;
                }
            }
            extra = extra.get(4 + len..).unwrap_or(&[]);
        }
        let made_on_unix = u16_at(&fixed, 4) >> 8 == 3;
        let entry = CentralEntry {
            name,
            method: u16_at(&fixed, 10),
            encrypted: u16_at(&fixed, 8) & 1 != 0,
            crc32: u32_at(&fixed, 16),
            compressed_size: csize,
            size: usize_,
            unix_mode: made_on_unix.then(|| u32_at(&fixed, 38) >> 16).filter(|&m| m != 0),
        };
        count += 1;
        each(&entry)?;
    }
    // The 16-bit count saturates without zip64; otherwise it must agree.
    if count != entries && !(entries == 0xFFFF && count > entries) {
        return Err(err(format!("the central directory holds {count} entries, its end record says {entries}")));
    }
    Ok(count)
}

/// A read-only file read at explicit offsets, buffered; clones share the open file, not the position.
#[derive(Debug)]
pub struct SharedFile {
    file: Arc<std::fs::File>,
    len: u64,
    pos: u64,
    buf: Vec<u8>,
    buf_start: u64,
    buf_len: usize,
}

const BUFFER: usize = 64 << 10;

impl SharedFile {
    pub fn open(path: &Path) -> Result<SharedFile> {
        let file = std::fs::File::open(path).at(path)?;
        let len = file.metadata().at(path)?.len();
        Ok(SharedFile { file: Arc::new(file), len, pos: 0, buf: Vec::new(), buf_start: 0, buf_len: 0 })
    }

    fn read_at(&self, out: &mut [u8], at: u64) -> std::io::Result<usize> {
        #[cfg(unix)]
        {
            std::os::unix::fs::FileExt::read_at(&*self.file, out, at)
        }
        #[cfg(windows)]
        {
            std::os::windows::fs::FileExt::seek_read(&*self.file, out, at)
        }
        #[cfg(not(any(unix, windows)))]
        {
            let _ = (out, at);
            Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "positioned reads"))
        }
    }
}

impl Clone for SharedFile {
    fn clone(&self) -> SharedFile {
        SharedFile { file: self.file.clone(), len: self.len, pos: self.pos, buf: Vec::new(), buf_start: 0, buf_len: 0 }
    }
}

impl Read for SharedFile {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if out.is_empty() || self.pos >= self.len {
            return Ok(0);
        }
        let in_buffer = self.pos >= self.buf_start && self.pos < self.buf_start + self.buf_len as u64;
        if !in_buffer {
            if out.len() >= BUFFER {
                let n = self.read_at(out, self.pos)?;
                self.pos += n as u64;
                return Ok(n);
            }
            self.buf.resize(BUFFER, 0);
            let mut buf = std::mem::take(&mut self.buf);
            let n = self.read_at(&mut buf, self.pos);
            self.buf = buf;
            self.buf_start = self.pos;
            self.buf_len = n?;
            if self.buf_len == 0 {
                return Ok(0);
            }
        }
        let from = (self.pos - self.buf_start) as usize;
        let n = out.len().min(self.buf_len - from);
        out[..n].copy_from_slice(&self.buf[from..from + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

/// The position a seek `to` leads to from `pos` in a stream of `len` bytes; before 0 is an error saying
/// "seek before the start of the `what`".
pub(crate) fn seek_target(pos: u64, len: u64, to: SeekFrom, what: &str) -> std::io::Result<u64> {
    let target = match to {
        SeekFrom::Start(p) => Some(p),
        SeekFrom::End(d) => len.checked_add_signed(d),
        SeekFrom::Current(d) => pos.checked_add_signed(d),
    };
    target.ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("seek before the start of the {what}"))
    })
}

impl Seek for SharedFile {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        self.pos = seek_target(self.pos, self.len, to, "file")?;
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write_zip(path: &Path, members: &[(&str, &[u8], zip::CompressionMethod)]) {
        let mut w = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
        for (name, bytes, method) in members {
            if name.ends_with('/') {
                w.add_directory(*name, zip::write::SimpleFileOptions::default()).unwrap();
                continue;
            }
            let opts = zip::write::SimpleFileOptions::default().compression_method(*method).unix_permissions(0o644);
            w.start_file(*name, opts).unwrap();
            w.write_all(bytes).unwrap();
        }
        w.finish().unwrap();
    }

    #[test]
    fn the_central_directory_lists_names_sizes_and_checksums() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.zip");
        let big: Vec<u8> = (0..100_000u32).map(|i| (i % 7) as u8).collect();
        write_zip(
            &path,
            &[
                ("d/", b"", zip::CompressionMethod::Stored),
                ("d/small.txt", b"hello", zip::CompressionMethod::Stored),
                ("d/big.bin", &big, zip::CompressionMethod::Deflated),
            ],
        );
        assert!(is_zip(&path));
        let mut seen = Vec::new();
        let n = read_central_directory(&path, |e| {
            seen.push(e.clone());
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 3);
        assert_eq!(seen.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), ["d/", "d/small.txt", "d/big.bin"]);
        assert!(seen[0].is_dir() && !seen[1].is_dir());
        assert_eq!((seen[1].size, seen[1].method, seen[1].crc32), (5, STORED, 0x3610_a686));
        assert_eq!((seen[2].size, seen[2].method), (100_000, DEFLATED));
        assert!(seen[2].compressed_size < 10_000);
        assert_eq!(seen[1].unix_mode.map(|m| m & 0o777), Some(0o644));
        assert!(!seen[1].is_symlink() && !seen[1].encrypted);

        // Members read through the zip crate with clones of one shared file, from several threads.
        let archive = zip::ZipArchive::new(SharedFile::open(&path).unwrap()).unwrap();
        std::thread::scope(|s| {
            for _ in 0..4 {
                let mut a = archive.clone();
                let big = &big;
                s.spawn(move || {
                    for _ in 0..3 {
                        let mut out = Vec::new();
                        a.by_name("d/big.bin").unwrap().read_to_end(&mut out).unwrap();
                        assert_eq!(&out, big);
                        out.clear();
                        a.by_name("d/small.txt").unwrap().read_to_end(&mut out).unwrap();
                        assert_eq!(out, b"hello");
                    }
                });
            }
        });
    }

    #[test]
    fn a_truncated_or_foreign_file_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.zip");
        write_zip(&path, &[("x.txt", b"some text", zip::CompressionMethod::Deflated)]);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
        let err = read_central_directory(&path, |_| Ok(())).unwrap_err().to_string();
        assert!(err.contains("a.zip") && err.contains("end-of-central-directory"), "{err}");
        std::fs::write(&path, b"not a zip at all").unwrap();
        assert!(!is_zip(&path));
        assert!(read_central_directory(&path, |_| Ok(())).is_err());
    }
}
