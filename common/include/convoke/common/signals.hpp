#pragma once

/// @file
/// Termination signals handled synchronously: block SIGINT/SIGTERM in every
/// thread (call before any thread starts so that all inherit the mask), then
/// wait for them in one place.

#include <chrono>

namespace convoke {

/// Blocks SIGINT and SIGTERM in the calling thread (and in threads it creates
/// afterwards), and with `with_reload` (the server) also SIGHUP (reload),
/// SIGUSR1 (reopen log and trace files) and SIGUSR2 (lame-duck mode), which
/// then no longer end the process. Also ignores SIGPIPE, so
/// writes to closed sockets fail with EPIPE instead of killing the process.
void block_termination_signals(bool with_reload = false);

/// Waits up to `timeout` for SIGINT or SIGTERM (and SIGHUP, SIGUSR1, SIGUSR2
/// `with_reload`).
/// Returns the signal number, or 0 if none arrived in time.
int wait_termination_signal(std::chrono::milliseconds timeout, bool with_reload = false);

/// Name of a signal number ("SIGTERM").
const char* signal_name(int signo);

} // namespace convoke
