// Declarations only: see README.md beside this file. The header's inline `setTimeout` names this member
// (never called here: it is reached through the library's vtable).
#pragma once
#include <chrono>
namespace gloo {
class Context {
 public:
  void setTimeout(std::chrono::milliseconds timeout);
};
} // namespace gloo
