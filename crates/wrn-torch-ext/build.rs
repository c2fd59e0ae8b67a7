//! Compiles `csrc/ext.cpp` against the headers of the libtorch torch-sys links (its build script passes
//! the library folder as `DEP_TCH_LIBTORCH_LIB`; the headers are beside it in `include/`), with the flags
//! torch-sys compiles its own shim with, and checks that the archive defines no Gloo function, vtable or
//! type information (see `csrc/gloo/README.md`).
//!
//! Against a CUDA libtorch laid out as `ci/libtorch.sh` lays it out (`link/lib` for torch-sys, beside
//! `torch/lib/libtorch_cuda.so` and the nvidia wheels' headers under `nvidia/*/include`), it also builds
//! `csrc/cuda.cpp` into `libwrn_torch_cuda.so`, which the crate embeds (`cfg(wrn_cuda_ext)`, the path in
//! `WRN_CUDA_EXT`) and the binary loads after `libtorch_cuda.so` at run time.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=csrc");
    let lib = PathBuf::from(std::env::var("DEP_TCH_LIBTORCH_LIB").expect(
        "torch-sys names the libtorch it links (DEP_TCH_LIBTORCH_LIB); build through `make build`, which sets LIBTORCH",
    ));
    let root = lib.parent().expect("libtorch's lib folder has a parent").to_path_buf();
    let include = root.join("include");
    assert!(
        include.join("torch/csrc/distributed/c10d/ProcessGroupGloo.hpp").exists(),
        "{} lacks torch/csrc/distributed/c10d/ProcessGroupGloo.hpp: wrn needs the headers of PyTorch 2.11's wheel",
        include.display()
    );
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include("csrc")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag("-fvisibility=hidden")
        .flag("-fvisibility-inlines-hidden")
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .define("GLOG_USE_GLOG_EXPORT", None)
        .define("USE_C10D_GLOO", None)
        .file("csrc/ext.cpp");
    build.compile("wrn_torch_ext");
    let archive = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("libwrn_torch_ext.a");
    let out = Command::new("nm")
        .args(["--defined-only", "-C"])
        .arg(&archive)
        .output()
        .expect("running nm (binutils) on the extension's archive");
    assert!(out.status.success(), "nm {} failed", archive.display());
    let listing = String::from_utf8_lossy(&out.stdout);
    // Gloo's own functions, vtables and type information; the standard library's containers of pointers
    // to Gloo objects are the same code whatever Gloo's definitions (and hidden, like everything here).
    let gloo: Vec<&str> = listing
        .lines()
        .filter(|line| {
            let name = line.splitn(3, ' ').nth(2).unwrap_or("");
            ["gloo::", "vtable for gloo::", "typeinfo for gloo::", "typeinfo name for gloo::", "VTT for gloo::"]
                .iter()
                .any(|p| name.starts_with(p))
        })
        .collect();
    assert!(gloo.is_empty(), "{} defines Gloo symbols, which belong to libtorch_cpu.so: {gloo:?}", archive.display());
    println!("cargo:rustc-check-cfg=cfg(wrn_cuda_ext)");
    if let Some(cuda) = CudaTree::find(&lib) {
        build_cuda_part(&include, &cuda);
    }
}

/// The CUDA side of a libtorch tree: `libtorch_cuda.so`'s folder and the header folders of the nvidia
/// wheels.
struct CudaTree {
    lib: PathBuf,
    includes: Vec<PathBuf>,
    /// The CUDA runtime library (`nvidia/cu13/lib/libcudart.so.13`), which the graph code calls.
    cudart: PathBuf,
}

impl CudaTree {
    /// The CUDA tree around torch-sys's library folder (`<tree>/link/lib`, or a `torch/lib` with
    /// `libtorch_cuda.so`), when it has every header the CUDA part includes. A CUDA libtorch without them
    /// (an older layout, or a PyTorch install) builds without the CUDA part and says so.
    fn find(lib: &Path) -> Option<CudaTree> {
        let root = lib.parent()?.parent()?;
        let cuda_lib =
            [lib.to_path_buf(), root.join("torch/lib")].into_iter().find(|d| d.join("libtorch_cuda.so").exists())?;
        let wheels: Vec<PathBuf> =
            std::fs::read_dir(root.join("nvidia")).into_iter().flatten().flatten().map(|e| e.path()).collect();
        let mut includes: Vec<PathBuf> = wheels.iter().map(|w| w.join("include")).filter(|p| p.is_dir()).collect();
        includes.sort();
        let cudart = wheels
            .iter()
            .flat_map(|w| std::fs::read_dir(w.join("lib")).into_iter().flatten().flatten())
            .map(|e| e.path())
            .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libcudart.so.")));
        let needed = ["cuda_runtime_api.h", "crt/host_config.h", "nv/target", "nccl.h"];
        let missing: Vec<&str> =
            needed.iter().copied().filter(|h| !includes.iter().any(|i| i.join(h).exists())).collect();
        let Some(cudart) = cudart else {
            println!(
                "cargo:warning=building without the CUDA extension: no libcudart.so.* under {}/nvidia/*/lib",
                root.display()
            );
            return None;
        };
        if !missing.is_empty() {
            println!(
                "cargo:warning=building without the CUDA extension (NCCL): {} has libtorch_cuda.so but not the headers {} \
                 (the CUDA tree of `make libtorch-cuda` has them)",
                cuda_lib.display(),
                missing.join(", ")
            );
            return None;
        }
        Some(CudaTree { lib: cuda_lib, includes, cudart })
    }
}

/// Compiles `csrc/cuda.cpp` and links it into `libwrn_torch_cuda.so` (stripped, needing libtorch's CUDA
/// and CPU libraries and the CUDA runtime, which the binary has loaded before it), for the crate to embed.
fn build_cuda_part(include: &Path, cuda: &CudaTree) {
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include("csrc")
        .include(include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag("-fvisibility=hidden")
        .flag("-fvisibility-inlines-hidden")
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .define("GLOG_USE_GLOG_EXPORT", None)
        .define("USE_C10D_NCCL", None)
        .file("csrc/cuda.cpp");
    for dir in &cuda.includes {
        build.include(dir);
    }
    let objects = build.compile_intermediates();
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("libwrn_torch_cuda.so");
    let status = build
        .get_compiler()
        .to_command()
        .arg("-shared")
        .arg("-o")
        .arg(&out)
        .args(&objects)
        .arg(format!("-L{}", cuda.lib.display()))
        .args(["-ltorch_cuda", "-lc10_cuda", "-ltorch_cpu", "-lc10"])
        .arg(format!("-L{}", cuda.cudart.parent().expect("a library has a folder").display()))
        .arg(format!("-l:{}", cuda.cudart.file_name().expect("a library has a name").to_string_lossy()))
        .arg("-Wl,-s")
        .status()
        .expect("running the C++ compiler to link libwrn_torch_cuda.so");
    assert!(status.success(), "linking {} failed", out.display());
    println!("cargo:rustc-cfg=wrn_cuda_ext");
    println!("cargo:rustc-env=WRN_CUDA_EXT={}", out.display());
}
