#include "convoke/server/config.hpp"

#include <algorithm>
#include <cstdlib>
#include <map>
#include <ostream>
#include <set>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <toml++/toml.h>

#include "convoke/common/net.hpp"
#include "convoke/common/text.hpp"
#include "convoke/common/units.hpp"
#include "convoke/proto/codec.hpp"
#include "convoke/proto/rules.hpp"
#include "convoke/proto/wire_format.hpp"
#include "credentials.hpp"
#include "session_rules.hpp"

namespace convoke::server {

namespace {

/// Exit code for configuration errors (sysexits.h EX_CONFIG).
constexpr int exit_config_error = 78;
/// Exit code for a malformed command line.
constexpr int exit_usage_error = 2;
/// Longest duration a key takes (2^31 - 1 ms, about 24.8 days).
constexpr int64_t max_duration_ms = 2'147'483'647;

/// One configuration key: how to print, parse and describe it.
struct option_def {
  std::string section;
  std::string name;
  std::string help;
  /// Renders the current value as a TOML literal.
  std::function<std::string(const server_config&)> get;
  /// Parses text into the config; an `errc::invalid_value` error (leaving
  /// the config unchanged) if the text is not a valid value.
  std::function<expected<>(server_config&, const std::string&)> set;
  /// Copies the value from the second config into the first (a reload
  /// applies a key this way).
  std::function<void(server_config&, const server_config&)> copy;

  std::string key() const {
    return section + "." + name;
  }
};

template <class T>
using member = T server_config::*;

template <class T>
std::function<void(server_config&, const server_config&)> copy_of(member<T> m) {
  return [m](server_config& to, const server_config& from) { to.*m = from.*m; };
}

/// The error of a setter: `text` says what is wrong with the value.
tl::unexpected<error> invalid(std::string text) {
  return fail(errc::invalid_value, std::move(text));
}

option_def string_opt(std::string sec, std::string name, member<std::string> m, std::string help) {
  return {std::move(sec),
          std::move(name),
          std::move(help),
          [m](const server_config& c) { return json_string(c.*m); },
          [m](server_config& c, const std::string& v) -> expected<> {
            c.*m = v;
            return {};
          },
          copy_of(m)};
}

template <class Int>
option_def int_opt(std::string sec, std::string name, member<Int> m, uint64_t lo, uint64_t hi,
                   std::string help) {
  return {std::move(sec),
          std::move(name),
          std::move(help),
          [m](const server_config& c) { return std::to_string(c.*m); },
          [m, lo, hi](server_config& c, const std::string& v) -> expected<> {
            auto n = parse_size(v); // plain integers; unit suffixes are tolerated
            if (!n || v.find_first_not_of("0123456789") != std::string::npos)
              return invalid(fmt::format("'{}' is not a non-negative integer", v));
            if (*n < lo || *n > hi)
              return invalid(fmt::format("{} is outside the allowed range {}..{}", *n, lo, hi));
            c.*m = static_cast<Int>(*n);
            return {};
          },
          copy_of(m)};
}

option_def size_opt(std::string sec, std::string name, member<uint64_t> m, uint64_t lo, uint64_t hi,
                    std::string help) {
  return {std::move(sec),
          std::move(name),
          std::move(help),
          [m](const server_config& c) { return json_string(format_size(c.*m)); },
          [m, lo, hi](server_config& c, const std::string& v) -> expected<> {
            auto n = parse_size(v);
            if (!n)
              return invalid(fmt::format("'{}' is not a size (examples: 65536, 64KiB, 8MiB)", v));
            if (*n < lo || *n > hi)
              return invalid(fmt::format("{} is outside the allowed range {}..{}", v,
                                         format_size(lo), format_size(hi)));
            c.*m = *n;
            return {};
          },
          copy_of(m)};
}

option_def frame_size_opt(std::string help) {
  return {"limits",
          "max-frame-bytes",
          std::move(help),
          [](const server_config& c) { return json_string(format_size(c.max_frame_bytes)); },
          [](server_config& c, const std::string& v) -> expected<> {
            auto n = parse_size(v);
            if (!n)
              return invalid(fmt::format("'{}' is not a size (examples: 65536, 64KiB, 1MiB)", v));
            if (*n < 1024 || *n > (64u << 20))
              return invalid(fmt::format("{} is outside the allowed range 1KiB..64MiB", v));
            c.max_frame_bytes = static_cast<uint32_t>(*n);
            return {};
          },
          copy_of(&server_config::max_frame_bytes)};
}

option_def duration_opt(std::string sec, std::string name, member<std::chrono::milliseconds> m,
                        bool zero_ok, std::string help) {
  return {std::move(sec),
          std::move(name),
          std::move(help),
          [m](const server_config& c) { return json_string(format_duration(c.*m)); },
          [m, zero_ok](server_config& c, const std::string& v) -> expected<> {
            auto d = parse_duration(v);
            if (!d)
              return invalid(fmt::format("'{}' is not a duration (examples: 500ms, 5s, 2m)", v));
            if (!zero_ok && d->count() == 0)
              return invalid("must be greater than zero");
            // Welcome carries durations as 32-bit milliseconds, and deadlines
            // are computed in nanoseconds: at most about 24 days.
            if (d->count() > max_duration_ms)
              return invalid(
                fmt::format("{} is longer than the limit of {}", v,
                            format_duration(std::chrono::milliseconds{max_duration_ms})));
            c.*m = *d;
            return {};
          },
          copy_of(m)};
}

option_def bool_opt(std::string sec, std::string name, member<bool> m, std::string help) {
  return {std::move(sec),
          std::move(name),
          std::move(help),
          [m](const server_config& c) { return std::string{c.*m ? "true" : "false"}; },
          [m](server_config& c, const std::string& v) -> expected<> {
            auto b = parse_bool(v);
            if (!b)
              return invalid(fmt::format("'{}' is not a boolean (true or false)", v));
            c.*m = *b;
            return {};
          },
          copy_of(m)};
}

option_def format_opt(std::string sec, std::string name, member<logging::format> m,
                      std::string help) {
  return {std::move(sec),
          std::move(name),
          std::move(help),
          [m](const server_config& c) { return json_string(logging::to_string(c.*m)); },
          [m](server_config& c, const std::string& v) -> expected<> {
            auto f = logging::parse_format(v);
            if (!f)
              return invalid(fmt::format("'{}' is not a format (text or json)", v));
            c.*m = *f;
            return {};
          },
          copy_of(m)};
}

std::string_view trim_spaces(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
    s.remove_suffix(1);
  return s;
}

/// The non-empty, trimmed items of a comma-separated list.
std::vector<std::string_view> comma_items(std::string_view rest) {
  std::vector<std::string_view> items;
  while (!rest.empty()) {
    auto comma = rest.find(',');
    auto item = trim_spaces(rest.substr(0, comma));
    rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
    if (!item.empty())
      items.push_back(item);
  }
  return items;
}

/// An IP address in the form peers are shown in (inet_ntop's), or nullopt.
std::optional<std::string> canonical_ip(std::string_view ip) {
  std::string s{ip};
  char buf[INET6_ADDRSTRLEN] = {};
  in_addr v4{};
  in6_addr v6{};
  if (::inet_pton(AF_INET, s.c_str(), &v4) == 1)
    return std::string{::inet_ntop(AF_INET, &v4, buf, sizeof buf)};
  if (::inet_pton(AF_INET6, s.c_str(), &v6) == 1)
    return std::string{::inet_ntop(AF_INET6, &v6, buf, sizeof buf)};
  return std::nullopt;
}

/// An IP address, or ip:port ("[v6]:port"), as summoner.names keys them,
/// in the form summoner_name_for compares (nullopt if it is neither).
std::optional<std::string> summoner_address(std::string_view addr) {
  if (auto ip = canonical_ip(addr))
    return ip;
  auto hp = parse_host_port(addr, "", 0);
  if (!hp || hp->port == 0 || addr.find(':') == std::string_view::npos)
    return std::nullopt;
  bool v6 = hp->host.find(':') != std::string::npos;
  if (v6 && addr.front() != '[')
    return std::nullopt;
  auto ip = canonical_ip(hp->host);
  if (!ip)
    return std::nullopt;
  return v6 ? fmt::format("[{}]:{}", *ip, hp->port) : fmt::format("{}:{}", *ip, hp->port);
}

const std::vector<option_def>& options() {
  static const std::vector<option_def> table = [] {
    std::vector<option_def> t;
    t.push_back(string_opt("server", "name", &server_config::name,
                           "Server name announced to agents in Welcome and shown in logs."));
    t.push_back(string_opt("listen", "host", &server_config::host,
                           "Address to bind: 127.0.0.1 (local only), 0.0.0.0 or :: (all)."));
    t.push_back(int_opt<uint16_t>("listen", "port", &server_config::port, 0, 65535,
                                  "TCP port; 0 picks a free port (printed at startup)."));
    t.push_back(string_opt("listen", "port-file", &server_config::port_file,
                           "If set, the bound port is written to this file once listening."));
    t.push_back(bool_opt("listen", "allow-plaintext", &server_config::allow_plaintext,
                         "Allow a non-loopback listen.host without TLS (only on a network "
                         "you trust). Also --allow-plaintext."));
    t.push_back(bool_opt("listen", "reuse-port", &server_config::listen_reuse_port,
                         "Set SO_REUSEPORT on the client port, so that several servers of the "
                         "same user on this host may listen on the same listen.host:port; the "
                         "kernel spreads new connections over them (nodes of one cluster, one "
                         "per core: docs/cluster.md)."));
    t.push_back(frame_size_opt("Largest frame an agent may send (the length prefix value)."));
    t.push_back(int_opt<uint32_t>("limits", "max-agents", &server_config::max_agents, 1, 1'000'000,
                                  "Most agents connected at once (past Hello); more are "
                                  "refused with a server_full Notice."));
    t.push_back(int_opt<uint32_t>("limits", "max-handshakes", &server_config::max_handshakes, 1,
                                  1'000'000,
                                  "Most connections that have not sent Hello yet; a new "
                                  "one closes the oldest of them (server_busy)."));
    t.push_back(size_opt("limits", "max-buffered-bytes", &server_config::max_buffered_bytes,
                         1 << 20, 1ull << 40,
                         "Bytes all connections together may hold in the server (output "
                         "waiting for slow readers, input waiting to be routed, partial "
                         "frames). Above it, readers with a backlog are treated as slow "
                         "consumers and reading pauses until it is back under."));
    t.push_back(int_opt<uint32_t>("limits", "max-routes", &server_config::max_routes, 1, 100'000,
                                  "Most route subscriptions one agent may hold."));
    t.push_back(int_opt<uint32_t>(
      "limits", "max-connections-per-address", &server_config::max_connections_per_address, 0,
      1'000'000,
      "Most connections open at once from one IP address (0 = unlimited); more are "
      "refused with a too_many_connections Notice."));
    t.push_back(int_opt<uint32_t>("limits", "messages-per-second",
                                  &server_config::messages_per_second, 0, 100'000'000,
                                  "Envelopes per second one principal (for now: one IP address) "
                                  "may send, over all its connections (0 = unlimited); more get "
                                  "a rate_limited Notice and are not relayed."));
    t.push_back(int_opt<uint32_t>("limits", "messages-burst", &server_config::messages_burst, 0,
                                  100'000'000,
                                  "Envelopes a principal may send at once after a quiet spell "
                                  "(0 = one second's worth of limits.messages-per-second)."));
    t.push_back(size_opt("limits", "bytes-per-second", &server_config::bytes_per_second, 0,
                         1ull << 40,
                         "Envelope bytes per second one principal may send, over all its "
                         "connections (0 = unlimited)."));
    t.push_back(size_opt("limits", "bytes-burst", &server_config::bytes_burst, 0, 1ull << 40,
                         "Envelope bytes a principal may send at once after a quiet spell (0 = "
                         "one second's worth, at least limits.max-frame-bytes)."));
    t.push_back(int_opt<uint32_t>("limits", "quarantine-after", &server_config::quarantine_after, 0,
                                  1'000'000,
                                  "Rate limit breaches (at most one counted per second) within "
                                  "limits.quarantine-window that quarantine a principal: its "
                                  "connections are closed and refused (quarantined) for "
                                  "limits.quarantine-for (0 = never)."));
    t.push_back(duration_opt("limits", "quarantine-window", &server_config::quarantine_window,
                             false,
                             "The window, from the first breach, in which "
                             "limits.quarantine-after breaches quarantine."));
    t.push_back(duration_opt("limits", "quarantine-for", &server_config::quarantine_for, false,
                             "How long a quarantine lasts."));
    t.push_back(int_opt<uint32_t>("limits", "max-idle-principals",
                                  &server_config::max_idle_principals, 1, 100'000'000,
                                  "Principals without a connection whose rate limit and "
                                  "quarantine state is kept; beyond it the least recently "
                                  "active are forgotten (counted in principals_evicted)."));
    t.push_back(duration_opt("timeouts", "handshake", &server_config::handshake_timeout, false,
                             "A new connection must send Hello within this time."));
    t.push_back(duration_opt("timeouts", "heartbeat-interval", &server_config::heartbeat_interval,
                             false, "The server sends each agent a Heartbeat at this interval."));
    t.push_back(
      duration_opt("timeouts", "idle", &server_config::idle_timeout, true,
                   "Close a session that sent no complete frame for this long (0 = never)."));
    t.push_back(duration_opt("timeouts", "frame", &server_config::frame_timeout, false,
                             "A frame must arrive completely within this time of its first "
                             "byte (bytes of an incomplete frame are not activity)."));
    t.push_back(duration_opt("timeouts", "drain", &server_config::drain_timeout, false,
                             "On shutdown, time allowed to flush Goodbye and pending data."));
    t.push_back(duration_opt("lame-duck", "duration", &server_config::lame_duck_duration, false,
                             "Lame-duck mode (SIGUSR2): the server stops accepting at once and "
                             "closes its agents, each with Goodbye(lame_duck) and a jittered "
                             "reconnect hint, spread evenly over this time (grace included), "
                             "then exits 0."));
    t.push_back(duration_opt("lame-duck", "grace", &server_config::lame_duck_grace, true,
                             "Lame-duck mode: wait this long before the first close, so that "
                             "load balancers see /readyz fail first. Shorter than "
                             "lame-duck.duration."));
    t.push_back(size_opt("flow", "output-high-water", &server_config::output_high_water, 64 << 10,
                         1ull << 32,
                         "Unsent bytes queued for one agent above which it is a slow "
                         "consumer."));
    t.push_back({"flow", "slow-consumer",
                 "What to do with a slow consumer: disconnect (Notice, then close) or "
                 "drop (discard its messages until it catches up, then tell it how many).",
                 [](const server_config& c) {
                   return json_string(c.slow_consumer == slow_consumer_policy::drop ? "drop"
                                                                                    : "disconnect");
                 },
                 [](server_config& c, const std::string& v) -> expected<> {
                   if (v == "drop")
                     c.slow_consumer = slow_consumer_policy::drop;
                   else if (v == "disconnect")
                     c.slow_consumer = slow_consumer_policy::disconnect;
                   else
                     return invalid(fmt::format("'{}' is not a policy (disconnect or drop)", v));
                   return {};
                 },
                 copy_of(&server_config::slow_consumer)});
    t.push_back(size_opt("flow", "input-window", &server_config::input_window, 64 << 10, 1ull << 30,
                         "Bytes read from one agent that may wait in the router; the "
                         "server stops reading that agent beyond it (TCP backpressure)."));
    t.push_back(string_opt("auth", "credentials", &server_config::credentials,
                           "Credentials file: identities, their token hashes, rights and "
                           "limits (manage with 'convoke-server credentials'). Empty = no "
                           "identities."));
    t.push_back(string_opt("auth", "token", &server_config::token,
                           "One shared secret every agent must present in Hello (empty = "
                           "none). Never on the command line: use auth.token-file or "
                           "the environment."));
    t.push_back(string_opt("auth", "token-file", &server_config::token_file,
                           "File holding the shared secret (auth.token)."));
    t.push_back(bool_opt("auth", "allow-anonymous", &server_config::allow_anonymous,
                         "Allow a non-loopback listen.host without credentials or token "
                         "(anyone who reaches the port may connect). Also --allow-anonymous."));
    t.push_back(duration_opt("auth", "failed-login-delay", &server_config::failed_login_delay, true,
                             "A failed login is answered this long after its Hello."));
    t.push_back(int_opt<uint32_t>("auth", "failed-login-limit", &server_config::failed_login_limit,
                                  1, 1'000'000,
                                  "Failed logins from one address within "
                                  "auth.failed-login-window after which it is refused until "
                                  "the window ends (auth_throttled)."));
    t.push_back(duration_opt("auth", "failed-login-window", &server_config::failed_login_window,
                             false, "Window of auth.failed-login-limit."));
    t.push_back({"log", "level", "Log level: trace, debug, info, warn, error, critical, off.",
                 [](const server_config& c) { return json_string(c.log_level); },
                 [](server_config& c, const std::string& v) -> expected<> {
                   if (!logging::parse_level(v))
                     return invalid(fmt::format("'{}' is not a log level", v));
                   c.log_level = v;
                   return {};
                 },
                 copy_of(&server_config::log_level)});
    t.push_back(format_opt("log", "format", &server_config::log_format,
                           "Log format: text (human) or json (one object per line)."));
    t.push_back(string_opt("log", "file", &server_config::log_file,
                           "Log file (rotated at 64MiB, 5 kept); empty = standard error."));
    t.push_back(bool_opt("trace", "enabled", &server_config::trace_enabled,
                         "Write one trace record per relayed message."));
    t.push_back(string_opt("trace", "file", &server_config::trace_file,
                           "Trace destination: a file path (size-rotated) or - for "
                           "standard output."));
    t.push_back(format_opt("trace", "format", &server_config::trace_format,
                           "Trace format: text (human) or json (one object per line)."));
    t.push_back(size_opt("trace", "payload-bytes", &server_config::trace_payload_bytes, 0, 1 << 20,
                         "Payload bytes quoted in each trace record (0 = payloads omitted)."));
    t.push_back(size_opt("trace", "max-file-bytes", &server_config::trace_max_file_bytes, 64 << 10,
                         1ull << 40, "Rotate the trace file at this size."));
    t.push_back(int_opt<uint32_t>("trace", "max-files", &server_config::trace_max_files, 1, 1000,
                                  "Rotated trace files kept."));
    t.push_back(size_opt("trace", "buffer", &server_config::trace_buffer_bytes, 64 << 10,
                         1ull << 32,
                         "Bytes of trace records the relay may be ahead of the trace writer; "
                         "beyond it records are lost, counted and reported as a gap, never "
                         "blocking the relay."));
    t.push_back({"trace", "written",
                 "Trace each message written to each receiver's socket (one event per "
                 "delivery): none, traced (messages that carry a trace id) or all.",
                 [](const server_config& c) {
                   return json_string(c.trace_written == trace_written_policy::all      ? "all"
                                      : c.trace_written == trace_written_policy::traced ? "traced"
                                                                                        : "none");
                 },
                 [](server_config& c, const std::string& v) -> expected<> {
                   if (v == "none")
                     c.trace_written = trace_written_policy::none;
                   else if (v == "traced")
                     c.trace_written = trace_written_policy::traced;
                   else if (v == "all")
                     c.trace_written = trace_written_policy::all;
                   else
                     return invalid(fmt::format("'{}' is not one of none, traced, all", v));
                   return {};
                 },
                 copy_of(&server_config::trace_written)});
    t.push_back({"trace", "anonymous-observe",
                 "What agents without an identity (no credentials file, or the shared "
                 "token) may observe of the message traces: none, metadata (no "
                 "payloads) or payload.",
                 [](const server_config& c) { return json_string(c.trace_anonymous_observe); },
                 [](server_config& c, const std::string& v) -> expected<> {
                   if (v != "none" && v != "metadata" && v != "payload")
                     return invalid(
                       fmt::format("'{}' is not an observe level (none, metadata or payload)", v));
                   c.trace_anonymous_observe = v;
                   return {};
                 },
                 copy_of(&server_config::trace_anonymous_observe)});
    t.push_back(int_opt<uint32_t>("trace", "max-observers", &server_config::trace_max_observers, 1,
                                  100'000,
                                  "Observers of the live trace tap at once (agents that sent "
                                  "Observe, the web view); more are refused "
                                  "(too_many_observers)."));
    t.push_back(string_opt("tls", "cert", &server_config::tls_cert,
                           "PEM certificate chain of the server; set, every connection must "
                           "use TLS (1.2 or later). Reloaded on SIGHUP for new connections."));
    t.push_back(string_opt("tls", "key", &server_config::tls_key,
                           "PEM private key of tls.cert. Reloaded on SIGHUP."));
    t.push_back(string_opt("tls", "client-ca", &server_config::tls_client_ca,
                           "PEM CA certificates client certificates must chain to (for "
                           "tls.verify-clients). Reloaded on SIGHUP."));
    t.push_back({"tls", "verify-clients",
                 "Client certificates: off, optional (verified if sent) or require. A "
                 "verified certificate's CN (or first DNS name) is the peer's TLS name. The "
                 "TLS handshake must finish within timeouts.handshake.",
                 [](const server_config& c) {
                   return json_string(std::string{tls::to_string(c.tls_verify_clients)});
                 },
                 [](server_config& c, const std::string& v) -> expected<> {
                   if (v == "off")
                     c.tls_verify_clients = tls::client_verification::off;
                   else if (v == "optional")
                     c.tls_verify_clients = tls::client_verification::optional;
                   else if (v == "require")
                     c.tls_verify_clients = tls::client_verification::require;
                   else
                     return invalid(fmt::format(
                       "'{}' is not a client verification (off, optional or require)", v));
                   return {};
                 },
                 copy_of(&server_config::tls_verify_clients)});
    t.push_back(bool_opt("admin", "enabled", &server_config::admin_enabled,
                         "Serve the admin HTTP endpoints (/healthz, /readyz, /varz, /connz, "
                         "/routez, /metrics) on admin.host:admin.port."));
    t.push_back(string_opt("admin", "host", &server_config::admin_host,
                           "Address of the admin listener; beyond loopback it needs "
                           "authentication (auth.*) and admin.tls, as listen.host does."));
    t.push_back(int_opt<uint16_t>("admin", "port", &server_config::admin_port, 0, 65535,
                                  "Admin TCP port; 0 picks a free port (see admin.port-file)."));
    t.push_back(string_opt("admin", "port-file", &server_config::admin_port_file,
                           "If set, the admin listener's port is written to this file."));
    t.push_back(bool_opt("admin", "tls", &server_config::admin_tls,
                         "Serve HTTPS with tls.cert and tls.key (read at start)."));
    t.push_back(duration_opt("admin", "request-timeout", &server_config::admin_request_timeout,
                             false,
                             "A request must arrive completely within this time of the "
                             "connection (else 408 and close), and be answered within it."));
    t.push_back(string_opt("summoner", "listen", &server_config::summoner_listen,
                           "host:port of the Summoner compatibility listener (docs/summoner.md): "
                           "existing Summoner agents connect there unchanged. Empty: off."));
    t.push_back(string_opt("summoner", "port-file", &server_config::summoner_port_file,
                           "If set, the Summoner listener's port is written to this file."));
    t.push_back(string_opt("summoner", "route", &server_config::summoner_route,
                           "Route of the messages Summoner agents send (Convoke agents "
                           "subscribe to it); empty: broadcasts without a route."));
    t.push_back(duration_opt("summoner", "idle-timeout", &server_config::summoner_idle_timeout,
                             true,
                             "Close a Summoner connection that sent nothing and read nothing "
                             "for this long, with Summoner's inactivity Warning (0 = never)."));
    t.push_back(size_opt("summoner", "max-line-bytes", &server_config::summoner_max_line_bytes,
                         1024, 64ull << 20,
                         "Longest line a Summoner agent is sent, its newline included (the "
                         "Summoner SDK reads at most 64KiB). A line that would relay longer is "
                         "refused with a Warning to its sender."));
    t.push_back({"summoner", "names",
                 "Names of Summoner connections by address, e.g. "
                 "\"10.0.0.5=planner,127.0.0.1:9001=tools\" (ip:port wins over ip); others "
                 "are summoner@ip:port. A name in use gets -2, -3, ... appended.",
                 [](const server_config& c) {
                   std::string v;
                   for (auto& [addr, name] : c.summoner_names)
                     v += (v.empty() ? "" : ",") + addr + "=" + name;
                   return json_string(v);
                 },
                 [](server_config& c, const std::string& v) -> expected<> {
                   std::vector<std::pair<std::string, std::string>> names;
                   for (auto item : comma_items(v)) {
                     auto eq = item.find('=');
                     if (eq == std::string_view::npos)
                       return invalid(fmt::format("'{}' is not address=name", item));
                     auto addr = trim_spaces(item.substr(0, eq));
                     auto name = trim_spaces(item.substr(eq + 1));
                     auto key = summoner_address(addr);
                     if (!key)
                       return invalid(fmt::format("'{}' is not an IP address or ip:port", addr));
                     for (auto& [known, _] : names)
                       if (known == *key)
                         return invalid(fmt::format("the address '{}' is named twice", addr));
                     // Room for the "-N" a second connection gets.
                     if (auto ok = proto::check_agent_name(name); !ok)
                       return invalid(ok.error().text);
                     if (name.size() + 4 > proto::max_name_length)
                       return invalid(fmt::format("the name '{}' is longer than {} characters",
                                                  name, proto::max_name_length - 4));
                     names.emplace_back(std::move(*key), std::string{name});
                   }
                   c.summoner_names = std::move(names);
                   return {};
                 },
                 copy_of(&server_config::summoner_names)});
    t.push_back(string_opt("summoner", "identity", &server_config::summoner_identity,
                           "With auth.credentials: the identity whose rights every Summoner "
                           "connection gets (Summoner clients cannot authenticate)."));
    t.push_back(string_opt("cluster", "name", &server_config::cluster_name,
                           "Name of the cluster this node joins (docs/cluster.md); nodes with "
                           "another name are refused. Empty: no cluster."));
    t.push_back(string_opt("cluster", "node", &server_config::cluster_node,
                           "This node's name, unique in the cluster (logs, traces, Notices). "
                           "Empty: the host name and 4 random hex digits."));
    t.push_back(string_opt("cluster", "listen", &server_config::cluster_listen,
                           "host:port where this node accepts the other nodes (CAF's BASP; "
                           "port 0 picks one). Beyond loopback it needs cluster.tls-* or "
                           "--allow-plaintext."));
    t.push_back(string_opt("cluster", "port-file", &server_config::cluster_port_file,
                           "If set, the cluster port is written to this file."));
    t.push_back(string_opt("cluster", "peers", &server_config::cluster_peers,
                           "Nodes to connect to, \"host:port,...\" (their cluster.listen); one "
                           "live node is enough, the rest of the mesh is learnt from it."));
    t.push_back(string_opt("cluster", "advertise", &server_config::cluster_advertise,
                           "The client address (host:port, or tls://host:port) other nodes "
                           "send this node's agents to when it drains. Empty: listen.host:port."));
    t.push_back(duration_opt("cluster", "heartbeat", &server_config::cluster_heartbeat, false,
                             "Node-to-node heartbeat interval."));
    t.push_back(duration_opt("cluster", "timeout", &server_config::cluster_timeout, false,
                             "A node silent this long is lost (a stopped process, a cut link); "
                             "a node whose connection closes is lost at once."));
    t.push_back(duration_opt("cluster", "retry", &server_config::cluster_retry, false,
                             "How often an unconnected node of cluster.peers is tried again."));
    t.push_back(size_opt("cluster", "max-pending-bytes", &server_config::cluster_max_pending_bytes,
                         64 * 1024, 1ull << 40,
                         "Relayed bytes sent to one node and not yet acknowledged by it; "
                         "beyond it messages for that node are dropped, traced and their "
                         "senders told (node_unreachable)."));
    t.push_back(string_opt("cluster", "tls-cert", &server_config::cluster_tls_cert,
                           "PEM certificate chain this node presents to the other nodes "
                           "(mutual TLS on the cluster link; with cluster.tls-key and "
                           "cluster.tls-ca). Read at start."));
    t.push_back(string_opt("cluster", "tls-key", &server_config::cluster_tls_key,
                           "PEM private key of cluster.tls-cert (not encrypted)."));
    t.push_back(string_opt("cluster", "tls-ca", &server_config::cluster_tls_ca,
                           "PEM CA certificates every other node's certificate must chain to: "
                           "whoever holds a certificate from it can join. Use a CA of its own "
                           "for the cluster."));
    return t;
  }();
  return table;
}

const option_def* find_option(const std::string& key) {
  for (auto& opt : options())
    if (opt.key() == key)
      return &opt;
  return nullptr;
}

std::string describe(const option_def& opt) {
  server_config defaults;
  return fmt::format("{} [default: {}] [env: {}]", opt.help, opt.get(defaults),
                     env_name(opt.key()));
}

} // namespace

std::string env_name(const std::string& key) {
  std::string out = "CONVOKE_";
  for (auto c : key)
    out.push_back(c == '.' || c == '-' ? '_' : static_cast<char>(std::toupper(c)));
  return out;
}

env_lookup process_env() {
  return [](const std::string& name) -> std::optional<std::string> {
    if (auto v = std::getenv(name.c_str()))
      return std::string{v};
    return std::nullopt;
  };
}

expected<> set_option(server_config& cfg, const std::string& key, const std::string& value) {
  auto opt = find_option(key);
  if (!opt)
    return fail(errc::unknown_key, fmt::format("unknown key '{}'", key));
  return opt->set(cfg, value);
}

std::vector<error> validate(const server_config& cfg) {
  std::vector<error> errs;
  auto problem = [&](errc code, std::string text) {
    errs.push_back({make_error_code(code), std::move(text)});
  };
  if (cfg.idle_timeout.count() > 0 && cfg.heartbeat_interval >= cfg.idle_timeout)
    problem(errc::invalid_config,
            fmt::format(
              "timeouts.heartbeat-interval ({}) must be shorter than timeouts.idle ({}): agents "
              "stay alive by answering heartbeats",
              format_duration(cfg.heartbeat_interval), format_duration(cfg.idle_timeout)));
  // The same range the option parser enforces, for configurations built in
  // code: Welcome announces max_frame_bytes plus the Delivery overhead in 32
  // bits, and the SDK receives at most 64 MiB + 64 KiB.
  if (cfg.max_frame_bytes < 1024 || cfg.max_frame_bytes > (64u << 20))
    problem(errc::invalid_value,
            fmt::format("limits.max-frame-bytes ({}) is outside the allowed range 1KiB..64MiB",
                        format_size(cfg.max_frame_bytes)));
  if (cfg.output_high_water < cfg.max_frame_bytes + proto::header_size)
    problem(errc::invalid_config,
            fmt::format("flow.output-high-water ({}) must be at least "
                        "limits.max-frame-bytes ({}) plus 4 bytes (a frame's length prefix)",
                        format_size(cfg.output_high_water), format_size(cfg.max_frame_bytes)));
  if (cfg.bytes_per_second > 0 && cfg.bytes_burst > 0 && cfg.bytes_burst < cfg.max_frame_bytes)
    problem(errc::invalid_config,
            fmt::format("limits.bytes-burst ({}) must be at least limits.max-frame-bytes ({}): "
                        "a message of the largest size could never be relayed",
                        format_size(cfg.bytes_burst), format_size(cfg.max_frame_bytes)));
  if (cfg.lame_duck_grace >= cfg.lame_duck_duration)
    problem(errc::invalid_config,
            fmt::format("lame-duck.grace ({}) must be shorter than lame-duck.duration ({}): the "
                        "agents are closed after the grace, within the duration",
                        format_duration(cfg.lame_duck_grace),
                        format_duration(cfg.lame_duck_duration)));
  if (cfg.name.empty())
    problem(errc::invalid_value, "server.name must not be empty");
  else if (!proto::wire::valid_utf8(cfg.name))
    // It goes into every Welcome (a string clients parse strictly), /varz
    // and a /metrics label.
    problem(errc::invalid_value, "server.name must be valid UTF-8");
  if (cfg.host.empty())
    problem(errc::invalid_value, "listen.host must not be empty");
  if (cfg.trace_enabled && cfg.trace_file.empty())
    problem(errc::invalid_config, "trace.file must be a path or - when trace.enabled is true");
  if (cfg.tls_enabled() && cfg.tls_key.empty())
    problem(errc::invalid_config, "tls.key must be set when tls.cert is");
  if (!cfg.tls_enabled()
      && (!cfg.tls_key.empty() || !cfg.tls_client_ca.empty()
          || cfg.tls_verify_clients != tls::client_verification::off))
    problem(errc::invalid_config,
            "tls.key, tls.client-ca and tls.verify-clients need tls.cert (TLS is off without it)");
  if (cfg.tls_verify_clients != tls::client_verification::off && cfg.tls_client_ca.empty())
    problem(errc::invalid_config, fmt::format("tls.verify-clients = {} needs tls.client-ca",
                                              tls::to_string(cfg.tls_verify_clients)));
  if (!cfg.token.empty() && !cfg.credentials.empty())
    problem(errc::invalid_config,
            "auth.token and auth.credentials exclude each other: with a credentials file "
            "every agent presents its own identity's token");
  // Secure by default (as Mosquitto 2.0): beyond loopback, anyone may reach
  // the port, so authentication and TLS are required unless the operator
  // opts out by name.
  if (!is_loopback_host(cfg.host)) {
    if (cfg.credentials.empty() && cfg.token.empty() && cfg.token_file.empty()
        && !cfg.allow_anonymous)
      problem(errc::invalid_config,
              fmt::format("listen.host '{}' is not a loopback address and agents are not "
                          "authenticated: set auth.credentials (create it with "
                          "'convoke-server credentials add FILE NAME'), or opt out with "
                          "--allow-anonymous if anyone who can reach the port may connect",
                          cfg.host));
    if (!cfg.tls_enabled() && !cfg.allow_plaintext)
      problem(
        errc::invalid_config,
        fmt::format("listen.host '{}' is not a loopback address and TLS is off: "
                    "set tls.cert and tls.key, or opt out with --allow-plaintext if the network "
                    "is trusted (tokens and messages cross it readable)",
                    cfg.host));
  }
  if (!cfg.summoner_listen.empty()) {
    auto hp = parse_host_port(cfg.summoner_listen, "", 0);
    if (!hp || hp->host.empty() || cfg.summoner_listen.find(':') == std::string::npos)
      problem(errc::invalid_value,
              fmt::format("summoner.listen '{}' is not host:port (e.g. 127.0.0.1:8888)",
                          cfg.summoner_listen));
    else if (!is_loopback_host(hp->host) && !cfg.allow_plaintext)
      // Summoner clients speak plain TCP only.
      problem(errc::invalid_config,
              fmt::format("summoner.listen '{}' is not a loopback address and Summoner clients "
                          "cannot use TLS: opt out with --allow-plaintext if the network is "
                          "trusted",
                          cfg.summoner_listen));
    if (!cfg.credentials.empty() && cfg.summoner_identity.empty())
      problem(errc::invalid_config,
              "summoner.listen with auth.credentials needs summoner.identity: Summoner clients "
              "cannot authenticate, so name the identity whose rights they get");
    if (cfg.credentials.empty() && (!cfg.token.empty() || !cfg.token_file.empty()))
      problem(errc::invalid_config,
              "summoner.listen with auth.token would let Summoner clients in without the token: "
              "use auth.credentials and summoner.identity instead");
    if (!cfg.summoner_route.empty())
      if (auto r = check_addressing("", cfg.summoner_route))
        problem(errc::invalid_value, "summoner.route: " + r->text);
  }
  if (!cfg.summoner_identity.empty() && cfg.credentials.empty())
    problem(errc::invalid_config, "summoner.identity needs auth.credentials");
  if (cfg.cluster_enabled()) {
    if (auto ok = proto::check_agent_name(cfg.cluster_name); !ok)
      problem(errc::invalid_value, "cluster.name: " + ok.error().text);
    if (!cfg.cluster_node.empty())
      if (auto ok = proto::check_agent_name(cfg.cluster_node); !ok)
        problem(errc::invalid_value, "cluster.node: " + ok.error().text);
    auto hp = parse_host_port(cfg.cluster_listen, "", 0);
    if (!hp || hp->host.empty() || cfg.cluster_listen.find(':') == std::string::npos)
      problem(errc::invalid_value,
              fmt::format("cluster.listen '{}' is not host:port (e.g. 127.0.0.1:7422)",
                          cfg.cluster_listen));
    else if (!is_loopback_host(hp->host) && !cfg.allow_plaintext && !cfg.cluster_tls_enabled())
      // Plain BASP is neither encrypted nor authenticated.
      problem(errc::invalid_config,
              fmt::format("cluster.listen '{}' is not a loopback address and the cluster link "
                          "is not authenticated: whoever reaches it can act as a node; set "
                          "cluster.tls-cert, cluster.tls-key and cluster.tls-ca (mutual TLS), "
                          "or opt out with --allow-plaintext on a network only the nodes can "
                          "reach",
                          cfg.cluster_listen));
    auto tls_keys = int{!cfg.cluster_tls_cert.empty()} + int{!cfg.cluster_tls_key.empty()}
                    + int{!cfg.cluster_tls_ca.empty()};
    if (tls_keys != 0 && tls_keys != 3)
      // CAF's openssl module would run with what is there: no CA means no
      // verification of the other nodes' certificates.
      problem(errc::invalid_config,
              "cluster.tls-cert, cluster.tls-key and cluster.tls-ca go together: set all three "
              "(every node presents its certificate and requires the other's to chain to "
              "cluster.tls-ca) or none");
    for (auto item : comma_items(cfg.cluster_peers)) {
      auto peer = parse_host_port(item, "", 0);
      if (!peer || peer->host.empty() || peer->port == 0)
        problem(errc::invalid_value, fmt::format("cluster.peers: '{}' is not host:port", item));
    }
    if (cfg.cluster_timeout <= cfg.cluster_heartbeat)
      problem(errc::invalid_config,
              fmt::format("cluster.timeout ({}) must be longer than cluster.heartbeat ({})",
                          format_duration(cfg.cluster_timeout),
                          format_duration(cfg.cluster_heartbeat)));
  }
  if (cfg.admin_enabled) {
    if (cfg.admin_tls && !cfg.tls_enabled())
      problem(errc::invalid_config, "admin.tls needs tls.cert and tls.key");
    if (cfg.admin_port != 0 && cfg.admin_port == cfg.port && cfg.port != 0)
      problem(errc::invalid_config,
              fmt::format("admin.port {} is listen.port too; give the admin listener its own "
                          "port (or admin.enabled = false)",
                          cfg.admin_port));
    // The admin endpoints show every agent and address: the same rules as
    // the relay's port beyond loopback.
    if (!is_loopback_host(cfg.admin_host)) {
      if (cfg.credentials.empty() && cfg.token.empty() && cfg.token_file.empty()
          && !cfg.allow_anonymous)
        problem(errc::invalid_config,
                fmt::format("admin.host '{}' is not a loopback address and there is no "
                            "authentication: set auth.credentials (an identity with admin = "
                            "true logs in with HTTP Basic auth), or opt out with "
                            "--allow-anonymous",
                            cfg.admin_host));
      if (!cfg.admin_tls && !cfg.allow_plaintext)
        problem(errc::invalid_config,
                fmt::format("admin.host '{}' is not a loopback address and admin.tls is off: "
                            "set admin.tls = true (with tls.cert), or opt out with "
                            "--allow-plaintext",
                            cfg.admin_host));
    }
  }
  return errs;
}

bool is_loopback_host(const std::string& host) {
  if (host == "localhost")
    return true;
  in_addr v4{};
  if (::inet_pton(AF_INET, host.c_str(), &v4) == 1)
    return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  if (::inet_pton(AF_INET6, host.c_str(), &v6) == 1)
    return IN6_IS_ADDR_LOOPBACK(&v6);
  return false;
}

expected<> load_token_file(server_config& cfg) {
  if (cfg.token_file.empty())
    return {};
  std::ifstream in{cfg.token_file, std::ios::binary};
  if (!in)
    return fail(errc::bad_config_file, fmt::format("auth.token-file '{}' cannot be read: {}",
                                                   cfg.token_file, std::strerror(errno)));
  std::string token;
  std::getline(in, token);
  while (!token.empty() && (token.back() == '\r' || token.back() == ' '))
    token.pop_back();
  if (token.empty())
    return fail(errc::bad_config_file,
                fmt::format("auth.token-file '{}': the first line is empty", cfg.token_file));
  cfg.token = std::move(token);
  return {};
}

namespace {

/// Checks that `path` can serve as an output file (log or trace): the
/// directory must exist (nothing is created) and allow creating and
/// renaming files (rotation); an existing file must be writable. The error
/// is `errc::unwritable_file`, and its text names `key`, the path and why.
expected<> check_output_file(const std::string& key, const std::string& path) {
  auto unwritable = [](std::string text) { return fail(errc::unwritable_file, std::move(text)); };
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path p{path};
  auto dir = p.has_parent_path() ? p.parent_path() : fs::path{"."};
  if (!fs::is_directory(dir, ec))
    return unwritable(
      fmt::format("{} '{}': directory '{}' does not exist (convoke-server creates no "
                  "directories)",
                  key, path, dir.string()));
  if (fs::is_directory(p, ec))
    return unwritable(fmt::format("{} '{}' is a directory, not a file", key, path));
  if (fs::exists(p, ec)) {
    // Exactly as the log and trace writers open it (stdio append mode, which
    // also seeks to the end): an existing file is not created or changed.
    errno = 0;
    auto f = std::fopen(path.c_str(), "ab");
    if (f == nullptr)
      return unwritable(
        fmt::format("{} '{}' cannot be written: {}", key, path, std::strerror(errno)));
    std::fclose(f);
  }
  if (::access(dir.c_str(), W_OK | X_OK) != 0)
    return unwritable(fmt::format("{} '{}': directory '{}' is not writable: {}", key, path,
                                  dir.string(), std::strerror(errno)));
  return {};
}

} // namespace

std::vector<error> check_paths(const server_config& cfg) {
  std::vector<error> errs;
  if (!cfg.log_file.empty())
    if (auto ok = check_output_file("log.file", cfg.log_file); !ok)
      errs.push_back(std::move(ok.error()));
  if (cfg.trace_enabled && cfg.trace_file != "-")
    if (auto ok = check_output_file("trace.file", cfg.trace_file); !ok)
      errs.push_back(std::move(ok.error()));
  if (!cfg.port_file.empty())
    if (auto ok = check_output_file("listen.port-file", cfg.port_file); !ok)
      errs.push_back(std::move(ok.error()));
  if (cfg.admin_enabled && !cfg.admin_port_file.empty())
    if (auto ok = check_output_file("admin.port-file", cfg.admin_port_file); !ok)
      errs.push_back(std::move(ok.error()));
  if (!cfg.summoner_listen.empty() && !cfg.summoner_port_file.empty())
    if (auto ok = check_output_file("summoner.port-file", cfg.summoner_port_file); !ok)
      errs.push_back(std::move(ok.error()));
  if (cfg.cluster_enabled() && !cfg.cluster_port_file.empty())
    if (auto ok = check_output_file("cluster.port-file", cfg.cluster_port_file); !ok)
      errs.push_back(std::move(ok.error()));
      // A host that does not resolve is a configuration error (78: systemd does
      // not restart), unlike a port that is taken at run time (1). Not in the
      // fuzz build: name resolution may wait on the network.
#ifndef CONVOKE_FUZZING
  if (auto ok = net::check_resolvable(cfg.host); !ok)
    errs.push_back({make_error_code(errc::resolve_failed),
                    fmt::format("listen.host '{}': {}", cfg.host, ok.error().text)});
  if (cfg.admin_enabled && cfg.admin_host != cfg.host)
    if (auto ok = net::check_resolvable(cfg.admin_host); !ok)
      errs.push_back({make_error_code(errc::resolve_failed),
                      fmt::format("admin.host '{}': {}", cfg.admin_host, ok.error().text)});
  if (auto hp = parse_host_port(cfg.summoner_listen, "", 0); hp && !hp->host.empty())
    if (auto ok = net::check_resolvable(hp->host); !ok)
      errs.push_back(
        {make_error_code(errc::resolve_failed),
         fmt::format("summoner.listen '{}': {}", cfg.summoner_listen, ok.error().text)});
#endif
  // Loading the files is the only complete check (PEM syntax, key matching
  // the certificate).
  if (cfg.tls_enabled())
    if (auto ok = tls::context::server(cfg.tls_settings()); !ok)
      errs.push_back({make_error_code(errc::invalid_value), "[tls]: " + ok.error().text});
  if (cfg.cluster_enabled() && cfg.cluster_tls_enabled()) {
    if (auto ok = tls::context::server(cfg.cluster_tls_settings()); !ok)
      errs.push_back({make_error_code(errc::invalid_value), "[cluster]: " + ok.error().text});
    // The other nodes check this node's certificate against the same CA.
    else if (auto chain = tls::verify_as_peer(cfg.cluster_tls_cert, cfg.cluster_tls_ca); !chain)
      errs.push_back({make_error_code(errc::invalid_value), "[cluster]: " + chain.error().text});
  }
  return errs;
}

std::vector<error> load_file(server_config& cfg, const std::string& path) {
  std::vector<error> errs;
  auto problem = [&](errc code, std::string text) {
    errs.push_back({make_error_code(code), std::move(text)});
  };
  toml::table root;
  try {
    root = toml::parse_file(path);
  } catch (const toml::parse_error& ex) {
    auto& src = ex.source();
    problem(errc::bad_config_file,
            fmt::format("{}:{}:{}: {}", path, src.begin.line, src.begin.column, ex.description()));
    return errs;
  }
  for (auto& [section, node] : root) {
    auto line = node.source().begin.line;
    auto tbl = node.as_table();
    if (!tbl) {
      problem(errc::bad_config_file, fmt::format("{}:{}: '{}' must be a [section]", path, line,
                                                 std::string_view{section}));
      continue;
    }
    for (auto& [name, value] : *tbl) {
      auto key = fmt::format("{}.{}", std::string_view{section}, std::string_view{name});
      auto vline = value.source().begin.line;
      auto opt = find_option(key);
      if (!opt) {
        problem(errc::unknown_key, fmt::format("{}:{}: unknown key '{}'", path, vline, key));
        continue;
      }
      std::string text;
      if (auto s = value.as_string())
        text = s->get();
      else if (auto i = value.as_integer())
        text = std::to_string(i->get()); // a negative one is refused by the key's parser
      else if (auto b = value.as_boolean())
        text = b->get() ? "true" : "false";
      else {
        problem(errc::invalid_value,
                fmt::format("{}:{}: {} must be a string, integer or boolean", path, vline, key));
        continue;
      }
      if (auto ok = opt->set(cfg, text); !ok)
        errs.push_back(
          {ok.error().code, fmt::format("{}:{}: {}: {}", path, vline, key, ok.error().text)});
    }
  }
  return errs;
}

std::vector<config_entry> config_entries(const server_config& cfg) {
  std::vector<config_entry> out;
  for (auto& opt : options()) {
    auto value = opt.get(cfg);
    if (opt.key() == "auth.token" && !cfg.token.empty())
      value = "\"<redacted>\"";
    out.push_back({opt.section, opt.name, std::move(value)});
  }
  return out;
}

std::string dump_config(const server_config& cfg) {
  std::string out;
  std::string section;
  for (auto& e : config_entries(cfg)) {
    if (e.section != section) {
      section = e.section;
      out += fmt::format("{}[{}]\n", out.empty() ? "" : "\n", section);
    }
    out += fmt::format("{} = {}\n", e.name, e.value);
  }
  return out;
}

std::string sample_config() {
  server_config defaults;
  std::string out = "# Convoke server configuration.\n"
                    "#\n"
                    "# Every key is shown with its built-in default, commented out. Precedence,\n"
                    "# lowest to highest: defaults < this file < environment variables\n"
                    "# (CONVOKE_<SECTION>_<KEY>, e.g. CONVOKE_LISTEN_PORT) < command-line flags\n"
                    "# (--section.key value). Check a file with: convoke-server --config FILE "
                    "--check-config\n"
                    "# Durations take a unit (500ms, 5s, 2m); sizes may (65536, 64KiB, 8MiB).\n"
                    "# SIGHUP reads this file again and applies the keys that can change while\n"
                    "# running (docs/signals.md lists them); the others need a restart.\n"
                    "# This file is generated by sample_config() and checked by a unit test.\n";
  std::string section;
  for (auto& opt : options()) {
    if (opt.section != section) {
      section = opt.section;
      out += fmt::format("\n[{}]\n", section);
    }
    out += fmt::format("# {}\n# {} = {}\n", opt.help, opt.name, opt.get(defaults));
  }
  return out;
}

namespace {

/// The command line of convoke-server and how it combines with the other
/// sources: used at start (parse_command_line) and on SIGHUP (reread_config).
struct cli_parser {
  CLI::App app{"convoke-server: the Convoke agent messaging server.\n\n"
               "Configuration precedence: defaults < --config file < CONVOKE_* "
               "environment < flags.",
               "convoke-server"};
  std::string config_path;
  bool check = false;
  bool dump = false;
  bool version = false;
  bool allow_anonymous = false;
  bool allow_plaintext = false;
  bool sample = false;
  std::map<std::string, std::string> given;
  std::vector<std::pair<const option_def*, CLI::Option*>> flags;

  cli_parser() {
    app.get_formatter()->column_width(36);
    app.add_option("-c,--config", config_path,
                   "TOML configuration file (see deploy/config/convoke-server.toml) "
                   "[env: CONVOKE_CONFIG]");
    app.add_flag("--check-config", check,
                 "Validate the configuration, print the result and exit (0 = valid, "
                 "78 = invalid).");
    app.add_flag("--dump-config", dump, "Print the effective configuration as TOML and exit.");
    app.add_flag("--version", version, "Print the version and exit.");
    app.add_flag("--allow-anonymous", allow_anonymous,
                 "Same as --auth.allow-anonymous true: accept unauthenticated agents on a "
                 "non-loopback address.");
    app.add_flag("--allow-plaintext", allow_plaintext,
                 "Same as --listen.allow-plaintext true: accept a non-loopback address "
                 "without TLS.");
    app.add_flag("--print-sample-config", sample,
                 "Print a commented configuration file with every key at its default.");
    for (auto& opt : options()) {
      auto flag = "--" + opt.key();
      if (opt.key() == "listen.port")
        flag = "-p," + flag;
      auto o = app.add_option(flag, given[opt.key()], describe(opt))
                 ->group(opt.section)
                 ->type_name("")
                 ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast); // later flags win
      flags.emplace_back(&opt, o);
    }
  }

  /// After app.parse(): the config file, the environment and the flags, in
  /// that order, then the token file and validate(). Every problem.
  std::vector<error> apply(server_config& cfg, const env_lookup& env) {
    std::vector<error> errs;
    if (config_path.empty())
      if (auto p = env("CONVOKE_CONFIG"))
        config_path = *p;
    if (!config_path.empty())
      errs = load_file(cfg, config_path);
    // Every problem is reported with where the value came from.
    auto from = [&](error e, const std::string& source) {
      e.text = fmt::format("{}: {}", source, e.text);
      errs.push_back(std::move(e));
    };
    for (auto& opt : options()) {
      auto name = env_name(opt.key());
      if (auto v = env(name))
        if (auto ok = opt.set(cfg, *v); !ok)
          from(std::move(ok.error()), "environment " + name);
    }
    for (auto& [opt, o] : flags) {
      if (o->count() == 0)
        continue;
      if (opt->key() == "auth.token") {
        // Every user of the machine can read a command line (ps, /proc).
        errs.push_back({make_error_code(errc::invalid_value),
                        "--auth.token: secrets are not taken from the command line, where "
                        "every user can read them (ps); use auth.token-file or the "
                        "environment variable CONVOKE_AUTH_TOKEN"});
        continue;
      }
      if (auto ok = opt->set(cfg, given[opt->key()]); !ok)
        from(std::move(ok.error()), "--" + opt->key());
    }
    if (allow_anonymous)
      cfg.allow_anonymous = true;
    if (allow_plaintext)
      cfg.allow_plaintext = true;
    if (errs.empty())
      if (auto ok = load_token_file(cfg); !ok)
        errs.push_back(std::move(ok.error()));
    if (errs.empty())
      errs = validate(cfg);
    return errs;
  }
};

} // namespace

cli_result parse_command_line(int argc, const char* const* argv, server_config& cfg,
                              std::ostream& out, std::ostream& err, const env_lookup& env) {
  cli_parser cli;
  try {
    cli.app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    out << cli.app.help();
    return {true, 0};
  } catch (const CLI::ParseError& ex) {
    err << "convoke-server: " << ex.what() << "\nRun 'convoke-server --help' for usage.\n";
    return {true, exit_usage_error};
  }
  if (cli.sample) {
    out << sample_config();
    return {true, 0};
  }
  if (cli.version) {
    out << "convoke-server " << CONVOKE_VERSION << " (protocol " << proto::protocol_version
        << ")\n";
    return {true, 0};
  }
  auto errs = cli.apply(cfg, env);
  if (errs.empty() && !cfg.credentials.empty())
    if (auto st = credential_store::load(cfg.credentials); !st)
      errs = std::move(st.error());
  if (errs.empty())
    errs = check_paths(cfg); // the files must be usable, for --check-config and for a run
  if (!errs.empty()) {
    err << "convoke-server: invalid configuration:\n";
    for (auto& e : errs)
      err << "  " << e.message() << "\n";
    return {true, exit_config_error};
  }
  if (cli.check) {
    out << "configuration OK"
        << (cli.config_path.empty() ? std::string{} : " (" + cli.config_path + ")") << "\n";
    return {true, 0};
  }
  if (cli.dump) {
    out << dump_config(cfg);
    return {true, 0};
  }
  return {};
}

std::vector<error> reread_config(const std::vector<std::string>& args, server_config& cfg,
                                 const env_lookup& env) {
  cli_parser cli;
  std::vector<const char*> argv;
  for (auto& a : args)
    argv.push_back(a.c_str());
  try {
    cli.app.parse(static_cast<int>(argv.size()), argv.data());
  } catch (const CLI::ParseError& ex) {
    return {{make_error_code(errc::invalid_value), fmt::format("command line: {}", ex.what())}};
  }
  return cli.apply(cfg, env);
}

namespace {

/// The keys a SIGHUP applies (docs/signals.md has the table and says when
/// each takes effect); every other key keeps its running value until a
/// restart. tls.* are applied unless TLS is turned on or off.
const std::set<std::string, std::less<>>& reloadable_keys() {
  static const std::set<std::string, std::less<>> keys{
    // at once
    "log.level",
    "log.format",
    // at the next connection or registration
    "limits.max-agents",
    "limits.max-handshakes",
    "limits.max-connections-per-address",
    "limits.max-idle-principals",
    "auth.failed-login-limit",
    "auth.failed-login-window",
    // for sessions that start afterwards
    "limits.max-frame-bytes",
    "limits.messages-per-second",
    "limits.messages-burst",
    "limits.bytes-per-second",
    "limits.bytes-burst",
    "limits.quarantine-after",
    "limits.quarantine-window",
    "limits.quarantine-for",
    "timeouts.handshake",
    "timeouts.heartbeat-interval",
    "timeouts.idle",
    "timeouts.frame",
    "flow.output-high-water",
    "flow.slow-consumer",
    "flow.input-window",
    "auth.token",
    "auth.token-file",
    "auth.failed-login-delay",
    "trace.payload-bytes",
    "trace.anonymous-observe",
    "summoner.route",
    "summoner.idle-timeout",
    "summoner.max-line-bytes",
    "summoner.names",
    // for connections that start afterwards (with the TLS files' reload)
    "tls.cert",
    "tls.key",
    "tls.client-ca",
    "tls.verify-clients",
  };
  return keys;
}

std::string shown_value(const option_def& opt, const server_config& cfg) {
  if (opt.key() == "auth.token")
    return cfg.token.empty() ? "\"\"" : "\"<redacted>\"";
  return opt.get(cfg);
}

} // namespace

std::vector<host_port> cluster_peer_list(const server_config& cfg) {
  std::vector<host_port> out;
  for (auto item : comma_items(cfg.cluster_peers))
    if (auto peer = parse_host_port(item, "", 0); peer && !peer->host.empty() && peer->port != 0)
      out.push_back(*peer);
  return out;
}

std::string summoner_name_for(const server_config& cfg, std::string_view ip, uint16_t port) {
  auto exact = ip.find(':') == std::string_view::npos ? fmt::format("{}:{}", ip, port)
                                                      : fmt::format("[{}]:{}", ip, port);
  const std::string* by_ip = nullptr;
  for (auto& [addr, name] : cfg.summoner_names) {
    if (addr == exact)
      return name;
    if (addr == ip && by_ip == nullptr)
      by_ip = &name;
  }
  return by_ip != nullptr ? *by_ip : std::string{};
}

bool reloadable(std::string_view key) {
  return reloadable_keys().count(key) > 0;
}

std::vector<std::string> config_keys() {
  std::vector<std::string> out;
  for (auto& opt : options())
    out.push_back(opt.key());
  return out;
}

reload_plan plan_reload(const server_config& running, const server_config& read) {
  reload_plan plan;
  plan.next = running;
  // Turning TLS on or off changes what every connection must speak.
  bool tls_toggled = running.tls_enabled() != read.tls_enabled();
  for (auto& opt : options()) {
    auto before = opt.get(running);
    if (before == opt.get(read))
      continue;
    config_change c;
    c.key = opt.key();
    c.old_value = shown_value(opt, running);
    c.new_value = shown_value(opt, read);
    c.applied = reloadable(c.key) && !(tls_toggled && opt.section == "tls") && opt.copy;
    if (c.applied)
      opt.copy(plan.next, read);
    plan.changes.push_back(std::move(c));
  }
  // Applied keys may not fit the running values of the others (auth.token
  // next to an auth.credentials that needs a restart, tls.key without the
  // tls.cert of a running plaintext server...).
  for (auto& e : validate(plan.next)) {
    e.text = "with the running values of the keys that need a restart: " + e.text;
    plan.errors.push_back(std::move(e));
  }
  return plan;
}

} // namespace convoke::server
