#include "service_notify.hpp"

#include <systemd/sd-daemon.h>

#include <cstring>
#include <ctime>
#include <mutex>

#include <fmt/format.h>

namespace convoke::server::service {

namespace {

std::mutex error_mutex;
std::string error_text;

void send(const std::string& state) {
  // unset_environment = 0: the variables stay for later notifications.
  auto rc = sd_notify(0, state.c_str());
  if (rc < 0) {
    std::lock_guard guard{error_mutex};
    error_text = fmt::format("sd_notify failed: {}", std::strerror(-rc));
  }
}

/// One line of the STATUS= value (a newline would start another field).
std::string one_line(std::string_view text) {
  std::string out{text};
  for (auto& c : out)
    if (c == '\n' || c == '\r')
      c = ' ';
  return out;
}

uint64_t monotonic_usec() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000u + static_cast<uint64_t>(ts.tv_nsec) / 1000u;
}

} // namespace

void ready(std::string_view status) {
  send(fmt::format("READY=1\nSTATUS={}", one_line(status)));
}

void reloading() {
  send(fmt::format("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
}

void stopping(std::string_view status) {
  send(fmt::format("STOPPING=1\nSTATUS={}", one_line(status)));
}

std::optional<std::chrono::microseconds> watchdog_interval() {
  uint64_t usec = 0;
  // > 0: enabled for this process (WATCHDOG_PID unset or ours).
  if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0)
    return std::chrono::microseconds{usec};
  return std::nullopt;
}

void watchdog_ping() {
  send("WATCHDOG=1");
}

std::string last_error() {
  std::lock_guard guard{error_mutex};
  return error_text;
}

} // namespace convoke::server::service
