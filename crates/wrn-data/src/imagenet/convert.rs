//! One image checked and converted for the encoded cache. Files are sniffed by their magic bytes and
//! JPEG headers (zune-jpeg), never by their extension: an RGB JPEG is decoded once to check it and kept
//! as it is (or re-encoded to fit `--max-side`); CMYK and grayscale JPEGs and PNGs (one is named
//! `.JPEG` in the real train set) are converted to RGB JPEG and reported; a file that does not decode,
//! or whose image data stops before its end-of-image marker (a file cut short, which decoders fill with
//! grey without complaint), is left out with the reason.

use zune_jpeg::zune_core::{bytestream::ZCursor, colorspace::ColorSpace, options::DecoderOptions};
use zune_jpeg::JpegDecoder;

use crate::encoded;

/// Why a JPEG's headers, or a re-encoding, fail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JpegError {
    #[error("no JPEG start-of-image marker")]
    NoStart,
    #[error("{0}")]
    Headers(String),
    #[error("no frame header")]
    NoFrame,
    #[error("the image data ends before the end-of-image marker (a file cut short)")]
    CutShort,
    #[error("{0} pixels {1}, more than a JPEG can hold (65535)")]
    TooLarge(u32, &'static str),
    #[error("JPEG encoding: {0}")]
    Encoding(String),
}

/// `(width, height, components)` from a JPEG's headers, or what is wrong.
pub fn jpeg_frame(bytes: &[u8]) -> Result<(u16, u16, u8), JpegError> {
    headers(bytes).map(|(_, frame)| frame)
}

/// A JPEG decoder over bytes in memory.
type Decoder<'a> = JpegDecoder<ZCursor<&'a [u8]>>;

/// A decoder for RGB output with the headers read, and `(width, height, components)` from them.
fn headers(bytes: &[u8]) -> Result<(Decoder<'_>, (u16, u16, u8)), JpegError> {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return Err(JpegError::NoStart);
    }
    let options = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::RGB);
    let mut decoder = JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    decoder.decode_headers().map_err(|e| JpegError::Headers(e.to_string()))?;
    let info = decoder.info().ok_or(JpegError::NoFrame)?;
    Ok((decoder, (info.width, info.height, info.components)))
}

/// Whether the entropy-coded data reaches an end-of-image marker after the first start-of-scan.
/// Decoders fill a file cut short with grey and report no error; a cut file has no marker there.
/// (Inside entropy-coded data a 0xFF byte is always followed by 0x00 or a marker, so 0xFF 0xD9 after
/// the scan header is the end-of-image marker; real files end with it, so the search from the end
/// stops at once.)
pub(crate) fn reaches_end_of_image(bytes: &[u8]) -> bool {
    let Some(sos) = start_of_scan(bytes) else { return false };
    bytes[sos..].windows(2).rev().any(|w| w == [0xFF, 0xD9])
}

/// The offset of the first start-of-scan marker, walking the marker segments from the start.
fn start_of_scan(bytes: &[u8]) -> Option<usize> {
    let mut at = 2;
    loop {
        while *bytes.get(at)? == 0xFF && *bytes.get(at + 1)? == 0xFF {
            at += 1;
        }
        if *bytes.get(at)? != 0xFF {
            return None;
        }
        match *bytes.get(at + 1)? {
            0xDA => return Some(at),
            0x01 | 0xD0..=0xD7 => at += 2,
            _ => at += 2 + usize::from(u16::from_be_bytes([*bytes.get(at + 2)?, *bytes.get(at + 3)?])),
        }
    }
}

/// One image after checking and converting.
pub(crate) struct Processed {
    /// Replacement bytes; `None` keeps the original.
    pub bytes: Option<Vec<u8>>,
    pub width: u32,
    pub height: u32,
    pub flags: u16,
    /// What the image was converted from.
    pub converted: Option<String>,
    /// Why the image is left out.
    pub skipped: Option<String>,
}

impl Processed {
    fn skip(reason: String) -> Processed {
        Processed { bytes: None, width: 0, height: 0, flags: 0, converted: None, skipped: Some(reason) }
    }

    fn kept(width: u16, height: u16) -> Processed {
        let (width, height) = (u32::from(width), u32::from(height));
        Processed { bytes: None, width, height, flags: 0, converted: None, skipped: None }
    }

    fn encoded(re: Reencoded, converted: Option<String>) -> Processed {
        let flags = if converted.is_some() { re.flags | encoded::FLAG_CONVERTED } else { re.flags };
        let (width, height) = (u32::from(re.width), u32::from(re.height));
        Processed { bytes: Some(re.bytes), width, height, flags, converted, skipped: None }
    }
}

/// An RGB image encoded as JPEG.
struct Reencoded {
    bytes: Vec<u8>,
    width: u16,
    height: u16,
    flags: u16,
}

/// Encodes `rgb` as JPEG, first resized (Catmull-Rom) to fit `max_side` when it is larger.
fn encode_rgb(rgb: &image::RgbImage, max_side: Option<u32>, quality: u8) -> Result<Reencoded, JpegError> {
    let (w, h) = rgb.dimensions();
    let mut flags = 0;
    let resized;
    let img = match max_side {
        Some(m) if w.max(h) > m => {
            let (nw, nh) = if w >= h {
                (m, ((u64::from(h) * u64::from(m) + u64::from(w) / 2) / u64::from(w)).max(1) as u32)
            } else {
                (((u64::from(w) * u64::from(m) + u64::from(h) / 2) / u64::from(h)).max(1) as u32, m)
            };
            resized = image::imageops::resize(rgb, nw, nh, image::imageops::FilterType::CatmullRom);
            flags |= encoded::FLAG_RESIZED;
            &resized
        }
        _ => rgb,
    };
    let (w, h) = img.dimensions();
    let width = u16::try_from(w).map_err(|_| JpegError::TooLarge(w, "wide"))?;
    let height = u16::try_from(h).map_err(|_| JpegError::TooLarge(h, "high"))?;
    let mut bytes = Vec::new();
    jpeg_encoder::Encoder::new(&mut bytes, quality)
        .encode(img.as_raw(), width, height, jpeg_encoder::ColorType::Rgb)
        .map_err(|e| JpegError::Encoding(e.to_string()))?;
    Ok(Reencoded { bytes, width, height, flags })
}

/// Checks one image and converts it when it is not an RGB JPEG within `max_side`; `name` only tells a
/// PNG named `.JPEG` from one named `.png` in the report.
pub(crate) fn process(name: &str, bytes: &[u8], max_side: Option<u32>, quality: u8) -> Processed {
    let (format, from) = if bytes.starts_with(&[0xFF, 0xD8]) {
        match headers(bytes) {
            Err(e) => return Processed::skip(format!("corrupt JPEG: {e}")),
            Ok(_) if !reaches_end_of_image(bytes) => {
                return Processed::skip(format!("corrupt JPEG: {}", JpegError::CutShort))
            }
            Ok((decoder, (w, h, 3))) => return rgb_jpeg(decoder, w, h, max_side, quality),
            Ok((_, (_, _, 1))) => (image::ImageFormat::Jpeg, "grayscale JPEG".to_string()),
            Ok((_, (_, _, 4))) => (image::ImageFormat::Jpeg, "CMYK JPEG".to_string()),
            Ok((_, (_, _, c))) => (image::ImageFormat::Jpeg, format!("JPEG with {c} components")),
        }
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        let lower = name.to_ascii_lowercase();
        let named = if lower.ends_with(".jpeg") || lower.ends_with(".jpg") { "PNG named .JPEG" } else { "PNG" };
        (image::ImageFormat::Png, named.to_string())
    } else {
        let head: Vec<String> = bytes.iter().take(4).map(|b| format!("{b:02x}")).collect();
        return Processed::skip(format!("neither a JPEG nor a PNG (starts with {})", head.join(" ")));
    };
    let rgb = match image::load_from_memory_with_format(bytes, format) {
        Ok(img) => img.to_rgb8(),
        Err(e) => return Processed::skip(format!("corrupt {from}: {e}")),
    };
    match encode_rgb(&rgb, max_side, quality) {
        Ok(re) => Processed::encoded(re, Some(from)),
        Err(e) => Processed::skip(e.to_string()),
    }
}

/// An RGB JPEG of `w`x`h`: decoded to check it, kept as it is unless it exceeds `max_side`.
fn rgb_jpeg(mut decoder: Decoder<'_>, w: u16, h: u16, max_side: Option<u32>, quality: u8) -> Processed {
    let pixels = match decoder.decode() {
        Ok(p) if p.len() == usize::from(w) * usize::from(h) * 3 => p,
        Ok(p) => return Processed::skip(format!("corrupt JPEG: {} bytes decoded for {w}x{h}", p.len())),
        Err(e) => return Processed::skip(format!("corrupt JPEG: {e}")),
    };
    if max_side.is_none_or(|m| u32::from(w.max(h)) <= m) {
        return Processed::kept(w, h);
    }
    let rgb = image::RgbImage::from_raw(u32::from(w), u32::from(h), pixels).expect("sizes checked");
    match encode_rgb(&rgb, max_side, quality) {
        Ok(re) => Processed::encoded(re, None),
        Err(e) => Processed::skip(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_headers_are_read_or_refused() {
        let mut jpeg = Vec::new();
        jpeg_encoder::Encoder::new(&mut jpeg, 80).encode(&[7u8; 5 * 3], 5, 3, jpeg_encoder::ColorType::Luma).unwrap();
        assert_eq!(jpeg_frame(&jpeg), Ok((5, 3, 1)));
        assert!(jpeg_frame(&jpeg[..10]).is_err(), "a JPEG cut before its frame header");
        assert_eq!(jpeg_frame(b"\x89PNG\r\n"), Err(JpegError::NoStart));
    }

    #[test]
    fn processing_keeps_rgb_jpegs_converts_odd_ones_and_reports_corrupt_ones() {
        let rgb: Vec<u8> = (0..40 * 30 * 3).map(|i| (i % 251) as u8).collect();
        let mut jpeg = Vec::new();
        jpeg_encoder::Encoder::new(&mut jpeg, 90).encode(&rgb, 40, 30, jpeg_encoder::ColorType::Rgb).unwrap();
        let p = process("a.JPEG", &jpeg, None, 90);
        assert!(p.bytes.is_none() && p.skipped.is_none() && (p.width, p.height) == (40, 30));
        let p = process("a.JPEG", &jpeg, Some(20), 90);
        assert_eq!((p.width, p.height, p.flags), (20, 15, encoded::FLAG_RESIZED));
        let p = process("c.JPEG", &jpeg[..jpeg.len() / 4], None, 90);
        assert!(p.skipped.is_some_and(|r| r.starts_with("corrupt JPEG")), "a JPEG cut short does not decode");
        let big: Vec<u8> = (0..200 * 150 * 3).map(|i| ((i / 3) % 200 + (i % 3) * 20) as u8).collect();
        let mut jpeg = Vec::new();
        jpeg_encoder::Encoder::new(&mut jpeg, 90).encode(&big, 200, 150, jpeg_encoder::ColorType::Rgb).unwrap();
        assert!(process("e.JPEG", &jpeg, None, 90).skipped.is_none());
        let cut = &jpeg[..jpeg.len() / 3];
        assert!(headers(cut).is_ok_and(|(mut d, _)| d.decode().is_ok()), "the decoder alone accepts a cut file");
        let p = process("d.JPEG", cut, None, 90);
        assert_eq!(
            p.skipped.as_deref(),
            Some("corrupt JPEG: the image data ends before the end-of-image marker (a file cut short)")
        );
        assert!(reaches_end_of_image(&jpeg) && !reaches_end_of_image(&jpeg[..jpeg.len() - 2]));
        let p = process("b.JPEG", b"GIF89a....", None, 90);
        assert!(p.skipped.unwrap().contains("neither a JPEG nor a PNG (starts with 47 49 46 38)"));
    }
}
