// What both halves of wrn's libtorch extension share: the CPU half (ext.cpp, linked into the binary) and
// the CUDA half (cuda.cpp, a shared library the binary loads after libtorch_cuda.so). The store and
// group handles, and the error convention: every C function catches what libtorch throws and returns it
// as a message (malloc'd, freed by wrn_ext_free_string); a null return means success.

#pragma once

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

namespace wrn_ext {

inline char* message(const std::string& what) {
  char* out = static_cast<char*>(std::malloc(what.size() + 1));
  if (out != nullptr) {
    std::memcpy(out, what.c_str(), what.size() + 1);
  }
  return out;
}

template <typename F>
inline char* guarded(F&& f) {
  try {
    f();
    return nullptr;
  } catch (const c10::Error& e) {
    return message(e.what_without_backtrace());
  } catch (const std::exception& e) {
    return message(e.what());
  } catch (...) {
    return message("unknown C++ exception");
  }
}

inline std::chrono::milliseconds millis(int64_t ms) {
  return std::chrono::milliseconds(ms);
}

} // namespace wrn_ext

struct wrn_store {
  c10::intrusive_ptr<c10d::Store> store;
};

struct wrn_group {
  c10::intrusive_ptr<c10d::Backend> backend;
  // The backend behind the dispatcher's collectives, which the Reducer calls.
  c10::intrusive_ptr<c10d::ProcessGroup> group;
};

