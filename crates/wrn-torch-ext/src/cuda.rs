//! The CUDA half of the extension (`csrc/cuda.cpp`): c10d's NCCL process group, for collectives on CUDA
//! tensors, and CUDA graphs ([`CudaGraph`]). A binary built against the CUDA libtorch of `make libtorch-cuda` embeds it as a shared library
//! (`libwrn_torch_cuda.so`); [`load`] writes it into a cache folder and loads it, which works once
//! `libtorch_cuda.so` is loaded (the library resolves libtorch's CUDA symbols against it), so a binary
//! that starts on machines without CUDA stays one binary. A binary built against the CPU libtorch has no
//! CUDA half and [`load`] says how to get one.

use std::ffi::{c_char, c_int};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::dist::{check, DistError, Group, RawGroup, RawStore, Store};

/// The version of `csrc/cuda.cpp`'s interface this crate calls.
const INTERFACE_VERSION: c_int = 3;

#[cfg(wrn_cuda_ext)]
const EMBEDDED: Option<&[u8]> = Some(include_bytes!(env!("WRN_CUDA_EXT")));
#[cfg(not(wrn_cuda_ext))]
const EMBEDDED: Option<&[u8]> = None;

/// Why the CUDA half cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CudaExtError {
    #[error(
        "this wrn was built without the CUDA part of its libtorch extension (NCCL): build it against the CUDA \
         libtorch (`make build WRN_CUDA=1`; automatic on a machine with an NVIDIA driver)"
    )]
    NotBuilt,
    #[error("cannot write the CUDA extension to {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot load the CUDA extension {path} (libtorch_cuda.so must be loaded first): {detail}")]
    Load { path: PathBuf, detail: String },
    #[error("{path} speaks version {found} of the CUDA extension's interface; this wrn speaks {INTERFACE_VERSION}")]
    Version { path: PathBuf, found: c_int },
}

type AttachNccl = unsafe extern "C" fn(*mut RawGroup, *mut RawStore, c_int, c_int, i64) -> *mut c_char;

#[repr(C)]
struct RawGraph {
    _private: [u8; 0],
}
/// `(device, out)`: the caching allocator's peak of allocated bytes on the device.
type PeakAllocated = unsafe extern "C" fn(c_int, *mut i64) -> *mut c_char;
type GraphNew = unsafe extern "C" fn(*mut *mut RawGraph) -> *mut c_char;
type GraphFree = unsafe extern "C" fn(*mut RawGraph);
type GraphOp = unsafe extern "C" fn(*mut RawGraph) -> *mut c_char;

/// The CUDA graph functions of the library.
struct GraphFns {
    new: GraphNew,
    free: GraphFree,
    enter: GraphOp,
    exit: GraphOp,
    capture_begin: GraphOp,
    capture_end: GraphOp,
    replay: GraphOp,
}

/// The loaded CUDA half.
pub struct CudaExt {
    path: PathBuf,
    attach_nccl: AttachNccl,
    graph: GraphFns,
    peak_allocated: PeakAllocated,
    _library: libloading::Library,
}

impl CudaExt {
    /// Where the library was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Adds an NCCL backend to `group` for CUDA tensors, over `store` (the group's), with `timeout` for
    /// its collectives: the Reducer's buckets of CUDA gradients then go over NCCL, CPU tensors over Gloo.
    /// NCCL's communicator is created at the first collective, on the GPU of its tensor.
    pub fn attach_nccl(&self, group: &Group, store: &Store, timeout: Duration) -> Result<(), DistError> {
        let ms = timeout.as_millis().min(i64::MAX as u128) as i64;
        // SAFETY: group and store are live; the function copies what it keeps (reference counts).
        check(unsafe { (self.attach_nccl)(group.raw, store.raw, group.rank() as c_int, group.size() as c_int, ms) })
    }
}

impl CudaExt {
    /// The most bytes libtorch's CUDA caching allocator held for tensors on GPU `device` at once since
    /// the process started (what `torch.cuda.max_memory_allocated` reports).
    pub fn peak_allocated(&self, device: usize) -> Result<u64, DistError> {
        let device = c_int::try_from(device).map_err(|_| DistError(format!("no GPU {device}")))?;
        let mut bytes = 0i64;
        // SAFETY: the out-pointer is valid for the call.
        check(unsafe { (self.peak_allocated)(device, &mut bytes) })?;
        Ok(bytes.max(0) as u64)
    }

    /// A new, empty CUDA graph (on the current GPU when it is first used).
    pub fn graph(&'static self) -> Result<CudaGraph, DistError> {
        let mut raw = std::ptr::null_mut();
        // SAFETY: the out-pointer is valid; the graph is owned by the returned value.
        check(unsafe { (self.graph.new)(&mut raw) })?;
        Ok(CudaGraph { raw, fns: &self.graph })
    }
}

/// A CUDA graph (`at::cuda::CUDAGraph`): work captured once on a side stream and replayed with one
/// launch, on the same memory. What a capture may hold is CUDA's rule: no host synchronisation, no
/// allocation outside libtorch's caching allocator (which serves the capture from a pool of the graph),
/// tensors that outlive the graph for its inputs and outputs.
pub struct CudaGraph {
    raw: *mut RawGraph,
    fns: &'static GraphFns,
}

impl CudaGraph {
    /// Runs `work` with the graph's side stream current (for the warm-up steps a capture needs first:
    /// libtorch's lazily created handles and workspaces then belong to the stream the capture uses).
    pub fn on_side_stream<T>(&mut self, work: impl FnOnce() -> T) -> Result<T, DistError> {
        // SAFETY: the graph is live; enter and exit pair up around `work` on this thread.
        check(unsafe { (self.fns.enter)(self.raw) })?;
        let out = work();
        check(unsafe { (self.fns.exit)(self.raw) })?;
        Ok(out)
    }

    /// Captures the CUDA work `work` queues (on the side stream) instead of running it.
    pub fn capture<T>(&mut self, work: impl FnOnce() -> T) -> Result<T, DistError> {
        let (begin, end) = (self.fns.capture_begin, self.fns.capture_end);
        let raw = self.raw;
        self.on_side_stream(|| -> Result<T, DistError> {
            // SAFETY: the side stream is current; begin and end pair up around `work`.
            check(unsafe { begin(raw) })?;
            let out = work();
            check(unsafe { end(raw) })?;
            Ok(out)
        })?
    }

    /// Runs the captured work once more, on the current stream.
    pub fn replay(&self) -> Result<(), DistError> {
        // SAFETY: the graph is live.
        check(unsafe { (self.fns.replay)(self.raw) })
    }
}

impl Drop for CudaGraph {
    fn drop(&mut self) {
        // SAFETY: created by the library's wrn_cuda_graph_new, freed once.
        unsafe { (self.fns.free)(self.raw) }
    }
}

/// Whether this binary carries the CUDA half.
pub fn embedded() -> bool {
    EMBEDDED.is_some()
}

/// Loads the CUDA half once per process, writing it to `dir` first (named by its SHA-256, so builds never
/// share a file). Call it after `libtorch_cuda.so` is loaded.
pub fn load(dir: &Path) -> Result<&'static CudaExt, &'static CudaExtError> {
    static LOADED: OnceLock<Result<CudaExt, CudaExtError>> = OnceLock::new();
    LOADED.get_or_init(|| load_from(dir)).as_ref()
}

fn load_from(dir: &Path) -> Result<CudaExt, CudaExtError> {
    let bytes = EMBEDDED.ok_or(CudaExtError::NotBuilt)?;
    let digest = Sha256::digest(bytes);
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    let path = dir.join(format!("libwrn_torch_cuda-{hex}.so"));
    let write = |source| CudaExtError::Write { path: path.clone(), source };
    if std::fs::read(&path).ok().as_deref() != Some(bytes) {
        std::fs::create_dir_all(dir).map_err(write)?;
        // Written aside and renamed: a process that finds the file finds it whole.
        let partial = dir.join(format!(".libwrn_torch_cuda-{hex}.{}.part", std::process::id()));
        std::fs::write(&partial, bytes).map_err(write)?;
        std::fs::rename(&partial, &path).map_err(write)?;
    }
    let load = |e: libloading::Error| CudaExtError::Load { path: path.clone(), detail: e.to_string() };
    let flags = libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_LOCAL;
    // SAFETY: the library is ours; its initialisers only register nothing beyond C++ statics.
    let library: libloading::Library =
        unsafe { libloading::os::unix::Library::open(Some(&path), flags) }.map_err(load)?.into();
    // SAFETY: the symbols have these signatures in csrc/cuda.cpp (the version says which interface).
    let version: c_int =
        unsafe { library.get::<unsafe extern "C" fn() -> c_int>(b"wrn_cuda_ext_version\0").map_err(load)?() };
    if version != INTERFACE_VERSION {
        return Err(CudaExtError::Version { path, found: version });
    }
    // SAFETY: as above.
    let attach_nccl = *unsafe { library.get::<AttachNccl>(b"wrn_cuda_attach_nccl\0") }.map_err(load)?;
    let op = |name: &[u8]| unsafe { library.get::<GraphOp>(name).map(|f| *f) }.map_err(load);
    let graph = GraphFns {
        new: *unsafe { library.get::<GraphNew>(b"wrn_cuda_graph_new\0") }.map_err(load)?,
        free: *unsafe { library.get::<GraphFree>(b"wrn_cuda_graph_free\0") }.map_err(load)?,
        enter: op(b"wrn_cuda_graph_enter\0")?,
        exit: op(b"wrn_cuda_graph_exit\0")?,
        capture_begin: op(b"wrn_cuda_graph_capture_begin\0")?,
        capture_end: op(b"wrn_cuda_graph_capture_end\0")?,
        replay: op(b"wrn_cuda_graph_replay\0")?,
    };
    let peak_allocated = *unsafe { library.get::<PeakAllocated>(b"wrn_cuda_peak_allocated\0") }.map_err(load)?;
    Ok(CudaExt { path, attach_nccl, graph, peak_allocated, _library: library })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binary_without_the_cuda_half_says_how_to_get_it() {
        let dir = tempfile_dir();
        match load(&dir) {
            Err(CudaExtError::NotBuilt) => {
                assert!(!embedded());
                assert!(CudaExtError::NotBuilt.to_string().contains("make build WRN_CUDA=1"));
            }
            // Built against the CUDA libtorch: the library is written; loading it needs libtorch_cuda.so,
            // which this test process has not loaded, and says so.
            Err(e @ CudaExtError::Load { .. }) => {
                assert!(embedded());
                assert!(e.to_string().contains("libtorch_cuda.so must be loaded first"), "{e}");
            }
            Err(e) => panic!("{e}"),
            Ok(ext) => assert!(embedded() && ext.path().exists()),
        }
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("wrn-cuda-ext-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
