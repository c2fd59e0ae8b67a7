//! Synthetic datasets in the real formats, for tests, the demo and benchmarks.
//!
//! `synth_cifar` writes a `cifar-10-binary.tar.gz` or `cifar-100-binary.tar.gz` that is byte-compatible
//! with the real archive (same members, record layout and label files) plus a manifest
//! (`<dataset>.toml`) with its size and SHA-256 and those of every member, whose URL points at the
//! archive on disk (`file://`). The output is a pure function of (seed, n): the same arguments give the
//! same bytes. `synth_svhn` does the same for SVHN's `.mat` files. Classes are learnable but not at a glance: each class has its own shape pattern, drawn in
//! random colours at a random offset with random brightness and strong pixel noise (with 100 classes
//! the colour carries part of the class), so a small network beats chance clearly within an epoch or
//! two while wider ones still do better.
//!
//! `synth_imagenet` writes the three ImageNet files in their real layouts: `ILSVRC2012_img_train.tar`
//! (a tar of per-class tars `<WNID>.tar` of `<WNID>_<k>.JPEG`, `k` neither consecutive nor fixed-width),
//! `ILSVRC2012_img_val.tar` (flat `ILSVRC2012_val_<8 digits>.JPEG`, stored out of name order) and
//! `ILSVRC2012_devkit_t12.tar.gz` (`data/meta.mat` with the real `synsets` struct layout, leaves and
//! internal nodes, IDs in an order that is not sorted-WNID order; the ground truth of IDs by val file
//! name). Ten real WNIDs; val image 1 is the sea snake n01751748, as in the real data. Images are JPEGs
//! of varied sizes with the class's shape pattern, plus the real set's odd files: a CMYK JPEG
//! ([`IMAGENET_CMYK`], and a YCCK one in val), the PNG named `.JPEG` ([`IMAGENET_PNG`]), grayscale
//! JPEGs ([`IMAGENET_GRAY`]) and a JPEG cut short after its frame header ([`IMAGENET_CORRUPT`]).
//! `synth_imagenet_as(.., ImagenetForm::KaggleZip)` writes the same images as Kaggle's zip instead
//! (`wrn data synth imagenet --kaggle`), with the same manifest but for where the files are.

use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};

use crate::cifar::{PIXELS, SIDE};
use crate::error::{Error, IoContext, Result};
use crate::manifest::{FileEntry, Manifest, Member};

/// A SplitMix64 step: the random stream is a function of (seed, image index, draw), never of a thread.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

struct Rng(u64);
impl Rng {
    fn new(seed: u64, stream: u64, index: u64) -> Rng {
        Rng(mix(mix(seed ^ mix(stream)) ^ index))
    }
    fn next(&mut self) -> u64 {
        self.0 = mix(self.0);
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const PALETTE: [[u8; 3]; 10] = [
    [220, 40, 40],
    [40, 200, 60],
    [50, 70, 220],
    [230, 210, 40],
    [200, 60, 210],
    [40, 200, 210],
    [240, 140, 30],
    [130, 130, 130],
    [120, 60, 20],
    [250, 250, 250],
];

/// Whether pixel (r, c) belongs to shape `k` (0..10), after shifting by (dy, dx).
fn in_shape(k: usize, r: usize, c: usize, dy: usize, dx: usize) -> bool {
    let (y, x) = ((r + dy) % SIDE, (c + dx) % SIDE);
    let (cy, cx) = (r as i32 - 16 + dy as i32 - 4, c as i32 - 16 + dx as i32 - 4);
    match k {
        0 => (y / 4) % 2 == 0,
        1 => (x / 4) % 2 == 0,
        2 => ((x + y) / 4) % 2 == 0,
        3 => ((x + SIDE - y) / 4).is_multiple_of(2),
        4 => ((x / 4) + (y / 4)) % 2 == 0,
        5 => cy.abs() < 8 && cx.abs() < 8,
        6 => cy * cy + cx * cx < 81,
        7 => cy.abs() < 3 || cx.abs() < 3,
        8 => cy.abs().max(cx.abs()) > 9,
        _ => y % 6 < 2 && x % 6 < 2,
    }
}

/// One synthetic image of class `class` as CIFAR planes (R, G, B, each row-major).
pub fn image_planes(seed: u64, stream: u64, index: u64, class: usize, classes: usize) -> Vec<u8> {
    let mut rng = Rng::new(seed, stream, index);
    // With up to 10 classes only the shape tells the class (colours are drawn at random); with 100 the
    // colour carries the class's tens digit.
    let (colour, shape) = if classes <= 10 { (rng.below(10) as usize, class) } else { (class % 10, class / 10) };
    let fg = PALETTE[colour];
    let bg = PALETTE[(colour + 1 + rng.below(9) as usize) % 10].map(|v| v / 3);
    let (dy, dx) = (rng.below(8) as usize, rng.below(8) as usize);
    let gain = 50 + rng.below(80) as i32; // brightness, percent
    let mut planes = vec![0u8; PIXELS];
    for r in 0..SIDE {
        for c in 0..SIDE {
            let px = if in_shape(shape, r, c, dy, dx) { fg } else { bg };
            let noise = rng.next();
            for ch in 0..3 {
                let n = ((noise >> (16 * ch)) & 0x7f) as i32 - 64;
                let v = i32::from(px[ch]) * gain / 100 + n;
                planes[ch * SIDE * SIDE + r * SIDE + c] = v.clamp(0, 255) as u8;
            }
        }
    }
    planes
}

/// Which synthetic CIFAR to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CifarKind {
    Cifar10,
    Cifar100,
}

fn records(kind: CifarKind, seed: u64, stream: u64, range: std::ops::Range<u64>, builtin: &Manifest) -> Vec<u8> {
    let classes = builtin.classes.count;
    let mut out = Vec::new();
    for i in range {
        let class = Rng::new(seed, stream + 1000, i).below(classes as u64) as usize;
        match kind {
            CifarKind::Cifar10 => out.push(class as u8),
            CifarKind::Cifar100 => out.extend([cifar100_coarse(class) as u8, class as u8]),
        }
        out.extend(image_planes(seed, stream, i, class, classes));
    }
    out
}

/// The CIFAR-100 superclass of each fine class (sorted-name order), as in the real dataset.
pub fn cifar100_coarse(fine: usize) -> usize {
    const COARSE: [u8; 100] = [
        4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11, 6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1,
        10, 12, 14, 16, 9, 11, 5, 5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17, 10, 3, 2, 12,
        12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13, 16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0,
        17, 8, 14, 13,
    ];
    usize::from(COARSE[fine])
}

fn tar_member(tar: &mut tar::Builder<impl Write>, path: &str, bytes: &[u8]) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(1_246_406_400); // fixed, so the archive is deterministic
    header.set_uid(0);
    header.set_gid(0);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, path, bytes)
}

/// Writes a synthetic CIFAR archive and its manifest into `out`; returns the manifest and its path.
/// `n` is the number of training images (the test split gets `n / 5`, at least one).
pub fn synth_cifar(kind: CifarKind, out: &Path, n: u64, seed: u64) -> Result<(Manifest, PathBuf)> {
    let name = match kind {
        CifarKind::Cifar10 => "cifar10",
        CifarKind::Cifar100 => "cifar100",
    };
    let mut manifest = Manifest::builtin(name)?;
    if n < 5 {
        return Err(Error::Unsupported { dataset: name.into(), detail: "--n must be at least 5".into() });
    }
    let n_test = (n / 5).max(1);
    std::fs::create_dir_all(out).at(out)?;
    let out = std::fs::canonicalize(out).at(out)?;
    let archive_path = out.join(&manifest.files[0].name);
    let members = cifar_members(kind, &manifest, n, n_test, seed);
    write_tar_gz(&archive_path, &members)?;
    let size = std::fs::metadata(&archive_path).at(&archive_path)?.len();
    let sha256 = crate::verify::sha256_file(&archive_path, None)?;

    manifest.title = format!("{} (synthetic, seed {seed}, n {n})", manifest.title);
    manifest.citation = "Synthetic data generated by `wrn data synth`; not for publication.".into();
    manifest.licence = "Generated data; no restrictions.".into();
    manifest.splits.insert("train".into(), n);
    manifest.splits.insert("test".into(), n_test);
    manifest.files = vec![FileEntry {
        name: manifest.files[0].name.clone(),
        url: format!("file://{}", archive_path.display()),
        mirrors: vec![],
        manual: false,
        size,
        sha256,
        md5: None,
        split: None,
        members: members
            .iter()
            .map(|(path, split, bytes)| Member {
                path: path.clone(),
                split: split.clone(),
                size: Some(bytes.len() as u64),
                sha256: Some(format!("{:x}", Sha256::digest(bytes))),
                md5: None,
                optional: false,
            })
            .collect(),
    }];
    manifest.validate().map_err(|detail| Error::Manifest { path: out.join(format!("{name}.toml")), detail })?;
    let manifest_path = out.join(format!("{name}.toml"));
    let text = format!("# Written by `wrn data synth {name} --n {n} --seed {seed}`.\n{}", manifest.to_toml());
    std::fs::write(&manifest_path, text).at(&manifest_path)?;
    Ok((manifest, manifest_path))
}

/// A member of a synthetic archive: its path, its split (if it holds records) and its bytes.
type SynthMember = (String, Option<String>, Vec<u8>);

/// The members of a synthetic CIFAR archive in the real archive's layout, with their contents.
fn cifar_members(kind: CifarKind, manifest: &Manifest, n: u64, n_test: u64, seed: u64) -> Vec<SynthMember> {
    let mut members: Vec<SynthMember> = Vec::new();
    match kind {
        CifarKind::Cifar10 => {
            let dir = "cifar-10-batches-bin";
            let mut names = manifest.classes.names.join("\n");
            names.push_str("\n\n");
            members.push((format!("{dir}/batches.meta.txt"), None, names.into_bytes()));
            for b in 0..5u64 {
                let range = (n * b / 5)..(n * (b + 1) / 5);
                let split = Some("train".to_string());
                members.push((
                    format!("{dir}/data_batch_{}.bin", b + 1),
                    split,
                    records(kind, seed, 0, range, manifest),
                ));
            }
            members.push((
                format!("{dir}/test_batch.bin"),
                Some("test".into()),
                records(kind, seed, 1, 0..n_test, manifest),
            ));
            members.push((
                format!("{dir}/readme.html"),
                None,
                b"<meta HTTP-EQUIV=\"REFRESH\" content=\"0; URL=http://www.cs.toronto.edu/~kriz/cifar.html\">\n"
                    .to_vec(),
            ));
        }
        CifarKind::Cifar100 => {
            let dir = "cifar-100-binary";
            let fine = manifest.classes.names.join("\n") + "\n";
            let coarse = manifest.classes.coarse.join("\n") + "\n";
            members.push((format!("{dir}/coarse_label_names.txt"), None, coarse.into_bytes()));
            members.push((format!("{dir}/fine_label_names.txt"), None, fine.into_bytes()));
            members.push((format!("{dir}/test.bin"), Some("test".into()), records(kind, seed, 1, 0..n_test, manifest)));
            members.push((format!("{dir}/train.bin"), Some("train".into()), records(kind, seed, 0, 0..n, manifest)));
        }
    }
    members
}

/// Writes `members` as a `.tar.gz` at `path`, atomically.
fn write_tar_gz(path: &Path, members: &[SynthMember]) -> Result<()> {
    let tmp = wrn_fs::AtomicFile::create(path)?;
    {
        let gz = GzEncoder::new(std::io::BufWriter::new(tmp.as_file()), flate2::Compression::default());
        let mut tar = tar::Builder::new(gz);
        for (member, _, bytes) in members {
            tar_member(&mut tar, member, bytes).at(tmp.path())?;
        }
        let gz = tar.into_inner().at(tmp.path())?;
        gz.finish().at(tmp.path())?.flush().at(tmp.path())?;
    }
    Ok(tmp.commit()?)
}

/// Writes synthetic SVHN `.mat` files (train `n`, test `n / 5`, extra `n / 2`, each at least one image)
/// in the real layout (`X` 32x32x3xN column-major `uint8`, `y` Nx1 with 10 for the digit 0, both
/// zlib-compressed) and a manifest; returns the manifest and its path.
pub fn synth_svhn(out: &Path, n: u64, seed: u64) -> Result<(Manifest, PathBuf)> {
    let mut manifest = Manifest::builtin("svhn")?;
    if n < 5 {
        return Err(Error::Unsupported { dataset: "svhn".into(), detail: "--n must be at least 5".into() });
    }
    std::fs::create_dir_all(out).at(out)?;
    let out = std::fs::canonicalize(out).at(out)?;
    let sizes = [("train", n), ("test", (n / 5).max(1)), ("extra", (n / 2).max(1))];
    let mut files = Vec::new();
    for (stream, (split, count)) in sizes.iter().enumerate() {
        let entry = manifest.files.iter().find(|f| f.split.as_deref() == Some(*split)).expect("svhn has the split");
        let mut x = vec![0u8; *count as usize * PIXELS];
        let mut y = Vec::with_capacity(*count as usize);
        for i in 0..*count {
            let class = Rng::new(seed, stream as u64 + 1000, i).below(10) as usize;
            y.push(if class == 0 { 10 } else { class as u8 });
            let planes = image_planes(seed, stream as u64, i, class, 10);
            let img = &mut x[i as usize * PIXELS..(i as usize + 1) * PIXELS];
            for ch in 0..3 {
                for r in 0..SIDE {
                    for c in 0..SIDE {
                        img[r + SIDE * c + SIDE * SIDE * ch] = planes[ch * SIDE * SIDE + r * SIDE + c];
                    }
                }
            }
        }
        let path = out.join(&entry.name);
        let tmp = wrn_fs::AtomicFile::create(&path)?;
        {
            let mut w = std::io::BufWriter::new(tmp.as_file());
            let dims = [32, 32, 3, *count as u32];
            let (x, y) = (crate::mat::uint8(&dims, &x), crate::mat::uint8(&[*count as u32, 1], &y));
            crate::mat::write(&mut w, &[("X", &x), ("y", &y)]).at(tmp.path())?;
            w.flush().at(tmp.path())?;
        }
        tmp.commit()?;
        manifest.splits.insert(split.to_string(), *count);
        files.push(FileEntry {
            name: entry.name.clone(),
            url: format!("file://{}", path.display()),
            mirrors: vec![],
            manual: false,
            size: std::fs::metadata(&path).at(&path)?.len(),
            sha256: crate::verify::sha256_file(&path, None)?,
            md5: None,
            split: Some(split.to_string()),
            members: vec![],
        });
    }
    manifest.title = format!("{} (synthetic, seed {seed}, n {n})", manifest.title);
    manifest.citation = "Synthetic data generated by `wrn data synth`; not for publication.".into();
    manifest.licence = "Generated data; no restrictions.".into();
    manifest.files = files;
    let manifest_path = out.join("svhn.toml");
    manifest.validate().map_err(|detail| Error::Manifest { path: manifest_path.clone(), detail })?;
    let text = format!("# Written by `wrn data synth svhn --n {n} --seed {seed}`.\n{}", manifest.to_toml());
    std::fs::write(&manifest_path, text).at(&manifest_path)?;
    Ok((manifest, manifest_path))
}

/// The synthetic ImageNet's synsets (WNID, words) in `meta.mat` order: ILSVRC2012_ID = position + 1.
/// Deliberately not sorted, so the sorted-WNID class order is exercised.
pub const IMAGENET_SYNSETS: [(&str, &str); 10] = [
    ("n02119789", "kit fox, Vulpes macrotis"),
    ("n02100735", "English setter"),
    ("n03255030", "dumbbell"),
    ("n01440764", "tench, Tinca tinca"),
    ("n01751748", "sea snake"),
    ("n02105855", "Shetland sheepdog, Shetland sheep dog, Shetland"),
    ("n01739381", "vine snake"),
    ("n13133613", "ear, spike, capitulum"),
    ("n04596742", "wok"),
    ("n07583066", "guacamole"),
];
/// A CMYK JPEG in the synthetic train set (one of the real 22).
pub const IMAGENET_CMYK: &str = "n01739381_1309.JPEG";
/// The PNG named `.JPEG` (the real one's name).
pub const IMAGENET_PNG: &str = "n02105855_2933.JPEG";
/// A grayscale JPEG in the synthetic train set.
pub const IMAGENET_GRAY: &str = "n04596742_17.JPEG";
/// A JPEG cut short after its frame header, before any image data.
pub const IMAGENET_CORRUPT: &str = "n03255030_9999.JPEG";
/// Val image 2 is a YCCK-encoded CMYK JPEG of n13133613 (as the real val's CMYK file), val image 3 grayscale.
pub const IMAGENET_VAL_CMYK: &str = "ILSVRC2012_val_00000002.JPEG";
pub const IMAGENET_VAL_GRAY: &str = "ILSVRC2012_val_00000003.JPEG";

/// How a synthetic ImageNet file is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stored {
    Rgb,
    Cmyk,
    Ycck,
    Gray,
    Png,
    Corrupt,
}

/// The (width, height) of a synthetic ImageNet image.
fn imagenet_size(seed: u64, stream: u64, index: u64) -> (usize, usize) {
    let mut rng = Rng::new(seed, stream + 7000, index);
    (48 + rng.below(113) as usize, 48 + rng.below(113) as usize)
}

/// One synthetic ImageNet image of (sorted) class `class`, of a random size, encoded as `how`.
fn imagenet_image(seed: u64, stream: u64, index: u64, class: usize, how: Stored) -> Vec<u8> {
    let planes = image_planes(seed, stream, index, class, 10);
    let (w, h) = imagenet_size(seed, stream, index);
    let mut rgb = vec![0u8; w * h * 3];
    for y in 0..h {
        for x in 0..w {
            let (r, c) = (y * SIDE / h, x * SIDE / w);
            for ch in 0..3 {
                rgb[(y * w + x) * 3 + ch] = planes[ch * SIDE * SIDE + r * SIDE + c];
            }
        }
    }
    let mut out = Vec::new();
    let jpeg = |data: &[u8], colour, out: &mut Vec<u8>| {
        jpeg_encoder::Encoder::new(out, 90).encode(data, w as u16, h as u16, colour).expect("encodes in memory");
    };
    match how {
        Stored::Rgb | Stored::Corrupt => jpeg(&rgb, jpeg_encoder::ColorType::Rgb, &mut out),
        Stored::Gray => {
            let luma: Vec<u8> = rgb
                .chunks_exact(3)
                .map(|p| ((299 * u32::from(p[0]) + 587 * u32::from(p[1]) + 114 * u32::from(p[2])) / 1000) as u8)
                .collect();
            jpeg(&luma, jpeg_encoder::ColorType::Luma, &mut out);
        }
        Stored::Cmyk | Stored::Ycck => {
            let cmyk: Vec<u8> = rgb.chunks_exact(3).flat_map(|p| [255 - p[0], 255 - p[1], 255 - p[2], 0]).collect();
            let colour =
                if how == Stored::Cmyk { jpeg_encoder::ColorType::Cmyk } else { jpeg_encoder::ColorType::CmykAsYcck };
            jpeg(&cmyk, colour, &mut out);
        }
        Stored::Png => {
            let img = image::RgbImage::from_raw(w as u32, h as u32, rgb).expect("sizes match");
            img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png).expect("encodes in memory");
        }
    }
    if how == Stored::Corrupt {
        out.truncate(100); // past the frame header, inside the tables before any image data
    }
    out
}

fn tar_bytes(members: &[(String, Vec<u8>)]) -> std::io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, bytes) in members {
        tar_member(&mut tar, path, bytes)?;
    }
    tar.into_inner()
}

/// Writes `bytes` to `out/name` atomically and returns its manifest entry.
fn write_file(out: &Path, name: &str, bytes: &[u8], split: Option<&str>, members: Vec<Member>) -> Result<FileEntry> {
    wrn_fs::atomic_write(&out.join(name), bytes)?;
    Ok(file_entry(out, name, bytes, split, members))
}

/// The manifest entry of `bytes` as the file `out/name`.
fn file_entry(out: &Path, name: &str, bytes: &[u8], split: Option<&str>, members: Vec<Member>) -> FileEntry {
    let path = out.join(name);
    FileEntry {
        name: name.into(),
        url: format!("file://{}", path.display()),
        mirrors: vec![],
        manual: false,
        size: bytes.len() as u64,
        sha256: format!("{:x}", Sha256::digest(bytes)),
        md5: None,
        split: split.map(str::to_string),
        members,
    }
}

/// The devkit's `meta.mat`: the struct array `synsets` with the real fields, the ten leaves (IDs 1-10
/// in [`IMAGENET_SYNSETS`] order) and two internal nodes above them.
pub fn imagenet_meta_mat() -> Vec<u8> {
    use crate::mat::{chars, doubles, Value};
    let synset = |id: usize, wnid: &str, words: &str, children: &[f64], height: f64, images: f64| {
        let mut s = std::collections::BTreeMap::new();
        s.insert("ILSVRC2012_ID".to_string(), doubles(&[1, 1], &[id as f64]));
        s.insert("WNID".to_string(), chars(wnid));
        s.insert("words".to_string(), chars(words));
        s.insert("gloss".to_string(), chars(&format!("a synthetic gloss of {words}")));
        s.insert("num_children".to_string(), doubles(&[1, 1], &[children.len() as f64]));
        s.insert("children".to_string(), doubles(&[1, children.len() as u32], children));
        s.insert("wordnet_height".to_string(), doubles(&[1, 1], &[height]));
        s.insert("num_train_images".to_string(), doubles(&[1, 1], &[images]));
        s
    };
    let mut items: Vec<_> =
        IMAGENET_SYNSETS.iter().enumerate().map(|(i, (w, words))| synset(i + 1, w, words, &[], 0.0, 1300.0)).collect();
    items.push(synset(11, "n00001740", "entity", &[12.0], 2.0, 0.0));
    let leaves: Vec<f64> = (1..=10).map(f64::from).collect();
    items.push(synset(12, "n00002684", "object, physical object", &leaves, 1.0, 0.0));
    let synsets = Value::Struct { dims: vec![items.len() as u32, 1], items };
    let mut bytes = Vec::new();
    crate::mat::write(&mut bytes, &[("synsets", &synsets)]).expect("writes to memory");
    bytes
}

/// Named files and their bytes, in order.
type Files = Vec<(String, Vec<u8>)>;

/// The form a synthetic ImageNet is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImagenetForm {
    /// The official files: the train tar of per-class tars, the val tar and the devkit.
    Tars,
    /// Kaggle's `imagenet-object-localization-challenge.zip` (the manifest's `[alternatives.kaggle]`).
    KaggleZip,
}

/// Writes a synthetic ImageNet (train tar of per-class tars, val tar, devkit) and its manifest into
/// `out`; returns the manifest and its path. `n` training images over 10 classes (at least 40), and
/// `max(n / 5, 20)` val images.
pub fn synth_imagenet(out: &Path, n: u64, seed: u64) -> Result<(Manifest, PathBuf)> {
    synth_imagenet_as(out, n, seed, ImagenetForm::Tars)
}

/// Like [`synth_imagenet`], in either form. The images are the same for the same `(n, seed)` whatever
/// the form, and so is the manifest but for where its files are: as a Kaggle zip, the tars' entries
/// (their sizes and SHA-256 as [`ImagenetForm::Tars`] writes them) are marked `manual`, since they are
/// not written, and `[alternatives.kaggle]` points at the zip.
///
/// The zip has the real layout: `LOC_synset_mapping.txt` (sorted WNIDs with their words),
/// `LOC_val_solution.csv` (rows in shuffled order, one to three boxes each, all of the image's class),
/// `LOC_train_solution.csv` and `LOC_sample_submission.csv`, folder entries, train images deflated under
/// `ILSVRC/Data/CLS-LOC/train/<WNID>/`, val images stored (not deflated) under `.../val/` in the val tar's
/// shuffled order, a few unlabelled images under `.../test/`, and some annotation XML files.
pub fn synth_imagenet_as(out: &Path, n: u64, seed: u64, form: ImagenetForm) -> Result<(Manifest, PathBuf)> {
    let mut manifest = Manifest::builtin("imagenet")?;
    if n < 40 {
        return Err(Error::Unsupported { dataset: "imagenet".into(), detail: "--n must be at least 40".into() });
    }
    std::fs::create_dir_all(out).at(out)?;
    let out = std::fs::canonicalize(out).at(out)?;
    let train = imagenet_train(n, seed);
    let outer: Vec<(String, Vec<u8>)> = train
        .iter()
        .map(|(wnid, inner)| Ok((format!("{wnid}.tar"), tar_bytes(inner)?)))
        .collect::<std::io::Result<_>>()
        .at(&out)?;
    let n_val = (n / 5).max(20);
    let val = imagenet_val(n_val, seed);
    let (devkit, devkit_listed) = imagenet_devkit(&val.truth, &out)?;
    let files = [
        ("ILSVRC2012_img_train.tar", tar_bytes(&outer).at(&out)?, Some("train"), vec![]),
        ("ILSVRC2012_img_val.tar", tar_bytes(&val.files).at(&out)?, Some("val"), vec![]),
        ("ILSVRC2012_devkit_t12.tar.gz", devkit, None, devkit_listed),
    ];
    let (command, zip_path) = match form {
        ImagenetForm::Tars => (format!("wrn data synth imagenet --n {n} --seed {seed}"), None),
        ImagenetForm::KaggleZip => {
            let zip_path = write_kaggle_zip(&mut manifest, &out, seed, &train, &val)?;
            (format!("wrn data synth imagenet --kaggle --n {n} --seed {seed}"), Some(zip_path))
        }
    };
    manifest.files = Vec::new();
    for (name, bytes, split, members) in files {
        let entry = match zip_path {
            None => write_file(&out, name, &bytes, split, members)?,
            Some(_) => FileEntry { manual: true, ..file_entry(&out, name, &bytes, split, members) },
        };
        manifest.files.push(entry);
    }
    describe_imagenet(&mut manifest, n, n_val, seed, zip_path.is_some());
    let manifest_path = out.join("imagenet.toml");
    manifest.validate().map_err(|detail| Error::Manifest { path: manifest_path.clone(), detail })?;
    let text = format!("# Written by `{command}`.\n{}", manifest.to_toml());
    std::fs::write(&manifest_path, text).at(&manifest_path)?;
    Ok((manifest, manifest_path))
}

/// The sorted-WNID class of a synthetic synset.
fn sorted_class(wnid: &str) -> usize {
    let mut sorted: Vec<&str> = IMAGENET_SYNSETS.iter().map(|s| s.0).collect();
    sorted.sort_unstable();
    sorted.iter().position(|w| *w == wnid).expect("a synset")
}

/// The train images: per class in meta.mat order, the class's images numbered sparsely, the odd files
/// first in their classes.
fn imagenet_train(n: u64, seed: u64) -> Vec<(&'static str, Files)> {
    let specials = [(IMAGENET_CMYK, Stored::Cmyk), (IMAGENET_PNG, Stored::Png), (IMAGENET_GRAY, Stored::Gray)];
    let mut train: Vec<(&str, Files)> = Vec::new();
    let mut index = 0u64;
    for (m, (wnid, _)) in IMAGENET_SYNSETS.iter().enumerate() {
        let count = n / 10 + u64::from((m as u64) < n % 10);
        let mut inner = Vec::new();
        for j in 0..count {
            let mut name = format!("{wnid}_{}.JPEG", 10 + 37 * j + (m as u64 * 13) % 7);
            let mut how = Stored::Rgb;
            if j == 0 {
                if let Some((special, h)) = specials.iter().find(|(s, _)| s.starts_with(wnid)) {
                    (name, how) = (special.to_string(), *h);
                }
                if IMAGENET_CORRUPT.starts_with(wnid) {
                    (name, how) = (IMAGENET_CORRUPT.to_string(), Stored::Corrupt);
                }
            }
            inner.push((name, imagenet_image(seed, 0, index, sorted_class(wnid), how)));
            index += 1;
        }
        train.push((*wnid, inner));
    }
    train
}

/// The synthetic val split: its files in stored order, each image's WNID in name order, and the
/// devkit's ground truth.
struct Val {
    files: Files,
    wnids: Vec<&'static str>,
    truth: String,
}

/// The val images: image 1 is the sea snake, image 2 the ear (CMYK), the rest drawn; stored out of
/// name order.
fn imagenet_val(n_val: u64, seed: u64) -> Val {
    let mut val = Val { files: Vec::new(), wnids: Vec::new(), truth: String::new() };
    for k in 1..=n_val {
        let position = |wnid: &str| IMAGENET_SYNSETS.iter().position(|s| s.0 == wnid).expect("a synset");
        let m = match k {
            1 => position("n01751748"),
            2 => position("n13133613"),
            _ => Rng::new(seed, 3000, k).below(10) as usize,
        };
        let name = format!("ILSVRC2012_val_{k:08}.JPEG");
        let how = match name.as_str() {
            IMAGENET_VAL_CMYK => Stored::Ycck,
            IMAGENET_VAL_GRAY => Stored::Gray,
            _ => Stored::Rgb,
        };
        val.truth.push_str(&format!("{}\n", m + 1));
        val.wnids.push(IMAGENET_SYNSETS[m].0);
        val.files.push((name, imagenet_image(seed, 1, k, sorted_class(IMAGENET_SYNSETS[m].0), how)));
    }
    val.files.sort_by_key(|(name, _)| mix(seed ^ crate::imagenet::val_number(name).unwrap_or(0) as u64));
    val
}

/// The devkit's `.tar.gz` bytes (meta.mat, the ground truth `truth` and the other files) and the
/// members the manifest lists.
fn imagenet_devkit(truth: &str, out: &Path) -> Result<(Vec<u8>, Vec<Member>)> {
    let devkit_members: Vec<(String, Vec<u8>)> = vec![
        ("ILSVRC2012_devkit_t12/COPYING".into(), b"Synthetic devkit written by `wrn data synth imagenet`.\n".to_vec()),
        ("ILSVRC2012_devkit_t12/readme.txt".into(), b"Synthetic ILSVRC2012 devkit.\n".to_vec()),
        (crate::imagenet::META_MEMBER.into(), imagenet_meta_mat()),
        (crate::imagenet::GROUND_TRUTH_MEMBER.into(), truth.as_bytes().to_vec()),
        ("ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_blacklist.txt".into(), b"3\n".to_vec()),
    ];
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar_bytes(&devkit_members).at(out)?).at(out)?;
    let devkit = gz.finish().at(out)?;
    let listed = |path: &str| {
        let (_, bytes) = devkit_members.iter().find(|(p, _)| p == path).expect("a devkit member");
        Member {
            path: path.into(),
            split: None,
            size: Some(bytes.len() as u64),
            sha256: Some(format!("{:x}", Sha256::digest(bytes))),
            md5: None,
            optional: false,
        }
    };
    Ok((devkit, vec![listed(crate::imagenet::META_MEMBER), listed(crate::imagenet::GROUND_TRUTH_MEMBER)]))
}

/// Writes the Kaggle zip of the same images into `out` and points the manifest's alternative at it.
fn write_kaggle_zip(
    manifest: &mut Manifest,
    out: &Path,
    seed: u64,
    train: &[(&str, Files)],
    val: &Val,
) -> Result<PathBuf> {
    let alt = manifest.alternatives.get_mut("kaggle").expect("the built-in manifest has the Kaggle zip");
    let zip_path = out.join(&alt.file);
    let bytes = kaggle_zip(alt, seed, train, &val.files, &val.wnids)
        .map_err(|e| Error::Archive { path: zip_path.clone(), detail: format!("writing the synthetic zip: {e}") })?;
    wrn_fs::atomic_write(&zip_path, &bytes)?;
    alt.url = format!("file://{}", zip_path.display());
    alt.manual = Some(format!(
        "Synthetic: register it with\n    wrn data --manifest {} import imagenet {}\n",
        out.join("imagenet.toml").display(),
        zip_path.display()
    ));
    Ok(zip_path)
}

/// The synthetic manifest's title, citation, licence, class count and splits.
fn describe_imagenet(manifest: &mut Manifest, n: u64, n_val: u64, seed: u64, kaggle: bool) {
    manifest.title = format!("{} (synthetic, seed {seed}, n {n})", manifest.title);
    manifest.citation = "Synthetic data generated by `wrn data synth`; not for publication.".into();
    manifest.licence = "Generated data; no restrictions.".into();
    manifest.manual = kaggle.then(|| {
        "Synthetic ImageNet written as the Kaggle zip only: the tars below are not written (`wrn data synth imagenet` \
         without --kaggle writes them)."
            .to_string()
    });
    manifest.classes.count = IMAGENET_SYNSETS.len();
    manifest.splits.insert("train".into(), n);
    manifest.splits.insert("val".into(), n_val);
}

/// The synthetic `LOC_val_solution.csv`: one to three boxes inside each val image, all of its class;
/// rows in shuffled order.
fn val_solution(seed: u64, val_wnids: &[&str]) -> String {
    let mut rows: Vec<(u64, String)> = (1..=val_wnids.len() as u64)
        .map(|k| {
            let wnid = val_wnids[k as usize - 1];
            let (w, h) = imagenet_size(seed, 1, k);
            let (w, h) = (w as u64, h as u64);
            let mut rng = Rng::new(seed, 4000, k);
            let boxes: Vec<String> = (0..1 + rng.below(3))
                .map(|_| {
                    let (x1, y1) = (rng.below(w / 2), rng.below(h / 2));
                    let (x2, y2) = (x1 + w / 4 + rng.below(w / 4), y1 + h / 4 + rng.below(h / 4));
                    format!("{wnid} {x1} {y1} {x2} {y2}")
                })
                .collect();
            (mix(seed ^ 0x5eed ^ k), format!("ILSVRC2012_val_{k:08},{} \n", boxes.join(" ")))
        })
        .collect();
    rows.sort();
    std::iter::once("ImageId,PredictionString\n".to_string()).chain(rows.into_iter().map(|r| r.1)).collect()
}

/// The synthetic Kaggle zip's bytes: the same images as the tars, in the layout of `alt`.
fn kaggle_zip(
    alt: &crate::manifest::Alternative,
    seed: u64,
    train: &[(&str, Files)],
    val: &[(String, Vec<u8>)],
    val_wnids: &[&str],
) -> zip::result::ZipResult<Vec<u8>> {
    use zip::write::SimpleFileOptions;
    use zip::CompressionMethod::{Deflated, Stored as Store};
    let time = zip::DateTime::from_date_and_time(2018, 3, 2, 12, 0, 0).expect("a valid date");
    let options = |method| {
        SimpleFileOptions::default().compression_method(method).last_modified_time(time).unix_permissions(0o644)
    };
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let mut dirs = std::collections::BTreeSet::new();
    let mut file = |w: &mut zip::ZipWriter<std::io::Cursor<Vec<u8>>>, path: &str, bytes: &[u8], method| {
        // Folder entries first, as zip tools write them.
        let mut at = 0;
        while let Some(i) = path[at..].find('/') {
            let dir = &path[..at + i + 1];
            if dirs.insert(dir.to_string()) {
                w.add_directory(dir, options(Store).unix_permissions(0o755))?;
            }
            at += i + 1;
        }
        w.start_file(path, options(method))?;
        w.write_all(bytes)?;
        zip::result::ZipResult::Ok(())
    };
    let folder = |split: &str| alt.folders.get(split).cloned().unwrap_or_default();
    let (train_folder, val_folder) = (folder("train"), folder("val"));
    let data_root = train_folder.trim_end_matches('/').rsplit_once('/').map_or("", |(root, _)| root).to_string();
    let annotations = data_root.replacen("Data", "Annotations", 1);

    // A few annotations (ignored by wrn) and their rows of LOC_train_solution.csv.
    let mut train_solution = String::from("ImageId,PredictionString\n");
    for (wnid, images) in train.iter().take(2) {
        let (name, _) = &images[1];
        let stem = name.trim_end_matches(".JPEG");
        train_solution.push_str(&format!("{stem},{wnid} 1 2 30 40 \n"));
        let xml = format!("<annotation><filename>{stem}</filename><object><name>{wnid}</name></object></annotation>\n");
        file(&mut w, &format!("{annotations}/train/{wnid}/{stem}.xml"), xml.as_bytes(), Deflated)?;
    }
    for (wnid, images) in train {
        for (name, bytes) in images {
            file(&mut w, &format!("{train_folder}{wnid}/{name}"), bytes, Deflated)?;
        }
    }
    for (name, bytes) in val {
        file(&mut w, &format!("{val_folder}{name}"), bytes, Store)?;
    }
    let mut submission = String::from("ImageId,PredictionString\n");
    for k in 1..=3u64 {
        let name = format!("ILSVRC2012_test_{k:08}.JPEG");
        let bytes = imagenet_image(seed, 2, k, (k % 10) as usize, Stored::Rgb);
        file(&mut w, &format!("{data_root}/test/{name}"), &bytes, Store)?;
        submission.push_str(&format!("ILSVRC2012_test_{k:08},n01440764 0 0 10 10\n"));
    }
    // The class list in sorted-WNID order, as the real one.
    let mut synsets = IMAGENET_SYNSETS.to_vec();
    synsets.sort_unstable();
    let mapping: String = synsets.iter().map(|(wnid, words)| format!("{wnid} {words}\n")).collect();
    let solution = val_solution(seed, val_wnids);
    for (k, wnid) in val_wnids.iter().enumerate().take(2) {
        let xml = format!(
            "<annotation><filename>ILSVRC2012_val_{:08}</filename><object><name>{wnid}</name></object></annotation>\n",
            k + 1
        );
        file(&mut w, &format!("{annotations}/val/ILSVRC2012_val_{:08}.xml", k + 1), xml.as_bytes(), Deflated)?;
    }
    file(&mut w, "LOC_sample_submission.csv", submission.as_bytes(), Deflated)?;
    file(&mut w, &alt.class_list, mapping.as_bytes(), Deflated)?;
    file(&mut w, "LOC_train_solution.csv", train_solution.as_bytes(), Deflated)?;
    file(&mut w, &alt.val_labels, solution.as_bytes(), Deflated)?;
    Ok(w.finish()?.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rgb(bytes: &[u8]) -> image::RgbImage {
        image::load_from_memory(bytes).unwrap().to_rgb8()
    }

    #[test]
    fn odd_imagenet_files_hold_the_same_picture_in_another_encoding() {
        let plain = imagenet_image(1, 0, 5, 3, Stored::Rgb);
        let reference = rgb(&plain);
        for how in [Stored::Cmyk, Stored::Ycck, Stored::Png, Stored::Gray] {
            let bytes = imagenet_image(1, 0, 5, 3, how);
            let frame = crate::imagenet::jpeg_frame(&bytes);
            match how {
                Stored::Png => assert!(bytes.starts_with(b"\x89PNG") && frame.is_err()),
                Stored::Gray => assert_eq!(frame.unwrap().2, 1),
                _ => assert_eq!(frame.unwrap().2, 4, "{how:?}"),
            }
            let img = rgb(&bytes);
            assert_eq!(img.dimensions(), reference.dimensions());
            let diff: f64 = img.as_raw().iter().zip(reference.as_raw()).map(|(a, b)| f64::from(a.abs_diff(*b))).sum();
            let mean = diff / img.as_raw().len() as f64;
            // Grayscale loses the colour, not the picture; the others are the same up to JPEG error.
            let bound = if how == Stored::Gray { 60.0 } else { 12.0 };
            assert!(mean < bound, "{how:?}: mean difference {mean}");
        }
        let corrupt = imagenet_image(1, 0, 5, 3, Stored::Corrupt);
        assert_eq!(corrupt.len(), 100);
        // The file starts as the RGB JPEG does, frame header included; cut inside the tables, it does not
        // decode, nor do its headers read to the image data.
        let whole = imagenet_image(1, 0, 5, 3, Stored::Rgb);
        assert!(whole.starts_with(&corrupt));
        assert_eq!(crate::imagenet::jpeg_frame(&whole).unwrap().2, 3);
        assert!(crate::imagenet::jpeg_frame(&corrupt).is_err());
        assert!(image::load_from_memory(&corrupt).is_err());
    }

    #[test]
    fn the_meta_mat_reads_back_as_the_devkit_layout() {
        let meta = imagenet_meta_mat();
        let vars = crate::mat::read_from(meta.as_slice(), meta.len() as u64, Path::new("meta.mat")).unwrap();
        let synsets = crate::imagenet::synsets(&vars, Path::new("meta.mat")).unwrap();
        assert_eq!(synsets.len(), 12);
        assert!(synsets.iter().enumerate().all(|(i, s)| s.id as usize == i + 1), "synsets(i).ILSVRC2012_ID == i");
        let index = crate::imagenet::ClassIndex::new(&synsets, 10, Path::new("meta.mat")).unwrap();
        assert_eq!(index.wnids[0], "n01440764");
        assert_eq!(index.class_of_wnid("n01751748"), Some(2));
        assert_eq!(index.class_of_id(5), Some(2), "ID 5 is the sea snake");
        let crate::mat::Value::Struct { items, .. } = &vars[0].1 else { panic!() };
        for field in ["gloss", "children", "wordnet_height", "num_train_images"] {
            assert!(items[0].contains_key(field), "{field}");
        }
    }
}
