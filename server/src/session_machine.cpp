#include "session_machine.hpp"

#include <algorithm>

#include <fmt/format.h>

#include "convoke/common/units.hpp"
#include "convoke/proto/rules.hpp"
#include "convoke/proto/wire_format.hpp"
#include "session_rules.hpp"

namespace convoke::server {

namespace codes = proto::codes;
using std::chrono::duration_cast;
using std::chrono::milliseconds;

std::string_view to_string(session_phase ph) noexcept {
  switch (ph) {
  case session_phase::awaiting_hello:
    return "awaiting_hello";
  case session_phase::awaiting_registration:
    return "awaiting_registration";
  case session_phase::established:
    return "established";
  case session_phase::draining:
    return "draining";
  case session_phase::closing:
    return "closing";
  case session_phase::lingering:
    return "lingering";
  case session_phase::closed:
    return "closed";
  }
  return "?";
}

session_machine::session_machine(const server_config& cfg, time_point now)
  : cfg_(cfg), splitter_(std::min(cfg.max_frame_bytes, handshake_frame_limit)), last_rx_(now) {
  due_[handshake_dl] = now + cfg.handshake_timeout;
}

session_machine::session_machine(const server_config& cfg, time_point now, summoner_peer peer)
  : session_machine(cfg, now) {
  summoner_ = std::move(peer);
  // A relayed line is longer than the line: no longer one can ever fit.
  lines_ = summoner::line_splitter{cfg.summoner_max_line_bytes};
  phase_ = session_phase::awaiting_registration;
}

// -- input ---------------------------------------------------------------------

bool session_machine::on_bytes(const char* data, size_t size, time_point now) {
  if (!takes_input())
    return false; // input after the decision to close is discarded
  if (summoner_)
    lines_.append(data, size);
  else
    splitter_.append(data, size);
  input_now_ = now;
  input_frames_ = 0;
  return true;
}

input_action session_machine::next() {
  if (summoner_)
    return next_line();
  // The parsed copy of a large frame would keep its size for the life of
  // the connection: released once the broker is done with it.
  auto release_large_frame = [this] {
    if (release_frame_) {
      release_frame_ = false;
      frame_ = v1::Frame{};
    }
  };
  std::string_view body;
  while ((phase_ == session_phase::awaiting_hello || phase_ == session_phase::established)
         && splitter_.next(body)) {
    release_large_frame();
    ++input_frames_;
    // Hot path: a plain envelope is relayed from its own bytes, no parsing
    // into objects (see envelope_scan.hpp).
    if (phase_ == session_phase::established && scan_envelope_frame(body, view_))
      return input_action::relay;
    if (body.size() > 64 * 1024)
      release_frame_ = true;
    if (auto action = on_frame(body); action != input_action::none)
      return action;
    // A frame that asks for nothing (a heartbeat reply): on to the next.
  }
  release_large_frame();
  splitter_.compact();
  track_input();
  if (auto err = splitter_.error(); err != proto::frame_error::none && !splitter_error_reported_) {
    splitter_error_reported_ = true;
    auto text
      = err == proto::frame_error::too_large
          ? fmt::format("frame length {} exceeds the limit of {} bytes ({})",
                        splitter_.bad_length(), splitter_.max_frame_bytes(),
                        phase_ < session_phase::established ? "frames before Welcome are limited"
                                                            : "limits.max-frame-bytes")
          : std::string{"frame length 0 is not allowed"};
    return refuse(proto::to_code(err), std::move(text));
  }
  return input_action::none;
}

input_action session_machine::on_frame(std::string_view body) {
  if (auto err = proto::decode_frame(body, frame_); err != proto::frame_error::none)
    return refuse(proto::to_code(err),
                  fmt::format("could not decode a {}-byte frame as convoke.v1.Frame", body.size()));
  if (phase_ == session_phase::awaiting_hello) {
    if (frame_.kind_case() != v1::Frame::kHello)
      return refuse(codes::hello_required, "the first frame on a connection must be Hello");
    if (auto r = check_hello(frame_.hello(), cfg_))
      return refuse(r->code, std::move(r->text));
    phase_ = session_phase::awaiting_registration;
    return input_action::register_agent;
  }
  switch (frame_.kind_case()) {
  case v1::Frame::kEnvelope:
    return input_action::relay_parsed;
  case v1::Frame::kHeartbeat:
    // A reply to our ping counts as activity only; a ping wants an answer.
    return frame_.heartbeat().seq() != 0 ? input_action::ping : input_action::none;
  case v1::Frame::kSubscribe:
    return input_action::subscribe;
  case v1::Frame::kUnsubscribe:
    return input_action::unsubscribe;
  case v1::Frame::kListAgents:
    return input_action::list_agents;
  case v1::Frame::kObserve:
    return input_action::observe;
  case v1::Frame::kGoodbye:
    // Stop taking input; the broker acknowledges once the router has handled
    // what the agent sent before.
    goodbye_received_ = true;
    phase_ = session_phase::draining;
    stop_input_timers();
    return input_action::goodbye;
  case v1::Frame::kHello:
    return refuse(codes::duplicate_hello, "Hello was already received on this connection");
  default:
    return refuse(
      codes::unexpected_frame,
      fmt::format("clients may not send {} frames",
                  frame_.GetDescriptor()->FindFieldByNumber(frame_.kind_case())->name()));
  }
}

void session_machine::on_eof(time_point now) {
  if (!summoner_ || !takes_input())
    return;
  eof_ = true;
  input_now_ = now;
}

input_action session_machine::next_line() {
  using summoner::line_splitter;
  std::string_view line;
  while (phase_ == session_phase::established) {
    auto r = lines_.next(line);
    if (r == line_splitter::result::none) {
      if (!eof_ || !lines_.take_last(line))
        break;
      eof_ = false; // the last line, once
      r = line_splitter::result::line;
    }
    ++input_frames_;
    if (r == line_splitter::result::too_long) {
      refuse(codes::message_too_large,
             fmt::format("your line of more than {} bytes was not relayed: Summoner clients read "
                         "lines of at most {} bytes (summoner.max-line-bytes)",
                         lines_.max_line(), cfg_.summoner_max_line_bytes),
             false);
      return input_action::warn;
    }
    if (auto action = on_line(line); action != input_action::none)
      return action;
  }
  lines_.compact();
  track_input();
  return input_action::none;
}

input_action session_machine::on_line(std::string_view line) {
  if (!proto::wire::valid_utf8(line)) {
    refuse(codes::invalid_utf8,
           "your line was not relayed: it is not valid UTF-8 (Summoner lines are UTF-8 text)",
           false);
    return input_action::warn;
  }
  auto& peer = *summoner_;
  if (auto size = summoner::relay_line_size(peer.remote_addr, line);
      size > cfg_.summoner_max_line_bytes) {
    refuse(codes::message_too_large,
           fmt::format("your line was not relayed: relayed it would be {} bytes, more than the {} "
                       "bytes Summoner clients read (summoner.max-line-bytes)",
                       size, cfg_.summoner_max_line_bytes),
           false);
    return input_action::warn;
  }
  // A long line's capacity is not kept forever; released before encoding,
  // since view_ points into line_frame_ until the line is relayed.
  if (line_frame_.capacity() > 64 * 1024 && line.size() < 1024)
    std::vector<char>{}.swap(line_frame_);
  line_frame_.clear();
  summoner::append_envelope_frame(line_frame_, summoner::classify(line), cfg_.summoner_route,
                                  peer.remote_addr, unix_nanos());
  std::string_view body{line_frame_.data() + proto::header_size,
                        line_frame_.size() - proto::header_size};
  if (!scan_envelope_frame(body, view_)) {
    // Our own encoding of valid UTF-8: cannot happen.
    refuse(codes::frame_undecodable, "your line could not be relayed", false);
    return input_action::warn;
  }
  return input_action::relay;
}

input_action session_machine::refuse(std::string_view code, std::string text, bool protocol_error) {
  refusal_.code = code;
  refusal_.text = std::move(text);
  refusal_.protocol_error = protocol_error;
  return input_action::refuse;
}

/// After a read: complete frames are activity; a frame that stays
/// incomplete must complete within timeouts.frame of its first byte.
void session_machine::track_input() {
  auto now = input_now_;
  if (input_frames_ > 0)
    last_rx_ = now;
  auto frames = std::exchange(input_frames_, 0);
  if (buffered() == 0) {
    partial_since_.reset();
    return;
  }
  if (frames > 0 || !partial_since_)
    partial_since_ = now; // the incomplete frame began in this read
  if (due_[frame_dl] == never && takes_input())
    due_[frame_dl] = now + cfg_.frame_timeout;
}

void session_machine::stop_input_timers() noexcept {
  due_[handshake_dl] = never;
  due_[frame_dl] = never;
  due_[idle_dl] = never;
  due_[heartbeat_dl] = never;
}

// -- events ----------------------------------------------------------------------

bool session_machine::on_welcome(time_point now) {
  if (phase_ != session_phase::awaiting_registration)
    return false;
  phase_ = session_phase::established;
  welcomed_ = true;
  due_[handshake_dl] = never;
  if (summoner_) { // Summoner has no heartbeat
    last_rx_ = now;
    if (cfg_.summoner_idle_timeout.count() > 0)
      due_[idle_dl] = now + cfg_.summoner_idle_timeout;
    input_now_ = now;
    input_frames_ = 0;
    return true;
  }
  due_[heartbeat_dl] = now + cfg_.heartbeat_interval;
  if (cfg_.idle_timeout.count() > 0)
    due_[idle_dl] = now + cfg_.idle_timeout;
  // Admitted: the full frame limit, for the frames behind the Hello too.
  splitter_.set_max_frame_bytes(cfg_.max_frame_bytes);
  input_now_ = now;
  input_frames_ = 0;
  return true;
}

drain_action session_machine::on_drain(time_point now, milliseconds grace) {
  switch (phase_) {
  case session_phase::awaiting_hello:
  case session_phase::awaiting_registration:
    return drain_action::close;
  case session_phase::established:
    phase_ = session_phase::draining;
    stop_input_timers();
    return drain_action::stop_reading;
  case session_phase::closing:
  case session_phase::lingering:
    // Already closing on its own terms: but no longer than the drain.
    due_[close_dl] = std::min(due_[close_dl], now + grace);
    return drain_action::none;
  default:
    return drain_action::none;
  }
}

busy_action session_machine::on_busy() const noexcept {
  if (welcomed_ || phase_ == session_phase::closed)
    return busy_action::ignore;
  return phase_ < session_phase::closing ? busy_action::refuse_and_finish : busy_action::finish;
}

// -- closing -------------------------------------------------------------------

milliseconds session_machine::refusal_grace(milliseconds grace) const noexcept {
  // A connection that was never admitted stays counted among the
  // handshaking connections until it is gone.
  return welcomed_ ? grace : std::min(grace, milliseconds{refused_close_grace});
}

bool session_machine::begin_close(time_point now, milliseconds grace) {
  if (phase_ >= session_phase::closing)
    return false;
  phase_ = session_phase::closing;
  stop_input_timers();
  due_[close_dl] = std::min(due_[close_dl], now + grace);
  return true;
}

bool session_machine::on_output_flushed() noexcept {
  if (phase_ != session_phase::closing)
    return false;
  phase_ = session_phase::lingering;
  return true;
}

bool session_machine::finish() noexcept {
  if (phase_ == session_phase::closed)
    return false;
  phase_ = session_phase::closed;
  stop_input_timers();
  due_[close_dl] = never;
  return true;
}

// -- time ----------------------------------------------------------------------

bool session_machine::wants_peer_sample(time_point now) const noexcept {
  return phase_ == session_phase::established
         && (due_[heartbeat_dl] <= now || due_[idle_dl] <= now);
}

timer_actions session_machine::on_timer(time_point now, peer_sample sample) {
  timer_actions out;
  for (auto& w : woken_)
    if (w <= now)
      w = never; // that wake-up is this one (or was before it)
  auto due = [&](deadline_kind k) {
    if (due_[k] > now)
      return false;
    due_[k] = never;
    return true;
  };
  if (due(close_dl) && phase_ != session_phase::closed) {
    out.expired = expiry::close;
    return out;
  }
  if (due(handshake_dl)
      && (phase_ == session_phase::awaiting_hello
          || phase_ == session_phase::awaiting_registration)) {
    out.expired = expiry::handshake;
    return out;
  }
  if (due(frame_dl) && partial_since_ && takes_input()) {
    auto age = duration_cast<milliseconds>(now - *partial_since_);
    if (age < cfg_.frame_timeout) {
      due_[frame_dl] = now + (cfg_.frame_timeout - age);
    } else {
      out.expired = expiry::frame;
      out.elapsed = age;
      return out;
    }
  }
  bool idle_check = due(idle_dl);
  bool heartbeat = due(heartbeat_dl);
  if (phase_ != session_phase::established)
    return out; // idle checks and heartbeats stop for good
  if ((idle_check || heartbeat) && sample.reading_output)
    last_rx_ = now;
  if (idle_check) {
    if (sample.input_paused)
      last_rx_ = now; // the server is not reading it: not its silence
    auto silent = duration_cast<milliseconds>(now - last_rx_);
    auto limit = summoner_ ? cfg_.summoner_idle_timeout : cfg_.idle_timeout;
    if (silent >= limit) {
      out.expired = expiry::idle;
      out.elapsed = silent;
      return out;
    }
    due_[idle_dl] = now + (limit - silent);
  }
  if (heartbeat) {
    out.heartbeat_seq = ++heartbeat_seq_;
    due_[heartbeat_dl] = now + cfg_.heartbeat_interval;
  }
  return out;
}

std::optional<session_machine::time_point> session_machine::wake_request() noexcept {
  auto earliest = never;
  for (int k = 0; k < n_dl; ++k)
    if (due_[k] != never && woken_[k] > due_[k])
      earliest = std::min(earliest, due_[k]);
  if (earliest == never)
    return std::nullopt;
  // One wake-up covers every deadline still without one: deadlines after
  // it are looked at again when it comes.
  for (int k = 0; k < n_dl; ++k)
    if (due_[k] != never && woken_[k] > due_[k])
      woken_[k] = earliest;
  return earliest;
}

} // namespace convoke::server
