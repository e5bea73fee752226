#pragma once

// `convoke trace` without --file: live trace events from a server's tap
// (the SDK's agent::observe), printed like events read from files.

#include <atomic>
#include <iosfwd>
#include <string>

#include "convoke/client.hpp"
#include "trace_command.hpp"
#include "trace_files.hpp"

namespace convoke::cli {

class trace_agent : public agent {
public:
  /// `reconnect`: observe again after a reconnect (else a lost connection
  /// ends the command with exit 1).
  trace_agent(std::string name, trace_list_args args, bool reconnect, std::ostream& out,
              std::ostream& err);

  /// Route subscribed to so that this observer is no receiver of plain
  /// broadcasts (an agent without subscriptions gets them all).
  static constexpr const char* quiet_route = "_convoke.trace-observer";

  void setup() override;
  void on_connect(const session_info& s) override;
  void on_disconnect(const disconnect_info& d) override;

  /// Events the server said this observer missed (it did not keep up).
  uint64_t missed() const noexcept {
    return missed_.load();
  }

private:
  void print(const trace::event& ev);

  trace_list_args args_;
  bool reconnect_;
  std::ostream& out_;
  std::ostream& err_;
  audience_book audiences_;
  task<void> observing_;
  std::atomic<uint64_t> missed_{0};
};

} // namespace convoke::cli
