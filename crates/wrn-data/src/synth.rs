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
        3 => ((x + SIDE - y) / 4) % 2 == 0,
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
    let entry = &manifest.files[0];
    let archive_path = out.join(&entry.name);

    // Members in the real archive's layout, with their contents.
    let mut members: Vec<(String, Option<String>, Vec<u8>)> = Vec::new();
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
                    records(kind, seed, 0, range, &manifest),
                ));
            }
            members.push((
                format!("{dir}/test_batch.bin"),
                Some("test".into()),
                records(kind, seed, 1, 0..n_test, &manifest),
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
            members.push((
                format!("{dir}/test.bin"),
                Some("test".into()),
                records(kind, seed, 1, 0..n_test, &manifest),
            ));
            members.push((format!("{dir}/train.bin"), Some("train".into()), records(kind, seed, 0, 0..n, &manifest)));
        }
    }

    let tmp = tempfile::Builder::new().prefix(".synth-").tempfile_in(&out).at(&out)?;
    {
        let gz = GzEncoder::new(std::io::BufWriter::new(tmp.as_file()), flate2::Compression::default());
        let mut tar = tar::Builder::new(gz);
        for (path, _, bytes) in &members {
            tar_member(&mut tar, path, bytes).at(tmp.path())?;
        }
        let gz = tar.into_inner().at(tmp.path())?;
        gz.finish().at(tmp.path())?.flush().at(tmp.path())?;
    }
    crate::verify::make_readable(tmp.as_file(), tmp.path())?;
    tmp.persist(&archive_path).map_err(|e| Error::Io { path: archive_path.clone(), source: e.error })?;
    let size = std::fs::metadata(&archive_path).at(&archive_path)?.len();
    let sha256 = crate::verify::sha256_file(&archive_path, None)?;

    manifest.title = format!("{} (synthetic, seed {seed}, n {n})", manifest.title);
    manifest.citation = "Synthetic data generated by `wrn data synth`; not for publication.".into();
    manifest.licence = "Generated data; no restrictions.".into();
    manifest.splits.insert("train".into(), n);
    manifest.splits.insert("test".into(), n_test);
    manifest.files = vec![FileEntry {
        name: entry.name.clone(),
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
        let tmp = tempfile::Builder::new().prefix(".synth-").tempfile_in(&out).at(&out)?;
        {
            let mut w = std::io::BufWriter::new(tmp.as_file());
            let dims = [32, 32, 3, *count as u32];
            crate::svhn::write_mat(&mut w, &[("X", &dims, &x), ("y", &[*count as u32, 1], &y)]).at(tmp.path())?;
            w.flush().at(tmp.path())?;
        }
        crate::verify::make_readable(tmp.as_file(), tmp.path())?;
        tmp.persist(&path).map_err(|e| Error::Io { path: path.clone(), source: e.error })?;
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
