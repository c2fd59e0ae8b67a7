//! What several test binaries of the `wrn` command share: a stand-in NVIDIA driver.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds the stand-in NVIDIA driver (`tests/fixtures/libcuda_stub.c`, with the system C compiler) into
/// `dir/driver` and returns that folder: a `libcuda.so.1` that reports GPUs (`WRN_STUB_GPUS`, default 1)
/// which this CPU-only libtorch cannot use.
pub fn stub_driver(dir: &Path) -> PathBuf {
    let source = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/libcuda_stub.c");
    let lib = dir.join("driver");
    std::fs::create_dir_all(&lib).unwrap();
    let out = Command::new("cc")
        .args(["-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o"])
        .arg(lib.join("libcuda.so.1"))
        .arg(source)
        .output()
        .expect("a C compiler (cc) builds the stub driver");
    assert!(out.status.success(), "cc: {}", String::from_utf8_lossy(&out.stderr));
    lib
}

/// `cmd` with the stub driver in `driver` first on the library path, reporting `gpus` GPUs, and no CUDA
/// backend to load (also on a machine whose libtorch has one).
pub fn with_stub_driver<'a>(cmd: &'a mut Command, driver: &Path, gpus: u32) -> &'a mut Command {
    let path = std::env::var("LD_LIBRARY_PATH").unwrap_or_default();
    cmd.env("WRN_STUB_GPUS", gpus.to_string())
        .env("LD_LIBRARY_PATH", format!("{}:{path}", driver.display()))
        .env("WRN_LIBTORCH_CUDA", driver.join("no-such/libtorch_cuda.so"))
        .env_remove("CUDA_VISIBLE_DEVICES")
        .env_remove("CUDA_DEVICE_ORDER")
}
