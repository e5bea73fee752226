#pragma once

// The protocol decisions of one agent's session, free of CAF and sockets:
// the lifecycle phase, what each input frame asks for, and the timeouts.
// The session broker (session.cpp) feeds it bytes, router answers and the
// time, and performs what it returns: relay, register, Notice, pause, close.
// Time is always passed in, so unit tests drive it with a fake clock.
//
// The machine owns:
//   - the phase: awaiting Hello -> awaiting registration -> established
//     -> (draining) -> closing -> lingering -> closed;
//   - the input: frame splitting (64 KiB frames before Welcome, then
//     limits.max-frame-bytes), the fast-path scan of plain envelopes, and
//     the classification of every other frame (Hello first and once, what
//     clients may send, Goodbye);
//   - the deadlines: handshake (timeouts.handshake), incomplete frames
//     (timeouts.frame: a slowloris cannot keep a frame open), silence
//     (timeouts.idle), the heartbeat schedule and the end of a close.
//     It asks to be woken (wake_request) and acts in on_timer(now).
// The broker keeps the I/O, CAF's timers and the router, the output
// (ledger, slow consumers, budget) and input credits.
//
// Per frame, next() does no allocation on the relay path: a plain envelope
// is scanned in place and returned as a view.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "convoke/proto/codec.hpp"
#include "convoke/server/config.hpp"
#include "convoke/v1/wire.pb.h"
#include "envelope_scan.hpp"
#include "summoner_wire.hpp"

namespace convoke::server {

enum class session_phase : uint8_t {
  /// Connected; the first frame must be Hello.
  awaiting_hello,
  /// A valid Hello went to the router; no input is read until it answers.
  awaiting_registration,
  /// Welcome sent: relaying, heartbeats and the idle timeout run.
  established,
  /// No more input is taken (the agent said Goodbye, or the server drains);
  /// what was read is still routed and delivered.
  draining,
  /// The final frame (Notice or Goodbye) is queued, waiting to leave.
  closing,
  /// The final frame has left; FIN sent, waiting for the peer's EOF.
  lingering,
  /// The socket is shut; the session ends once the router forgot it.
  closed,
};

std::string_view to_string(session_phase ph) noexcept;

/// What the next input frame asks the broker to do.
enum class input_action : uint8_t {
  /// Nothing more for now: no complete frame is buffered, or the phase takes
  /// no input. The buffer was compacted and the input timers updated.
  none,
  /// A plain envelope (fast path): relay `envelope()` as it came.
  relay,
  /// Another shape of envelope, parsed into `frame().envelope()`: relay its
  /// canonical encoding.
  relay_parsed,
  /// A valid Hello (`frame().hello()`): register the agent with the router
  /// and stop reading until it answers (phase awaiting_registration).
  register_agent,
  /// A heartbeat with a sequence number (`ping_seq()`): answer it once the
  /// router has handled everything read before it.
  ping,
  /// `frame().subscribe()` / `frame().unsubscribe()`.
  subscribe,
  unsubscribe,
  /// `frame().list_agents()`: ask the router which agents are connected
  /// (after everything read before it) and answer with an AgentList.
  list_agents,
  /// `frame().observe()`: start, change or stop observing traces.
  observe,
  /// The agent says Goodbye (`frame().goodbye()`): phase draining;
  /// acknowledge once the router has handled everything read before it.
  goodbye,
  /// A protocol violation or a refused Hello: close with `refusal()` as an
  /// ERROR Notice (begin_close).
  refuse,
  /// Summoner: a line that is not relayed (invalid UTF-8, too long): tell
  /// the sender `refusal()` as a WARNING and go on; the connection stays.
  warn,
};

/// What the machine needs to know of a Summoner connection (the
/// compatibility listener, docs/summoner.md).
struct summoner_peer {
  /// "ip:port", the relay lines' remote_addr.
  std::string remote_addr;
};

/// Why input is refused: the Notice code and text.
struct session_refusal {
  std::string_view code;
  std::string text;
  /// Counted as a protocol error (a wrong token is not).
  bool protocol_error = true;
};

/// A deadline that passed (on_timer).
enum class expiry : uint8_t {
  none,
  /// No Welcome within timeouts.handshake: refuse (handshake_timeout).
  handshake,
  /// A frame stayed incomplete for timeouts.frame (`elapsed` = its age).
  frame,
  /// Nothing received for timeouts.idle (`elapsed` = the silence).
  idle,
  /// The close took too long (the peer did not read its final frame or
  /// did not close): shut the socket now (finish).
  close,
};

/// What on_timer asks for.
struct timer_actions {
  expiry expired = expiry::none;
  std::chrono::milliseconds elapsed{0};
  /// Not 0: write a heartbeat ping with this sequence number.
  uint64_t heartbeat_seq = 0;
};

/// Observations about the peer that only the broker can make, sampled when
/// the machine wants them (wants_peer_sample).
struct peer_sample {
  /// The server is not reading this peer (input window, budget): its
  /// silence is not the peer's.
  bool input_paused = false;
  /// The peer's TCP stack acknowledged output since the last sample: it
  /// reads what it is sent, so it is alive even if it sends nothing.
  bool reading_output = false;
};

/// What to do on the server's drain (shutdown, phase 1).
enum class drain_action : uint8_t {
  /// Nothing to change (already draining, closing or closed).
  none,
  /// Not admitted yet: say Goodbye(shutdown) and close now.
  close,
  /// Established: hand the router what was read, stop reading (the phase
  /// is now draining).
  stop_reading,
};

/// What to do when the listener evicts this connection (too many
/// connections awaiting Hello).
enum class busy_action : uint8_t {
  /// Admitted already, or closed: nothing.
  ignore,
  /// Refuse (server_busy Notice, written at once or not at all), then
  /// finish without lingering.
  refuse_and_finish,
  /// Closing after a refusal already: finish now.
  finish,
};

class session_machine {
public:
  using clock = std::chrono::steady_clock;
  using time_point = clock::time_point;

  /// Largest frame before Welcome (a Hello with many routes fits): what an
  /// unauthenticated peer can make the server buffer stays small.
  static constexpr uint32_t handshake_frame_limit = 64 * 1024;

  /// How long a connection refused before Welcome may take to read its
  /// Notice: it must not hold a descriptor for long.
  static constexpr std::chrono::milliseconds refused_close_grace{250};

  /// A new connection at `now`; `cfg` must outlive the machine.
  session_machine(const server_config& cfg, time_point now);

  /// A Summoner connection: input is lines (summoner.max-line-bytes), each
  /// relayed as an envelope on summoner.route; there is no Hello (the
  /// broker registers at once: the phase starts at awaiting_registration),
  /// no heartbeat, and summoner.idle-timeout instead of timeouts.idle.
  session_machine(const server_config& cfg, time_point now, summoner_peer peer);

  bool summoner() const noexcept {
    return summoner_.has_value();
  }

  // -- state -------------------------------------------------------------------

  session_phase phase() const noexcept {
    return phase_;
  }

  /// The agent was admitted (Welcome sent).
  bool welcomed() const noexcept {
    return welcomed_;
  }

  /// Input is read and taken (before draining).
  bool takes_input() const noexcept {
    return phase_ < session_phase::draining;
  }

  /// Frames about messages (deliveries, Notices, heartbeat replies) are
  /// written to the agent: established or draining.
  bool writes_messages() const noexcept {
    return phase_ == session_phase::established || phase_ == session_phase::draining;
  }

  /// Bytes received and not yet taken as frames (a partial frame).
  size_t buffered() const noexcept {
    return summoner_ ? lines_.buffered() : splitter_.buffered();
  }

  /// The last complete frame (or, before any, the connection's start).
  time_point last_activity() const noexcept {
    return last_rx_;
  }

  // -- input -------------------------------------------------------------------

  /// Takes bytes read at `now`, if the phase takes input (false: discard
  /// them). Then call next() until it returns input_action::none.
  bool on_bytes(const char* data, size_t size, time_point now);

  /// Classifies the next complete frame (see input_action).
  input_action next();

  /// Summoner: the peer closed its side at `now`. A last line without
  /// '\n' is then taken by next(), as Summoner servers relay it.
  void on_eof(time_point now);

  /// The envelope of input_action::relay (views into the input buffer,
  /// valid until the next call of next()).
  const envelope_view& envelope() const noexcept {
    return view_;
  }

  /// The parsed frame of the other input actions (valid until next()).
  v1::Frame& frame() noexcept {
    return frame_;
  }

  /// The sequence number of input_action::ping.
  uint64_t ping_seq() const noexcept {
    return frame_.heartbeat().seq();
  }

  /// Why input_action::refuse.
  session_refusal& refusal() noexcept {
    return refusal_;
  }

  // -- events from the router and the listener -----------------------------------

  /// The router admitted the agent at `now`: phase established, the full
  /// frame limit, heartbeats and the idle timeout start. False if the
  /// session was not awaiting registration (ignore the Welcome). Then call
  /// next() for frames that arrived behind the Hello.
  bool on_welcome(time_point now);

  /// The router echoed the Goodbye barrier: true if the agent said Goodbye
  /// and the session should now acknowledge it and close.
  bool on_goodbye_acknowledged() const noexcept {
    return goodbye_received_ && phase_ == session_phase::draining;
  }

  /// The server drains (shutdown): see drain_action. A session already
  /// closing gets at most `grace` more.
  drain_action on_drain(time_point now, std::chrono::milliseconds grace);

  /// The listener needs room for a new connection.
  busy_action on_busy() const noexcept;

  // -- closing -----------------------------------------------------------------

  /// The grace period of a close after a refusal: `grace`, but short for a
  /// connection that was never admitted.
  std::chrono::milliseconds refusal_grace(std::chrono::milliseconds grace) const noexcept;

  /// Starts closing at `now`: the broker writes the final frame; after
  /// `grace` the close is forced (expiry::close). False if the session is
  /// closing already (write nothing).
  bool begin_close(time_point now, std::chrono::milliseconds grace);

  /// Everything queued has left the socket: true if that was the final
  /// frame, and the broker sends FIN now (phase lingering).
  bool on_output_flushed() noexcept;

  /// The socket is shut (phase closed). False if it was already.
  bool finish() noexcept;

  // -- time --------------------------------------------------------------------

  /// True if on_timer(now) needs a peer_sample (a heartbeat or an idle
  /// check is due); otherwise the broker need not take one.
  bool wants_peer_sample(time_point now) const noexcept;

  /// Acts on every deadline due at `now`. At most one expiry is returned
  /// (the broker closes); later deadlines are then moot.
  timer_actions on_timer(time_point now, peer_sample sample = {});

  /// When the broker must call on_timer next, if it has no wake-up pending
  /// for that time yet (call after every event; it then counts as armed).
  /// The broker may call on_timer at any time: early calls do nothing.
  std::optional<time_point> wake_request() noexcept;

private:
  enum deadline_kind : uint8_t { handshake_dl, frame_dl, idle_dl, heartbeat_dl, close_dl, n_dl };

  static constexpr time_point never = time_point::max();

  void track_input(); // after the last frame of a read
  input_action refuse(std::string_view code, std::string text, bool protocol_error = true);
  input_action on_frame(std::string_view body);
  input_action next_line();
  input_action on_line(std::string_view line);
  void stop_input_timers() noexcept;

  const server_config& cfg_;
  session_phase phase_ = session_phase::awaiting_hello;
  bool welcomed_ = false;
  bool goodbye_received_ = false;
  bool splitter_error_reported_ = false;
  /// The parsed frame was large: release its memory before the next one.
  bool release_frame_ = false;
  proto::frame_splitter splitter_;
  /// Summoner connections: the peer, its line splitter, the envelope frame
  /// made of the current line (envelope() views into it), and EOF.
  std::optional<summoner_peer> summoner_;
  summoner::line_splitter lines_{0};
  std::vector<char> line_frame_;
  bool eof_ = false;
  v1::Frame frame_;
  envelope_view view_;
  session_refusal refusal_;
  /// When the bytes being taken were read, and how many frames they held.
  time_point input_now_{};
  size_t input_frames_ = 0;
  /// The last complete frame (bytes of an incomplete frame are not
  /// activity: a slowloris must not keep a connection alive).
  time_point last_rx_;
  /// When the frame still incomplete began to arrive.
  std::optional<time_point> partial_since_;
  uint64_t heartbeat_seq_ = 0;
  /// When each check is due (never: none) and the wake-up pending for it
  /// (a wake-up at or before its deadline; never: none).
  time_point due_[n_dl] = {never, never, never, never, never};
  time_point woken_[n_dl] = {never, never, never, never, never};
};

} // namespace convoke::server
