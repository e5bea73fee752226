// The agent's link state machine (see link_machine.hpp).

#include "link_machine.hpp"

#include <algorithm>

#include "backoff.hpp"
#include "convoke/proto/rules.hpp"

namespace convoke::detail {

namespace codes = proto::codes;

link_machine::link_machine(const client_options& opts, uint64_t seed)
  : opts_(opts), rng_(seed), servers_(server_list(opts)), target_(servers_.front()),
    round_size_(servers_.size()) {}

bool link_machine::fatal(std::string_view code) {
  // name_taken is fatal even with a resume token: a lingering session of
  // ours is taken over by the token, so a refusal means someone else.
  // name_conflict: two cluster nodes accepted the name and this session
  // lost; the winner is this agent's twin or someone else, never a reason
  // to come back and fight over the name.
  return code == codes::auth_failed || code == codes::invalid_name
         || code == codes::unsupported_version || code == codes::name_taken
         || code == codes::too_many_routes || code == codes::invalid_route
         || code == codes::replaced || code == codes::name_conflict;
}

std::vector<server_address> link_machine::accept_hints(const std::vector<std::string>& reconnect_to,
                                                       bool tls, int& ignored) {
  std::vector<server_address> out;
  ignored = 0;
  // No defaults: a hint names its host and port, or it is not taken.
  const server_address none{"", 0, false};
  for (size_t i = 0; i < reconnect_to.size(); ++i) {
    if (i >= max_hints) {
      ignored += static_cast<int>(reconnect_to.size() - i);
      break;
    }
    auto a = parse_server_address(reconnect_to[i], none);
    if (!a || a->tls != tls || std::find(out.begin(), out.end(), *a) != out.end()) {
      ++ignored;
      continue;
    }
    out.push_back(std::move(*a));
  }
  return out;
}

uint64_t link_machine::connect() {
  state_ = state::connecting;
  if (!hints_.empty()) {
    target_ = std::move(hints_.front());
    hints_.erase(hints_.begin());
  } else {
    target_ = servers_[next_];
    next_ = (next_ + 1) % servers_.size();
  }
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
  rounds_ = 0;
  hints_.clear();
  had_session_ = true;
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
                                             std::chrono::milliseconds hint,
                                             const std::vector<std::string>& reconnect_to) {
  ended e;
  e.was_connected = state_ == state::connected;
  state_ = stopping_ ? state::stopped : state::idle;
  ++gen_; // late messages of this connection are stale now
  ++attempt_;
  auto& rp = opts_.reconnect;
  e.info.code = code;
  e.info.reason = reason;
  e.info.server = to_string(target_);
  e.info.attempt = attempt_;
  e.info.reconnect_hint = std::clamp(hint, std::chrono::milliseconds{0}, max_hint);
  bool go_on = !stopping_ && !fatal(code);
  // The round: a lost session counts as its server's attempt and begins a
  // new round; a failed attempt is one more of the current round.
  if (e.was_connected) {
    tried_ = 1;
    round_size_ = servers_.size();
    hints_.clear();
  } else {
    ++tried_;
  }
  // A server that sends the agent away may say where to: those servers
  // come first in what is left of this round.
  if (go_on && rp.enabled && !reconnect_to.empty()
      && (code == codes::shutdown || code == codes::lame_duck)) {
    round_size_ -= hints_.size(); // any left from an earlier Goodbye are replaced
    hints_ = accept_hints(reconnect_to, target_.tls, e.info.reconnect_to_ignored);
    round_size_ += hints_.size();
    for (auto& h : hints_)
      e.info.reconnect_to.push_back(to_string(h));
  }
  e.info.round_failed = tried_ >= round_size_;
  if (e.info.round_failed) {
    ++rounds_;
    tried_ = 0;
    round_size_ = servers_.size();
    hints_.clear();
  }
  if (rp.enabled)
    e.info.will_reconnect = go_on && (rp.max_attempts == 0 || rounds_ <= rp.max_attempts);
  else // the first session may still come from another server of the first round
    e.info.will_reconnect = go_on && !had_session_ && !e.info.round_failed;
  if (e.info.will_reconnect) {
    // The server's hint spreads the reconnects of the agents it sends away
    // (lame duck): it replaces the backoff, not only bounds it. Otherwise a
    // fresh server of the round is tried at once, the first attempt after
    // a lost session waits the first delay (the agents of a dead server do
    // not all come back in the same instant), and a failed round backs off.
    std::chrono::milliseconds delay{0};
    if (e.info.reconnect_hint.count() > 0)
      delay = e.info.reconnect_hint;
    else if (e.info.round_failed)
      delay = backoff_delay(rp, rounds_, rng_);
    else if (e.was_connected)
      delay = backoff_delay(rp, 1, rng_);
    e.info.retry_in = std::max(delay, at_least);
    e.info.next_server = to_string(next_target());
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
