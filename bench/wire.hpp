#pragma once

// Minimal client-side wire handling for the load generator: just enough of
// the Convoke and NATS protocols to publish, subscribe and read payloads,
// written to cost as little CPU as possible so that the server, not the
// generator, is what gets measured.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace convoke::bench {

enum class protocol_kind { convoke, nats };

/// Payload layout shared by both protocols: sequence number, send time
/// (CLOCK_MONOTONIC ns), publisher index, then padding.
struct payload_header {
  uint64_t seq;
  int64_t sent_ns;
  uint32_t publisher;
};
inline constexpr size_t min_payload = sizeof(uint64_t) * 2 + sizeof(uint32_t);
/// The publisher index of warm-up probes (not counted, not sequence-checked):
/// a cluster run waits until every receiver has had one, so that interest
/// has propagated between the nodes before anything is measured.
inline constexpr uint32_t probe_publisher = 0xffffffff;

/// Writes the header into the first bytes of `dst` (dst has >= min_payload).
void write_payload_header(char* dst, const payload_header& h);
payload_header read_payload_header(const char* src);

// -- Convoke ------------------------------------------------------------------

/// Appends a length-prefixed Frame{Envelope{recipient, route, payload}}.
void convoke_append_envelope(std::string& out, std::string_view recipient, std::string_view route,
                             std::string_view payload);

/// Appends a Frame{Hello{version 1, name, routes}}.
/// The protocol version the generator announces in Hello (2; 1 to measure a
/// version 1 server, whose relayed frames convoke_parse also understands).
inline uint32_t convoke_hello_version = 2;

void convoke_append_hello(std::string& out, std::string_view name, std::string_view route = {});

/// The same with any number of route subscriptions (patterns allowed).
void convoke_append_hello(std::string& out, std::string_view name,
                          const std::vector<std::string>& routes);

/// Appends a Frame{Heartbeat{reply_to = seq}}.
void convoke_append_heartbeat_reply(std::string& out, uint64_t seq);

/// Appends Goodbye{code = "client_exit"}.
void convoke_append_goodbye(std::string& out);

/// What the parser found in one frame.
struct convoke_event {
  enum kind_t { other, envelope, welcome, heartbeat, notice, goodbye } kind = other;
  std::string_view payload;   // envelope payload
  uint64_t heartbeat_seq = 0; // heartbeat asking for a reply
  std::string_view text;      // notice text; welcome: the server's name
};

/// Parses complete frames in [data, data+size); returns bytes consumed.
/// Returns SIZE_MAX on a framing error.
size_t convoke_parse(const char* data, size_t size,
                     const std::function<void(const convoke_event&)>& on_event);

// -- NATS (text protocol subset: INFO, CONNECT, PUB, SUB, MSG, PING, PONG) ----

void nats_append_connect(std::string& out, std::string_view name);
void nats_append_sub(std::string& out, std::string_view subject, int sid);
void nats_append_pub(std::string& out, std::string_view subject, std::string_view payload);

struct nats_event {
  enum kind_t { other, msg, ping, pong, err } kind = other;
  std::string_view payload;
  std::string_view text;
};

/// Parses complete protocol lines/messages; returns bytes consumed.
size_t nats_parse(const char* data, size_t size,
                  const std::function<void(const nats_event&)>& on_event);

} // namespace convoke::bench
