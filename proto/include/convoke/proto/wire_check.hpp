#pragma once

/// @file
/// Strict schema check of encoded protobuf messages, driven by the generated
/// descriptors. Protobuf's own parser keeps a known field that arrives with
/// another wire type as an *unknown* field, so the typed field reads as
/// empty: a `recipient` sent as a varint would turn a direct message into a
/// broadcast. Convoke refuses such input instead (`frame_undecodable`).

#include <string_view>

namespace google::protobuf {
class Descriptor;
}

namespace convoke::proto {

/// True if `bytes` is a well-formed encoding of `type` in which every known
/// field has the wire type of its declared type (packed encoding allowed for
/// repeated numbers), every `string` is valid UTF-8, and every nested
/// message passes the same check. Unknown fields are allowed except groups
/// (Convoke's schema has none). Nesting deeper than 32 levels is refused.
bool conforms(std::string_view bytes, const google::protobuf::Descriptor& type);

} // namespace convoke::proto
