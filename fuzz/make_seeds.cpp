// fuzz_make_seeds: writes the seed corpora in fuzz/corpus/<target>/ with the
// real codec, so that the seeds are valid frames (plus a few deliberately
// broken ones). Run from the fuzz build: build-fuzz/bin/fuzz_make_seeds fuzz/corpus

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "convoke/proto/codec.hpp"
#include "convoke/server/config.hpp"
#include "envelope_scan.hpp"

namespace {

using namespace convoke;
namespace fs = std::filesystem;

fs::path root;

void put(const std::string& target, const std::string& name, const std::string& bytes) {
  auto dir = root / target;
  fs::create_directories(dir);
  std::ofstream{dir / name, std::ios::binary} << bytes;
}

std::string body(const v1::Frame& f) {
  return proto::encode_frame(f).substr(proto::header_size);
}

std::string prefixed(const std::string& b) {
  std::string out(proto::header_size, '\0');
  proto::write_header(out.data(), static_cast<uint32_t>(b.size()));
  return out + b;
}

v1::Frame hello(const std::string& name, std::vector<std::string> routes = {},
                uint32_t version = proto::protocol_version) {
  v1::Frame f;
  auto h = f.mutable_hello();
  h->set_protocol_version(version);
  h->set_agent_name(name);
  h->set_role("planner");
  for (auto& r : routes)
    h->add_routes(r);
  h->set_sdk_name("convoke-cpp");
  h->set_sdk_version("0.1.0");
  return f;
}

v1::Frame envelope(const std::string& recipient, const std::string& route,
                   const std::string& payload) {
  v1::Frame f;
  auto e = f.mutable_envelope();
  e->set_recipient(recipient);
  e->set_route(route);
  e->set_payload(payload);
  return f;
}

std::vector<std::pair<std::string, std::string>> frame_bodies() {
  std::vector<std::pair<std::string, std::string>> out;
  auto add
    = [&](std::string name, const v1::Frame& f) { out.emplace_back(std::move(name), body(f)); };
  add("hello", hello("alice", {"weather", "news/eu"}));
  auto h = hello("bob");
  h.mutable_hello()->set_token("s3cret-token");
  h.mutable_hello()->set_resume_token("0123456789abcdef");
  add("hello-token", h);
  add("hello-anonymous", hello(""));
  add("hello-version-1", hello("carol", {}, 1)); // an old client
  add("hello-bad-name", hello("bad name!", {"ok"}));
  add("hello-bad-route", hello("dave", {"has space"}));
  add("hello-many-routes", hello("erin", {"a", "b", "c", "d", "e"}));
  add("envelope-direct", envelope("bob", "", "hi"));
  add("envelope-broadcast-route", envelope("", "weather", "23.0C"));
  add("envelope-unicode", envelope("Bj\xc3\xb8rn", "", "\xe2\x82\xac\xf0\x9f\x98\x80"));
  auto full = envelope("calculator", "math/convert", "{\"c\":23.0}");
  auto e = full.mutable_envelope();
  e->set_message_id(42);
  e->set_sender("spoofed");
  e->set_content_type("application/json");
  (*e->mutable_headers())["k"] = "v";
  (*e->mutable_headers())["unit"] = "celsius";
  e->set_trace_id(
    std::string("\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10", 16));
  e->set_sent_unix_nanos(1'764'000'000'000'000'000);
  e->set_relayed_unix_nanos(7);
  e->set_client_seq(9);
  e->set_request_id(UINT64_MAX);
  e->set_in_reply_to(3);
  add("envelope-full", full);
  auto negative = envelope("bob", "", "");
  negative.mutable_envelope()->set_sent_unix_nanos(-1);
  add("envelope-negative-time", negative);
  v1::Frame f;
  f.mutable_welcome()->set_agent_name("alice");
  f.mutable_welcome()->mutable_limits()->set_max_frame_bytes(1 << 20);
  add("welcome", f);
  f.Clear();
  f.mutable_heartbeat()->set_seq(5);
  add("heartbeat", f);
  f.Clear();
  f.mutable_subscribe()->add_routes("weather");
  add("subscribe", f);
  f.Clear();
  f.mutable_unsubscribe()->add_routes("weather");
  add("unsubscribe", f);
  f.Clear();
  f.mutable_notice()->set_severity(v1::Notice::WARNING);
  f.mutable_notice()->set_code("unknown_recipient");
  add("notice", f);
  f.Clear();
  f.mutable_goodbye()->set_code("client_exit");
  add("goodbye", f);
  // Hand-made shapes: the scanner refuses them, the full parser decides.
  auto direct = body(envelope("bob", "", "hi"));
  out.emplace_back("raw-two-envelopes", direct + body(envelope("", "news", "x")));
  out.emplace_back("raw-recipient-as-varint", std::string("\x1a\x02\x18\x05", 4));
  out.emplace_back("raw-route-bad-utf8", std::string("\x1a\x04\x22\x02\xc3\x28", 6));
  out.emplace_back("raw-unknown-field", direct + std::string("\xb8\x06\x01", 3));
  out.emplace_back("raw-envelope-unknown-inner", std::string("\x1a\x05\x98\x06\x01\x48\x00", 7));
  out.emplace_back("raw-empty-envelope", std::string("\x1a\x00", 2));
  out.emplace_back("raw-long-tag", std::string("\x9a\x80\x00\x04\x1a\x02hi", 8));
  out.emplace_back("raw-group", std::string("\x1a\x02\x0b\x0c", 4));
  out.emplace_back("raw-headers-bad-entry", std::string("\x1a\x04\x3a\x02\x08\x01", 6));
  return out;
}

/// Byte 0 of a splitter seed: limit index `first`, raised to index `later`
/// after the first frame (see fuzz_frame_splitter.cpp).
char selector(int first, int later) {
  for (int b = 0; b < 256; ++b)
    if (b % 6 == first && ((b & 0x80) ? (b >> 3) % 6 : first) == later)
      return static_cast<char>(b);
  return 0;
}

void splitter_seeds(const std::vector<std::pair<std::string, std::string>>& bodies) {
  std::string all;
  for (auto& [name, b] : bodies)
    all += prefixed(b);
  std::string hello_then
    = prefixed(bodies[0].second) + prefixed(bodies[7].second) + prefixed(bodies[8].second);
  std::vector<char> relayed;
  server::envelope_view view;
  if (server::scan_envelope_frame(bodies[7].second, view))
    server::append_delivery_frame(relayed, view.envelope, 1, "alice", 1'764'000'000'000'000'000);
  std::string relayed_s(relayed.begin(), relayed.end());
  auto header = [](uint32_t n) {
    std::string h(proto::header_size, '\0');
    proto::write_header(h.data(), n);
    return h;
  };
  // name, byte 0, read sizes (each + 1), stream
  put("fuzz_frame_splitter", "all-one-read", std::string{selector(4, 4), '\0'} + all);
  put("fuzz_frame_splitter", "all-tiny-reads", std::string{selector(4, 4), 4, 0, 1, 2, 3} + all);
  put("fuzz_frame_splitter", "all-odd-reads", std::string{selector(4, 4), 3, 6, 60, 16} + all);
  put("fuzz_frame_splitter", "handshake-then-raised",
      std::string{selector(1, 4), 2, 9, 30} + hello_then);
  put("fuzz_frame_splitter", "too-large-first", std::string{selector(0, 0), 1, 2} + hello_then);
  put("fuzz_frame_splitter", "zero-length",
      std::string{selector(4, 4), 1, 5} + prefixed(bodies[0].second) + header(0) + hello_then);
  put("fuzz_frame_splitter", "huge-prefix",
      std::string{selector(3, 3), 0} + prefixed(bodies[7].second) + header(0xFFFFFFF0u) + "abc");
  put("fuzz_frame_splitter", "unlimited-partial",
      std::string{selector(5, 5), 1, 7} + header(100000) + "partial");
  put("fuzz_frame_splitter", "relayed", std::string{selector(4, 4), 1, 3} + relayed_s + relayed_s);
  put("fuzz_frame_splitter", "undecodable",
      std::string{selector(2, 2), 0} + prefixed("\xff\xff") + prefixed(bodies[7].second));
}

void config_seeds() {
  auto put_cfg
    = [](const std::string& name, const std::string& text) { put("fuzz_config", name, text); };
  put_cfg("sample.toml", server::sample_config());
  put_cfg("dump.toml", server::dump_config(server::server_config{}));
  put_cfg("small.toml",
          "[listen]\nhost = \"0.0.0.0\"\nport = 7421\n\n[auth]\ntoken = \"s3cret\"\n\n"
          "[limits]\nmax-frame-bytes = \"64KiB\"\nmax-routes = 8\n\n"
          "[timeouts]\nidle = \"0\"\nheartbeat-interval = \"500ms\"\n\n"
          "[flow]\nslow-consumer = \"drop\"\noutput-high-water = 65536\n\n"
          "[trace]\nenabled = false\nformat = \"json\"\n");
  put_cfg("errors.toml", "top = 1\n[listen]\nport = -1\nnope = true\nhost = [1, 2]\n"
                         "[timeouts]\nidle = \"5 parsecs\"\n[log]\nlevel = \"loud\"\n"
                         "[flow.deep]\nx = 1\n");
  put_cfg("invalid-combination.toml", "[limits]\nmax-frame-bytes = \"8MiB\"\n"
                                      "[timeouts]\nheartbeat-interval = \"1m\"\nidle = \"30s\"\n"
                                      "[server]\nname = \"\"\n");
  put_cfg("syntax-error.toml", "[listen\nport = 1\n");
  put_cfg("escapes.toml", "[server]\nname = \"tab\\there \\u00e9 \\\"q\\\"\"\n"
                          "[auth]\ntoken = '''multi\nline'''\n");
  using namespace std::string_literals;
  put_cfg("argv-dump", "--listen.port\0"s
                       "8080\0--auth.token\0secret\0--dump-config"s);
  put_cfg("argv-check", "-p\0"s
                        "0\0--timeouts.idle\0"s
                        "0\0--check-config"s);
  put_cfg("argv-help", "--help"s);
  put_cfg("argv-version", "--version"s);
  put_cfg("argv-sample", "--print-sample-config"s);
  put_cfg("argv-missing-config", "--config\0missing.toml\0--check-config"s);
  put_cfg("argv-invalid", "--limits.max-frame-bytes\0"s
                          "64KiB\0--flow.output-high-water\0"s
                          "1KiB\0--check-config"s);
  put_cfg("argv-bad-path", "--log.file\0/nonexistent/dir/x.log\0--trace.file\0"s
                           "no/such/dir/t\0--check-config"s);
  put_cfg("argv-unknown", "--nope\0--listen.port\0"s
                          "99999\0extra"s);
}

/// fuzz_session_machine scripts: each frame arrives in reads of up to 64
/// bytes (step byte ((n - 1) << 2) | 2), with time steps (byte k << 2)
/// between some of them.
void session_seeds(const std::vector<std::pair<std::string, std::string>>& bodies) {
  auto body = [&](const std::string& name) {
    for (auto& [n, b] : bodies)
      if (n == name)
        return prefixed(b);
    return std::string{};
  };
  auto reads = [](const std::string& stream, size_t chunk) {
    std::string out;
    for (size_t i = 0; i < stream.size(); i += chunk) {
      auto n = std::min(chunk, stream.size() - i);
      out += static_cast<char>(((n - 1) << 2) | 2);
      out += stream.substr(i, n);
    }
    return out;
  };
  auto wait = [](int steps) { return std::string(1, static_cast<char>(steps << 2)); };
  auto session = body("hello") + body("subscribe") + body("envelope-direct")
                 + body("envelope-broadcast-route") + body("heartbeat") + body("unsubscribe")
                 + body("envelope-full") + body("goodbye");
  put("fuzz_session_machine", "session-in-big-reads", reads(session, 64));
  put("fuzz_session_machine", "session-in-tiny-reads", reads(session, 3));
  put("fuzz_session_machine", "session-with-waits",
      reads(body("hello"), 64) + wait(2) + reads(body("envelope-direct"), 64) + wait(10) + wait(40)
        + reads(body("heartbeat"), 64) + std::string(1, '\x05') + wait(63));
  put("fuzz_session_machine", "silent-until-handshake-timeout", wait(63) + wait(63));
  put("fuzz_session_machine", "envelope-before-hello",
      reads(body("envelope-direct") + body("hello"), 64));
  put("fuzz_session_machine", "two-hellos", reads(body("hello") + body("hello-token"), 64));
  put("fuzz_session_machine", "bad-hello", reads(body("hello-bad-route"), 64));
  put("fuzz_session_machine", "slowloris",
      reads(body("hello"), 64) + reads(body("envelope-full").substr(0, 9), 64) + wait(30));
}

} // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: fuzz_make_seeds <corpus-dir>\n";
    return 2;
  }
  root = argv[1];
  auto bodies = frame_bodies();
  for (auto& [name, b] : bodies) {
    put("fuzz_envelope_scan", name, b);
    if (name.starts_with("hello") || name.starts_with("envelope-direct"))
      put("fuzz_hello", name, b);
  }
  // Hello bodies without the Frame wrapper, and raw rule inputs.
  put("fuzz_hello", "bare-hello", hello("alice", {"weather"}).hello().SerializeAsString());
  put("fuzz_hello", "rules-slices",
      std::string("\x06"
                  "alice.b-1:x@y weather/eu"));
  splitter_seeds(bodies);
  session_seeds(bodies);
  config_seeds();
  return 0;
}
