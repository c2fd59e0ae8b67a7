//! What tch does not bind, compiled against the libtorch tch links (`csrc/ext.cpp`, built by `build.rs`
//! with torch-sys's flags): c10d's TCP store and Gloo process group, the engine of PyTorch's
//! `DistributedDataParallel` on CPU tensors ([`dist`]), and libtorch's fused SGD update ([`optim`]).

pub mod dist;
pub mod optim;
