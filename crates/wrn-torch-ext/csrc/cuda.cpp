// The CUDA half of wrn's libtorch extension: c10d's NCCL process group, for collectives on CUDA tensors,
// and CUDA graphs (at::cuda::CUDAGraph), which replay a captured training step in one launch.
//
// Built into its own shared library (libwrn_torch_cuda.so) against the CUDA libtorch's headers and the
// CUDA runtime's and NCCL's, and loaded by the binary only after libtorch_cuda.so, whose symbols it
// uses: the binary itself links libtorch's CPU part alone and starts on machines without CUDA. Errors
// follow ext.h's convention.

#include "ext.h"

#include <optional>

#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

// A CUDA graph and the side stream it is captured on (CUDA captures no work of the legacy default
// stream). Between wrn_cuda_graph_enter and wrn_cuda_graph_exit the side stream is this thread's current
// stream, so libtorch's kernels go there, the backward pass's too (autograd runs each backward op on its
// forward op's stream).
struct wrn_cuda_graph {
  at::cuda::CUDAGraph graph;
  std::optional<c10::cuda::CUDAStream> side;
  std::optional<c10::cuda::CUDAStreamGuard> guard;
};

namespace {

// `waiter` waits for the work queued on `done` so far.
void wait_for(const c10::cuda::CUDAStream& done, const c10::cuda::CUDAStream& waiter) {
  at::cuda::CUDAEvent event;
  event.record(done);
  event.block(waiter);
}

} // namespace

extern "C" {

// The version of the interface below; the binary refuses a library of another.
__attribute__((visibility("default"))) int wrn_cuda_ext_version() {
  return 3;
}

// The caching allocator's peak of bytes allocated for tensors on `device` (torch.cuda.max_memory_allocated).
__attribute__((visibility("default"))) char* wrn_cuda_peak_allocated(int device, int64_t* out) {
  return wrn_ext::guarded([&] {
    auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(static_cast<c10::DeviceIndex>(device));
    *out = stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)].peak;
  });
}

__attribute__((visibility("default"))) char* wrn_cuda_graph_new(wrn_cuda_graph** out) {
  return wrn_ext::guarded([&] { *out = new wrn_cuda_graph(); });
}

__attribute__((visibility("default"))) void wrn_cuda_graph_free(wrn_cuda_graph* g) {
  delete g;
}

// Makes the graph's side stream (one of libtorch's pool, on the current GPU) current, after the work
// already queued on the current stream.
__attribute__((visibility("default"))) char* wrn_cuda_graph_enter(wrn_cuda_graph* g) {
  return wrn_ext::guarded([&] {
    TORCH_CHECK(!g->guard.has_value(), "the graph's side stream is already current");
    auto current = c10::cuda::getCurrentCUDAStream();
    if (!g->side.has_value()) {
      g->side = c10::cuda::getStreamFromPool();
    }
    wait_for(current, *g->side);
    g->guard.emplace(*g->side);
  });
}

// Makes the stream current before wrn_cuda_graph_enter current again, after the side stream's work.
__attribute__((visibility("default"))) char* wrn_cuda_graph_exit(wrn_cuda_graph* g) {
  return wrn_ext::guarded([&] {
    TORCH_CHECK(g->guard.has_value(), "the graph's side stream is not current");
    g->guard.reset();
    wait_for(*g->side, c10::cuda::getCurrentCUDAStream());
  });
}

// Starts capturing what is queued on the side stream (between enter and exit) instead of running it.
__attribute__((visibility("default"))) char* wrn_cuda_graph_capture_begin(wrn_cuda_graph* g) {
  return wrn_ext::guarded([&] {
    TORCH_CHECK(g->guard.has_value(), "capture on the graph's side stream: enter it first");
    g->graph.capture_begin();
  });
}

__attribute__((visibility("default"))) char* wrn_cuda_graph_capture_end(wrn_cuda_graph* g) {
  return wrn_ext::guarded([&] { g->graph.capture_end(); });
}

// Runs the captured work once more, on the current stream, on the same memory.
__attribute__((visibility("default"))) char* wrn_cuda_graph_replay(wrn_cuda_graph* g) {
  return wrn_ext::guarded([&] { g->graph.replay(); });
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
