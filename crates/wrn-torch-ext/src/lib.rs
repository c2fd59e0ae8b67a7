//! What tch does not bind, compiled against the libtorch tch links (`csrc/ext.cpp`, built by `build.rs`
//! with torch-sys's flags): c10d's TCP store, Gloo process group and DDP's Reducer, the engine of PyTorch's
//! `DistributedDataParallel` ([`dist`]), libtorch's fused SGD update ([`optim`]), and, in a binary built
//! against the CUDA libtorch, c10d's NCCL process group from a library loaded at run time ([`cuda`]).

pub mod cuda;
pub mod dist;
pub mod optim;
