// The CUDA half of wrn's libtorch extension: c10d's NCCL process group, for collectives on CUDA tensors.
//
// Built into its own shared library (libwrn_torch_cuda.so) against the CUDA libtorch's headers and the
// CUDA runtime's and NCCL's, and loaded by the binary only after libtorch_cuda.so, whose symbols it
// uses: the binary itself links libtorch's CPU part alone and starts on machines without CUDA. Errors
// follow ext.h's convention.

#include "ext.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

extern "C" {

// The version of the interface below; the binary refuses a library of another.
__attribute__((visibility("default"))) int wrn_cuda_ext_version() {
  return 1;
}

// Adds an NCCL backend to `g` for CUDA tensors: the dispatcher's collectives on CUDA tensors (the
// Reducer's buckets) then run over NCCL, those on CPU tensors over Gloo, as torch.distributed's
// "cpu:gloo,cuda:nccl" does. The communicator is created at the first collective, on the GPU of its
// tensor; collectives time out after timeout_ms. NCCL's rendezvous keys live under "nccl/" in the store.
__attribute__((visibility("default"))) char* wrn_cuda_attach_nccl(
    wrn_group* g,
    wrn_store* s,
    int rank,
    int size,
    int64_t timeout_ms) {
  return wrn_ext::guarded([&] {
    auto opts = c10d::ProcessGroupNCCL::Options::create();
    opts->timeout = wrn_ext::millis(timeout_ms);
    auto store = c10::make_intrusive<c10d::PrefixStore>("nccl/", s->store);
    auto nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, size, opts);
    g->group->setBackend(c10::DeviceType::CUDA, c10d::ProcessGroup::BackendType::NCCL, nccl);
  });
}

} // extern "C"
