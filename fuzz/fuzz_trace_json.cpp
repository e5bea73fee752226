// fuzz_trace_json: trace::parse_json (the lines `convoke trace` reads from
// trace files, operator input) and parse_timestamp. The input is one line.
// Checks: the result is an event or an error text, never both or neither;
// an event's kind is one of the contract's names; a parsed timestamp
// formats back to a time that parses again to the same microsecond.

#include <cstdint>
#include <string_view>

#include "check.hpp"
#include "convoke/common/text.hpp"
#include "convoke/common/trace_event.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view line{reinterpret_cast<const char*>(data), size};
  auto r = convoke::trace::parse_json(line);
  FUZZ_CHECK(r.ev.has_value() != !r.error.empty());
  if (r.ev)
    FUZZ_CHECK(convoke::trace::kind_from_string(convoke::trace::to_string(r.ev->what)).has_value());
  if (auto ts = convoke::parse_timestamp(line)) {
    auto again = convoke::parse_timestamp(convoke::format_timestamp(*ts));
    FUZZ_CHECK(again && *again / 1000 == *ts / 1000);
  }
  return 0;
}
