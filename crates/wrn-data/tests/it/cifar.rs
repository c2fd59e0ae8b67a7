//! CIFAR end to end on synthetic archives in the real format: synthesis is deterministic, preparation
//! produces the documented cache with the right labels and learnable classes, and malformed archives
//! (truncated gzip, missing, extra, unsafe or linked members, records of the wrong size) are refused
//! with an error naming the archive and the fault.

use std::io::Write;
use std::path::{Path, PathBuf};

use wrn_data::cifar::{self, PIXELS};
use wrn_data::manifest::Manifest;
use wrn_data::store::{State, Store};
use wrn_data::synth::{self, CifarKind};

fn synth(kind: CifarKind, dir: &Path, n: u64, seed: u64) -> (Manifest, PathBuf) {
    synth::synth_cifar(kind, dir, n, seed).unwrap()
}

/// Copies a synthetic archive into a store the way fetch would leave it.
fn install(store: &Store, m: &Manifest) {
    let f = &m.files[0];
    let src = f.url.strip_prefix("file://").unwrap();
    let dest = store.file_path(m, f);
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::fs::copy(src, &dest).unwrap();
}

#[test]
fn synthesis_is_a_function_of_seed_and_n() {
    let (a, b, c) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ma, pa) = synth(CifarKind::Cifar10, a.path(), 50, 7);
    let (mb, _) = synth(CifarKind::Cifar10, b.path(), 50, 7);
    let (mc, _) = synth(CifarKind::Cifar10, c.path(), 50, 8);
    assert_eq!(ma.files[0].sha256, mb.files[0].sha256);
    assert_ne!(ma.files[0].sha256, mc.files[0].sha256);
    // The written manifest is a valid manifest describing the archive on disk.
    let reread = Manifest::load(&pa).unwrap();
    assert_eq!(reread, ma);
    let archive = a.path().join("cifar-10-binary.tar.gz");
    assert_eq!(wrn_data::verify::sha256_file(&archive, None).unwrap(), ma.files[0].sha256);
    assert_eq!(std::fs::metadata(&archive).unwrap().len(), ma.files[0].size);
    assert_eq!((reread.splits["train"], reread.splits["test"]), (50, 10));
}

#[test]
fn cifar10_prepares_into_the_documented_cache() {
    let src = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let (m, _) = synth(CifarKind::Cifar10, src.path(), 1000, 1);
    let store = Store::new(data.path());
    assert_eq!(store.status(&m).state, State::Missing);
    install(&store, &m);
    assert_eq!(store.status(&m).state, State::Partial, "present but not yet verified");
    let reports = wrn_data::ops::prepare(&store, &m).unwrap();
    assert_eq!(
        reports.iter().map(|r| (r.split.as_str(), r.images)).collect::<Vec<_>>(),
        [("test", 200), ("train", 1000)]
    );
    assert_eq!(store.status(&m).state, State::Prepared);

    let train = store.open_split(&m, "train").unwrap();
    train.verify().unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(train.path()).unwrap().permissions().mode() & 0o777, 0o644);
    }
    assert_eq!(train.shape(), (32, 32, 3));
    assert_eq!(train.meta.classes[9], "truck");
    // Image i of the train split is the i-th record of data_batch_1..5 in order: rebuild it from the
    // generator's planes and compare pixel for pixel.
    let archive = store.file_path(&m, &m.files[0]);
    let members = cifar::read_archive(&archive, &m.files[0]).unwrap();
    let batch3 = &members["cifar-10-batches-bin/data_batch_3.bin"];
    let record = &batch3[5 * 3073..6 * 3073];
    let mut hwc = vec![0u8; PIXELS];
    cifar::planes_to_hwc(&record[1..], &mut hwc);
    assert_eq!(train.image(400 + 5), &hwc[..]);
    assert_eq!(train.label(405), u16::from(record[0]));

    // Learnable, but not by colour: the nearest class mean (on train) beats chance (0.1) on test clearly
    // while staying far from perfect, which leaves room for networks (and width) to matter.
    let test = store.open_split(&m, "test").unwrap();
    let acc = nearest_mean_accuracy(&train, &test, 10);
    eprintln!("cifar10 synthetic: nearest-mean test accuracy {acc:.3}");
    assert!(acc > 0.25 && acc < 0.8, "nearest-mean accuracy {acc} on 10 synthetic classes");
}

#[test]
fn cifar100_keeps_fine_and_coarse_labels() {
    let src = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let (m, _) = synth(CifarKind::Cifar100, src.path(), 2000, 3);
    let store = Store::new(data.path());
    install(&store, &m);
    wrn_data::ops::prepare(&store, &m).unwrap();
    let train = store.open_split(&m, "train").unwrap();
    assert_eq!((train.meta.classes.len(), train.meta.coarse_classes.len()), (100, 20));
    for i in 0..train.len() {
        let fine = usize::from(train.label(i));
        assert_eq!(usize::from(train.coarse_label(i).unwrap()), synth::cifar100_coarse(fine));
    }
    let test = store.open_split(&m, "test").unwrap();
    let acc = nearest_mean_accuracy(&train, &test, 100);
    eprintln!("cifar100 synthetic: nearest-mean test accuracy {acc:.3}");
    assert!(acc > 0.05, "nearest-mean accuracy {acc} on 100 synthetic classes (chance 0.01)");
}

fn nearest_mean_accuracy(
    train: &wrn_data::cache::PreparedSplit,
    test: &wrn_data::cache::PreparedSplit,
    classes: usize,
) -> f64 {
    let d = train.image_bytes();
    let mut sums = vec![vec![0f64; d]; classes];
    let mut counts = vec![0usize; classes];
    for i in 0..train.len() {
        let c = usize::from(train.label(i));
        counts[c] += 1;
        for (s, &p) in sums[c].iter_mut().zip(train.image(i)) {
            *s += f64::from(p);
        }
    }
    let means: Vec<Vec<f64>> =
        sums.into_iter().zip(&counts).map(|(s, &n)| s.into_iter().map(|v| v / n.max(1) as f64).collect()).collect();
    let correct = (0..test.len())
        .filter(|&i| {
            let img = test.image(i);
            let best = (0..classes)
                .min_by(|&a, &b| {
                    let da: f64 = means[a].iter().zip(img).map(|(m, &p)| (m - f64::from(p)).powi(2)).sum();
                    let db: f64 = means[b].iter().zip(img).map(|(m, &p)| (m - f64::from(p)).powi(2)).sum();
                    da.total_cmp(&db)
                })
                .unwrap();
            best == usize::from(test.label(i))
        })
        .count();
    correct as f64 / test.len() as f64
}

/// A tar.gz of `members`; each is (path, bytes, entry type).
fn tar_gz(path: &Path, members: &[(&str, Vec<u8>, tar::EntryType)]) {
    let file = std::fs::File::create(path).unwrap();
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for (name, bytes, kind) in members {
        let mut h = tar::Header::new_gnu();
        // Written byte for byte so that paths the tar crate would refuse to build (`..`) can be tested.
        let raw = &mut h.as_gnu_mut().unwrap().name;
        raw[..name.len()].copy_from_slice(name.as_bytes());
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(*kind);
        if kind.is_symlink() {
            h.set_link_name("/etc/passwd").unwrap();
        }
        h.set_cksum();
        tar.append(&h, &bytes[..]).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap().flush().unwrap();
}

#[test]
fn malformed_archives_are_refused_with_the_reason() {
    let src = tempfile::tempdir().unwrap();
    let (m, _) = synth(CifarKind::Cifar10, src.path(), 50, 2);
    let entry = &m.files[0];
    let good = cifar::read_archive(&src.path().join(&entry.name), entry).unwrap();
    let members: Vec<(&str, Vec<u8>, tar::EntryType)> =
        good.iter().map(|(p, b)| (p.as_str(), b.clone(), tar::EntryType::Regular)).collect();
    let dir = tempfile::tempdir().unwrap();
    let check = |name: &str,
                 members: &[(&str, Vec<u8>, tar::EntryType)],
                 entry: &wrn_data::manifest::FileEntry,
                 expected: &str| {
        let path = dir.path().join(name);
        tar_gz(&path, members);
        let err = cifar::read_archive(&path, entry).unwrap_err().to_string();
        assert!(err.contains(name) && err.contains(expected), "{name}: expected `{expected}` in: {err}");
    };

    check("missing.tar.gz", &members[1..], entry, "missing member(s): cifar-10-batches-bin/batches.meta.txt");
    let mut extra = members.clone();
    extra.push(("cifar-10-batches-bin/notes.txt", b"hi".to_vec(), tar::EntryType::Regular));
    check("extra.tar.gz", &extra, entry, "unexpected member `cifar-10-batches-bin/notes.txt`");
    let mut dotdot = members.clone();
    dotdot.push(("cifar-10-batches-bin/../../x", b"hi".to_vec(), tar::EntryType::Regular));
    check("dotdot.tar.gz", &dotdot, entry, "absolute path or `..`");
    let mut absolute = members.clone();
    absolute.insert(0, ("/etc/cron.d/x", b"hi".to_vec(), tar::EntryType::Regular));
    check("absolute.tar.gz", &absolute, entry, "absolute path or `..`");
    let mut link = members.clone();
    link[0] = (link[0].0, vec![], tar::EntryType::Symlink);
    check("link.tar.gz", &link, entry, "not a regular file");
    let mut short = members.clone();
    short[1].1.truncate(3073 + 100);
    check("short.tar.gz", &short, entry, "data_batch_1.bin` is 3173 bytes, expected 30730");

    // A member of the wrong size when the manifest gives no size: the record check names the member.
    let mut loose = entry.clone();
    loose.members.iter_mut().for_each(|mm| {
        mm.size = None;
        mm.sha256 = None;
    });
    let members_ok = cifar::read_archive(&dir.path().join("short.tar.gz"), &loose).unwrap();
    let origin = Path::new("short.tar.gz").join("cifar-10-batches-bin/data_batch_1.bin");
    let err = cifar::decode_records(&members_ok["cifar-10-batches-bin/data_batch_1.bin"], m.format, 10, 0, &origin)
        .unwrap_err()
        .to_string();
    assert!(err.contains("data_batch_1.bin") && err.contains("not a multiple of the 3073-byte record"), "{err}");

    // Truncated gzip: the archive cut in the middle.
    let whole = std::fs::read(src.path().join(&entry.name)).unwrap();
    let cut = dir.path().join("cut.tar.gz");
    std::fs::write(&cut, &whole[..whole.len() / 2]).unwrap();
    let err = cifar::read_archive(&cut, entry).unwrap_err().to_string();
    assert!(err.contains("cut.tar.gz") && err.contains("truncated or corrupt"), "{err}");
    // Not gzip at all.
    let junk = dir.path().join("junk.tar.gz");
    std::fs::write(&junk, b"<html>not found</html>").unwrap();
    let err = cifar::read_archive(&junk, entry).unwrap_err().to_string();
    assert!(err.contains("junk.tar.gz"), "{err}");
}

#[test]
fn prepare_refuses_an_archive_that_does_not_match_its_manifest() {
    let src = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let (m, _) = synth(CifarKind::Cifar10, src.path(), 50, 4);
    let store = Store::new(data.path());
    install(&store, &m);
    let path = store.file_path(&m, &m.files[0]);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.truncate(bytes.len() - 10);
    std::fs::write(&path, &bytes).unwrap();
    let err = wrn_data::ops::prepare(&store, &m).unwrap_err().to_string();
    assert!(err.contains("cifar-10-binary.tar.gz") && err.contains("truncated"), "{err}");
    assert!(!store.prepared_dir(&m).join("train.wrnc").exists());
}

/// A `.tar.gz` of one member header claiming `claimed` bytes, followed by `data` and nothing else.
fn claiming(path: &Path, member: &str, claimed: u64, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_path(member).unwrap();
    h.set_size(claimed);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(h.as_bytes()).unwrap();
    gz.write_all(data).unwrap();
    std::fs::write(path, gz.finish().unwrap()).unwrap();
}

#[test]
fn members_claiming_more_than_they_may_are_refused_before_they_are_read() {
    let src = tempfile::tempdir().unwrap();
    let (m, _) = synth(CifarKind::Cifar10, src.path(), 50, 5);
    let entry = &m.files[0];
    let dir = tempfile::tempdir().unwrap();
    let member = "cifar-10-batches-bin/data_batch_1.bin";
    // 64 GiB claimed in a file of about a hundred bytes: refused by the manifest's size, nothing allocated.
    let claims = dir.path().join("claims.tar.gz");
    claiming(&claims, member, 64 << 30, &[0; 64]);
    assert!(std::fs::metadata(&claims).unwrap().len() < 200);
    let err = cifar::read_archive(&claims, entry).unwrap_err().to_string();
    assert!(
        err.contains("claims.tar.gz") && err.contains("data_batch_1.bin` is 68719476736 bytes, expected 30730"),
        "{err}"
    );
    // Without sizes in the manifest, the hard limit on a member refuses it before reading.
    let mut loose = entry.clone();
    loose.members.iter_mut().for_each(|mm| {
        mm.size = None;
        mm.sha256 = None;
    });
    let err = cifar::read_archive(&claims, &loose).unwrap_err().to_string();
    assert!(err.contains("claims 68719476736 bytes, more than the 1073741824 a member may have"), "{err}");
    // A gzip bomb: 16 MiB of zeros packed into a few kB behind a header claiming 8 GiB.
    let bomb = dir.path().join("bomb.tar.gz");
    claiming(&bomb, member, 8 << 30, &vec![0; 16 << 20]);
    assert!(std::fs::metadata(&bomb).unwrap().len() < 64 << 10);
    let err = cifar::read_archive(&bomb, &loose).unwrap_err().to_string();
    assert!(err.contains("bomb.tar.gz") && err.contains("claims 8589934592 bytes"), "{err}");
}

#[test]
fn a_member_stored_twice_is_refused_naming_the_archive_and_the_member() {
    let src = tempfile::tempdir().unwrap();
    let (m, _) = synth(CifarKind::Cifar10, src.path(), 50, 6);
    let entry = &m.files[0];
    let good = cifar::read_archive(&src.path().join(&entry.name), entry).unwrap();
    let mut members: Vec<(&str, Vec<u8>, tar::EntryType)> =
        good.iter().map(|(p, b)| (p.as_str(), b.clone(), tar::EntryType::Regular)).collect();
    let batch = members.iter().find(|(p, _, _)| p.ends_with("data_batch_2.bin")).unwrap().clone();
    members.push(batch);
    let path = src.path().join("twice.tar.gz");
    tar_gz(&path, &members);
    let err = cifar::read_archive(&path, entry).unwrap_err().to_string();
    assert!(
        err.contains("twice.tar.gz") && err.contains("member `cifar-10-batches-bin/data_batch_2.bin` appears twice"),
        "{err}"
    );
}

#[test]
fn bit_rot_under_a_valid_stamp_is_caught_while_preparing_and_nothing_is_written() {
    let src = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let (m, _) = synth(CifarKind::Cifar10, src.path(), 100, 7);
    let store = Store::new(data.path());
    install(&store, &m);
    let entry = &m.files[0];
    let path = store.file_path(&m, entry);
    wrn_data::ops::prepare(&store, &m).unwrap();
    assert!(wrn_data::verify::is_stamped(&path, entry), "preparing stamps the archive it hashed");
    let train = store.open_split(&m, "train").unwrap();
    assert_eq!(train.meta.sources[0].sha256, wrn_data::verify::sha256_file(&path, None).unwrap());
    drop(train);
    std::fs::remove_dir_all(store.prepared_dir(&m)).unwrap();

    // One bit flips in the gzip header's timestamp (which decoders ignore); size and mtime stay, so the
    // stamp still matches.
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[4] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    std::fs::File::options().write(true).open(&path).unwrap().set_modified(mtime).unwrap();
    assert!(wrn_data::verify::is_stamped(&path, entry));
    let actual = wrn_data::verify::sha256_file(&path, None).unwrap();

    let err = wrn_data::ops::prepare(&store, &m).unwrap_err().to_string();
    for part in [path.to_str().unwrap(), &entry.sha256, &actual, "wrn data fetch cifar10", "wrn data import cifar10"] {
        assert!(err.contains(part), "`{part}` not in: {err}");
    }
    assert!(!store.prepared_dir(&m).join("train.wrnc").exists() && !store.prepared_dir(&m).join("test.wrnc").exists());
    assert!(!wrn_data::verify::is_stamped(&path, entry), "the stamp of a changed file goes");
}
