#pragma once

// Files of the web view built into the binary (server/web/, turned into a
// byte array at build time by cmake/ConvokeEmbed.cmake): the admin
// listener serves them without reading the disk or any network.

#include <string_view>

namespace convoke::server::web {

/// GET /trace: the live trace view (HTML with its CSS and JavaScript).
std::string_view trace_html() noexcept;

} // namespace convoke::server::web
