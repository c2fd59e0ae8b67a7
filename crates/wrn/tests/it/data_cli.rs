//! `wrn data` for ImageNet as a user runs it with the Kaggle zip: synthesised with `--kaggle`, imported
//! (layout checked, then prepared), listed, verified; and, with nothing there, the message saying what
//! to bring.

use std::path::Path;
use std::process::{Command, Output};

fn wrn(args: &[&str], data: &Path, manifest: Option<&Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wrn"));
    cmd.arg("data").arg("--data-dir").arg(data);
    if let Some(m) = manifest {
        cmd.arg("--manifest").arg(m);
    }
    cmd.args(args).output().expect("wrn runs")
}

fn stdout(out: &Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn the_kaggle_zip_is_imported_prepared_listed_and_verified() {
    let dir = tempfile::tempdir().unwrap();
    let (synth, data) = (dir.path().join("synth"), dir.path().join("data"));
    let text =
        stdout(&wrn(&["synth", "imagenet", "--kaggle", "--n", "40", "--out", synth.to_str().unwrap()], &data, None));
    let zip = synth.join("imagenet-object-localization-challenge.zip");
    assert!(zip.is_file() && !synth.join("ILSVRC2012_img_train.tar").exists(), "{text}");
    let manifest = synth.join("imagenet.toml");

    let text = stdout(&wrn(&["import", "imagenet", zip.to_str().unwrap()], &data, Some(&manifest)));
    assert!(text.contains("imagenet-object-localization-challenge.zip: ") && text.contains("layout checked"), "{text}");
    assert!(text.contains("prepared train") && text.contains("prepared val") && text.contains("left out"), "{text}");

    let text = stdout(&wrn(&["list"], &data, Some(&manifest)));
    assert!(text.contains("imagenet  prepared"), "{text}");
    assert!(text.contains("kaggle zip") && text.contains("layout checked, no published checksum; in use"), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&wrn(&["list", "--json"], &data, Some(&manifest)))).unwrap();
    assert_eq!(json[0]["via"], "kaggle");
    assert_eq!(json[0]["alternatives"][0]["state"], "verified");

    let text = stdout(&wrn(&["verify", "imagenet"], &data, Some(&manifest)));
    let line = text.lines().find(|l| l.contains("imagenet-object-localization-challenge.zip")).unwrap();
    assert!(line.ends_with(" ok"), "{text}");

    // Nothing there: which files, where to get them, the commands.
    let out = wrn(&["prepare", "imagenet"], &dir.path().join("empty"), None);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    for wanted in [
        "ILSVRC2012_img_train.tar",
        "ILSVRC2012_devkit_t12.tar.gz",
        "https://www.kaggle.com/competitions/imagenet-object-localization-challenge/data",
        "wrn data import imagenet imagenet-object-localization-challenge.zip",
    ] {
        assert!(err.contains(wanted), "{wanted}: {err}");
    }
}

/// A synthetic CIFAR-10 (its archive behind a `file://` URL) and its manifest, in `dir/synth`.
fn synthetic_cifar10(dir: &Path) -> std::path::PathBuf {
    let (_, manifest) =
        wrn_data::synth::synth_cifar(wrn_data::synth::CifarKind::Cifar10, &dir.join("synth"), 50, 3).unwrap();
    manifest
}

fn failure(out: &Output) -> String {
    assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8(out.stderr.clone()).unwrap()
}

/// Every file under `dir` (recursively, the lock file aside) with its bytes.
fn files_under(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else if path.file_name().is_some_and(|n| n != ".lock") {
            out.push((path.clone(), std::fs::read(&path).unwrap()));
        }
    }
    out.sort();
    out
}

#[test]
fn a_second_fetch_or_prepare_while_the_dataset_is_locked_is_refused_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = synthetic_cifar10(dir.path());
    let data = dir.path().join("data");
    let folder = data.join("cifar10");
    std::fs::create_dir_all(&folder).unwrap();
    // The first fetch's files: a download in progress and a temporary file it is writing.
    std::fs::write(folder.join("cifar-10-binary.tar.gz.part"), b"the first fetch's bytes").unwrap();
    std::fs::write(folder.join(".tmp-stamp"), b"being written").unwrap();
    let before = files_under(&folder);
    // The same flock the first `wrn data fetch` takes on the dataset's folder.
    let held = wrn_fs::Lock::acquire(&folder, "wrn data fetch").unwrap();
    for command in [&["fetch"][..], &["prepare"], &["import", "cifar10", manifest.to_str().unwrap()]] {
        let err = failure(&wrn(command, &data, Some(&manifest)));
        assert!(err.contains(&format!("pid {}", std::process::id())) && err.contains("(wrn data fetch)"), "{err}");
        assert!(err.contains(&folder.display().to_string()) && err.contains("wait for it to finish"), "{err}");
        assert_eq!(files_under(&folder), before, "{command:?} left the first fetch's files as they were");
    }
    drop(held);
    let text = stdout(&wrn(&["fetch"], &data, Some(&manifest)));
    assert!(text.contains("cifar-10-binary.tar.gz: verified") && text.contains("prepared train"), "{text}");
}

#[test]
fn a_missing_file_is_named_with_its_os_error_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-file.tgz");
    let err = failure(&wrn(&["import", "cifar10", missing.to_str().unwrap()], &dir.path().join("data"), None));
    assert!(err.contains(&missing.display().to_string()), "{err}");
    assert_eq!(err.matches("os error").count(), 1, "{err}");
    let err = failure(&wrn(&["fetch"], &dir.path().join("data"), Some(&dir.path().join("absent.toml"))));
    assert!(err.contains("absent.toml") && err.contains("No such file"), "{err}");
    assert_eq!(err.matches("os error").count(), 1, "{err}");
}

#[test]
fn damaged_prepared_splits_are_listed_as_damaged_and_verify_says_to_prepare_again() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = synthetic_cifar10(dir.path());
    let data = dir.path().join("data");
    stdout(&wrn(&["fetch"], &data, Some(&manifest)));
    let prepared = data.join("cifar10").join("prepared");
    // train: one pixel changed (found by re-hashing); test: cut short (found by opening).
    let train = prepared.join("train.wrnc");
    let mut bytes = std::fs::read(&train).unwrap();
    bytes[5000] ^= 0xff;
    std::fs::write(&train, bytes).unwrap();
    let test = prepared.join("test.wrnc");
    let len = std::fs::metadata(&test).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&test).unwrap().set_len(len - 100).unwrap();

    let again = format!("`wrn data prepare cifar10 --data-dir {} --manifest {}`", data.display(), manifest.display());
    let out = wrn(&["verify"], &data, Some(&manifest));
    assert!(!out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for split in ["train", "test"] {
        let line = text.lines().find(|l| l.contains(&format!("prepared {split}"))).unwrap();
        assert!(line.contains("FAILED") && line.contains(&again), "{text}");
    }
    let archive = text.lines().find(|l| l.contains("cifar-10-binary.tar.gz")).unwrap();
    assert!(archive.ends_with(" ok"), "{text}");

    let text = stdout(&wrn(&["list"], &data, Some(&manifest)));
    let line = text.lines().find(|l| l.contains("prepared test")).expect("the damaged split is listed");
    assert!(line.contains("DAMAGED") && line.contains(&again), "{text}");
    assert!(text.contains("cifar10   verified"), "not prepared while a split is damaged: {text}");
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&wrn(&["list", "--json"], &data, Some(&manifest)))).unwrap();
    let splits = json[0]["prepared"].as_array().unwrap();
    let test_split = splits.iter().find(|s| s["split"] == "test").unwrap();
    assert!(test_split["damaged"].as_str().is_some_and(|d| d.contains("test.wrnc")), "{json}");
}
