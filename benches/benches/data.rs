//! The dataset stage: SHA-256 of a large file with the streaming hasher `wrn data verify` uses, beside
//! the system `sha256sum` on the same file in the same run (goal: at least 90% of its speed); CIFAR-10
//! preparation from the binary archive; ImageNet-shaped preparation (a tar of per-class tars of JPEGs
//! and a val tar, into JPEG shards) in images/s. Ends with a summary of MB/s, the ratio and images/s.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use wrn_data::manifest::Manifest;
use wrn_data::store::Store;
use wrn_data::synth::{self, CifarKind};

/// Size of the hashed file: large enough that start-up costs vanish, small enough to stay in the page
/// cache, so both hashers read from memory.
const HASH_BYTES: usize = 256 << 20;
const CIFAR_IMAGES: u64 = 10_000;
const IMAGENET_IMAGES: u64 = 2_000;

fn large_file(dir: &Path) -> PathBuf {
    let path = dir.join("large.bin");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..HASH_BYTES / block.len() {
        for b in block.chunks_mut(8) {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            b.copy_from_slice(&state.to_le_bytes());
        }
        file.write_all(&block).unwrap();
    }
    file.flush().unwrap();
    path
}

fn wrn_sha256(path: &Path) -> String {
    wrn_data::verify::sha256_file(path, None).unwrap()
}

fn system_sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().expect("running sha256sum");
    assert!(out.status.success(), "sha256sum failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap().to_string()
}

/// A data folder holding the synthetic archives of `manifest`, as `wrn data import` leaves them (hard
/// links), ready to prepare.
fn fresh_store(root: &Path, synth: &Path, manifest: &Manifest, n: &mut u32) -> Store {
    *n += 1;
    let dir = root.join(format!("data{n}"));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::new(&dir);
    wrn_data::import::import(&store, manifest, &[synth.to_path_buf()], false).unwrap();
    store
}

fn data(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let file = large_file(dir.path());
    assert_eq!(wrn_sha256(&file), system_sha256(&file), "the two hashers disagree");

    let mut group = c.benchmark_group("sha256");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Bytes(HASH_BYTES as u64));
    group.bench_function("wrn", |b| b.iter(|| wrn_sha256(&file)));
    group.bench_function("sha256sum", |b| b.iter(|| system_sha256(&file)));
    group.finish();

    let cifar_synth = dir.path().join("cifar-synth");
    let (cifar, _) = synth::synth_cifar(CifarKind::Cifar10, &cifar_synth, CIFAR_IMAGES, 0).unwrap();
    let imagenet_synth = dir.path().join("imagenet-synth");
    let (imagenet, _) = synth::synth_imagenet(&imagenet_synth, IMAGENET_IMAGES, 0).unwrap();
    let imagenet_images = IMAGENET_IMAGES + imagenet.splits.get("val").copied().unwrap_or(0);
    let mut n = 0;

    let mut group = c.benchmark_group("prepare");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Elements(CIFAR_IMAGES));
    group.bench_function("cifar10", |b| {
        b.iter_batched(
            || fresh_store(dir.path(), &cifar_synth, &cifar, &mut n),
            |store| wrn_data::ops::prepare(&store, &cifar).unwrap(),
            BatchSize::PerIteration,
        )
    });
    group.throughput(Throughput::Elements(imagenet_images));
    group.bench_function("imagenet_shaped", |b| {
        b.iter_batched(
            || fresh_store(dir.path(), &imagenet_synth, &imagenet, &mut n),
            |store| wrn_data::ops::prepare(&store, &imagenet).unwrap(),
            BatchSize::PerIteration,
        )
    });
    group.finish();

    // Summary: best of five, the two hashers interleaved so both see the same machine load.
    let best = |f: &mut dyn FnMut()| (0..5).map(|_| timed(&mut *f)).min().unwrap();
    let (wrn_t, system_t) = (best(&mut || drop(wrn_sha256(&file))), best(&mut || drop(system_sha256(&file))));
    let mb_s = |t: Duration| HASH_BYTES as f64 / t.as_secs_f64() / 1e6;
    println!(
        "sha256: wrn {:.0} MB/s, sha256sum {:.0} MB/s, ratio {:.2}",
        mb_s(wrn_t),
        mb_s(system_t),
        mb_s(wrn_t) / mb_s(system_t)
    );
    let mut prepare_rate = |m: &Manifest, synth: &Path, images: u64| {
        let seconds = (0..3)
            .map(|_| {
                let store = fresh_store(dir.path(), synth, m, &mut n);
                timed(&mut || drop(wrn_data::ops::prepare(&store, m).unwrap()))
            })
            .min()
            .unwrap();
        images as f64 / seconds.as_secs_f64()
    };
    let cifar_rate = prepare_rate(&cifar, &cifar_synth, CIFAR_IMAGES);
    println!("prepare cifar10: {cifar_rate:.0} images/s ({CIFAR_IMAGES} images)");
    let imagenet_rate = prepare_rate(&imagenet, &imagenet_synth, imagenet_images);
    println!(
        "prepare imagenet-shaped: {imagenet_rate:.0} images/s ({imagenet_images} JPEGs, {} threads)",
        rayon::current_num_threads()
    );
}

fn timed(f: &mut dyn FnMut()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

criterion_group!(benches, data);
criterion_main!(benches);
