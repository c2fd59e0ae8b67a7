//! ImageNet end to end on the synthetic files in the real formats: `synth_imagenet` -> import by hash ->
//! prepare into JPEG shards and an index. Checks the labels (train by inner tar, val by file name through
//! the devkit to the sorted-WNID order), the odd files (converted and reported), the corrupt file (left
//! out and reported by name, the rest prepared), `--max-side`, re-runs, and that bad archives are refused
//! with nothing left that looks complete.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wrn_data::encoded::{EncodedSplit, FLAG_CONVERTED};
use wrn_data::imagenet::{jpeg_frame, PrepareOptions};
use wrn_data::manifest::Manifest;
use wrn_data::store::{State, Store};
use wrn_data::synth::{self, IMAGENET_SYNSETS};

fn synth_and_import(n: u64) -> (tempfile::TempDir, tempfile::TempDir, Manifest, Store) {
    let src = tempfile::tempdir().unwrap();
    let (m, path) = synth::synth_imagenet(src.path(), n, 3).unwrap();
    assert_eq!(Manifest::load(&path).unwrap(), m, "the manifest on disk is the one returned");
    let data = tempfile::tempdir().unwrap();
    let store = Store::new(data.path());
    let done = wrn_data::import::import(&store, &m, &[src.path().to_path_buf()], false).unwrap();
    assert_eq!(done.len(), 3, "train tar, val tar and devkit are recognised by hash");
    assert_eq!(store.status(&m).state, State::Verified);
    (src, data, m, store)
}

fn small_shards() -> PrepareOptions {
    PrepareOptions { shard_bytes: 64 << 10, ..PrepareOptions::default() }
}

#[test]
fn synthetic_imagenet_prepares_with_the_real_label_conventions() {
    let (_src, _data, m, store) = synth_and_import(120);
    let reports = wrn_data::ops::prepare_with(&store, &m, &small_shards()).unwrap();
    assert_eq!(reports.iter().map(|r| r.split.as_str()).collect::<Vec<_>>(), ["train", "val"]);
    assert_eq!(store.status(&m).state, State::Prepared);

    let mut sorted: Vec<&str> = IMAGENET_SYNSETS.iter().map(|s| s.0).collect();
    sorted.sort_unstable();
    let train = store.open_encoded(&m, "train").unwrap();
    train.verify().unwrap();
    assert_eq!(train.meta.classes, sorted);
    assert!(train.meta.shards.len() > 1, "64 KiB shards: {:?}", train.meta.shards.len());
    assert_eq!(train.len(), 119, "120 images less the corrupt one");
    assert_eq!(train.meta.skipped.len(), 1);
    assert_eq!(train.meta.skipped[0].name, synth::IMAGENET_CORRUPT);
    assert!(train.meta.skipped[0].reason.contains("corrupt JPEG"), "{:?}", train.meta.skipped);
    let converted: Vec<(&str, &str)> =
        train.meta.converted.iter().map(|c| (c.name.as_str(), c.from.as_str())).collect();
    assert_eq!(
        converted,
        [
            (synth::IMAGENET_CMYK, "CMYK JPEG"),
            (synth::IMAGENET_PNG, "PNG named .JPEG"),
            (synth::IMAGENET_GRAY, "grayscale JPEG"),
        ]
    );
    let notes = reports[0].notes.join("\n");
    assert!(notes.contains(synth::IMAGENET_CORRUPT) && notes.contains("converted n02105855_2933.JPEG"), "{notes}");
    for i in 0..train.len() {
        let name = train.name(i);
        // The class of a training image is its inner tar's WNID, the file-name prefix.
        assert_eq!(&name[..9], sorted[usize::from(train.label(i))], "{name}");
        // Every stored image is an RGB JPEG of the recorded size.
        let (w, h, comps) = jpeg_frame(train.encoded(i)).unwrap();
        let r = train.record(i);
        assert_eq!((comps, w, h), (3, r.width, r.height), "{name}");
        assert_eq!(r.flags & FLAG_CONVERTED != 0, converted.iter().any(|c| c.0 == name), "{name}");
    }
    assert!((1..train.len()).all(|i| train.name(i - 1) < train.name(i)), "the index is sorted by name");
    // Every class is present.
    let mut seen = [false; 10];
    train.labels().iter().for_each(|&l| seen[usize::from(l)] = true);
    assert!(seen.iter().all(|&s| s));

    let val = store.open_encoded(&m, "val").unwrap();
    val.verify().unwrap();
    assert_eq!(val.len(), 24);
    assert_eq!(val.name(0), "ILSVRC2012_val_00000001.JPEG");
    assert_eq!(sorted[usize::from(val.label(0))], "n01751748", "val image 1 -> n01751748");
    assert_eq!(val.label(0), 2, "the sea snake's sorted position, not its ILSVRC2012_ID - 1 (= 4)");
    // The ground truth holds IDs (meta.mat positions + 1); labels are sorted-WNID positions.
    let truth = devkit_truth(&store, &m);
    for i in 0..val.len() {
        assert_eq!(val.name(i), format!("ILSVRC2012_val_{:08}.JPEG", i + 1));
        let wnid = IMAGENET_SYNSETS[truth[i] - 1].0;
        assert_eq!(sorted[usize::from(val.label(i))], wnid, "val image {}", i + 1);
    }
    assert!(val.labels().iter().zip(&truth).any(|(&l, &id)| usize::from(l) != id - 1), "the mapping is exercised");
    let val_converted: Vec<&str> = val.meta.converted.iter().map(|c| c.from.as_str()).collect();
    assert_eq!(val_converted, ["CMYK JPEG", "grayscale JPEG"]);

    // Verification covers the shards, and a second prepare keeps what is done.
    assert!(wrn_data::ops::verify_all(&store, std::slice::from_ref(&m))
        .iter()
        .all(|l| matches!(l.result, Some(Ok(())))));
    let again = wrn_data::ops::prepare_with(&store, &m, &small_shards()).unwrap();
    assert!(again.iter().all(|r| r.notes.iter().any(|n| n.contains("already prepared"))), "{again:?}");
    assert_eq!(again[0].sha256, reports[0].sha256);
}

fn devkit_truth(store: &Store, m: &Manifest) -> Vec<usize> {
    let devkit = store.file_path(m, m.file("ILSVRC2012_devkit_t12.tar.gz").unwrap());
    let gz = flate2::read::GzDecoder::new(std::fs::File::open(devkit).unwrap());
    let mut tar = tar::Archive::new(gz);
    for e in tar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().ends_with("ILSVRC2012_validation_ground_truth.txt") {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut e, &mut s).unwrap();
            return s.lines().map(|l| l.parse().unwrap()).collect();
        }
    }
    panic!("no ground truth");
}

#[test]
fn max_side_reencodes_large_images() {
    let (_src, _data, m, store) = synth_and_import(40);
    let opts = PrepareOptions { max_side: Some(64), ..PrepareOptions::default() };
    wrn_data::ops::prepare_with(&store, &m, &opts).unwrap();
    let train = store.open_encoded(&m, "train").unwrap();
    assert!(train.meta.resized > 10, "{}", train.meta.resized);
    for i in 0..train.len() {
        let (w, h, c) = jpeg_frame(train.encoded(i)).unwrap();
        assert!(w.max(h) <= 64 && c == 3, "{}: {w}x{h}", train.name(i));
    }
    // Another --max-side is another preparation, not "already prepared".
    let again = wrn_data::ops::prepare_with(&store, &m, &PrepareOptions::default()).unwrap();
    assert!(again[0].notes.iter().all(|n| !n.contains("already prepared")));
    assert_eq!(store.open_encoded(&m, "train").unwrap().meta.max_side, None);
}

/// Replaces the manifest's train tar with `bytes`, imports it, and returns the error of preparing.
fn prepare_with_train_tar(bytes: Vec<u8>) -> (String, PathBuf, tempfile::TempDir) {
    let (src, data, mut m, _) = synth_and_import(40);
    let path = src.path().join("bad_train.tar");
    std::fs::write(&path, &bytes).unwrap();
    let entry = m.files.iter_mut().find(|f| f.name == "ILSVRC2012_img_train.tar").unwrap();
    entry.size = bytes.len() as u64;
    entry.sha256 = format!("{:x}", Sha256::digest(&bytes));
    let store = Store::new(data.path());
    wrn_data::import::import(&store, &m, &[path], false).unwrap();
    let err = wrn_data::ops::prepare(&store, &m).unwrap_err().to_string();
    (err, store.prepared_dir(&m), data)
}

fn header(kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o644);
    h
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

#[test]
fn links_and_escaping_paths_in_the_archive_are_refused_leaving_nothing() {
    // A per-class tar holding one good image and then a symbolic link.
    let jpeg = {
        let mut out = Vec::new();
        jpeg_encoder::Encoder::new(&mut out, 90).encode(&[9u8; 8 * 8 * 3], 8, 8, jpeg_encoder::ColorType::Rgb).unwrap();
        out
    };
    let mut inner = tar::Builder::new(Vec::new());
    inner.append_data(&mut header(tar::EntryType::Regular, jpeg.len() as u64), "n01440764_1.JPEG", &jpeg[..]).unwrap();
    let mut link = header(tar::EntryType::Symlink, 0);
    inner.append_link(&mut link, "n01440764_2.JPEG", "/etc/passwd").unwrap();
    let inner = inner.into_inner().unwrap();
    let mut outer = tar::Builder::new(Vec::new());
    outer.append_data(&mut header(tar::EntryType::Regular, inner.len() as u64), "n01440764.tar", &inner[..]).unwrap();
    let (err, dir, _keep) = prepare_with_train_tar(outer.into_inner().unwrap());
    assert!(err.contains("n01440764_2.JPEG") && err.contains("is a link"), "{err}");
    assert!(leftovers(&dir).iter().all(|f| !f.starts_with("train")), "{:?}", leftovers(&dir));

    // A member whose path climbs out (written raw: the tar crate refuses to build one).
    let mut h = header(tar::EntryType::Regular, jpeg.len() as u64);
    h.as_gnu_mut().unwrap().name[..16].copy_from_slice(b"../n01440764.tar");
    h.set_cksum();
    let mut raw = h.as_bytes().to_vec();
    raw.extend(&jpeg);
    raw.resize(raw.len().div_ceil(512) * 512 + 1024, 0);
    let (err, dir, _keep) = prepare_with_train_tar(raw);
    assert!(err.contains("../n01440764.tar") && err.contains("leaves the archive"), "{err}");
    assert!(leftovers(&dir).iter().all(|f| !f.starts_with("train")), "{:?}", leftovers(&dir));

    // A class the devkit does not know.
    let mut outer = tar::Builder::new(Vec::new());
    outer.append_data(&mut header(tar::EntryType::Regular, inner.len() as u64), "n99999999.tar", &inner[..]).unwrap();
    let (err, _, _keep) = prepare_with_train_tar(outer.into_inner().unwrap());
    assert!(err.contains("n99999999 is not a class of the devkit"), "{err}");
}

#[test]
fn a_truncated_train_tar_is_an_error_and_no_index_is_written() {
    let src = tempfile::tempdir().unwrap();
    let (_, _) = synth::synth_imagenet(src.path(), 40, 4).unwrap();
    let bytes = std::fs::read(src.path().join("ILSVRC2012_img_train.tar")).unwrap();
    let (err, dir, _keep) = prepare_with_train_tar(bytes[..bytes.len() / 2].to_vec());
    assert!(err.contains("ILSVRC2012_img_train.tar") || err.contains("images, the manifest says"), "{err}");
    assert!(!dir.join("train.wrni").exists());
    assert!(EncodedSplit::open(&dir.join("train.wrni")).is_err());
}

#[test]
fn fetch_with_the_synthetic_manifest_goes_from_nothing_to_prepared() {
    let src = tempfile::tempdir().unwrap();
    let (m, _) = synth::synth_imagenet(src.path(), 40, 5).unwrap();
    let data = tempfile::tempdir().unwrap();
    let store = Store::new(data.path());
    assert_eq!(store.status(&m).state, State::Missing);
    let opts = wrn_data::fetch::FetchOptions { progress: false, ..Default::default() };
    let (fetched, prepared) = wrn_data::ops::fetch_and_prepare(&store, &m, &opts, false).unwrap();
    assert_eq!((fetched.len(), prepared.len()), (3, 2));
    let status = store.status(&m);
    assert_eq!(status.state, State::Prepared);
    assert_eq!(status.prepared.iter().map(|p| p.images).collect::<Vec<_>>(), [Some(39), Some(20)]);
    assert!(status.prepared.iter().all(|p| p.size_on_disk > 0));
}
