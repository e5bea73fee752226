#pragma once

// Waiting on an observable condition (never a fixed sleep): polls `pred`
// until it holds or `timeout` passes.

#include <chrono>
#include <functional>
#include <thread>

namespace convoke::test {

inline bool eventually(const std::function<bool()>& pred,
                       std::chrono::milliseconds timeout = std::chrono::seconds{5}) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (pred())
      return true;
    if (std::chrono::steady_clock::now() > deadline)
      return false;
    std::this_thread::sleep_for(std::chrono::milliseconds{2});
  }
}

} // namespace convoke::test
