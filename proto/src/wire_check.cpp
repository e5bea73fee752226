#include "convoke/proto/wire_check.hpp"

#include <google/protobuf/descriptor.h>

#include "convoke/proto/wire_format.hpp"

namespace convoke::proto {

namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using namespace wire;

constexpr int max_depth = 32;

/// The wire type a field of `type` is encoded with (unpacked).
uint32_t wire_type_of(FieldDescriptor::Type type) {
  switch (type) {
  case FieldDescriptor::TYPE_DOUBLE:
  case FieldDescriptor::TYPE_FIXED64:
  case FieldDescriptor::TYPE_SFIXED64:
    return fixed64_type;
  case FieldDescriptor::TYPE_FLOAT:
  case FieldDescriptor::TYPE_FIXED32:
  case FieldDescriptor::TYPE_SFIXED32:
    return fixed32_type;
  case FieldDescriptor::TYPE_STRING:
  case FieldDescriptor::TYPE_BYTES:
  case FieldDescriptor::TYPE_MESSAGE:
    return length_type;
  case FieldDescriptor::TYPE_GROUP:
    return 3; // never matches: next_field refuses groups
  default:
    return varint_type; // integers, bool, enum
  }
}

/// A packed run of `element_type` values.
bool packed_ok(std::string_view run, uint32_t element_type) {
  switch (element_type) {
  case fixed64_type:
    return run.size() % 8 == 0;
  case fixed32_type:
    return run.size() % 4 == 0;
  default: {
    auto p = run.data();
    auto end = p + run.size();
    uint64_t v = 0;
    while (p < end)
      if (!get_varint(p, end, v))
        return false;
    return true;
  }
  }
}

bool conforms_at(std::string_view bytes, const Descriptor& type, int depth) {
  if (depth > max_depth)
    return false;
  auto p = bytes.data();
  auto end = p + bytes.size();
  field f;
  while (p < end) {
    if (!next_field(p, end, f)) // malformed, groups, invalid wire types
      return false;
    auto fd = type.FindFieldByNumber(static_cast<int>(f.number));
    if (fd == nullptr)
      continue; // unknown: tolerated, as protobuf does
    auto expected = wire_type_of(fd->type());
    if (f.type != expected) {
      if (fd->is_packable() && f.type == length_type && packed_ok(f.bytes, expected))
        continue;
      return false;
    }
    if (fd->type() == FieldDescriptor::TYPE_STRING && !valid_utf8(f.bytes))
      return false;
    if (fd->type() == FieldDescriptor::TYPE_MESSAGE
        && !conforms_at(f.bytes, *fd->message_type(), depth + 1))
      return false;
  }
  return true;
}

} // namespace

bool conforms(std::string_view bytes, const Descriptor& type) {
  return conforms_at(bytes, type, 0);
}

} // namespace convoke::proto
