#pragma once

// The agent's link to its server as a CAF-free state machine: connecting,
// the handshake deadline, the watchdog that notices a silent server, and the
// reconnect policy (which refusals are fatal, backoff with jitter, attempt
// limits). Time comes in as an argument, so unit tests drive it with a fake
// clock; the agent actor performs what it decides (spawn a connector, send
// Hello, arm a timer, close a connection, call on_disconnect).
//
//   idle --connect()--> connecting --connected()--> handshaking
//        --welcome()--> connected --disconnect()--> idle (maybe a reconnect)
//   any --begin_stop(), teardown(), close_for_stop()--> closing
//       (connected: Goodbye, wait for the close) or stopped at once
//
// The machine also picks the server of each attempt (`target()`): it goes
// round the agent's servers, a server's reconnect_to hint first, and
// decides the delay between attempts (a fresh address of the round at once,
// the backoff after a round in which every address failed).
//
// Every connection attempt has a generation number. Messages about an older
// generation (a late "connected", a timer of a dead connection) are stale and
// ignored: that is the whole defence against races between timers, the
// connector and the connection.

#include <chrono>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "convoke/client/message.hpp"
#include "convoke/client/options.hpp"

namespace convoke::detail {

class link_machine {
public:
  using clock = std::chrono::steady_clock;
  using time_point = clock::time_point;

  enum class state { idle, connecting, handshaking, connected, closing, stopped };

  /// What became of a connection (the agent passes it to on_disconnect).
  struct ended {
    disconnect_info info;
    /// The agent had a session (a Welcome) on this connection.
    bool was_connected = false;
    /// Give up: the agent stops with `exit_code`.
    bool give_up = false;
    int exit_code = 0;
  };

  link_machine() = default;
  link_machine(const client_options& opts, uint64_t seed);

  state current() const noexcept {
    return state_;
  }
  uint64_t generation() const noexcept {
    return gen_;
  }
  bool connected() const noexcept {
    return state_ == state::connected;
  }
  bool stopping() const noexcept {
    return stopping_;
  }
  int attempt() const noexcept {
    return attempt_;
  }

  /// Starts a connection attempt; returns its generation. `target()` is
  /// the server to connect to.
  uint64_t connect();

  /// The server of the current attempt (or of the last one, while idle).
  const server_address& target() const noexcept {
    return target_;
  }

  /// The server the next attempt goes to.
  const server_address& next_target() const noexcept {
    return hints_.empty() ? servers_[next_] : hints_.front();
  }

  /// The connector reports a socket. False: stale or unwanted (close it).
  /// True: send Hello and check `handshake_due` at the returned deadline.
  std::optional<time_point> connected(uint64_t gen, time_point now);

  /// Welcome arrived. Returns when to run the watchdog, if the server asked
  /// for heartbeats (idle timeout and interval both set).
  std::optional<time_point> welcome(const session_info& s, time_point now);

  /// Anything arrived from the server (it is alive).
  void received(time_point now) {
    last_rx_ = now;
  }

  /// The handshake timer of `gen` fired: true if the attempt has timed out.
  bool handshake_expired(uint64_t gen) const {
    return gen == gen_ && state_ == state::handshaking;
  }

  struct watchdog_result {
    /// The server was silent longer than its idle timeout: disconnect.
    bool silent = false;
    std::chrono::milliseconds silence{0};
    /// Otherwise: check again at this time (nothing if the timer is stale).
    std::optional<time_point> next;
  };
  watchdog_result watchdog(uint64_t gen, time_point now) const;

  /// A reconnect timer of `gen` fired: true if the agent should connect now.
  bool reconnect_due(uint64_t gen) const {
    return gen == gen_ && !stopping_ && state_ == state::idle;
  }

  /// The connection (or attempt) ended with `code`. Decides about the next
  /// attempt, no sooner than `at_least` (the server's retry_after, e.g. of a
  /// quarantine); the generation moves on, so its late messages are stale.
  /// A server's reconnect `hint` (Goodbye's reconnect_after_ms, lame duck)
  /// replaces the backoff: the next attempt comes after exactly the hint
  /// (at most `max_hint`), if reconnecting is enabled at all.
  /// `reconnect_to` (Goodbye's, with code shutdown or lame_duck) names the
  /// servers to try first; see `accept_hints` for which are taken.
  ended disconnect(const std::string& code, const std::string& reason,
                   std::chrono::milliseconds at_least = std::chrono::milliseconds{0},
                   std::chrono::milliseconds hint = std::chrono::milliseconds{0},
                   const std::vector<std::string>& reconnect_to = {});

  /// The longest reconnect hint taken from a server (a day, as retry_after).
  static constexpr std::chrono::milliseconds max_hint{86'400'000};

  /// At most this many of a Goodbye's reconnect_to are looked at.
  static constexpr size_t max_hints = 16;

  /// The addresses of a server's reconnect_to that an agent may go to: the
  /// first `max_hints` entries, each a full "host:port" (no defaults filled
  /// in) of at most `max_server_address_length` bytes, with the scheme of
  /// the connection they came on (`tls`: a TLS connection never sends the
  /// agent to plaintext, nor a plaintext one to TLS), without duplicates.
  /// `ignored` counts the rest.
  static std::vector<server_address> accept_hints(const std::vector<std::string>& reconnect_to,
                                                  bool tls, int& ignored);

  /// The agent stops: no reconnect from now on. A session stays open for
  /// teardown(), which may still send.
  void begin_stop() {
    stopping_ = true;
  }

  /// After teardown(). True if a session is open: send Goodbye and wait for
  /// the close (until the stop deadline); false: the link can end at once.
  bool close_for_stop();

  /// The connector of `gen` failed, and that attempt is still the current one.
  bool attempt_failed(uint64_t gen) const {
    return gen == gen_ && state_ == state::connecting;
  }

  bool closing() const noexcept {
    return state_ == state::closing;
  }

  /// The connection closed, or the stop deadline passed: the link is over.
  void finished() {
    state_ = state::stopped;
  }

  /// Refusals that retrying cannot fix.
  static bool fatal(std::string_view code);

private:
  client_options opts_;
  std::mt19937_64 rng_; // backoff jitter only, nothing secret
  state state_ = state::idle;
  uint64_t gen_ = 0;
  int attempt_ = 0;
  /// The agent's servers (never empty), the next one to try, and the
  /// servers a Goodbye named, tried before them.
  std::vector<server_address> servers_{server_address{}};
  size_t next_ = 0;
  std::vector<server_address> hints_;
  server_address target_;
  /// The current round: attempts in it so far (a lost session counts as
  /// its server's), attempts it has, and consecutive failed rounds.
  size_t tried_ = 0;
  size_t round_size_ = 1;
  int rounds_ = 0;
  /// A session was had (reconnecting off: no more attempts after it).
  bool had_session_ = false;
  bool stopping_ = false;
  time_point last_rx_{};
  std::chrono::milliseconds heartbeat_{0};
  std::chrono::milliseconds idle_timeout_{0};
};

} // namespace convoke::detail
