//! c10d from Rust: a [`Store`] (TCP, served by rank 0) for the rendezvous and small shared values, and a
//! [`Group`] of ranks running Gloo's collectives on CPU tensors (sum all-reduce, broadcast, barrier). The
//! same objects `torch.distributed` creates for `init_process_group("gloo")`.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::time::Duration;

use tch::{Device, Tensor};

/// An error of the extension (libtorch's message).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DistError(pub String);

#[repr(C)]
pub(crate) struct RawStore {
    _private: [u8; 0],
}
#[repr(C)]
pub(crate) struct RawGroup {
    _private: [u8; 0],
}
#[repr(C)]
struct RawReducer {
    _private: [u8; 0],
}

extern "C" {
    fn wrn_ext_free_string(s: *mut c_char);
    fn wrn_store_tcp(
        host: *const c_char,
        port: u16,
        is_server: c_int,
        world: c_int,
        timeout_ms: i64,
        out: *mut *mut RawStore,
    ) -> *mut c_char;
    fn wrn_store_free(s: *mut RawStore);
    fn wrn_store_set(s: *mut RawStore, key: *const c_char, value: *const u8, len: usize) -> *mut c_char;
    fn wrn_store_get(s: *mut RawStore, key: *const c_char, value: *mut *mut u8, len: *mut usize) -> *mut c_char;
    fn wrn_store_check(s: *mut RawStore, key: *const c_char, set: *mut c_int) -> *mut c_char;
    fn wrn_store_add(s: *mut RawStore, key: *const c_char, delta: i64, value: *mut i64) -> *mut c_char;
    fn wrn_group_gloo(
        s: *mut RawStore,
        rank: c_int,
        size: c_int,
        timeout_ms: i64,
        bind_host: *const c_char,
        out: *mut *mut RawGroup,
    ) -> *mut c_char;
    fn wrn_group_free(g: *mut RawGroup);
    fn wrn_group_allreduce_sum(g: *mut RawGroup, tensor: *mut c_void) -> *mut c_char;
    fn wrn_group_broadcast(g: *mut RawGroup, tensor: *mut c_void, root: c_int) -> *mut c_char;
    fn wrn_group_barrier(g: *mut RawGroup) -> *mut c_char;
    fn wrn_reducer_new(
        g: *mut RawGroup,
        params: *const *mut c_void,
        n: usize,
        first_bucket_bytes: i64,
        bucket_bytes: i64,
        out: *mut *mut RawReducer,
    ) -> *mut c_char;
    fn wrn_reducer_free(r: *mut RawReducer);
    fn wrn_reducer_backward(r: *mut RawReducer, loss: *mut c_void) -> *mut c_char;
    fn wrn_reducer_buckets(r: *mut RawReducer, bytes: *mut i64, cap: usize, count: *mut usize) -> *mut c_char;
}

/// Turns the extension's error string (null: success) into a result.
pub(crate) fn check(err: *mut c_char) -> Result<(), DistError> {
    if err.is_null() {
        return Ok(());
    }
    // SAFETY: a non-null error is a NUL-terminated string malloc'd by the extension, freed here once.
    let message = unsafe { CStr::from_ptr(err) }.to_string_lossy().into_owned();
    unsafe { wrn_ext_free_string(err) };
    Err(DistError(message))
}

fn c_string(s: &str) -> Result<CString, DistError> {
    CString::new(s).map_err(|_| DistError(format!("{s:?} holds a NUL byte")))
}

fn millis(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

/// c10d's `TCPStore`: a key-value store served by one process (rank 0) at `host:port`, which every rank
/// connects to.
pub struct Store {
    pub(crate) raw: *mut RawStore,
}

// SAFETY: c10d's TCPStore serialises its own operations; the handle is only freed on drop.
unsafe impl Send for Store {}
unsafe impl Sync for Store {}

impl Store {
    /// Connects to (or, with `serve`, serves and waits for all `world` members of) the store at
    /// `host:port`, waiting at most `timeout` for the others; the same timeout bounds each later wait.
    pub fn tcp(host: &str, port: u16, serve: bool, world: usize, timeout: Duration) -> Result<Store, DistError> {
        let host = c_string(host)?;
        let mut raw = std::ptr::null_mut();
        // SAFETY: valid C string and out-pointer; the store is owned by the returned value.
        check(unsafe {
            wrn_store_tcp(host.as_ptr(), port, c_int::from(serve), world as c_int, millis(timeout), &mut raw)
        })?;
        Ok(Store { raw })
    }

    pub fn set(&self, key: &str, value: &[u8]) -> Result<(), DistError> {
        let key = c_string(key)?;
        // SAFETY: the store is live; key and value outlive the call.
        check(unsafe { wrn_store_set(self.raw, key.as_ptr(), value.as_ptr(), value.len()) })
    }

    /// The value of `key`, waiting for some rank to set it (up to the store's timeout).
    pub fn get(&self, key: &str) -> Result<Vec<u8>, DistError> {
        let key = c_string(key)?;
        let (mut ptr, mut len) = (std::ptr::null_mut(), 0usize);
        // SAFETY: on success `ptr` holds `len` bytes malloc'd by the extension, copied and freed here.
        check(unsafe { wrn_store_get(self.raw, key.as_ptr(), &mut ptr, &mut len) })?;
        let value = unsafe { std::slice::from_raw_parts(ptr, len) }.to_vec();
        unsafe { wrn_ext_free_string(ptr.cast()) };
        Ok(value)
    }

    /// Whether `key` is set, without waiting.
    pub fn contains(&self, key: &str) -> Result<bool, DistError> {
        let key = c_string(key)?;
        let mut set = 0;
        // SAFETY: the store is live; `set` is written on success.
        check(unsafe { wrn_store_check(self.raw, key.as_ptr(), &mut set) })?;
        Ok(set != 0)
    }

    /// Adds `delta` to the integer at `key` (0 when unset) and returns the sum.
    pub fn add(&self, key: &str, delta: i64) -> Result<i64, DistError> {
        let key = c_string(key)?;
        let mut value = 0;
        // SAFETY: the store is live; `value` is written on success.
        check(unsafe { wrn_store_add(self.raw, key.as_ptr(), delta, &mut value) })?;
        Ok(value)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // SAFETY: created by wrn_store_tcp, freed once.
        unsafe { wrn_store_free(self.raw) }
    }
}

/// A Gloo process group: `size` ranks, this one `rank`, whose collectives run on CPU tensors and fail
/// after `timeout` when a rank does not take part (or at once when its connection closes).
pub struct Group {
    pub(crate) raw: *mut RawGroup,
    rank: usize,
    size: usize,
}

// SAFETY: ProcessGroupGloo runs collectives on its own threads and is used from one thread at a time here.
unsafe impl Send for Group {}

impl Group {
    /// Connects this rank to the others through `store` (every rank calls it with the same size). Gloo's
    /// transport binds the interfaces `GLOO_SOCKET_IFNAME` names when set, else the address `bind_host`
    /// resolves to (`127.0.0.1` for ranks of one machine), else the address of this host's name.
    pub fn gloo(
        store: &Store,
        rank: usize,
        size: usize,
        timeout: Duration,
        bind_host: Option<&str>,
    ) -> Result<Group, DistError> {
        let bind_host = bind_host.map(c_string).transpose()?;
        let bind = bind_host.as_ref().map_or(std::ptr::null(), |h| h.as_ptr());
        let mut raw = std::ptr::null_mut();
        // SAFETY: the store is live (the group keeps its own reference to it); `bind` is null or a live
        // C string.
        check(unsafe { wrn_group_gloo(store.raw, rank as c_int, size as c_int, millis(timeout), bind, &mut raw) })?;
        Ok(Group { raw, rank, size })
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// Sums `tensor` (contiguous) over the ranks, in place: on the CPU over Gloo, on a GPU over NCCL when
    /// attached (the GPU's current stream then waits for the sum; the host does not).
    pub fn all_reduce_sum(&self, tensor: &mut Tensor) -> Result<(), DistError> {
        if !tensor.is_contiguous() {
            return Err(DistError(format!("collectives take contiguous tensors (got {:?} strides)", tensor.stride())));
        }
        // SAFETY: the group is live; the tensor outlives the (waited-for) collective.
        check(unsafe { wrn_group_allreduce_sum(self.raw, tensor.as_mut_ptr().cast()) })
    }

    /// Overwrites `tensor` (contiguous, on the CPU) with `root`'s on every rank.
    pub fn broadcast(&self, tensor: &mut Tensor, root: usize) -> Result<(), DistError> {
        cpu_contiguous(tensor)?;
        // SAFETY: as for all_reduce_sum.
        check(unsafe { wrn_group_broadcast(self.raw, tensor.as_mut_ptr().cast(), root as c_int) })
    }

    /// Returns once every rank has called it.
    pub fn barrier(&self) -> Result<(), DistError> {
        // SAFETY: the group is live.
        check(unsafe { wrn_group_barrier(self.raw) })
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: created by wrn_group_gloo, freed once.
        unsafe { wrn_group_free(self.raw) }
    }
}

/// DDP's bucket sizes: about 25 MB, and 1 MB for the first bucket to fill, so the all-reduce starts early.
pub const BUCKET_BYTES: i64 = 25 * 1024 * 1024;
pub const FIRST_BUCKET_BYTES: i64 = 1024 * 1024;

/// The gradient all-reduce of `DistributedDataParallel`: c10d's `Reducer`, whose autograd hooks copy each
/// parameter's gradient into a bucket as the backward pass produces it and start the bucket's
/// all-reduce (on the group's threads) as soon as it is full, so communication overlaps the rest of the
/// backward pass. Gradients are summed over the ranks, not averaged: each rank scales its loss.
pub struct Reducer {
    raw: *mut RawReducer,
}

// SAFETY: the Reducer is driven from one thread at a time (the training loop's); its hooks run inside
// the backward passes that thread starts.
unsafe impl Send for Reducer {}

impl Reducer {
    /// A reducer over `params` (leaf tensors that require grad, the same ones in the same order on every
    /// rank), in buckets of about `bucket_bytes` (`first_bucket_bytes` for the first to fill).
    pub fn new(
        group: &Group,
        params: &[Tensor],
        first_bucket_bytes: i64,
        bucket_bytes: i64,
    ) -> Result<Reducer, DistError> {
        if params.is_empty() {
            return Err(DistError("a reducer needs at least one parameter".into()));
        }
        if let Some(p) = params.iter().find(|p| !p.requires_grad()) {
            return Err(DistError(format!(
                "a reducer's parameters require grad (one of size {:?} does not)",
                p.size()
            )));
        }
        let ptrs: Vec<*mut c_void> = params.iter().map(|p| p.as_ptr() as *mut c_void).collect();
        let mut raw = std::ptr::null_mut();
        // SAFETY: the group is live (the reducer keeps its own reference); the tensors are copied (shared)
        // by the reducer before the call returns.
        check(unsafe {
            wrn_reducer_new(group.raw, ptrs.as_ptr(), ptrs.len(), first_bucket_bytes, bucket_bytes, &mut raw)
        })?;
        Ok(Reducer { raw })
    }

    /// The backward pass from `loss`, after which every parameter's `.grad` holds its gradient summed over
    /// the ranks. Every rank calls it once per step. A failed collective (a rank gone, a timeout) is
    /// an error, not a panic.
    pub fn backward(&mut self, loss: &Tensor) -> Result<(), DistError> {
        // SAFETY: the reducer and the loss are live for the call.
        check(unsafe { wrn_reducer_backward(self.raw, loss.as_ptr() as *mut c_void) })
    }

    /// The size in bytes of each bucket, in the order they fill.
    pub fn bucket_bytes(&self) -> Result<Vec<i64>, DistError> {
        let mut count = 0usize;
        // SAFETY: a zero-capacity query writes only the count.
        check(unsafe { wrn_reducer_buckets(self.raw, std::ptr::null_mut(), 0, &mut count) })?;
        let mut bytes = vec![0i64; count];
        // SAFETY: `bytes` holds `count` slots.
        check(unsafe { wrn_reducer_buckets(self.raw, bytes.as_mut_ptr(), count, &mut count) })?;
        bytes.truncate(count);
        Ok(bytes)
    }
}

impl Drop for Reducer {
    fn drop(&mut self) {
        // SAFETY: created by wrn_reducer_new, freed once.
        unsafe { wrn_reducer_free(self.raw) }
    }
}

fn cpu_contiguous(t: &Tensor) -> Result<(), DistError> {
    if t.device() != Device::Cpu || !t.is_contiguous() {
        return Err(DistError(format!(
            "Gloo collectives here take contiguous CPU tensors (got {:?}, contiguous {})",
            t.device(),
            t.is_contiguous()
        )));
    }
    Ok(())
}
