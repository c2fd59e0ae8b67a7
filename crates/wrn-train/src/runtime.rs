//! Run-time set-up of libtorch: the CUDA backend, the device and the thread pools.
//!
//! The binary links the CPU part of libtorch only (`libtorch_cpu.so`). CUDA support is a second library,
//! `libtorch_cuda.so`, which registers itself with libtorch when it is loaded. [`load_cuda`] loads it
//! with `dlopen(RTLD_NOW | RTLD_GLOBAL)` before anything asks libtorch about CUDA, from
//! `$WRN_LIBTORCH_CUDA` when set, otherwise from the directory the running `libtorch_cpu.so` was loaded
//! from. So the one binary trains on CPU on a machine without a GPU and on CUDA where a PyTorch 2.11
//! installation provides the CUDA libraries (run it with `LD_LIBRARY_PATH` at that PyTorch's `lib/`).

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::OnceLock;

use tch::Device;

use crate::driver::{self, DriverError};

/// Names `libtorch_cuda.so` explicitly, overriding the search beside `libtorch_cpu.so`.
pub const CUDA_LIBRARY_ENV: &str = "WRN_LIBTORCH_CUDA";
/// Overrides the number of libtorch intra-op threads.
pub const TORCH_THREADS_ENV: &str = "WRN_TORCH_THREADS";
/// How many ranks of a run were started on this machine together (torchrun and `wrn train --nproc` set it).
pub const LOCAL_WORLD_SIZE_ENV: &str = "LOCAL_WORLD_SIZE";

/// A rank's share of this machine's `cores` when `local_ranks` ranks (`LOCAL_WORLD_SIZE`) share them: torchrun
/// starts its ranks with every core in sight of each, and they would otherwise all take all of them.
pub fn rank_share(cores: usize, local_ranks: Option<&str>) -> usize {
    let ranks = local_ranks.and_then(|v| v.trim().parse::<usize>().ok()).filter(|&n| n > 1).unwrap_or(1);
    (cores / ranks).max(1)
}
/// Overrides the number of rayon workers of the data pipeline.
pub const DATA_THREADS_ENV: &str = "WRN_DATA_THREADS";

/// Errors of the run-time set-up.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("invalid device '{0}': expected auto, cpu, cuda or cuda:N")]
    DeviceSyntax(String),
    #[error("device {requested} requested but CUDA is unavailable: {reason}")]
    CudaUnavailable { requested: String, reason: CudaUnavailable },
    #[error(
        "the NVIDIA driver sees {gpus} but CUDA cannot be used: {reason}. Refusing to train on the CPU \
         instead: run `wrn doctor` for the cause, or ask for the CPU (device=cpu, --device cpu, --gpus none)"
    )]
    GpusUnusable { gpus: String, reason: CudaUnavailable },
    #[error("device cuda:{index} requested but only {count} CUDA device(s) are visible")]
    NoSuchGpu { index: usize, count: usize },
    #[error("{0}")]
    UnsupportedGpu(String),
    #[error("cannot make cuda:{index} the current device: cudaSetDevice returned {code}")]
    SetDevice { index: usize, code: i32 },
    #[error("invalid {var}='{value}': expected a positive integer")]
    ThreadsEnv { var: &'static str, value: String },
}

/// What the user asked for: `auto | cpu | cuda | cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    /// CUDA device 0 when CUDA works; the CPU (with a one-line reason) only on a machine whose NVIDIA
    /// driver sees no GPU. Where the driver sees GPUs that CUDA cannot use, an error.
    Auto,
    Cpu,
    /// `cuda` (device 0) or `cuda:N`; an error when CUDA cannot be used.
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = RuntimeError;
    fn from_str(s: &str) -> Result<Self, RuntimeError> {
        match s {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceChoice::Cuda)
                .ok_or_else(|| RuntimeError::DeviceSyntax(s.to_string())),
        }
    }
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceChoice::Auto => write!(f, "auto"),
            DeviceChoice::Cpu => write!(f, "cpu"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// The device chosen, and why CUDA was not when `auto` fell back to the CPU.
#[derive(Debug, Clone)]
pub struct SelectedDevice {
    pub device: Device,
    pub fallback_reason: Option<String>,
}

/// Resolves a [`DeviceChoice`], loading the CUDA backend first when CUDA may be used. A CUDA device
/// becomes the current device of the calling thread, so everything that uses "the current device"
/// (memory queries, streams, generators) uses it.
pub fn select_device(choice: DeviceChoice) -> Result<SelectedDevice, RuntimeError> {
    let index = match choice {
        DeviceChoice::Cpu => return Ok(SelectedDevice { device: Device::Cpu, fallback_reason: None }),
        DeviceChoice::Auto => match cuda_status() {
            Ok(_) => 0,
            Err(reason) => {
                return match driver::cuda_driver() {
                    Ok(d) if !d.devices.is_empty() => {
                        Err(RuntimeError::GpusUnusable { gpus: describe_gpus(&d.devices), reason })
                    }
                    _ => Ok(SelectedDevice { device: Device::Cpu, fallback_reason: Some(reason.to_string()) }),
                };
            }
        },
        DeviceChoice::Cuda(index) => {
            let count = cuda_status()
                .map_err(|reason| RuntimeError::CudaUnavailable { requested: choice.to_string(), reason })?;
            if index >= count {
                return Err(RuntimeError::NoSuchGpu { index, count });
            }
            index
        }
    };
    if let Some(why) = unsupported_gpu(index) {
        return Err(RuntimeError::UnsupportedGpu(why));
    }
    set_current_device(index)?;
    // cuDNN picks the fastest algorithm for each shape, in every command that computes on CUDA.
    tch::Cuda::cudnn_set_benchmark(true);
    Ok(SelectedDevice { device: Device::Cuda(index), fallback_reason: None })
}

/// "1 GPU (NVIDIA H200)" or "2 GPUs (NVIDIA H200, NVIDIA H200)".
fn describe_gpus(gpus: &[driver::Gpu]) -> String {
    let names: Vec<&str> = gpus.iter().map(|g| g.name.as_str()).collect();
    format!("{} GPU{} ({})", gpus.len(), if gpus.len() == 1 { "" } else { "s" }, names.join(", "))
}

type CudaSetDevice = unsafe extern "C" fn(i32) -> i32;
type CudaGetDevice = unsafe extern "C" fn(*mut i32) -> i32;

/// Makes `index` the CUDA runtime's current device on this thread (`cudaSetDevice` of the `libcudart`
/// libtorch runs on, which tch does not bind), and checks that it took.
fn set_current_device(index: usize) -> Result<(), RuntimeError> {
    let failed = |code| RuntimeError::SetDevice { index, code };
    // SAFETY: libcudart is loaded with libtorch (libtorch_cpu.so needs it); cudaSetDevice(int) and
    // cudaGetDevice(int*) are the CUDA runtime API's, with an out-pointer to a local.
    unsafe {
        let this = libloading::os::unix::Library::this();
        let set = this.get::<CudaSetDevice>(b"cudaSetDevice\0").map_err(|_| failed(-1))?;
        let get = this.get::<CudaGetDevice>(b"cudaGetDevice\0").map_err(|_| failed(-1))?;
        let code = set(index as i32);
        if code != 0 {
            return Err(failed(code));
        }
        let mut current = -1;
        match get(&mut current) {
            0 if current == index as i32 => Ok(()),
            code => Err(failed(code)),
        }
    }
}

/// The compute capabilities a libtorch build has kernels for: (oldest, newest major), when known.
/// PyPI's torch 2.11.0 for CUDA 13.0 holds cubins for sm_75 to sm_121 and no PTX, so an older GPU
/// gets "no kernel image is available" at its first kernel, and a newer one too.
pub fn compiled_capabilities(libtorch_version: &str) -> Option<((u32, u32), u32)> {
    let cuda = libtorch_version.split_once("+cu")?.1;
    cuda.starts_with("13").then_some(((7, 5), 12))
}

/// Why GPU `index` cannot run this libtorch's kernels, when it cannot.
fn unsupported_gpu(index: usize) -> Option<String> {
    let version = libtorch_dir().as_deref().and_then(libtorch_version)?;
    let gpu = driver::gpu(index)?;
    gpu_support_problem(&gpu, &version)
}

/// Why `gpu` cannot run the kernels of libtorch `version`, when it cannot.
pub fn gpu_support_problem(gpu: &driver::Gpu, version: &str) -> Option<String> {
    let (oldest, newest) = compiled_capabilities(version)?;
    let capability = gpu.capability()?;
    (capability < oldest || capability.0 > newest).then(|| {
        format!(
            "GPU {} ({}) has compute capability {}, but libtorch {version} has kernels for compute \
             capability {}.{} to {newest}.x only: use a libtorch 2.11 built for this GPU (point LIBTORCH or \
             LD_LIBRARY_PATH at it)",
            gpu.index, gpu.name, gpu.compute_capability, oldest.0, oldest.1
        )
    })
}

/// The CUDA version a libtorch build targets, from its version tag (`2.11.0+cu130` → (13, 0)).
pub fn libtorch_cuda_version(libtorch_version: &str) -> Option<(u32, u32)> {
    let tag = libtorch_version.split_once("+cu")?.1;
    let digits: String = tag.chars().take_while(char::is_ascii_digit).collect();
    let (major, minor) = digits.split_at(digits.len().checked_sub(1)?);
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// The NVIDIA driver release that first supports a CUDA major version (NVIDIA's CUDA compatibility
/// table): 580 for CUDA 13, 525 for CUDA 12.
fn minimum_driver(cuda_major: u32) -> Option<u32> {
    match cuda_major {
        13 => Some(580),
        12 => Some(525),
        _ => None,
    }
}

/// Why CUDA is unusable although the driver sees GPUs, named as precisely as the facts allow: a
/// driver too old for the libtorch's CUDA, or libtorch's own verdict.
pub fn diagnose_unavailable(driver: &driver::Driver, libtorch_version: Option<&str>) -> String {
    let needed = libtorch_version.and_then(libtorch_cuda_version);
    match (driver.cuda(), needed) {
        (Some(have), Some(need)) if have < need => format!(
            "the NVIDIA driver{} supports CUDA {} but libtorch {} is built for CUDA {}.{}: upgrade the driver{} \
             (or point LIBTORCH / LD_LIBRARY_PATH at a libtorch 2.11 built for CUDA {})",
            driver.version.as_ref().map_or(String::new(), |v| format!(" {v}")),
            driver.cuda_version,
            libtorch_version.unwrap_or("?"),
            need.0,
            need.1,
            minimum_driver(need.0).map_or(String::new(), |d| format!(" to release {d} or newer")),
            driver.cuda_version
        ),
        _ => format!(
            "libtorch reports CUDA unavailable although the NVIDIA driver (CUDA {}) sees {}",
            driver.cuda_version,
            describe_gpus(&driver.devices)
        ),
    }
}

/// Why libtorch cannot compute on CUDA here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CudaUnavailable {
    /// The CUDA backend (`libtorch_cuda.so`) cannot be loaded; see [`load_cuda`].
    #[error("{0}")]
    Backend(&'static str),
    #[error(transparent)]
    Driver(#[from] DriverError),
    #[error("the NVIDIA driver reports no GPU")]
    NoGpu,
    /// The driver sees GPUs that libtorch cannot use, with the cause found (see `diagnose_unavailable`).
    #[error("{0}")]
    Diagnosed(String),
}

/// Loads the CUDA backend (once) and returns the number of usable CUDA devices, or why there are none.
pub fn cuda_status() -> Result<usize, CudaUnavailable> {
    load_cuda().map_err(CudaUnavailable::Backend)?;
    if !tch::Cuda::is_available() {
        return Err(match driver::cuda_driver() {
            Err(reason) => reason.into(),
            Ok(driver) if driver.devices.is_empty() => CudaUnavailable::NoGpu,
            Ok(driver) => CudaUnavailable::Diagnosed(diagnose_unavailable(
                &driver,
                libtorch_dir().as_deref().and_then(libtorch_version).as_deref(),
            )),
        });
    }
    Ok(tch::Cuda::device_count().max(0) as usize)
}

/// The CUDA part of wrn's libtorch extension (c10d's NCCL process group), written to and loaded from
/// `<cache>/extension`: it needs `libtorch_cuda.so`, so this loads that first ([`load_cuda`]).
pub fn cuda_extension() -> Result<&'static wrn_torch_ext::cuda::CudaExt, String> {
    load_cuda().map_err(|e| format!("the CUDA backend is not loaded: {e}"))?;
    wrn_torch_ext::cuda::load(&extension_dir()).map_err(ToString::to_string)
}

/// Where the CUDA part of the extension is written to be loaded.
pub fn extension_dir() -> PathBuf {
    wrn_data::dirs::cache_dir().join("extension")
}

/// libtorch's errors without a C++ backtrace unless `TORCH_SHOW_CPP_STACKTRACES=1` (see
/// [`wrn_torch_ext::cpp_backtraces_as_pytorch`]): `main` calls it with [`load_cuda`].
pub fn quiet_cpp_backtraces() {
    wrn_torch_ext::cpp_backtraces_as_pytorch();
}

/// Loads `libtorch_cuda.so` with `RTLD_NOW | RTLD_GLOBAL`, once per process; returns its path, or why it
/// could not be loaded. Must run before the first CUDA query to libtorch: `main` calls it first thing.
/// A `$WRN_LIBTORCH_CUDA` of another libtorch version than the one running is refused before loading.
pub fn load_cuda() -> Result<&'static Path, &'static str> {
    static LOADED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let dir = libtorch_dir();
            let path = match std::env::var_os(CUDA_LIBRARY_ENV) {
                Some(path) => {
                    let path = PathBuf::from(path);
                    let theirs = path.parent().and_then(libtorch_version);
                    let ours = dir.as_deref().and_then(libtorch_version);
                    if let (Some(theirs), Some(ours)) = (&theirs, &ours) {
                        if theirs != ours {
                            return Err(format!(
                                "{CUDA_LIBRARY_ENV}={} belongs to libtorch {theirs}, but this process runs libtorch \
                                 {ours} from {}: point {CUDA_LIBRARY_ENV} at the libtorch_cuda.so of the same \
                                 build, or unset it",
                                path.display(),
                                dir.as_deref().map_or("?".into(), |d| d.display().to_string())
                            ));
                        }
                    }
                    path
                }
                None => {
                    let dir = dir.ok_or("libtorch_cpu.so is not mapped in this process")?;
                    let path = dir.join("libtorch_cuda.so");
                    if !path.exists() {
                        return Err(format!(
                            "no libtorch_cuda.so beside {} (a CPU-only libtorch): on a machine with an NVIDIA \
                             driver, `make build` lays out the CUDA libtorch (WRN_CUDA=1 forces it); or run with \
                             LD_LIBRARY_PATH at a CUDA PyTorch 2.11's torch/lib, or set {CUDA_LIBRARY_ENV}",
                            dir.join("libtorch_cpu.so").display()
                        ));
                    }
                    path
                }
            };
            if !path.exists() {
                return Err(format!("cannot load {}: no such file ({CUDA_LIBRARY_ENV})", path.display()));
            }
            let flags = libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_GLOBAL;
            // SAFETY: loading libtorch_cuda runs its static initialisers, which register the CUDA backend
            // with the libtorch already in this process; that is the purpose of the call.
            let library = unsafe { libloading::os::unix::Library::open(Some(&path), flags) }
                .map_err(|e| format!("cannot load {}: {e}", path.display()))?;
            // The backend must stay registered for the life of the process.
            std::mem::forget(library);
            Ok(path)
        })
        .as_ref()
        .map(PathBuf::as_path)
        .map_err(String::as_str)
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

/// libtorch's global settings that change what a CUDA run computes, read from libtorch itself
/// (`at::globalContext()`; tch binds setters for some of them but no getters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TorchSettings {
    /// cuDNN picks the fastest algorithm per shape (`torch.backends.cudnn.benchmark`).
    pub cudnn_benchmark: bool,
    /// cuDNN restricted to deterministic algorithms (`torch.backends.cudnn.deterministic`).
    pub cudnn_deterministic: bool,
    /// fp32 convolutions may use TF32 (`torch.backends.cudnn.allow_tf32`).
    pub tf32_convolutions: bool,
    /// fp32 matrix products may use TF32 (`torch.backends.cuda.matmul.allow_tf32`).
    pub tf32_matmul: bool,
}

/// Reads [`TorchSettings`] from the libtorch in this process, through the exported C++ accessors of
/// `at::Context` (Itanium ABI: a const member function takes `this` as its only argument).
pub fn torch_settings() -> Option<TorchSettings> {
    type Global = unsafe extern "C" fn() -> *const std::ffi::c_void;
    type Getter = unsafe extern "C" fn(*const std::ffi::c_void) -> bool;
    /// `std::optional<at::Float32Op>` passed by value: {op: i32, engaged: bool}, 8 bytes in a register.
    type OpGetter = unsafe extern "C" fn(*const std::ffi::c_void, u64) -> bool;
    // SAFETY: these are libtorch_cpu.so's exported symbols of `at::globalContext()` and of const, non-virtual
    // `at::Context` accessors returning bool; `this` is the global context, valid for the process. The
    // symbols are looked up by their 2.11 mangled names, so another ABI fails the lookup rather than the call.
    unsafe {
        let this = libloading::os::unix::Library::this();
        let context = this.get::<Global>(b"_ZN2at13globalContextEv\0").ok()?();
        let get = |name: &[u8]| this.get::<Getter>(name).ok().map(|f| f(context));
        let tf32_conv = this.get::<OpGetter>(b"_ZNK2at7Context14allowTF32CuDNNESt8optionalINS_9Float32OpEE\0").ok()?;
        Some(TorchSettings {
            cudnn_benchmark: get(b"_ZNK2at7Context14benchmarkCuDNNEv\0")?,
            cudnn_deterministic: get(b"_ZNK2at7Context18deterministicCuDNNEv\0")?,
            tf32_convolutions: tf32_conv(context, 0),
            tf32_matmul: get(b"_ZNK2at7Context15allowTF32CuBLASEv\0")?,
        })
    }
}

/// The directory holding the `libtorch_cpu.so` this process runs against.
pub fn libtorch_dir() -> Option<PathBuf> {
    mapped_library("libtorch_cpu.so").and_then(|p| p.parent().map(Path::to_path_buf))
}

/// The path of a shared library mapped into this process, read from `/proc/self/maps`.
pub fn mapped_library(file_name: &str) -> Option<PathBuf> {
    mapped_libraries(file_name).into_iter().next()
}

/// Every distinct path under which a library of this file name is mapped into this process: more than
/// one means two copies of the same library are loaded.
pub fn mapped_libraries(file_name: &str) -> Vec<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let mut paths: Vec<PathBuf> = Vec::new();
    // The path is the rest of the line from its first '/' (it may contain spaces).
    for path in maps.lines().filter_map(|line| line.find('/').map(|i| Path::new(&line[i..]))) {
        if path.file_name().is_some_and(|n| n == file_name) && !paths.iter().any(|p| p == path) {
            paths.push(path.to_path_buf());
        }
    }
    paths
}

/// How many threads libtorch and the data pipeline get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ThreadPlan {
    /// Cores this process may use (`std::thread::available_parallelism`, which honours CPU affinity).
    pub cores: usize,
    /// libtorch intra-op threads (`at::set_num_threads`).
    pub torch_intra_op: usize,
    /// libtorch inter-op threads; the runner issues one op at a time, so one is enough.
    pub torch_inter_op: usize,
    /// rayon workers decoding and augmenting batches.
    pub data_workers: usize,
}

impl ThreadPlan {
    /// The default split for a device on `cores` cores.
    ///
    /// - CPU training: compute dominates by orders of magnitude (a WRN step costs milliseconds per image,
    ///   CIFAR augmentation microseconds), so libtorch gets every core and the data pipeline a quarter of
    ///   them; its workers sleep on a full prefetch queue most of the time.
    /// - CUDA training: the host only launches kernels (two libtorch threads are plenty) and the data
    ///   pipeline, which must keep the GPU fed (JPEG decoding for ImageNet), gets the other cores.
    pub fn for_device(device: Device, cores: usize) -> ThreadPlan {
        let cores = cores.max(1);
        let (torch_intra_op, data_workers) = match device {
            Device::Cpu => (cores, (cores / 4).max(1)),
            _ => (cores.min(2), cores.saturating_sub(2).max(1)),
        };
        ThreadPlan { cores, torch_intra_op, torch_inter_op: 1, data_workers }
    }

    /// [`ThreadPlan::for_device`] on this machine's cores (a rank's share of them when several ranks were
    /// started on it together: [`rank_share`]), with `WRN_TORCH_THREADS` / `WRN_DATA_THREADS` overriding each
    /// side.
    pub fn from_env(device: Device) -> Result<ThreadPlan, RuntimeError> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let local_ranks = std::env::var(LOCAL_WORLD_SIZE_ENV).ok();
        let mut plan = ThreadPlan::for_device(device, rank_share(cores, local_ranks.as_deref()));
        if let Some(n) = threads_env(TORCH_THREADS_ENV)? {
            plan.torch_intra_op = n;
        }
        if let Some(n) = threads_env(DATA_THREADS_ENV)? {
            plan.data_workers = n;
        }
        Ok(plan)
    }

    /// Applies the plan to libtorch and to rayon's global pool. The first call wins; later calls return
    /// the plan in force, since neither libtorch's inter-op pool nor rayon's global pool can be resized.
    pub fn apply(self) -> ThreadPlan {
        static APPLIED: OnceLock<ThreadPlan> = OnceLock::new();
        *APPLIED.get_or_init(|| {
            tch::set_num_threads(self.torch_intra_op as i32);
            tch::set_num_interop_threads(self.torch_inter_op as i32);
            let data_workers = match rayon::ThreadPoolBuilder::new().num_threads(self.data_workers).build_global() {
                Ok(()) => self.data_workers,
                Err(_) => rayon::current_num_threads(),
            };
            ThreadPlan { torch_intra_op: tch::get_num_threads().max(1) as usize, data_workers, ..self }
        })
    }
}

fn threads_env(var: &'static str) -> Result<Option<usize>, RuntimeError> {
    match std::env::var(var) {
        Err(_) => Ok(None),
        Ok(value) => match value.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(Some(n)),
            _ => Err(RuntimeError::ThreadsEnv { var, value }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cuda_graph_replays_its_capture_or_says_why_it_cannot() {
        match cuda_extension() {
            // Built against the CPU libtorch: no CUDA part, and the reason says how to get one.
            Err(why) => assert!(why.contains("WRN_CUDA=1"), "{why}"),
            Ok(ext) => match cuda_status() {
                // No GPU: the graph (its side stream) cannot be made, which is an error naming CUDA's
                // reason, not a crash.
                Err(_) => {
                    let why = ext.graph().err().expect("a CUDA graph without a GPU").0;
                    assert!(why.contains("CUDA"), "{why}");
                }
                Ok(_) => {
                    let mut graph = ext.graph().unwrap();
                    let mut t = tch::Tensor::zeros([4], (tch::Kind::Float, tch::Device::Cuda(0)));
                    // Captured, not run; then each replay adds one.
                    graph.capture(|| t += 1.0).unwrap();
                    for _ in 0..3 {
                        graph.replay().unwrap();
                    }
                    tch::Cuda::synchronize(0);
                    assert_eq!(Vec::<f32>::try_from(&t).unwrap(), [3.0; 4]);
                }
            },
        }
    }

    #[test]
    fn device_choices_parse_and_print_back() {
        for s in ["auto", "cpu", "cuda:0", "cuda:3"] {
            assert_eq!(s.parse::<DeviceChoice>().unwrap().to_string(), s);
        }
        assert_eq!("cuda".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cuda(0));
        for bad in ["gpu", "cuda:", "cuda:x", "CPU", ""] {
            let err = bad.parse::<DeviceChoice>().unwrap_err().to_string();
            assert!(err.contains("expected auto, cpu, cuda or cuda:N"), "{err}");
        }
    }

    #[test]
    fn thread_plans_leave_no_core_idle_and_never_zero() {
        assert_eq!(
            ThreadPlan::for_device(Device::Cpu, 2),
            ThreadPlan { cores: 2, torch_intra_op: 2, torch_inter_op: 1, data_workers: 1 }
        );
        assert_eq!(ThreadPlan::for_device(Device::Cpu, 16).data_workers, 4);
        let gpu = ThreadPlan::for_device(Device::Cuda(0), 16);
        assert_eq!((gpu.torch_intra_op, gpu.data_workers), (2, 14));
        let tiny = ThreadPlan::for_device(Device::Cuda(0), 1);
        assert_eq!((tiny.torch_intra_op, tiny.data_workers), (1, 1));
    }

    #[test]
    fn ranks_started_together_share_the_cores() {
        assert_eq!(rank_share(16, None), 16);
        assert_eq!(rank_share(16, Some("4")), 4);
        assert_eq!(rank_share(16, Some(" 3 ")), 5);
        assert_eq!(rank_share(2, Some("8")), 1, "never zero");
        assert_eq!((rank_share(16, Some("1")), rank_share(16, Some("x"))), (16, 16));
    }

    #[test]
    fn libtorch_is_found_in_this_process() {
        // Any tensor op makes sure libtorch is loaded and initialised.
        let _ = tch::Tensor::from(1.0f32) + 1.0;
        let dir = libtorch_dir().expect("libtorch_cpu.so mapped");
        assert!(dir.join("libtorch_cpu.so").exists(), "{}", dir.display());
    }

    #[test]
    fn cuda_on_a_machine_without_it_is_an_explained_error() {
        // This test runs on the CPU-only CI machine; on a GPU machine it checks the opposite.
        match cuda_status() {
            Ok(count) => {
                assert!(count > 0);
                assert!(select_device(DeviceChoice::Cuda(count)).is_err());
            }
            Err(reason) => {
                let reason = reason.to_string();
                assert!(!reason.is_empty());
                let auto = select_device(DeviceChoice::Auto).unwrap();
                assert_eq!(auto.device, Device::Cpu);
                assert_eq!(auto.fallback_reason.as_deref(), Some(reason.as_str()));
                let err = select_device(DeviceChoice::Cuda(0)).unwrap_err().to_string();
                assert!(err.starts_with("device cuda:0 requested but CUDA is unavailable: "), "{err}");
            }
        }
    }

    fn gpu(name: &str, capability: &str) -> driver::Gpu {
        driver::Gpu {
            index: 0,
            name: name.into(),
            total_memory_bytes: 80 << 30,
            compute_capability: capability.into(),
            uuid: None,
        }
    }

    #[test]
    fn a_driver_older_than_the_libtorch_cuda_is_named_with_what_to_do() {
        assert_eq!(libtorch_cuda_version("2.11.0+cu130"), Some((13, 0)));
        assert_eq!(libtorch_cuda_version("2.11.0+cu128"), Some((12, 8)));
        assert_eq!(libtorch_cuda_version("2.11.0+cpu"), None);
        assert_eq!(libtorch_cuda_version("2.11.0"), None);
        let old = driver::Driver {
            cuda_version: "12.8".into(),
            version: Some("570.133.20".into()),
            devices: vec![gpu("NVIDIA H200", "9.0")],
        };
        let why = diagnose_unavailable(&old, Some("2.11.0+cu130"));
        assert_eq!(
            why,
            "the NVIDIA driver 570.133.20 supports CUDA 12.8 but libtorch 2.11.0+cu130 is built for CUDA 13.0: \
             upgrade the driver to release 580 or newer (or point LIBTORCH / LD_LIBRARY_PATH at a libtorch 2.11 \
             built for CUDA 12.8)"
        );
        let new = driver::Driver { cuda_version: "13.0".into(), ..old };
        let why = diagnose_unavailable(&new, Some("2.11.0+cu130"));
        assert!(
            why.starts_with(
                "libtorch reports CUDA unavailable although the NVIDIA driver (CUDA 13.0) sees 1 GPU (NVIDIA H200)"
            ),
            "{why}"
        );
    }

    #[test]
    fn gpus_outside_the_compiled_architectures_are_named() {
        assert_eq!(gpu_support_problem(&gpu("NVIDIA H200", "9.0"), "2.11.0+cu130"), None);
        assert_eq!(gpu_support_problem(&gpu("Tesla T4", "7.5"), "2.11.0+cu130"), None);
        assert_eq!(gpu_support_problem(&gpu("NVIDIA GB10", "12.1"), "2.11.0+cu130"), None);
        let v100 = gpu_support_problem(&gpu("Tesla V100-SXM2-16GB", "7.0"), "2.11.0+cu130").unwrap();
        assert!(v100.starts_with("GPU 0 (Tesla V100-SXM2-16GB) has compute capability 7.0, but libtorch 2.11.0+cu130 has kernels for compute capability 7.5 to 12.x only"), "{v100}");
        assert!(gpu_support_problem(&gpu("future", "13.0"), "2.11.0+cu130").is_some());
        // Builds whose architectures are not known are not second-guessed.
        assert_eq!(gpu_support_problem(&gpu("Tesla V100", "7.0"), "2.11.0+cu126"), None);
    }

    #[test]
    fn libtorch_settings_are_read_from_libtorch_itself() {
        let _ = tch::Tensor::from(1.0f32) + 1.0;
        tch::Cuda::cudnn_set_benchmark(true);
        let on = torch_settings().expect("at::Context accessors exported by libtorch_cpu.so");
        assert!(on.cudnn_benchmark);
        tch::Cuda::cudnn_set_benchmark(false);
        let off = torch_settings().unwrap();
        assert!(!off.cudnn_benchmark);
        // libtorch 2.11's defaults: TF32 allowed for cuDNN convolutions, not for matrix products.
        assert!(off.tf32_convolutions && !off.tf32_matmul && !off.cudnn_deterministic, "{off:?}");
    }

    #[test]
    fn mapped_libraries_are_found_once_each() {
        let _ = tch::Tensor::from(1.0f32) + 1.0;
        let copies = mapped_libraries("libtorch_cpu.so");
        assert_eq!(copies.len(), 1, "{copies:?}");
        assert!(mapped_libraries("libnot_a_library.so").is_empty());
    }
}
