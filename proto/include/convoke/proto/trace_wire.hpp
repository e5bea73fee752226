#pragma once

/// @file
/// Trace events on the wire (TraceEvent frames of the live tap): conversion
/// between `convoke::trace::event` and `convoke.v1.TraceEvent`, and the kind
/// names both use. Shared by the server (encoding) and the SDK (decoding).

#include <optional>
#include <string_view>

#include "convoke/common/trace_event.hpp"
#include "convoke/v1/wire.pb.h"

namespace convoke::proto {

/// The wire name of a kind ("relay", "dropped", ...): the names of JSON trace
/// lines (trace::to_string).
std::string_view trace_kind_name(trace::kind k) noexcept;

/// The kind called `name`; nullopt for an unknown name.
std::optional<trace::kind> trace_kind_from_name(std::string_view name) noexcept;

/// Copies `ev` into `out` (which is cleared first).
void to_wire(const trace::event& ev, v1::TraceEvent& out);

/// The event of a TraceEvent; nullopt for an unknown kind (a newer server).
std::optional<trace::event> from_wire(const v1::TraceEvent& in);

} // namespace convoke::proto
