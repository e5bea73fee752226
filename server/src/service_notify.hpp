#pragma once

// Service manager notifications (systemd's sd_notify, Type=notify): READY,
// RELOADING, STOPPING, STATUS and watchdog pings. Outside systemd
// (NOTIFY_SOCKET unset) every call does nothing. CAF-free.

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace convoke::server::service {

/// Startup is complete (listening); `status` is shown by systemctl status.
void ready(std::string_view status);

/// A reload (SIGHUP) begins: RELOADING=1 with the monotonic time, which
/// systemd wants to tell this reload from an earlier one. Follow with
/// ready().
void reloading();

/// The drain begins.
void stopping(std::string_view status);

/// The watchdog interval (WATCHDOG_USEC) if systemd expects pings from
/// this process; ping at least twice per interval.
std::optional<std::chrono::microseconds> watchdog_interval();

/// WATCHDOG=1.
void watchdog_ping();

/// The last failure to notify ("" if none): an unreachable NOTIFY_SOCKET.
std::string last_error();

} // namespace convoke::server::service
