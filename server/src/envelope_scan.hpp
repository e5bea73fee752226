#pragma once

// Fast path for relaying envelopes without a protobuf round trip.
//
// A relayed message reaches receivers as Frame{delivery = Delivery{
// message_id, sender, relayed_unix_nanos, envelope}}: the server's stamp,
// then the sender's envelope bytes exactly as they came. Any protobuf
// library reads it; nothing needs merging.
//
// The scanner accepts only the plain shape Frame{envelope{...}} with the
// wire types of wire.proto and valid UTF-8 in every string field (which a
// receiver's parser checks). Anything else returns false, and the caller
// falls back to the full parser (proto::decode_frame), which relays other
// shapes (e.g. two envelope fields, re-encoded canonically) and refuses
// every frame with a field of the wrong wire type (proto/wire_check.hpp):
// such a field must never be read as "absent", or a direct message would
// become a broadcast.

#include <cstdint>
#include <string_view>
#include <vector>

namespace convoke::server {

struct envelope_view {
  /// The envelope's bytes inside the frame body.
  std::string_view envelope;
  std::string_view recipient;
  std::string_view route;
  std::string_view trace_id;
  /// The value of a `traceparent` header (W3C trace context), unchecked.
  std::string_view traceparent;
  std::string_view payload;
  /// A `summoner-remote-addr` header is present: only the server sets it,
  /// for lines from Summoner connections (a Convoke agent's is refused).
  bool summoner_remote_addr = false;
  int64_t sent_ns = 0;
  uint64_t client_seq = 0;
  uint64_t request_id = 0;
  uint64_t in_reply_to = 0;
};

/// Scans a frame body (without the length prefix). True if it is exactly a
/// well-formed Frame{envelope} that can be relayed as is.
bool scan_envelope_frame(std::string_view body, envelope_view& out);

/// Appends the length-prefixed Delivery frame for `envelope` (bytes of an
/// Envelope) stamped with `message_id`, `sender` and `relayed_ns`. Returns
/// the offset in `out` where the envelope's bytes start.
size_t append_delivery_frame(std::vector<char>& out, std::string_view envelope, uint64_t message_id,
                             std::string_view sender, int64_t relayed_ns);

/// The most a Delivery frame (length prefix included) adds to the envelope
/// it carries, for a sender name of `sender_size` bytes.
size_t delivery_overhead(size_t sender_size);

} // namespace convoke::server
