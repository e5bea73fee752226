// fuzz_session_machine: the session's protocol machine (session_machine.hpp)
// driven by a script of hostile input, with the router accepting every valid
// Hello and a clock the input moves.
//
// The input is read as steps. A step byte `c`:
//   c % 4 == 0   time passes ((c >> 2) * 7 ms); the machine's timers run
//   c % 4 == 1   the output drains (on_output_flushed), then time as above
//   otherwise    the next ((c >> 2) + 1) bytes arrive as one read
// After each read every frame is taken (next()) and its action performed the
// way the broker does: register -> Welcome, refuse -> begin_close, goodbye
// and ping are acknowledged at once.
//
// Checks: the phase never goes back; nothing is relayed before Welcome or
// after the input stopped; Hello registers at most once; what the machine
// buffers stays within the frame limit of its phase (64 KiB before Welcome);
// a refusal carries a code and a sentence; deadlines it asks to be woken for
// are never in the past of the time it was given; a closed session takes no
// input.

#include <chrono>
#include <cstdint>
#include <cstring>

#include <google/protobuf/stubs/logging.h>

#include "check.hpp"
#include "session_machine.hpp"

namespace {

using namespace convoke;
using namespace convoke::server;
using clock = session_machine::clock;

struct quiet_protobuf {
  quiet_protobuf() {
    google::protobuf::SetLogHandler(nullptr);
  }
} quiet;

server_config make_config() {
  server_config cfg;
  cfg.max_frame_bytes = 256 * 1024; // small, so the fuzzer reaches the limit
  cfg.heartbeat_interval = std::chrono::milliseconds{50};
  cfg.idle_timeout = std::chrono::milliseconds{200};
  cfg.handshake_timeout = std::chrono::milliseconds{300};
  cfg.frame_timeout = std::chrono::milliseconds{100};
  return cfg;
}

const server_config cfg = make_config();

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto now = clock::time_point{} + std::chrono::hours{1};
  session_machine m{cfg, now};
  auto last_phase = m.phase();
  bool registered = false;
  size_t i = 0;
  auto check_phase = [&] {
    FUZZ_CHECK(m.phase() >= last_phase); // never goes back
    last_phase = m.phase();
    if (m.phase() == session_phase::closed)
      FUZZ_CHECK(!m.takes_input());
  };
  while (i < size) {
    uint8_t c = data[i++];
    if (c % 4 == 0 || c % 4 == 1) {
      if (c % 4 == 1)
        m.on_output_flushed();
      now += std::chrono::milliseconds{(c >> 2) * 7};
      auto t = m.on_timer(now, {});
      if (t.expired == expiry::handshake || t.expired == expiry::frame || t.expired == expiry::idle)
        m.begin_close(now, std::chrono::milliseconds{100});
      else if (t.expired == expiry::close)
        m.finish();
      if (auto due = m.wake_request())
        FUZZ_CHECK(*due >= now - std::chrono::milliseconds{1});
      check_phase();
      continue;
    }
    size_t n = std::min<size_t>((c >> 2) + 1, size - i);
    bool taken = m.on_bytes(reinterpret_cast<const char*>(data + i), n, now);
    i += n;
    if (!taken) {
      FUZZ_CHECK(!m.takes_input());
      check_phase();
      continue;
    }
    for (int frames = 0; frames < 10000; ++frames) {
      auto action = m.next();
      if (action == input_action::none)
        break;
      switch (action) {
      case input_action::relay:
      case input_action::relay_parsed:
        FUZZ_CHECK(m.welcomed());
        FUZZ_CHECK(m.phase() == session_phase::established);
        break;
      case input_action::register_agent:
        FUZZ_CHECK(!registered);
        FUZZ_CHECK(m.phase() == session_phase::awaiting_registration);
        registered = true;
        FUZZ_CHECK(m.on_welcome(now)); // the router accepts
        break;
      case input_action::refuse:
        FUZZ_CHECK(!m.refusal().code.empty());
        FUZZ_CHECK(!m.refusal().text.empty());
        m.begin_close(now, m.refusal_grace(std::chrono::milliseconds{100}));
        break;
      case input_action::goodbye:
        FUZZ_CHECK(m.welcomed());
        FUZZ_CHECK(m.on_goodbye_acknowledged());
        m.begin_close(now, std::chrono::milliseconds{100});
        break;
      default:
        FUZZ_CHECK(m.welcomed()); // ping, (un)subscribe: only once admitted
        break;
      }
      check_phase();
    }
    // Memory stays bounded by the phase's frame limit.
    size_t limit = m.welcomed() ? cfg.max_frame_bytes : session_machine::handshake_frame_limit;
    FUZZ_CHECK(m.buffered() <= limit + proto::header_size + 256);
    check_phase();
  }
  return 0;
}
