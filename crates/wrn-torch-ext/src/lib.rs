//! What tch does not bind, compiled against the libtorch tch links (`csrc/ext.cpp`, built by `build.rs`
//! with torch-sys's flags): c10d's TCP store, Gloo process group and DDP's Reducer, the engine of PyTorch's
//! `DistributedDataParallel` ([`dist`]), libtorch's fused SGD update ([`optim`]), and, in a binary built
//! against the CUDA libtorch, c10d's NCCL process group from a library loaded at run time ([`cuda`]).

pub mod cuda;
pub mod dist;
pub mod optim;

extern "C" {
    fn wrn_ext_hide_cpp_backtraces();
}

/// libtorch's errors without their C++ backtrace, as PyTorch shows them, unless
/// `TORCH_SHOW_CPP_STACKTRACES=1` (PyTorch's switch for the same) asks for it. Call before the threads
/// that may raise them start.
pub fn cpp_backtraces_as_pytorch() {
    if std::env::var("TORCH_SHOW_CPP_STACKTRACES").is_ok_and(|v| v.trim() == "1") {
        return;
    }
    // SAFETY: sets libc10's backtrace fetcher to one returning nothing; no argument, no state of ours.
    unsafe { wrn_ext_hide_cpp_backtraces() }
}
