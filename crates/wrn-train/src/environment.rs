//! What this process runs on: wrn and libtorch versions, where libtorch was loaded from, the CUDA
//! driver, GPUs and cuDNN (or why CUDA is unavailable), the thread plan and the directories in use.
//!
//! `wrn doctor` prints an [`Environment`]; the training runner writes one into every run folder.
//! GPU names, memory and compute capability come from the NVIDIA driver API (`libcuda.so.1`, loaded at
//! run time), since libtorch's C API does not expose them.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::runtime::{self, ThreadPlan};

/// One GPU as the NVIDIA driver describes it.
#[derive(Debug, Clone, Serialize)]
pub struct Gpu {
    pub index: usize,
    pub name: String,
    pub total_memory_bytes: u64,
    /// `major.minor`, e.g. `9.0` for an H100/H200.
    pub compute_capability: String,
}

/// What the NVIDIA driver reports.
#[derive(Debug, Clone, Serialize)]
pub struct Driver {
    /// CUDA version the driver supports, e.g. `13.0`.
    pub cuda_version: String,
    pub devices: Vec<Gpu>,
}

/// CUDA as seen by this process.
#[derive(Debug, Clone, Serialize)]
pub struct Cuda {
    pub available: bool,
    /// Why CUDA cannot be used, when it cannot.
    pub reason: Option<String>,
    /// The `libtorch_cuda.so` that was loaded, when one was.
    pub backend_library: Option<PathBuf>,
    pub driver: Option<Driver>,
    /// Why the NVIDIA driver could not be asked, when it could not.
    pub driver_error: Option<String>,
    /// cuDNN version as libtorch reports it (e.g. 91002 for 9.10.2), when CUDA is available.
    pub cudnn_version: Option<i64>,
    pub device_count: usize,
}

/// Versions, libraries, devices, threads and directories of this process.
#[derive(Debug, Clone, Serialize)]
pub struct Environment {
    pub wrn_version: String,
    pub git_sha: String,
    pub tch_version: String,
    /// The version libtorch records beside itself (`build-version` or PyTorch's `version.py`).
    pub libtorch_version: Option<String>,
    /// Directory of the `libtorch_cpu.so` this process runs against.
    pub libtorch_dir: Option<PathBuf>,
    pub cuda: Cuda,
    pub threads: ThreadPlan,
    pub cache_dir: PathBuf,
    pub data_dir: PathBuf,
}

impl Environment {
    /// Collects the environment. Loads the CUDA backend when present (see [`runtime::load_cuda`]).
    pub fn collect(wrn_version: &str, git_sha: &str, threads: ThreadPlan) -> Environment {
        // A tensor op first, so libtorch is initialised before it is queried.
        let _ = tch::Tensor::from(0.0f32) + 1.0;
        let libtorch_dir = runtime::libtorch_dir();
        let backend_library = runtime::load_cuda().ok().map(Path::to_path_buf);
        let status = runtime::cuda_status();
        let available = status.is_ok();
        let driver = cuda_driver();
        let cuda = Cuda {
            available,
            reason: status.as_ref().err().cloned(),
            backend_library,
            driver_error: driver.as_ref().err().cloned(),
            driver: driver.ok(),
            cudnn_version: available.then(tch::utils::version_cudnn),
            device_count: status.unwrap_or(0),
        };
        Environment {
            wrn_version: wrn_version.to_string(),
            git_sha: git_sha.to_string(),
            tch_version: crate::TCH_VERSION.to_string(),
            libtorch_version: libtorch_dir.as_deref().and_then(libtorch_version),
            libtorch_dir,
            cuda,
            threads,
            cache_dir: wrn_data::dirs::cache_dir(),
            data_dir: wrn_data::dirs::data_dir(),
        }
    }

    /// Problems that make this environment unusable for training; empty when all is well.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        match &self.libtorch_version {
            None => problems.push(format!(
                "cannot tell the libtorch version: no build-version or ../version.py beside {}",
                self.libtorch_dir.as_deref().map_or("<libtorch not found>".into(), |d| d.display().to_string())
            )),
            Some(v) if v.split('+').next() != Some(crate::LIBTORCH_VERSION) => problems.push(format!(
                "libtorch {v} loaded, but tch {} needs libtorch {}",
                self.tch_version,
                crate::LIBTORCH_VERSION
            )),
            Some(_) => {}
        }
        problems
    }
}

/// Reads the version libtorch records beside its `lib/` directory: `build-version` in a libtorch tree, or
/// `__version__` in `version.py` when `lib/` is inside a PyTorch installation.
pub fn libtorch_version(lib_dir: &Path) -> Option<String> {
    let parent = lib_dir.parent()?;
    if let Ok(text) = std::fs::read_to_string(parent.join("build-version")) {
        return Some(text.trim().to_string());
    }
    let text = std::fs::read_to_string(parent.join("version.py")).ok()?;
    text.lines().find(|l| l.starts_with("__version__")).and_then(|l| {
        let value = l.split_once('=')?.1.trim();
        Some(value.trim_matches(|c| c == '\'' || c == '"').to_string())
    })
}

type CuMemGetInfo = unsafe extern "C" fn(*mut usize, *mut usize) -> i32;

/// Device memory in use (total − free) on the current CUDA context, as the driver reports it.
pub fn cuda_memory_in_use(device: usize) -> Option<u64> {
    tch::Cuda::synchronize(device as i64);
    // SAFETY: libcuda.so.1 is already loaded by libtorch when a CUDA device is in use; cuMemGetInfo_v2
    // takes two out-pointers to locals and reads the context libtorch made current on this thread.
    unsafe {
        let lib = libloading::Library::new("libcuda.so.1").ok()?;
        let info = lib.get::<CuMemGetInfo>(b"cuMemGetInfo_v2\0").ok()?;
        let (mut free, mut total) = (0usize, 0usize);
        (info(&mut free, &mut total) == 0).then(|| (total - free) as u64)
    }
}

type CuInit = unsafe extern "C" fn(u32) -> i32;
type CuDriverGetVersion = unsafe extern "C" fn(*mut i32) -> i32;
type CuDeviceGetCount = unsafe extern "C" fn(*mut i32) -> i32;
type CuDeviceGet = unsafe extern "C" fn(*mut i32, i32) -> i32;
type CuDeviceGetName = unsafe extern "C" fn(*mut libc::c_char, i32, i32) -> i32;
type CuDeviceTotalMem = unsafe extern "C" fn(*mut usize, i32) -> i32;
type CuDeviceGetAttribute = unsafe extern "C" fn(*mut i32, i32, i32) -> i32;

const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: i32 = 75;
const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: i32 = 76;
const CUDA_ERROR_NO_DEVICE: i32 = 100;

/// Asks the NVIDIA driver (`libcuda.so.1`) for its CUDA version and GPUs, or says why it cannot.
pub fn cuda_driver() -> Result<Driver, String> {
    // SAFETY: libcuda.so.1 is the NVIDIA driver library; loading it has no side effects until cuInit.
    let lib = unsafe { libloading::Library::new("libcuda.so.1") }
        .map_err(|_| "no NVIDIA driver: libcuda.so.1 cannot be loaded".to_string())?;
    let call = |what: &str, code: i32| -> Result<(), String> {
        match code {
            0 => Ok(()),
            CUDA_ERROR_NO_DEVICE => Err("the NVIDIA driver finds no CUDA-capable device".to_string()),
            code => Err(format!("NVIDIA driver call {what} failed with CUresult {code}")),
        }
    };
    // SAFETY: the signatures below are those of the CUDA driver API (cuda.h), stable since CUDA 3.2;
    // every out-pointer refers to a live local of the right type.
    unsafe {
        let symbol = |name: &str| format!("libcuda.so.1 lacks {name}");
        let init = lib.get::<CuInit>(b"cuInit\0").map_err(|_| symbol("cuInit"))?;
        let version =
            lib.get::<CuDriverGetVersion>(b"cuDriverGetVersion\0").map_err(|_| symbol("cuDriverGetVersion"))?;
        let count = lib.get::<CuDeviceGetCount>(b"cuDeviceGetCount\0").map_err(|_| symbol("cuDeviceGetCount"))?;
        let get = lib.get::<CuDeviceGet>(b"cuDeviceGet\0").map_err(|_| symbol("cuDeviceGet"))?;
        let name = lib.get::<CuDeviceGetName>(b"cuDeviceGetName\0").map_err(|_| symbol("cuDeviceGetName"))?;
        let memory =
            lib.get::<CuDeviceTotalMem>(b"cuDeviceTotalMem_v2\0").map_err(|_| symbol("cuDeviceTotalMem_v2"))?;
        let attribute =
            lib.get::<CuDeviceGetAttribute>(b"cuDeviceGetAttribute\0").map_err(|_| symbol("cuDeviceGetAttribute"))?;
        call("cuInit", init(0))?;
        let mut driver_version = 0;
        call("cuDriverGetVersion", version(&mut driver_version))?;
        let mut n = 0;
        call("cuDeviceGetCount", count(&mut n))?;
        let mut devices = Vec::new();
        for index in 0..n {
            let mut device = 0;
            call("cuDeviceGet", get(&mut device, index))?;
            let mut buffer = [0 as libc::c_char; 256];
            call("cuDeviceGetName", name(buffer.as_mut_ptr(), buffer.len() as i32, device))?;
            let mut bytes = 0usize;
            call("cuDeviceTotalMem_v2", memory(&mut bytes, device))?;
            let (mut major, mut minor) = (0, 0);
            call("cuDeviceGetAttribute", attribute(&mut major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, device))?;
            call("cuDeviceGetAttribute", attribute(&mut minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, device))?;
            devices.push(Gpu {
                index: index as usize,
                name: std::ffi::CStr::from_ptr(buffer.as_ptr()).to_string_lossy().into_owned(),
                total_memory_bytes: bytes as u64,
                compute_capability: format!("{major}.{minor}"),
            });
        }
        Ok(Driver { cuda_version: format!("{}.{}", driver_version / 1000, driver_version % 1000 / 10), devices })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_version_of_a_libtorch_tree_and_of_a_pytorch_install() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("libtorch");
        std::fs::create_dir_all(tree.join("lib")).unwrap();
        assert_eq!(libtorch_version(&tree.join("lib")), None);
        std::fs::write(tree.join("build-version"), "2.11.0+cu130\n").unwrap();
        assert_eq!(libtorch_version(&tree.join("lib")).as_deref(), Some("2.11.0+cu130"));

        let torch = dir.path().join("site-packages/torch");
        std::fs::create_dir_all(torch.join("lib")).unwrap();
        std::fs::write(torch.join("version.py"), "from typing import Optional\n__version__ = '2.11.0+cu130'\n")
            .unwrap();
        assert_eq!(libtorch_version(&torch.join("lib")).as_deref(), Some("2.11.0+cu130"));
    }

    #[test]
    fn this_process_runs_the_pinned_libtorch() {
        let env = Environment::collect("0.0.0", "test", ThreadPlan::for_device(tch::Device::Cpu, 1));
        assert_eq!(env.tch_version, crate::TCH_VERSION);
        let version = env.libtorch_version.as_deref().expect("libtorch version recorded beside lib/");
        assert!(version.starts_with("2.11.0"), "{version}");
        assert!(env.problems().is_empty(), "{:?}", env.problems());
        if !env.cuda.available {
            assert!(env.cuda.reason.is_some());
            assert_eq!(env.cuda.device_count, 0);
        }
    }

    #[test]
    fn a_wrong_libtorch_version_is_a_problem() {
        let mut env = Environment::collect("0.0.0", "test", ThreadPlan::for_device(tch::Device::Cpu, 1));
        env.libtorch_version = Some("2.10.0+cpu".into());
        let problems = env.problems();
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].contains("libtorch 2.10.0+cpu loaded, but tch 0.24.0 needs libtorch 2.11.0"),
            "{problems:?}"
        );
    }
}
