// wrn's extension of libtorch: what tch does not bind, behind a C interface for Rust.
//
// The fused SGD update (`at::_fused_sgd_`, what `torch.optim.SGD(fused=True)` calls): one kernel per
// parameter tensor on the CPU, one launch per group of tensors on CUDA.
//
// c10d, the engine of PyTorch's DistributedDataParallel: a TCP store for the rendezvous, a Gloo
// process group (compiled into libtorch_cpu.so) for collectives on CPU tensors, and DDP's Reducer, which
// all-reduces gradients in buckets from autograd hooks while the backward pass still runs. Errors follow
// ext.h's convention; tensors are tch's: pointers to at::Tensor.

#include "ext.h"

#include <ATen/ATen.h>
#include <c10/util/Logging.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/reducer.hpp>

namespace {

using wrn_ext::guarded;
using wrn_ext::millis;

void wait(const c10::intrusive_ptr<c10d::Work>& work) {
  work->wait();
}

// A bucket's gradients summed over the ranks, not averaged: each rank weights its loss by its share of
// the whole batch, so the sum is the gradient of the whole batch's mean loss (DDP's own
// _AllReduceBySumCommHook, whose code libtorch does not export).
class SumHook : public c10d::CppCommHookInterface<c10::intrusive_ptr<c10d::ProcessGroup>> {
 public:
  explicit SumHook(const c10::intrusive_ptr<c10d::ProcessGroup>& group)
      : c10d::CppCommHookInterface<c10::intrusive_ptr<c10d::ProcessGroup>>(group) {}

  c10::intrusive_ptr<c10::ivalue::Future> runHook(c10d::GradBucket& bucket) override {
    std::vector<at::Tensor> tensors{bucket.getBufferRef()};
    return state_->allreduce(tensors)->getFuture();
  }
};

} // namespace

struct wrn_reducer {
  std::unique_ptr<c10d::Reducer> reducer;
};

extern "C" {

void wrn_ext_free_string(char* s) {
  std::free(s);
}

// libtorch's errors, and c10d's log lines that quote them, without the C++ backtrace c10::Error appends
// by default (twenty lines of addresses under a store that cannot be reached): what PyTorch shows unless
// TORCH_SHOW_CPP_STACKTRACES=1. The fetcher is libc10's, so it holds for the CUDA part too.
void wrn_ext_hide_cpp_backtraces() {
  c10::SetStackTraceFetcher(std::function<std::string()>([] { return std::string(); }));
}

// A TCP store at host:port, served by this process when is_server (rank 0), waiting at most timeout_ms
// for the connection (clients) or for all `world` members to connect (server).
char* wrn_store_tcp(const char* host, uint16_t port, int is_server, int world, int64_t timeout_ms, wrn_store** out) {
  return guarded([&] {
    c10d::TCPStoreOptions opts;
    opts.port = port;
    opts.isServer = is_server != 0;
    opts.numWorkers = static_cast<std::size_t>(world);
    opts.waitWorkers = true;
    opts.timeout = millis(timeout_ms);
    auto store = c10::make_intrusive<c10d::TCPStore>(std::string(host), opts);
    *out = new wrn_store{store};
  });
}

void wrn_store_free(wrn_store* s) {
  delete s;
}

char* wrn_store_set(wrn_store* s, const char* key, const uint8_t* value, size_t len) {
  return guarded([&] { s->store->set(key, std::vector<uint8_t>(value, value + len)); });
}

// The value of `key`, waiting for it up to the store's timeout; malloc'd into *value (free with
// wrn_ext_free_string).
char* wrn_store_get(wrn_store* s, const char* key, uint8_t** value, size_t* len) {
  return guarded([&] {
    auto v = s->store->get(key);
    *value = static_cast<uint8_t*>(std::malloc(v.size() + 1));
    std::memcpy(*value, v.data(), v.size());
    *len = v.size();
  });
}

// Whether `key` is set, without waiting.
char* wrn_store_check(wrn_store* s, const char* key, int* set) {
  return guarded([&] { *set = s->store->check({std::string(key)}) ? 1 : 0; });
}

char* wrn_store_add(wrn_store* s, const char* key, int64_t delta, int64_t* value) {
  return guarded([&] { *value = s->store->add(key, delta); });
}

// A Gloo process group of `size` ranks over the store; collectives time out after timeout_ms. The
// transport binds the interfaces named by GLOO_SOCKET_IFNAME (comma-separated) when set, else the
// address `bind_host` resolves to when given, else the address this host's name resolves to, as
// torch.distributed does.
char* wrn_group_gloo(wrn_store* s, int rank, int size, int64_t timeout_ms, const char* bind_host, wrn_group** out) {
  return guarded([&] {
    auto opts = c10d::ProcessGroupGloo::Options::create(millis(timeout_ms));
    const char* ifnames = std::getenv("GLOO_SOCKET_IFNAME");
    if (ifnames != nullptr && *ifnames != '\0') {
      std::string names(ifnames);
      size_t start = 0;
      while (start <= names.size()) {
        size_t end = names.find(',', start);
        if (end == std::string::npos) {
          end = names.size();
        }
        if (end > start) {
          opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(names.substr(start, end - start)));
        }
        start = end + 1;
      }
    } else if (bind_host != nullptr) {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(bind_host));
    } else {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    auto backend = c10::make_intrusive<c10d::ProcessGroupGloo>(s->store, rank, size, opts);
    auto group = c10::make_intrusive<c10d::ProcessGroup>(s->store, rank, size);
    group->setBackend(c10::DeviceType::CPU, c10d::ProcessGroup::BackendType::GLOO, backend);
    group->setDefaultBackend(c10d::ProcessGroup::BackendType::GLOO);
    *out = new wrn_group{backend, group};
  });
}

void wrn_group_free(wrn_group* g) {
  delete g;
}

// Sums `tensor` over the ranks, in place, through the group's dispatcher: a CPU tensor over Gloo, a CUDA
// tensor over NCCL once attached (whose wait makes the current stream wait, not the host).
char* wrn_group_allreduce_sum(wrn_group* g, void* tensor) {
  return guarded([&] {
    std::vector<at::Tensor> tensors{*static_cast<at::Tensor*>(tensor)};
    c10d::AllreduceOptions opts;
    opts.reduceOp = c10d::ReduceOp::SUM;
    wait(g->group->allreduce(tensors, opts));
  });
}

// Overwrites `tensor` on every rank with root's.
char* wrn_group_broadcast(wrn_group* g, void* tensor, int root) {
  return guarded([&] {
    std::vector<at::Tensor> tensors{*static_cast<at::Tensor*>(tensor)};
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    wait(g->backend->broadcast(tensors, opts));
  });
}

char* wrn_group_barrier(wrn_group* g) {
  return guarded([&] { wait(g->backend->barrier(c10d::BarrierOptions{})); });
}

// DDP's Reducer over n parameters (leaf tensors that require grad, in the same order on every rank):
// their gradients go into buckets of about bucket_bytes (the first to fill, about first_bucket_bytes),
// laid out from the last parameter to the first until a backward pass has run, then in the order that
// pass made the gradients ready (rank 0's).
char* wrn_reducer_new(
    wrn_group* g,
    void** params,
    size_t n,
    int64_t first_bucket_bytes,
    int64_t bucket_bytes,
    wrn_reducer** out) {
  return guarded([&] {
    std::vector<at::Tensor> tensors;
    tensors.reserve(n);
    for (size_t i = 0; i < n; i++) {
      tensors.push_back(*static_cast<at::Tensor*>(params[i]));
    }
    // Backward runs from the last parameter to the first: buckets from the end, as DDP lays them out.
    std::vector<at::Tensor> reversed(tensors.rbegin(), tensors.rend());
    std::vector<int64_t> indices;
    for (size_t i = n; i-- > 0;) {
      indices.push_back(static_cast<int64_t>(i));
    }
    std::vector<size_t> limits{static_cast<size_t>(first_bucket_bytes), static_cast<size_t>(bucket_bytes)};
    auto assignment = c10d::compute_bucket_assignment_by_size(reversed, limits, {}, indices);
    auto buckets = std::get<0>(assignment);
    std::vector<int64_t> caps(std::get<1>(assignment).begin(), std::get<1>(assignment).end());
    auto reducer = std::make_unique<c10d::Reducer>(
        tensors, buckets, g->group, std::vector<bool>(n, false), bucket_bytes, /*find_unused_parameters=*/false,
        /*gradient_as_bucket_view=*/false, std::unordered_map<size_t, std::string>{}, first_bucket_bytes,
        /*skip_all_reduce_unused_params=*/false, /*use_python_reducer=*/false, caps);
    reducer->register_comm_hook(std::make_unique<SumHook>(g->group));
    *out = new wrn_reducer{std::move(reducer)};
  });
}

void wrn_reducer_free(wrn_reducer* r) {
  try {
    delete r;
  } catch (...) {
    // The Reducer's destructor removes its hooks and may throw on a broken run; the process is ending.
  }
}

// One backward pass from `loss` with the gradients summed over the ranks into every parameter's .grad,
// each bucket's all-reduce starting as soon as its gradients are ready. As DDP does at each iteration,
// the buckets are first laid out again in the gradient-ready order of the previous pass (once).
char* wrn_reducer_backward(wrn_reducer* r, void* loss) {
  return guarded([&] {
    r->reducer->rebuild_buckets();
    r->reducer->prepare_for_forward();
    r->reducer->prepare_for_backward({});
    torch::autograd::backward({*static_cast<at::Tensor*>(loss)});
  });
}

// The number of buckets and the bytes of each (up to `cap` of them written to `bytes`).
char* wrn_reducer_buckets(wrn_reducer* r, int64_t* bytes, size_t cap, size_t* count) {
  return guarded([&] {
    auto buckets = r->reducer->get_grad_buckets(/*return_zero_tensors=*/true);
    *count = buckets.size();
    for (size_t i = 0; i < buckets.size() && i < cap; i++) {
      const auto& buffer = buckets[i].getBuffer();
      bytes[i] = buffer.numel() * static_cast<int64_t>(buffer.element_size());
    }
  });
}

// One SGD step over n parameters with their gradients (and momentum buffers, unless momentum is 0):
// d = g + wd*p; buf = d on the first step, else momentum*buf + (1 - dampening)*d; with Nesterov
// d = d + momentum*buf, else d = buf; p = p - lr*d. Parameters, gradients and buffers share each
// tensor's layout.
char* wrn_fused_sgd(
    void** params,
    void** grads,
    void** buffers,
    size_t n,
    double weight_decay,
    double momentum,
    double lr,
    double dampening,
    int nesterov,
    int first_step) {
  return guarded([&] {
    std::vector<at::Tensor> p, g, b;
    p.reserve(n);
    g.reserve(n);
    for (size_t i = 0; i < n; i++) {
      p.push_back(*static_cast<at::Tensor*>(params[i]));
      g.push_back(*static_cast<at::Tensor*>(grads[i]));
      if (momentum != 0.0) {
        b.push_back(*static_cast<at::Tensor*>(buffers[i]));
      }
    }
    at::NoGradGuard no_grad;
    at::_fused_sgd_(
        p, g, b, weight_decay, momentum, lr, dampening, nesterov != 0, /*maximize=*/false, first_step != 0,
        /*grad_scale=*/std::nullopt, /*found_inf=*/std::nullopt);
  });
}

} // extern "C"
