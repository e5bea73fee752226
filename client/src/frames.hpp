#pragma once

// Protocol frames as the SDK builds and reads them (CAF-free; shared by the
// agent actor and the blocking client).

#include <cstdint>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <system_error>

#include "convoke/client/message.hpp"
#include "convoke/client/options.hpp"
#include "convoke/proto/codec.hpp"

namespace convoke::detail {

/// The bytes of a hex string; empty if it is not hex (odd length, other
/// characters).
std::string hex_to_bytes(std::string_view hex);

inline constexpr const char* sdk_name = "convoke-cpp";

/// Largest frame the SDK accepts from a server: the largest frame limit a
/// server may set (64 MiB) plus room for the stamp it adds to relayed frames.
inline constexpr uint32_t max_inbound_frame = (64u << 20) + 64 * 1024;

/// Checks the addressing of an outgoing message (empty = no recipient/route).
std::error_code check_addressing(std::string_view recipient, std::string_view route);

/// Builds an outgoing Envelope frame. The trace id comes from `so.trace_id`
/// (32 hex characters) or is new, from the CSPRNG (trace ids are visible to
/// receivers, so they must not reveal a generator's state).
v1::Frame make_envelope(std::string_view recipient, std::string_view route,
                        std::string_view payload, const send_options& so, uint64_t client_seq,
                        uint64_t request_id, uint64_t in_reply_to);

/// Builds a Hello frame.
v1::Frame make_hello(const std::string& name, const client_options& opts,
                     const std::set<std::string>& routes, const std::string& resume_token);

/// Builds the answer to a server heartbeat.
v1::Frame make_heartbeat_reply(uint64_t seq);

/// Converts a received Envelope (moving its strings out).
/// A relayed message from its Delivery frame: the server's stamp (id, sender,
/// relay time) from the Delivery, the rest from the sender's envelope (whose
/// own server-owned fields are ignored).
message to_message(v1::Delivery& d);

/// Converts a received Notice.
notice to_notice(const v1::Notice& n);

/// Session facts from a Welcome.
session_info to_session(const v1::Welcome& w, bool reconnected);

} // namespace convoke::detail
