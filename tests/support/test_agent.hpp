#pragma once

// Agents for tests: every hook is a std::function (default: record the
// event), and an event log the test thread can wait on.

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "convoke/client.hpp"

namespace convoke::test {

/// Thread-safe list of strings with waiting.
class event_log {
public:
  void add(std::string ev) {
    std::lock_guard guard{mtx_};
    events_.push_back(std::move(ev));
    cv_.notify_all();
  }

  std::vector<std::string> snapshot() const {
    std::lock_guard guard{mtx_};
    return events_;
  }

  /// Waits until `pred(events)` holds; false on timeout.
  bool wait(const std::function<bool(const std::vector<std::string>&)>& pred,
            std::chrono::milliseconds timeout = std::chrono::seconds{5}) {
    std::unique_lock guard{mtx_};
    return cv_.wait_for(guard, timeout, [&] { return pred(events_); });
  }

  /// Waits until an event equal to `ev` was added.
  bool wait_for(const std::string& ev,
                std::chrono::milliseconds timeout = std::chrono::seconds{5}) {
    return wait(
      [&](auto& xs) {
        for (auto& x : xs)
          if (x == ev)
            return true;
        return false;
      },
      timeout);
  }

  size_t count(const std::string& ev) const {
    std::lock_guard guard{mtx_};
    size_t n = 0;
    for (auto& x : events_)
      n += x == ev;
    return n;
  }

private:
  mutable std::mutex mtx_;
  std::condition_variable cv_;
  std::vector<std::string> events_;
};

class lambda_agent : public agent {
public:
  explicit lambda_agent(std::string name, event_log* log = nullptr)
    : agent(std::move(name)), log_(log) {}

  std::function<void()> on_setup;
  std::function<void(const session_info&)> on_connected;
  std::function<void(const message&)> on_msg;
  std::function<void(const notice&)> on_note;
  std::function<void(const disconnect_info&)> on_disconnected;
  std::function<void(const error_info&)> on_err;
  std::function<void()> on_teardown;

  void setup() override {
    record("setup");
    if (on_setup)
      on_setup();
  }
  void on_connect(const session_info& s) override {
    record(s.reconnected ? "reconnect" : "connect");
    if (on_connected)
      on_connected(s);
  }
  void on_message(const message& m) override {
    record("message:" + m.payload);
    if (on_msg)
      on_msg(m);
  }
  void on_notice(const notice& n) override {
    record("notice:" + n.code);
    if (on_note)
      on_note(n);
  }
  void on_disconnect(const disconnect_info& d) override {
    // The callback first: a test that waits for the event may then read
    // what the callback kept.
    if (on_disconnected)
      on_disconnected(d);
    record("disconnect:" + d.code);
  }
  void on_error(const error_info& e) override {
    record("error:" + e.where + ":" + e.what);
    if (on_err)
      on_err(e);
  }
  void teardown() override {
    record("teardown");
    if (on_teardown)
      on_teardown();
  }

  void record(std::string ev) {
    if (log_)
      log_->add(std::move(ev));
  }

private:
  event_log* log_;
};

inline client_options local_options(uint16_t port) {
  client_options opts;
  opts.host = "127.0.0.1";
  opts.port = port;
  opts.reconnect.initial_delay = std::chrono::milliseconds{50};
  opts.reconnect.max_delay = std::chrono::milliseconds{200};
  return opts;
}

} // namespace convoke::test
