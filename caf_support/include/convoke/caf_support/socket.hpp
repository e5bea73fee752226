#pragma once

/// @file
/// The CAF 0.17.6 socket workarounds of the server's sessions and the SDK's
/// connection broker, in one place, each with its reason. Include it from
/// CAF translation units only.
///
/// Every helper here works on the descriptor behind a connection handle, so
/// each one is only valid while the broker's scribe is attached: our brokers
/// never detach it with `close()` (see `shut_down`), so that is until the
/// broker terminates. After CAF reported `connection_closed_msg`, the number
/// may already belong to another connection: call none of them then.

#include <chrono>
#include <cstddef>

#include "caf/all.hpp"
#include "caf/io/abstract_broker.hpp"
#include "caf/io/connection_handle.hpp"

namespace convoke::caf_support {

/// The socket descriptor of a connection. In CAF 0.17's default
/// multiplexer a connection handle's id *is* the descriptor; CAF offers no
/// accessor for it.
int socket_fd(caf::io::connection_handle hdl) noexcept;

// -- writing -----------------------------------------------------------------

/// Writes to the socket directly, without blocking, and returns how many
/// bytes it took (0 when it is full or failed; CAF then reports a failure
/// as `connection_closed_msg` once it writes itself).
///
/// Why: a write through CAF (`wr_buf` + `flush`) always costs an extra
/// multiplexer round and two `epoll_ctl` calls, even when the socket has
/// room. Most writes fit at once, so they finish here.
/// Rule: only while CAF holds none of this connection's output (count what
/// went to `wr_buf` and what `data_transferred_msg`, from `ack_writes`,
/// reported written). Otherwise these bytes would overtake CAF's. Whatever
/// the socket does not take goes to CAF's buffer, and everything after it
/// follows there until CAF reports it written.
size_t write_now(int fd, const char* data, size_t size) noexcept;

// -- closing -----------------------------------------------------------------
//
// Why not CAF's `close(hdl)`: in 0.17 it keeps the socket registered (and
// the multiplexer waiting) until the peer closes too, so an unresponsive
// peer could hold process exit hostage. Our brokers shut the socket down
// themselves and keep the scribe attached until they quit.

/// Half-closes: sends FIN once the last frame has left (`shutdown(SHUT_WR)`).
/// Reading goes on, so the peer's EOF is still seen.
void send_fin(int fd) noexcept;

/// Shuts the socket down in both directions (`shutdown(SHUT_RDWR)`): CAF's
/// stream sees EOF and releases the socket at once, whatever the peer does.
/// Whatever CAF still holds unwritten is lost.
void shut_down(int fd) noexcept;

// -- pausing input -------------------------------------------------------------

/// The message a broker using `read_gate` must handle by calling
/// `read_gate::on_retrigger`.
using retrigger_atom = caf::atom_constant<caf::atom("retrigger")>;

/// Pauses and resumes reading one connection (`halt`/`trigger`), so that
/// TCP backpressure reaches the peer while the broker cannot take more.
///
/// Why the re-trigger: CAF 0.17.6 loses a `trigger()` issued in the same
/// multiplexer round as the `halt()`. `halt()` only queues the removal from
/// epoll; `trigger()` then sees the reader still registered and does
/// nothing, and the queued removal leaves the connection halted for good,
/// silently. So every resume also sends the broker `retrigger_atom` after
/// `retrigger_delay`, which triggers again if the gate is still open
/// (`trigger` is idempotent; the extra one is harmless when not needed).
///
/// Never pause a connection before its first read (e.g. during actor
/// init): seen with CAF 0.17.6, no later trigger() makes it read again.
class read_gate {
public:
  static constexpr std::chrono::milliseconds retrigger_delay{2};

  bool paused() const noexcept {
    return paused_;
  }

  /// Stops reading (nothing if already paused).
  void pause(caf::io::abstract_broker* self, caf::io::connection_handle hdl);

  /// Reads again (nothing if not paused), and schedules the re-trigger.
  void resume(caf::io::abstract_broker* self, caf::io::connection_handle hdl);

  /// The re-trigger arrived: triggers again unless paused since.
  void on_retrigger(caf::io::abstract_broker* self, caf::io::connection_handle hdl);

private:
  bool paused_ = false;
};

} // namespace convoke::caf_support
