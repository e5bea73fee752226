// The agent's link state machine (see link_machine.hpp).

#include "link_machine.hpp"

#include <algorithm>

#include "backoff.hpp"
#include "convoke/proto/rules.hpp"

namespace convoke::detail {

namespace codes = proto::codes;

link_machine::link_machine(const client_options& opts, uint64_t seed) : opts_(opts), rng_(seed) {}

bool link_machine::fatal(std::string_view code) {
  // name_taken is fatal even with a resume token: a lingering session of
  // ours is taken over by the token, so a refusal means someone else.
  return code == codes::auth_failed || code == codes::invalid_name
         || code == codes::unsupported_version || code == codes::name_taken
         || code == codes::too_many_routes || code == codes::invalid_route
         || code == codes::replaced;
}

uint64_t link_machine::connect() {
  state_ = state::connecting;
  return ++gen_;
}

std::optional<link_machine::time_point> link_machine::connected(uint64_t gen, time_point now) {
  if (gen != gen_ || stopping_ || state_ != state::connecting)
    return std::nullopt;
  state_ = state::handshaking;
  last_rx_ = now;
  return now + opts_.connect_timeout;
}

std::optional<link_machine::time_point> link_machine::welcome(const session_info& s,
                                                              time_point now) {
  if (state_ != state::handshaking)
    return std::nullopt;
  state_ = state::connected;
  attempt_ = 0;
  last_rx_ = now;
  heartbeat_ = s.heartbeat_interval;
  idle_timeout_ = s.idle_timeout;
  if (idle_timeout_.count() > 0 && heartbeat_.count() > 0)
    return now + heartbeat_;
  return std::nullopt;
}

link_machine::watchdog_result link_machine::watchdog(uint64_t gen, time_point now) const {
  watchdog_result r;
  if (gen != gen_ || state_ != state::connected)
    return r;
  r.silence = std::chrono::duration_cast<std::chrono::milliseconds>(now - last_rx_);
  if (r.silence > idle_timeout_) {
    r.silent = true;
    return r;
  }
  r.next = now + heartbeat_;
  return r;
}

link_machine::ended link_machine::disconnect(const std::string& code, const std::string& reason,
                                             std::chrono::milliseconds at_least,
                                             std::chrono::milliseconds hint) {
  ended e;
  e.was_connected = state_ == state::connected;
  state_ = stopping_ ? state::stopped : state::idle;
  ++gen_; // late messages of this connection are stale now
  ++attempt_;
  auto& rp = opts_.reconnect;
  e.info.code = code;
  e.info.reason = reason;
  e.info.attempt = attempt_;
  e.info.reconnect_hint = std::clamp(hint, std::chrono::milliseconds{0}, max_hint);
  e.info.will_reconnect = !stopping_ && !fatal(code) && rp.enabled
                          && (rp.max_attempts == 0 || attempt_ <= rp.max_attempts);
  if (e.info.will_reconnect) {
    // The server's hint spreads the reconnects of the agents it sends away
    // (lame duck): it replaces the backoff, not only bounds it.
    e.info.retry_in = e.info.reconnect_hint.count() > 0
                        ? std::max(e.info.reconnect_hint, at_least)
                        : std::max(backoff_delay(rp, attempt_, rng_), at_least);
  } else if (!stopping_) {
    // Without a session to come, the agent is done. An orderly end by the
    // server (Goodbye) is a normal exit; anything else is a failure.
    e.give_up = true;
    e.exit_code
      = code == codes::shutdown || code == codes::client_exit || code == codes::lame_duck ? 0 : 1;
  }
  return e;
}

bool link_machine::close_for_stop() {
  stopping_ = true;
  if (state_ == state::connected) {
    state_ = state::closing;
    return true;
  }
  state_ = state::stopped;
  return false;
}

} // namespace convoke::detail
