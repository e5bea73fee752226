#pragma once

// Fast path for relaying envelopes without a protobuf round trip.
//
// A relayed frame is the sender's own frame bytes followed by a second
// `Frame.envelope` field that carries the server-owned fields (message_id,
// sender, relayed_unix_nanos). Protobuf merges repeated occurrences of a
// message field, and for scalar and string fields the last value wins, so
// receivers see the stamped values whatever the sender put there.
//
// The scanner accepts only the plain shape Frame{envelope{...}} with the
// wire types of wire.proto and valid UTF-8 in every string field (which a
// receiver's parser checks). Anything else returns false, and the caller
// falls back to the full parser (proto::decode_frame), which relays other
// shapes (e.g. two envelope fields) and refuses every frame with a field of
// the wrong wire type (proto/wire_check.hpp): such a field must never be
// read as "absent", or a direct message would become a broadcast.

#include <cstdint>
#include <string_view>
#include <vector>

namespace convoke::server {

struct envelope_view {
  std::string_view recipient;
  std::string_view route;
  std::string_view trace_id;
  std::string_view payload;
  int64_t sent_ns = 0;
  uint64_t client_seq = 0;
  uint64_t request_id = 0;
};

/// Scans a frame body (without the length prefix). True if it is exactly a
/// well-formed Frame{envelope} that can be relayed as is.
bool scan_envelope_frame(std::string_view body, envelope_view& out);

/// Appends the relayed frame: a new length prefix, `body`, and the server's
/// stamp. Returns the offset in `out` where `body` starts.
size_t append_relayed_frame(std::vector<char>& out, std::string_view body, uint64_t message_id,
                            std::string_view sender, int64_t relayed_ns);

} // namespace convoke::server
