//! The ImageNet validation-label mapping on a devkit-shaped fixture: a `meta.mat` struct array whose
//! ILSVRC2012_IDs are not in sorted-WNID order, and a ground truth of IDs; labels must be sorted-WNID
//! positions (val image 1 -> n01751748 -> 65), never `ID - 1`.

use std::io::Write;
use std::path::Path;

use wrn_data::imagenet::{self, GROUND_TRUTH_MEMBER, META_MEMBER};

fn pad8(v: &mut Vec<u8>) {
    while !v.len().is_multiple_of(8) {
        v.push(0);
    }
}

fn element(kind: u32, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend(kind.to_le_bytes());
    v.extend((data.len() as u32).to_le_bytes());
    v.extend(data);
    pad8(&mut v);
    v
}

fn matrix(class: u32, dims: &[u32], name: &str, rest: &[u8]) -> Vec<u8> {
    let mut body = element(6, &[class.to_le_bytes(), 0u32.to_le_bytes()].concat());
    body.extend(element(5, &dims.iter().flat_map(|d| d.to_le_bytes()).collect::<Vec<_>>()));
    body.extend(element(1, name.as_bytes()));
    body.extend(rest);
    element(14, &body)
}

fn double(v: f64) -> Vec<u8> {
    matrix(6, &[1, 1], "", &element(9, &v.to_le_bytes()))
}

/// A char array stored as UTF-16 code units, as MATLAB writes them.
fn chars(s: &str) -> Vec<u8> {
    let units: Vec<u8> = s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
    matrix(4, &[1, s.len() as u32], "", &element(4, &units))
}

/// `meta.mat` with a `synsets` struct array of (id, wnid, num_children).
fn meta_mat(synsets: &[(u32, String, u32)]) -> Vec<u8> {
    let fields = ["ILSVRC2012_ID", "WNID", "words", "num_children"];
    let mut rest = Vec::new();
    rest.extend((4u32 << 16 | 5).to_le_bytes());
    rest.extend(32u32.to_le_bytes());
    let mut names = vec![0u8; 32 * fields.len()];
    for (i, f) in fields.iter().enumerate() {
        names[32 * i..32 * i + f.len()].copy_from_slice(f.as_bytes());
    }
    rest.extend(element(1, &names));
    for (id, wnid, children) in synsets {
        rest.extend(double(f64::from(*id)));
        rest.extend(chars(wnid));
        rest.extend(chars("a thing"));
        rest.extend(double(f64::from(*children)));
    }
    let mut header = b"MATLAB 5.0 MAT-file, Platform: GLNXA64".to_vec();
    header.resize(116, b' ');
    header.extend([0u8; 8]);
    header.extend(0x0100u16.to_le_bytes());
    header.extend(b"IM");
    let var = matrix(2, &[synsets.len() as u32, 1], "synsets", &rest);
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(&var).unwrap();
    // Compressed elements are not padded.
    let compressed = z.finish().unwrap();
    [header, 15u32.to_le_bytes().to_vec(), (compressed.len() as u32).to_le_bytes().to_vec(), compressed].concat()
}

/// 1000 leaf WNIDs (n01751748 sorted 66th), given IDs in an order unrelated to sorting, plus two
/// internal nodes; and a ground truth for 50 val images.
fn fixture() -> (Vec<(u32, String, u32)>, Vec<u32>) {
    let mut wnids: Vec<String> = (0..65).map(|k| format!("n0{:07}", 1_000_000 + k * 1000)).collect();
    wnids.push("n01751748".into());
    wnids.extend((0..934).map(|k| format!("n0{:07}", 2_000_000 + k * 997)));
    // IDs: a fixed permutation (multiplication by a unit mod 1000) so ID order is not sorted order.
    let mut synsets: Vec<(u32, String, u32)> =
        wnids.iter().enumerate().map(|(i, w)| (((i * 379 + 17) % 1000) as u32 + 1, w.clone(), 0)).collect();
    synsets.sort_by_key(|s| s.0);
    synsets.push((1001, "n00001740".into(), 3));
    synsets.push((1002, "n00002137".into(), 2));
    let id_of_sea_snake = synsets.iter().find(|s| s.1 == "n01751748").unwrap().0;
    let truth: Vec<u32> = std::iter::once(id_of_sea_snake).chain((1..50).map(|k| (k * 20) as u32)).collect();
    (synsets, truth)
}

fn devkit(path: &Path, meta: &[u8], truth: &str) {
    let gz = flate2::write::GzEncoder::new(std::fs::File::create(path).unwrap(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for (name, bytes) in [
        ("ILSVRC2012_devkit_t12/readme.txt", b"devkit".as_slice()),
        (META_MEMBER, meta),
        (GROUND_TRUTH_MEMBER, truth.as_bytes()),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        tar.append_data(&mut h, name, bytes).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap();
}

#[test]
fn val_labels_go_through_the_wnid_to_the_sorted_index() {
    let (synsets, truth) = fixture();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ILSVRC2012_devkit_t12.tar.gz");
    let text: String = truth.iter().map(|id| format!("{id}\n")).collect();
    devkit(&path, &meta_mat(&synsets), &text);
    let (index, labels) = imagenet::read_devkit(&path, 1000).unwrap();
    assert_eq!(index.wnids.len(), 1000);
    assert!(index.wnids.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(index.wnids[65], "n01751748");
    assert_eq!(labels.len(), 50);
    assert_eq!(labels[0], 65, "val image 1 -> n01751748 -> class 65");
    assert_ne!(u32::from(labels[0]), truth[0] - 1, "not ID - 1");
    for (label, id) in labels.iter().zip(&truth) {
        let wnid = &synsets.iter().find(|s| s.0 == *id).unwrap().1;
        assert_eq!(&index.wnids[usize::from(*label)], wnid);
        assert_eq!(index.class_of_wnid(wnid), Some(*label));
    }
}

#[test]
fn a_bad_devkit_is_refused_with_the_reason() {
    let (synsets, _) = fixture();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("devkit.tar.gz");
    devkit(&path, &meta_mat(&synsets), "1\n1001\n");
    let err = imagenet::read_devkit(&path, 1000).unwrap_err().to_string();
    assert!(err.contains("ILSVRC2012_validation_ground_truth.txt") && err.contains("line 2: `1001`"), "{err}");
    devkit(&path, &meta_mat(&synsets[..999]), "1\n");
    let err = imagenet::read_devkit(&path, 1000).unwrap_err().to_string();
    assert!(err.contains("meta.mat") && err.contains("999 leaf synsets"), "{err}");
}
