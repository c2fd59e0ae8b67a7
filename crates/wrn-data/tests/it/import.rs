//! `wrn data import`: files are recognised by size and SHA-256 whatever their names, placed under the
//! data directory and stamped; files that match nothing are refused with their size and hash.

use std::path::PathBuf;

use wrn_data::import;
use wrn_data::store::{State, Store};
use wrn_data::synth::{self, CifarKind};

#[test]
fn files_are_recognised_by_hash_whatever_their_names() {
    let src = tempfile::tempdir().unwrap();
    let (m, _) = synth::synth_cifar(CifarKind::Cifar10, src.path(), 50, 5).unwrap();
    let downloads = tempfile::tempdir().unwrap();
    let renamed = downloads.path().join("nested").join("download (1).tgz");
    std::fs::create_dir_all(renamed.parent().unwrap()).unwrap();
    std::fs::copy(src.path().join("cifar-10-binary.tar.gz"), &renamed).unwrap();
    std::fs::write(downloads.path().join("notes.txt"), b"unrelated").unwrap();

    let data = tempfile::tempdir().unwrap();
    let store = Store::new(data.path());
    let done = import::import(&store, &m, &[downloads.path().to_path_buf()], false).unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!((done[0].file.as_str(), done[0].source.clone()), ("cifar-10-binary.tar.gz", renamed.clone()));
    assert_eq!(done[0].how, "hard link");
    assert_eq!(store.status(&m).state, State::Verified);
    wrn_data::ops::prepare(&store, &m).unwrap();
    assert_eq!(store.status(&m).state, State::Prepared);

    // Importing again finds it in place.
    let again = import::import(&store, &m, std::slice::from_ref(&renamed), true).unwrap();
    assert_eq!(again[0].how, "already present");

    // A copy lands as a separate file.
    let data2 = tempfile::tempdir().unwrap();
    let store2 = Store::new(data2.path());
    let copied = import::import(&store2, &m, &[renamed], true).unwrap();
    assert_eq!(copied[0].how, "copy");
    assert!(wrn_data::verify::is_stamped(&copied[0].dest, &m.files[0]));
}

#[test]
fn a_file_that_matches_nothing_is_refused_with_its_size_and_hash() {
    let src = tempfile::tempdir().unwrap();
    let (m, _) = synth::synth_cifar(CifarKind::Cifar10, src.path(), 50, 6).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let store = Store::new(data.path());

    // Same size, different bytes.
    let mut bytes = std::fs::read(src.path().join("cifar-10-binary.tar.gz")).unwrap();
    bytes[100] ^= 1;
    let impostor: PathBuf = dir.path().join("cifar.tgz");
    std::fs::write(&impostor, &bytes).unwrap();
    let err = import::import(&store, &m, std::slice::from_ref(&impostor), false).unwrap_err().to_string();
    assert!(err.contains("cifar.tgz") && err.contains("matches no file of cifar10"), "{err}");
    assert!(!store.file_path(&m, &m.files[0]).exists());

    // Another size.
    let small = dir.path().join("small.bin");
    std::fs::write(&small, b"tiny").unwrap();
    let err = import::import(&store, &m, &[small], false).unwrap_err().to_string();
    assert!(err.contains("small.bin") && err.contains("4 bytes: no file of cifar10 has this size"), "{err}");

    // A folder with nothing of the dataset.
    let empty = tempfile::tempdir().unwrap();
    std::fs::write(empty.path().join("a.txt"), b"x").unwrap();
    let err = import::import(&store, &m, &[empty.path().to_path_buf()], false).unwrap_err().to_string();
    assert!(err.contains("none of the given paths") && err.contains(&m.files[0].sha256), "{err}");
}

#[cfg(unix)]
#[test]
fn a_relative_symbolic_link_is_placed_as_the_file_it_points_to() {
    let src = tempfile::tempdir().unwrap();
    let (m, _) = synth::synth_cifar(CifarKind::Cifar10, src.path(), 50, 7).unwrap();
    let downloads = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(downloads.path().join("files/links")).unwrap();
    std::fs::copy(src.path().join("cifar-10-binary.tar.gz"), downloads.path().join("files/cifar.tgz")).unwrap();
    let link = downloads.path().join("files/links/cifar-link.tgz");
    std::os::unix::fs::symlink("../cifar.tgz", &link).unwrap();

    // The data directory is elsewhere, where `../cifar.tgz` means nothing.
    let data = tempfile::tempdir().unwrap();
    let store = Store::new(data.path().join("a/b"));
    let done = import::import(&store, &m, std::slice::from_ref(&link), false).unwrap();
    let dest = store.file_path(&m, &m.files[0]);
    assert_eq!(std::fs::read(&dest).unwrap(), std::fs::read(src.path().join("cifar-10-binary.tar.gz")).unwrap());
    assert!(!std::fs::symlink_metadata(&dest).unwrap().is_symlink(), "{}: {}", done[0].how, dest.display());
    assert_eq!(done[0].how, "hard link");
    assert!(wrn_data::verify::is_stamped(&dest, &m.files[0]));

    // A link to nothing is refused saying where it points.
    let dangling = downloads.path().join("files/links/gone.tgz");
    std::os::unix::fs::symlink("../missing.tgz", &dangling).unwrap();
    let err = import::import(&store, &m, &[dangling], false).unwrap_err().to_string();
    assert!(
        err.contains("gone.tgz") && err.contains("a symbolic link to ../missing.tgz, which does not exist"),
        "{err}"
    );
}

#[cfg(unix)]
#[test]
fn a_copy_is_atomic_and_keeps_restrictive_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let src = tempfile::tempdir().unwrap();
    let (m, _) = synth::synth_cifar(CifarKind::Cifar10, src.path(), 50, 8).unwrap();
    let source = src.path().join("cifar-10-binary.tar.gz");
    std::fs::set_permissions(&source, std::fs::Permissions::from_mode(0o600)).unwrap();
    let data = tempfile::tempdir().unwrap();
    let store = Store::new(data.path());
    let done = import::import(&store, &m, std::slice::from_ref(&source), true).unwrap();
    assert_eq!(done[0].how, "copy");
    let dest = store.file_path(&m, &m.files[0]);
    assert_eq!(std::fs::read(&dest).unwrap(), std::fs::read(&source).unwrap());
    assert_eq!(std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777, 0o600);
    // Nothing but the file and its stamp: no temporary or partial file left beside it.
    let mut names: Vec<String> = std::fs::read_dir(dest.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != ".lock")
        .collect();
    names.sort();
    assert_eq!(names, ["cifar-10-binary.tar.gz", "cifar-10-binary.tar.gz.verified"]);
}
