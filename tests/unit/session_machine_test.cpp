// The session's protocol machine (server/src/session_machine.hpp), driven
// with bytes and a fake clock: no sockets, no actors, no sleeps.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <string>
#include <vector>

#include "convoke/proto/codec.hpp"
#include "convoke/proto/rules.hpp"
#include "session_machine.hpp"

// Counts heap allocations while `counting` is set (RelayPathDoesNotAllocate).
namespace {
std::atomic<bool> counting{false};
std::atomic<size_t> allocations{0};
} // namespace

void* operator new(std::size_t n) {
  if (counting.load(std::memory_order_relaxed))
    allocations.fetch_add(1, std::memory_order_relaxed);
  if (auto p = std::malloc(n == 0 ? 1 : n))
    return p;
  throw std::bad_alloc{};
}

// GCC takes `new` for the built-in one and warns that free() does not match.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void operator delete(void* p) noexcept {
  std::free(p);
}

void operator delete(void* p, std::size_t) noexcept {
  std::free(p);
}
#pragma GCC diagnostic pop

using namespace convoke;
using namespace convoke::server;
using namespace std::chrono_literals;
using time_point = session_machine::time_point;
namespace codes = proto::codes;

namespace {

v1::Frame hello(std::string name = "alice") {
  v1::Frame f;
  f.mutable_hello()->set_protocol_version(proto::protocol_version);
  f.mutable_hello()->set_agent_name(std::move(name));
  return f;
}

v1::Frame envelope(std::string route, std::string payload = "hi") {
  v1::Frame f;
  f.mutable_envelope()->set_route(std::move(route));
  f.mutable_envelope()->set_payload(std::move(payload));
  return f;
}

v1::Frame ping(uint64_t seq) {
  v1::Frame f;
  f.mutable_heartbeat()->set_seq(seq);
  return f;
}

v1::Frame pong(uint64_t reply_to) {
  v1::Frame f;
  f.mutable_heartbeat()->set_reply_to(reply_to);
  return f;
}

v1::Frame goodbye() {
  v1::Frame f;
  f.mutable_goodbye()->set_reason("done");
  return f;
}

std::string bytes(const v1::Frame& f) {
  return proto::encode_frame(f);
}

server_config test_config() {
  server_config cfg;
  cfg.handshake_timeout = 5s;
  cfg.heartbeat_interval = 10s;
  cfg.idle_timeout = 30s;
  cfg.frame_timeout = 15s;
  return cfg;
}

class SessionMachine : public ::testing::Test {
protected:
  server_config cfg = test_config();
  /// The fake clock's start: the connection was accepted then.
  time_point t0{std::chrono::hours{1}};
  session_machine m{cfg, t0};
  time_point now = t0;

  /// Bytes read at `at`; returns what the machine asks for, frame by frame,
  /// performing a refusal's close like the broker does.
  std::vector<input_action> feed(std::string_view data, time_point at) {
    now = at;
    if (!m.on_bytes(data.data(), data.size(), at))
      return {};
    return take();
  }

  std::vector<input_action> take() {
    std::vector<input_action> out;
    for (auto a = m.next(); a != input_action::none; a = m.next()) {
      out.push_back(a);
      if (a == input_action::refuse)
        m.begin_close(now, m.refusal_grace(5s));
    }
    return out;
  }

  /// Hello at `at`, admitted by the router at once.
  void establish(time_point at) {
    ASSERT_EQ(feed(bytes(hello()), at), std::vector{input_action::register_agent});
    ASSERT_TRUE(m.on_welcome(at));
    EXPECT_TRUE(take().empty());
    ASSERT_EQ(m.phase(), session_phase::established);
  }
};

using actions = std::vector<input_action>;

// -- handshake ---------------------------------------------------------------

TEST_F(SessionMachine, HandshakeTimeoutFiresExactlyAtTheDeadline) {
  EXPECT_EQ(m.phase(), session_phase::awaiting_hello);
  EXPECT_EQ(m.wake_request(), t0 + 5s);
  EXPECT_EQ(m.wake_request(), std::nullopt) << "already armed";
  EXPECT_EQ(m.on_timer(t0 + 5s - 1ns).expired, expiry::none);
  EXPECT_EQ(m.wake_request(), std::nullopt) << "the wake-up at the deadline is still pending";
  EXPECT_EQ(m.on_timer(t0 + 5s).expired, expiry::handshake);
}

TEST_F(SessionMachine, HandshakeDeadlineCoversTheRegistration) {
  EXPECT_EQ(feed(bytes(hello()), t0 + 1s), actions{input_action::register_agent});
  EXPECT_EQ(m.phase(), session_phase::awaiting_registration);
  EXPECT_EQ(m.on_timer(t0 + 5s).expired, expiry::handshake) << "the router did not answer";
}

TEST_F(SessionMachine, WelcomeEndsTheHandshakeDeadline) {
  establish(t0 + 1s);
  EXPECT_TRUE(m.welcomed());
  auto t = m.on_timer(t0 + 5s);
  EXPECT_EQ(t.expired, expiry::none);
  EXPECT_EQ(t.heartbeat_seq, 0u);
  EXPECT_FALSE(m.on_welcome(t0 + 2s)) << "a second Welcome is ignored";
}

TEST_F(SessionMachine, HelloMustComeFirst) {
  EXPECT_EQ(feed(bytes(ping(1)), t0), actions{input_action::refuse});
  EXPECT_EQ(m.refusal().code, codes::hello_required);
  EXPECT_TRUE(m.refusal().protocol_error);
  EXPECT_EQ(m.phase(), session_phase::closing);
}

TEST_F(SessionMachine, EnvelopeBeforeHelloIsRefusedNotRelayed) {
  EXPECT_EQ(feed(bytes(envelope("r")) + bytes(envelope("r")), t0), actions{input_action::refuse});
  EXPECT_EQ(m.refusal().code, codes::hello_required);
}

TEST_F(SessionMachine, InvalidHelloIsRefused) {
  auto f = hello();
  f.mutable_hello()->set_protocol_version(1);
  EXPECT_EQ(feed(bytes(f), t0), actions{input_action::refuse});
  EXPECT_EQ(m.refusal().code, codes::unsupported_version);
  EXPECT_TRUE(m.refusal().protocol_error);
}

TEST_F(SessionMachine, TheTokenIsLeftToTheSessionWhichAnswersFailuresLate) {
  cfg.token = "secret";
  auto f = hello();
  f.mutable_hello()->set_token("guess");
  EXPECT_EQ(feed(bytes(f) + bytes(envelope("r")), t0), actions{input_action::register_agent});
  EXPECT_EQ(m.phase(), session_phase::awaiting_registration) << "nothing more is taken";
}

TEST_F(SessionMachine, SecondHelloIsRefused) {
  establish(t0);
  EXPECT_EQ(feed(bytes(hello()), t0 + 1s), actions{input_action::refuse});
  EXPECT_EQ(m.refusal().code, codes::duplicate_hello);
  EXPECT_EQ(m.phase(), session_phase::closing);
}

TEST_F(SessionMachine, NothingIsTakenWhileAwaitingRegistration) {
  EXPECT_EQ(feed(bytes(hello()) + bytes(envelope("r")), t0), actions{input_action::register_agent});
  EXPECT_GT(m.buffered(), 0u) << "the envelope waits behind the Hello";
  EXPECT_TRUE(m.on_welcome(t0 + 1ms));
  EXPECT_EQ(take(), actions{input_action::relay});
  EXPECT_EQ(m.envelope().route, "r");
  EXPECT_EQ(m.buffered(), 0u);
}

TEST_F(SessionMachine, FramesBeforeWelcomeAreLimitedTo64KiB) {
  char header[proto::header_size];
  proto::write_header(header, session_machine::handshake_frame_limit + 1);
  EXPECT_EQ(feed({header, sizeof header}, t0), actions{input_action::refuse});
  EXPECT_EQ(m.refusal().code, proto::to_code(proto::frame_error::too_large));
  EXPECT_NE(m.refusal().text.find("frames before Welcome are limited"), std::string::npos);
}

TEST_F(SessionMachine, AfterWelcomeTheConfiguredFrameLimitApplies) {
  establish(t0);
  EXPECT_EQ(feed(bytes(envelope("r", std::string(100'000, 'x'))), t0),
            actions{input_action::relay});
  char header[proto::header_size];
  proto::write_header(header, cfg.max_frame_bytes + 1);
  EXPECT_EQ(feed({header, sizeof header}, t0), actions{input_action::refuse});
  EXPECT_NE(m.refusal().text.find("limits.max-frame-bytes"), std::string::npos);
}

// -- established: what each frame asks for -------------------------------------

TEST_F(SessionMachine, PlainEnvelopesTakeTheFastPath) {
  establish(t0);
  auto data = bytes(envelope("weather", "a")) + bytes(envelope("news", "b"));
  ASSERT_TRUE(m.on_bytes(data.data(), data.size(), t0 + 1s));
  ASSERT_EQ(m.next(), input_action::relay);
  EXPECT_EQ(m.envelope().route, "weather");
  EXPECT_EQ(m.envelope().payload, "a");
  ASSERT_EQ(m.next(), input_action::relay);
  EXPECT_EQ(m.envelope().route, "news");
  EXPECT_EQ(m.next(), input_action::none);
  EXPECT_EQ(m.last_activity(), t0 + 1s);
}

TEST_F(SessionMachine, EnvelopeOfAnotherShapeIsParsed) {
  establish(t0);
  // Two envelope fields in one frame: protobuf merges them, the scanner
  // does not take it.
  auto a = bytes(envelope("r", "1"));
  auto b = bytes(envelope("", "2"));
  auto body = a.substr(proto::header_size) + b.substr(proto::header_size);
  std::string data(proto::header_size, '\0');
  proto::write_header(data.data(), static_cast<uint32_t>(body.size()));
  EXPECT_EQ(feed(data + body, t0), actions{input_action::relay_parsed});
  EXPECT_EQ(m.frame().envelope().route(), "r");
  EXPECT_EQ(m.frame().envelope().payload(), "2");
}

TEST_F(SessionMachine, ClassifiesWhatClientsSend) {
  establish(t0);
  v1::Frame sub;
  sub.mutable_subscribe()->add_routes("news");
  v1::Frame unsub;
  unsub.mutable_unsubscribe()->add_routes("news");
  v1::Frame list;
  list.mutable_list_agents()->set_request_id(9);
  list.mutable_list_agents()->set_prefix("team.");
  auto data = bytes(ping(7)) + bytes(pong(3)) + bytes(sub) + bytes(unsub) + bytes(list);
  ASSERT_TRUE(m.on_bytes(data.data(), data.size(), t0));
  ASSERT_EQ(m.next(), input_action::ping);
  EXPECT_EQ(m.ping_seq(), 7u);
  // The reply to our heartbeat asks for nothing.
  ASSERT_EQ(m.next(), input_action::subscribe);
  EXPECT_EQ(m.frame().subscribe().routes(0), "news");
  EXPECT_EQ(m.next(), input_action::unsubscribe);
  ASSERT_EQ(m.next(), input_action::list_agents);
  EXPECT_EQ(m.frame().list_agents().request_id(), 9u);
  EXPECT_EQ(m.frame().list_agents().prefix(), "team.");
  EXPECT_EQ(m.next(), input_action::none);
}

TEST_F(SessionMachine, ServerFramesFromAClientAreRefused) {
  establish(t0);
  v1::Frame f;
  f.mutable_welcome()->set_session_id(1);
  EXPECT_EQ(feed(bytes(f), t0), actions{input_action::refuse});
  EXPECT_EQ(m.refusal().code, codes::unexpected_frame);
  EXPECT_NE(m.refusal().text.find("welcome"), std::string::npos);
}

TEST_F(SessionMachine, AnAgentListFromAClientIsRefused) {
  establish(t0);
  v1::Frame answer;
  answer.mutable_agent_list()->add_agents("x");
  EXPECT_EQ(feed(bytes(answer), t0), actions{input_action::refuse});
  EXPECT_EQ(m.refusal().code, codes::unexpected_frame);
  EXPECT_NE(m.refusal().text.find("agent_list"), std::string::npos) << m.refusal().text;
}

TEST_F(SessionMachine, ListAgentsBeforeWelcomeIsRefused) {
  v1::Frame list;
  list.mutable_list_agents()->set_request_id(1);
  EXPECT_EQ(feed(bytes(list), t0), actions{input_action::refuse});
  EXPECT_EQ(m.refusal().code, codes::hello_required);
}

TEST_F(SessionMachine, UndecodableAndEmptyFramesAreRefused) {
  establish(t0);
  std::string junk(proto::header_size, '\0');
  proto::write_header(junk.data(), 3);
  junk += "\xff\xff\xff";
  EXPECT_EQ(feed(junk, t0), actions{input_action::refuse});
  EXPECT_EQ(m.refusal().code, proto::to_code(proto::frame_error::undecodable));

  session_machine fresh{cfg, t0};
  std::string empty(proto::header_size, '\0');
  ASSERT_TRUE(fresh.on_bytes(empty.data(), empty.size(), t0));
  EXPECT_EQ(fresh.next(), input_action::refuse);
  EXPECT_EQ(fresh.refusal().code, proto::to_code(proto::frame_error::empty));
}

// -- Goodbye and closing -------------------------------------------------------

TEST_F(SessionMachine, GoodbyeStopsInputAndIsAcknowledgedAfterTheBarrier) {
  establish(t0);
  EXPECT_FALSE(m.on_goodbye_acknowledged());
  EXPECT_EQ(feed(bytes(goodbye()) + bytes(envelope("r")), t0 + 1s), actions{input_action::goodbye})
    << "the envelope behind the Goodbye is not relayed";
  EXPECT_EQ(m.frame().goodbye().reason(), "done");
  EXPECT_EQ(m.phase(), session_phase::draining);
  EXPECT_FALSE(m.takes_input());
  EXPECT_TRUE(m.writes_messages()) << "Notices about earlier messages still go out";
  EXPECT_TRUE(feed(bytes(envelope("r")), t0 + 2s).empty()) << "input after Goodbye is discarded";
  EXPECT_TRUE(m.on_goodbye_acknowledged());
  EXPECT_TRUE(m.begin_close(t0 + 2s, 5s));
  EXPECT_EQ(m.phase(), session_phase::closing);
  EXPECT_FALSE(m.on_goodbye_acknowledged());
}

TEST_F(SessionMachine, GoodbyeBarrierWithoutGoodbyeIsIgnored) {
  establish(t0);
  EXPECT_EQ(m.on_drain(t0, 5s), drain_action::stop_reading);
  EXPECT_EQ(m.phase(), session_phase::draining);
  EXPECT_FALSE(m.on_goodbye_acknowledged());
}

TEST_F(SessionMachine, DataAfterClosingIsIgnored) {
  establish(t0);
  ASSERT_TRUE(m.begin_close(t0, 5s));
  auto data = bytes(envelope("r"));
  EXPECT_FALSE(m.on_bytes(data.data(), data.size(), t0));
  EXPECT_EQ(m.next(), input_action::none);
  EXPECT_FALSE(m.writes_messages());
}

TEST_F(SessionMachine, CloseSequenceAndItsDeadline) {
  establish(t0);
  (void) m.wake_request();
  ASSERT_TRUE(m.begin_close(t0 + 1s, 5s));
  EXPECT_FALSE(m.begin_close(t0 + 1s, 5s)) << "one final frame only";
  EXPECT_EQ(m.wake_request(), t0 + 6s);
  EXPECT_TRUE(m.on_output_flushed()) << "final frame left: FIN";
  EXPECT_EQ(m.phase(), session_phase::lingering);
  EXPECT_FALSE(m.on_output_flushed());
  EXPECT_EQ(m.on_timer(t0 + 6s - 1ns).expired, expiry::none);
  EXPECT_EQ(m.on_timer(t0 + 6s).expired, expiry::close);
  EXPECT_TRUE(m.finish());
  EXPECT_EQ(m.phase(), session_phase::closed);
  EXPECT_FALSE(m.finish());
  EXPECT_EQ(m.on_timer(t0 + 60s).expired, expiry::none);
  EXPECT_EQ(m.wake_request(), std::nullopt);
}

TEST_F(SessionMachine, OutputFlushedBeforeClosingIsNoFin) {
  establish(t0);
  EXPECT_FALSE(m.on_output_flushed());
  EXPECT_EQ(m.phase(), session_phase::established);
}

TEST_F(SessionMachine, RefusalBeforeWelcomeGetsAShortGrace) {
  EXPECT_EQ(m.refusal_grace(5s), session_machine::refused_close_grace);
  EXPECT_EQ(m.refusal_grace(100ms), 100ms);
  establish(t0);
  EXPECT_EQ(m.refusal_grace(5s), 5s);
}

// -- drain and eviction --------------------------------------------------------

TEST_F(SessionMachine, DrainClosesConnectionsNotAdmittedYet) {
  EXPECT_EQ(m.on_drain(t0, 5s), drain_action::close);
  session_machine registering{cfg, t0};
  auto data = bytes(hello());
  ASSERT_TRUE(registering.on_bytes(data.data(), data.size(), t0));
  ASSERT_EQ(registering.next(), input_action::register_agent);
  EXPECT_EQ(registering.on_drain(t0, 5s), drain_action::close);
}

TEST_F(SessionMachine, DrainStopsReadingAnEstablishedSession) {
  establish(t0);
  EXPECT_EQ(m.on_drain(t0 + 1s, 5s), drain_action::stop_reading);
  EXPECT_FALSE(m.takes_input());
  EXPECT_TRUE(m.writes_messages());
  EXPECT_EQ(m.on_drain(t0 + 1s, 5s), drain_action::none) << "once";
}

TEST_F(SessionMachine, DrainShortensACloseInProgress) {
  establish(t0);
  ASSERT_TRUE(m.begin_close(t0, 30s));
  EXPECT_EQ(m.wake_request(), t0 + 30s);
  EXPECT_EQ(m.on_drain(t0 + 1s, 2s), drain_action::none);
  EXPECT_EQ(m.wake_request(), t0 + 3s) << "an earlier wake-up for the earlier deadline";
  EXPECT_EQ(m.on_timer(t0 + 3s).expired, expiry::close);
}

TEST_F(SessionMachine, BusyEvictsOnlyConnectionsNotAdmitted) {
  EXPECT_EQ(m.on_busy(), busy_action::refuse_and_finish);
  session_machine refused{cfg, t0};
  ASSERT_TRUE(refused.begin_close(t0, 250ms));
  EXPECT_EQ(refused.on_busy(), busy_action::finish);
  ASSERT_TRUE(refused.finish());
  EXPECT_EQ(refused.on_busy(), busy_action::ignore);
  establish(t0);
  EXPECT_EQ(m.on_busy(), busy_action::ignore);
}

// -- incomplete frames (timeouts.frame) -------------------------------------------

TEST_F(SessionMachine, FrameTimeoutFiresExactlyAtTheDeadline) {
  establish(t0);
  auto frame = bytes(envelope("r"));
  // A slowloris: the frame's bytes trickle in, never complete.
  EXPECT_TRUE(feed(frame.substr(0, 3), t0 + 1s).empty());
  EXPECT_EQ(m.buffered(), 3u);
  EXPECT_EQ(m.wake_request(), t0 + 10s) << "the heartbeat comes first";
  EXPECT_TRUE(feed(frame.substr(3, 2), t0 + 9s).empty());
  EXPECT_EQ(m.last_activity(), t0) << "bytes of an incomplete frame are not activity";
  auto hb = m.on_timer(t0 + 10s);
  EXPECT_EQ(hb.heartbeat_seq, 1u);
  EXPECT_EQ(m.wake_request(), t0 + 16s) << "first byte + timeouts.frame";
  EXPECT_EQ(m.on_timer(t0 + 16s - 1ns).expired, expiry::none);
  auto t = m.on_timer(t0 + 16s);
  EXPECT_EQ(t.expired, expiry::frame);
  EXPECT_EQ(t.elapsed, 15s);
}

TEST_F(SessionMachine, FrameTimeoutCountsFromTheStartOfTheIncompleteFrame) {
  establish(t0);
  auto frame = bytes(envelope("r"));
  EXPECT_TRUE(feed(frame.substr(0, 3), t0 + 1s).empty());
  EXPECT_EQ(m.on_timer(t0 + 10s).heartbeat_seq, 1u);
  // The frame completes 12 s later and the next one begins in the same read.
  EXPECT_EQ(feed(frame.substr(3) + frame.substr(0, 3), t0 + 13s), actions{input_action::relay});
  EXPECT_EQ(m.last_activity(), t0 + 13s);
  EXPECT_EQ(m.on_timer(t0 + 16s).expired, expiry::none) << "the deadline of the first frame";
  EXPECT_EQ(m.wake_request(), t0 + 20s) << "next heartbeat";
  EXPECT_EQ(m.on_timer(t0 + 20s).heartbeat_seq, 2u);
  EXPECT_EQ(m.wake_request(), t0 + 28s) << "13 s + 15 s";
  EXPECT_EQ(m.on_timer(t0 + 28s).expired, expiry::frame);
}

TEST_F(SessionMachine, CompletedFrameClearsTheFrameDeadline) {
  establish(t0);
  auto frame = bytes(envelope("r"));
  EXPECT_TRUE(feed(frame.substr(0, 3), t0 + 1s).empty());
  EXPECT_EQ(feed(frame.substr(3), t0 + 2s), actions{input_action::relay});
  EXPECT_EQ(m.on_timer(t0 + 16s).expired, expiry::none);
}

TEST_F(SessionMachine, IncompleteHelloAlsoTimesOut) {
  cfg.handshake_timeout = 60s;
  session_machine slow{cfg, t0};
  auto h = bytes(hello());
  ASSERT_TRUE(slow.on_bytes(h.data(), 2, t0 + 1s));
  EXPECT_EQ(slow.next(), input_action::none);
  EXPECT_EQ(slow.wake_request(), t0 + 16s);
  EXPECT_EQ(slow.on_timer(t0 + 16s).expired, expiry::frame);
}

// -- heartbeats and idle timeout ---------------------------------------------------

TEST_F(SessionMachine, HeartbeatsFollowTheInterval) {
  establish(t0);
  EXPECT_EQ(m.wake_request(), t0 + 10s);
  EXPECT_EQ(m.on_timer(t0 + 10s - 1ns).heartbeat_seq, 0u);
  for (int i = 1; i <= 2; ++i) {
    // Pongs keep the agent from being idle.
    EXPECT_TRUE(feed(bytes(pong(static_cast<uint64_t>(i))), t0 + i * 10s - 1s).empty());
    auto at = t0 + i * 10s;
    EXPECT_TRUE(m.wants_peer_sample(at));
    auto t = m.on_timer(at);
    EXPECT_EQ(t.heartbeat_seq, static_cast<uint64_t>(i));
    EXPECT_EQ(t.expired, expiry::none);
    EXPECT_EQ(m.wake_request(), at + 10s);
    EXPECT_FALSE(m.wants_peer_sample(at + 1s));
  }
}

TEST_F(SessionMachine, IdleTimeoutFiresExactlyAfterTheSilence) {
  establish(t0);
  EXPECT_EQ(m.on_timer(t0 + 10s).heartbeat_seq, 1u);
  EXPECT_EQ(m.on_timer(t0 + 20s).heartbeat_seq, 2u);
  EXPECT_EQ(m.on_timer(t0 + 30s - 1ns).expired, expiry::none);
  auto t = m.on_timer(t0 + 30s);
  EXPECT_EQ(t.expired, expiry::idle);
  EXPECT_EQ(t.elapsed, 30s);
  EXPECT_EQ(t.heartbeat_seq, 0u) << "no heartbeat to a connection being closed";
}

TEST_F(SessionMachine, ActivityPushesTheIdleDeadline) {
  establish(t0);
  EXPECT_TRUE(feed(bytes(pong(1)), t0 + 25s).empty());
  EXPECT_EQ(m.on_timer(t0 + 30s).expired, expiry::none);
  EXPECT_EQ(m.on_timer(t0 + 55s - 1ns).expired, expiry::none);
  auto t = m.on_timer(t0 + 55s);
  EXPECT_EQ(t.expired, expiry::idle);
  EXPECT_EQ(t.elapsed, 30s);
}

TEST_F(SessionMachine, APeerReadingItsOutputIsNotIdle) {
  establish(t0);
  peer_sample reading;
  reading.reading_output = true;
  EXPECT_EQ(m.on_timer(t0 + 30s, reading).expired, expiry::none);
  EXPECT_EQ(m.last_activity(), t0 + 30s);
  EXPECT_EQ(m.on_timer(t0 + 60s).expired, expiry::idle);
}

TEST_F(SessionMachine, SilenceWhileTheServerDoesNotReadIsNotIdle) {
  establish(t0);
  peer_sample paused;
  paused.input_paused = true;
  EXPECT_EQ(m.on_timer(t0 + 30s, paused).expired, expiry::none);
  EXPECT_EQ(m.on_timer(t0 + 60s).expired, expiry::idle);
}

TEST_F(SessionMachine, IdleTimeoutZeroDisablesIt) {
  cfg.idle_timeout = 0s;
  session_machine quiet{cfg, t0};
  auto h = bytes(hello());
  ASSERT_TRUE(quiet.on_bytes(h.data(), h.size(), t0));
  ASSERT_EQ(quiet.next(), input_action::register_agent);
  ASSERT_TRUE(quiet.on_welcome(t0));
  for (int i = 1; i <= 100; ++i)
    EXPECT_EQ(quiet.on_timer(t0 + i * 10s).expired, expiry::none);
}

TEST_F(SessionMachine, HeartbeatsAndIdleChecksStopWhenDraining) {
  establish(t0);
  ASSERT_EQ(m.on_drain(t0 + 1s, 5s), drain_action::stop_reading);
  EXPECT_EQ(m.wake_request(), std::nullopt) << "nothing left to wake for";
  EXPECT_FALSE(m.wants_peer_sample(t0 + 40s));
  auto t = m.on_timer(t0 + 40s);
  EXPECT_EQ(t.heartbeat_seq, 0u);
  EXPECT_EQ(t.expired, expiry::none);
}

TEST_F(SessionMachine, EarlyAndRepeatedWakeUpsAreHarmless) {
  establish(t0);
  for (int i = 0; i < 5; ++i) {
    auto t = m.on_timer(t0 + 1s);
    EXPECT_EQ(t.expired, expiry::none);
    EXPECT_EQ(t.heartbeat_seq, 0u);
  }
  EXPECT_EQ(m.on_timer(t0 + 10s).heartbeat_seq, 1u);
  EXPECT_EQ(m.on_timer(t0 + 10s).heartbeat_seq, 0u) << "once per interval";
}

// -- the relay path ------------------------------------------------------------------

TEST_F(SessionMachine, RelayPathDoesNotAllocate) {
  establish(t0);
  std::string data;
  for (int i = 0; i < 1000; ++i)
    data += bytes(envelope("weather/eu", "payload " + std::to_string(i)));
  ASSERT_TRUE(m.on_bytes(data.data(), data.size(), t0 + 1s)); // the read buffer may grow
  // The counter sees allocations (the library's as well as ours).
  counting = true;
  allocations = 0;
  std::string probe(100, 'x');
  counting = false;
  ASSERT_EQ(allocations.load(), 1u);
  size_t relayed = 0;
  counting = true;
  allocations = 0;
  for (auto a = m.next(); a == input_action::relay; a = m.next())
    ++relayed;
  counting = false;
  EXPECT_EQ(relayed, 1000u);
  EXPECT_EQ(allocations.load(), 0u);
}

// -- Summoner connections (the compatibility listener) --------------------------

class SummonerMachine : public ::testing::Test {
protected:
  server_config cfg = [] {
    auto c = test_config();
    c.summoner_idle_timeout = 60s;
    c.summoner_max_line_bytes = 1024;
    return c;
  }();
  time_point t0{std::chrono::hours{1}};
  session_machine m{cfg, t0, summoner_peer{"127.0.0.1:40000"}};

  void establish() {
    ASSERT_EQ(m.phase(), session_phase::awaiting_registration) << "no Hello: it registers at once";
    ASSERT_TRUE(m.on_welcome(t0));
  }

  /// Feeds `data` and returns the payloads relayed and the codes warned.
  std::vector<std::string> feed(std::string_view data, time_point at) {
    std::vector<std::string> out;
    if (!m.on_bytes(data.data(), data.size(), at))
      return out;
    drain(out);
    return out;
  }

  void drain(std::vector<std::string>& out) {
    for (auto a = m.next(); a != input_action::none; a = m.next()) {
      if (a == input_action::relay)
        out.emplace_back(m.envelope().payload);
      else if (a == input_action::warn)
        out.push_back("warn:" + std::string{m.refusal().code});
      else
        out.push_back("unexpected");
    }
  }
};

TEST_F(SummonerMachine, LinesBecomeEnvelopesOnTheConfiguredRoute) {
  establish();
  auto got = feed("hello\r\n{\"x\": 1}\nsplit", t0 + 1s);
  ASSERT_EQ(got, (std::vector<std::string>{"hello", "{\"x\": 1}"}));
  got = feed(" line\n", t0 + 2s);
  ASSERT_EQ(got, std::vector<std::string>{"split line"});
  EXPECT_EQ(m.envelope().route, "summoner");
  v1::Envelope env;
  ASSERT_TRUE(env.ParseFromArray(m.envelope().envelope.data(),
                                 static_cast<int>(m.envelope().envelope.size())));
  EXPECT_EQ(env.payload(), "split line");
  EXPECT_EQ(env.content_type(), "text/plain; charset=utf-8");
  EXPECT_EQ(env.headers().at("summoner-remote-addr"), "127.0.0.1:40000");
}

TEST_F(SummonerMachine, InputWaitsForTheRegistration) {
  EXPECT_TRUE(feed("early\n", t0).empty()) << "nothing is relayed before Welcome";
  ASSERT_TRUE(m.on_welcome(t0 + 1ms));
  std::vector<std::string> got;
  drain(got);
  EXPECT_EQ(got, std::vector<std::string>{"early"});
}

TEST_F(SummonerMachine, TheLastLineWithoutNewlineIsRelayedAtEof) {
  establish();
  EXPECT_TRUE(feed("no newline", t0 + 1s).empty());
  m.on_eof(t0 + 2s);
  std::vector<std::string> got;
  drain(got);
  EXPECT_EQ(got, std::vector<std::string>{"no newline"});
  drain(got);
  EXPECT_EQ(got.size(), 1u) << "taken once";
}

TEST_F(SummonerMachine, InvalidUtf8AndLongLinesAreWarnedAboutAndTheConnectionStays) {
  establish();
  auto got = feed("bad \xff\xfe\n" + std::string(5000, 'x') + "\nafter\n", t0 + 1s);
  EXPECT_EQ(got,
            (std::vector<std::string>{"warn:invalid_utf8", "warn:message_too_large", "after"}));
  EXPECT_EQ(m.phase(), session_phase::established);
  EXPECT_LE(m.buffered(), cfg.summoner_max_line_bytes);
}

TEST_F(SummonerMachine, ALineThatWouldRelayTooLongIsRefused) {
  establish();
  // Fits the splitter, but each control character becomes \u00XX: six bytes.
  auto got = feed(std::string(500, '\x01') + "\n", t0 + 1s);
  EXPECT_EQ(got, std::vector<std::string>{"warn:message_too_large"});
}

TEST_F(SummonerMachine, AShortLineAfterALongOneIsRelayedIntact) {
  cfg.summoner_max_line_bytes = 1 << 20;
  session_machine big{cfg, t0, summoner_peer{"127.0.0.1:40002"}};
  ASSERT_TRUE(big.on_welcome(t0));
  auto data = std::string(200 * 1024, 'a') + "\nshort\n";
  ASSERT_TRUE(big.on_bytes(data.data(), data.size(), t0 + 1s));
  ASSERT_EQ(big.next(), input_action::relay);
  EXPECT_EQ(big.envelope().payload.size(), 200u * 1024);
  ASSERT_EQ(big.next(), input_action::relay);
  // The long line's buffer is given back; the view must not point into it.
  EXPECT_EQ(big.envelope().payload, "short");
  v1::Envelope env;
  ASSERT_TRUE(env.ParseFromArray(big.envelope().envelope.data(),
                                 static_cast<int>(big.envelope().envelope.size())));
  EXPECT_EQ(env.payload(), "short");
}

TEST_F(SummonerMachine, NoHeartbeatsAndTheSummonerIdleTimeout) {
  establish();
  auto t = m.on_timer(t0 + 59s);
  EXPECT_EQ(t.heartbeat_seq, 0u) << "Summoner has no ping";
  EXPECT_EQ(t.expired, expiry::none);
  t = m.on_timer(t0 + 60s);
  EXPECT_EQ(t.expired, expiry::idle);
}

TEST_F(SummonerMachine, IdleTimeoutZeroMeansNever) {
  cfg.summoner_idle_timeout = 0s;
  session_machine quiet{cfg, t0, summoner_peer{"127.0.0.1:40001"}};
  ASSERT_TRUE(quiet.on_welcome(t0));
  EXPECT_FALSE(quiet.wake_request().has_value());
  EXPECT_EQ(quiet.on_timer(t0 + 24h).expired, expiry::none);
}

} // namespace
