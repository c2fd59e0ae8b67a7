//! Compiles `csrc/ext.cpp` against the headers of the libtorch torch-sys links (its build script passes
//! the library folder as `DEP_TCH_LIBTORCH_LIB`; the headers are beside it in `include/`), with the flags
//! torch-sys compiles its own shim with, and checks that the archive defines no Gloo function, vtable or type information (see
//! `csrc/gloo/README.md`).

use std::path::PathBuf;
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
}
