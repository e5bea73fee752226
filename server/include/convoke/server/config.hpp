#pragma once

/// @file
/// Server configuration. Sources, lowest to highest precedence:
/// built-in defaults < config file (TOML, `--config` or CONVOKE_CONFIG) <
/// environment (CONVOKE_<SECTION>_<KEY>, e.g. CONVOKE_LISTEN_PORT) <
/// command-line flags (--section.key value). Every key is listed by
/// `convoke-server --help` and, with its default, in
/// deploy/config/convoke-server.toml.

#include <chrono>
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "convoke/common/error.hpp"
#include "convoke/common/logging.hpp"
#include "convoke/common/units.hpp"
#include "convoke/server/error.hpp"
#include "convoke/tls/tls.hpp"

namespace convoke::server {

/// What happens to an agent whose connection does not drain its output.
/// Which messages get a `written` trace event per receiver (trace.written).
enum class trace_written_policy : uint8_t { none, traced, all };

enum class slow_consumer_policy : uint8_t {
  /// Send a `slow_consumer` Notice and close the connection.
  disconnect,
  /// Drop messages for it while its buffer is full and tell it how many
  /// were dropped once it catches up.
  drop,
};

struct server_config {
  // [server]
  std::string name = "convoke";
  // [listen]
  std::string host = "127.0.0.1";
  uint16_t port = 7420;
  std::string port_file;
  /// Allows a non-loopback listen.host without TLS (secure by default:
  /// refused otherwise).
  bool allow_plaintext = false;
  /// SO_REUSEPORT on the client port: several nodes on one host share it
  /// (docs/cluster.md, "Every core of a machine").
  bool listen_reuse_port = false;
  // [limits]
  uint32_t max_frame_bytes = 1u << 20;
  uint32_t max_agents = 10000;
  uint32_t max_handshakes = 1000;
  uint32_t max_routes = 256;
  // [timeouts]
  std::chrono::milliseconds handshake_timeout{5000};
  std::chrono::milliseconds heartbeat_interval{10000};
  std::chrono::milliseconds idle_timeout{30000};
  std::chrono::milliseconds frame_timeout{15000};
  std::chrono::milliseconds drain_timeout{5000};
  // [lame-duck] (SIGUSR2 or server::lame_duck(): stop accepting, close the
  // agents one by one with Goodbye(lame_duck), exit)
  /// The whole lame-duck phase: the closes are spread over it, after the
  /// grace; the last agent is closed when it ends.
  std::chrono::milliseconds lame_duck_duration{30000};
  /// Wait this long before the first close, so that load balancers see
  /// /readyz fail (server::draining()) and stop sending agents here.
  std::chrono::milliseconds lame_duck_grace{5000};
  // [flow]
  uint64_t output_high_water = 8ull << 20;
  slow_consumer_policy slow_consumer = slow_consumer_policy::disconnect;
  uint64_t input_window = 1ull << 20;
  // [limits] (continued)
  uint64_t max_buffered_bytes = 512ull << 20;
  /// Open connections per peer IP address (0 = unlimited).
  uint32_t max_connections_per_address = 1024;
  /// Rate limits per principal (0 = unlimited); a burst of 0 means one
  /// second's worth (bytes: at least max_frame_bytes).
  uint32_t messages_per_second = 0;
  uint32_t messages_burst = 0;
  uint64_t bytes_per_second = 0;
  uint64_t bytes_burst = 0;
  /// Breaches (at most one a second) within quarantine_window that
  /// quarantine a principal for quarantine_for (0 = never).
  uint32_t quarantine_after = 10;
  std::chrono::milliseconds quarantine_window{60000};
  std::chrono::milliseconds quarantine_for{300000};
  /// Principals without a connection that are remembered (rate limit state,
  /// quarantine); beyond it the least recently active are forgotten.
  uint32_t max_idle_principals = 16384;
  // [auth]
  /// Shared secret (one for every agent). Never from the command line: from
  /// auth.token-file, the environment or the config file.
  std::string token;
  std::string token_file;
  /// Credentials file: identities with token hashes, rights and limits.
  std::string credentials;
  /// Allows a non-loopback listen.host without authentication.
  bool allow_anonymous = false;
  /// A failed login is answered this long after its Hello.
  std::chrono::milliseconds failed_login_delay{1000};
  /// Failed logins from one address within failed_login_window after which
  /// that address is refused until the window ends.
  uint32_t failed_login_limit = 10;
  std::chrono::milliseconds failed_login_window{60000};
  // [log]
  std::string log_level = "info";
  logging::format log_format = logging::format::text;
  std::string log_file;
  // [trace]
  bool trace_enabled = true;
  std::string trace_file = "-";
  logging::format trace_format = logging::format::text;
  uint64_t trace_payload_bytes = 0;
  uint64_t trace_max_file_bytes = 64ull << 20;
  uint32_t trace_max_files = 5;
  uint64_t trace_buffer_bytes = 16ull << 20;
  trace_written_policy trace_written = trace_written_policy::none;
  /// What agents without an identity (no credentials file, or the shared
  /// token) may observe with Observe: "none", "metadata" or "payload".
  std::string trace_anonymous_observe = "metadata";
  /// Observers (Observe, the web view) at once; more are refused.
  uint32_t trace_max_observers = 64;
  // [tls] With tls_cert set, every connection must speak TLS. The TLS
  // handshake counts against timeouts.handshake (it and Hello must both
  // finish within it); there is no separate TLS timeout.
  std::string tls_cert;
  std::string tls_key;
  std::string tls_client_ca;
  tls::client_verification tls_verify_clients = tls::client_verification::off;
  // [admin] The admin HTTP listener (docs/operations.md).
  bool admin_enabled = true;
  std::string admin_host = "127.0.0.1";
  uint16_t admin_port = 7421;
  std::string admin_port_file;
  bool admin_tls = false;
  std::chrono::milliseconds admin_request_timeout{5000};
  // [summoner] The compatibility listener for Summoner clients
  // (docs/summoner.md): off while summoner_listen is empty.
  std::string summoner_listen;
  std::string summoner_port_file;
  /// Route of the envelopes made from Summoner lines.
  std::string summoner_route = "summoner";
  /// Silence after which a Summoner connection is closed (0: never;
  /// Summoner has no heartbeat and listen-only agents are normal).
  std::chrono::milliseconds summoner_idle_timeout{0};
  /// Largest relay line ('\n' included) a Summoner client is sent.
  uint64_t summoner_max_line_bytes = 64 * 1024;
  /// Operator names: (address, agent name); the address is "ip" or
  /// "ip:port" ("[v6]:port"), an exact ip:port wins over an ip.
  std::vector<std::pair<std::string, std::string>> summoner_names;
  /// With auth.credentials: the identity whose rights Summoner
  /// connections get (they cannot authenticate).
  std::string summoner_identity;
  // [cluster] Nodes sharing one namespace over CAF's BASP (docs/cluster.md):
  // off while cluster_name is empty.
  std::string cluster_name;
  /// This node's name; empty: "<hostname>-<4 hex digits>" drawn at start.
  std::string cluster_node;
  std::string cluster_listen = "127.0.0.1:7422";
  std::string cluster_port_file;
  /// Seeds, "host:port,...".
  std::string cluster_peers;
  /// The client address other nodes hand out in reconnect hints; empty:
  /// listen.host:port (the host name when listening on every address).
  std::string cluster_advertise;
  std::chrono::milliseconds cluster_heartbeat{1000};
  std::chrono::milliseconds cluster_timeout{5000};
  std::chrono::milliseconds cluster_retry{1000};
  /// Relayed bytes sent to one node and not yet acknowledged by it.
  uint64_t cluster_max_pending_bytes = 64ull << 20;
  /// Mutual TLS between nodes (CAF's openssl module): this node's
  /// certificate chain and key, and the CA the other nodes' certificates
  /// must chain to. All three or none.
  std::string cluster_tls_cert;
  std::string cluster_tls_key;
  std::string cluster_tls_ca;

  bool cluster_enabled() const noexcept {
    return !cluster_name.empty();
  }
  /// Whether the cluster link is mutual TLS (validate() checks that the
  /// three cluster.tls-* keys come together).
  bool cluster_tls_enabled() const noexcept {
    return !cluster_tls_cert.empty() && !cluster_tls_key.empty() && !cluster_tls_ca.empty();
  }
  /// The cluster.tls-* keys as the TLS library takes them (a node requires
  /// the certificate of every node that connects to it).
  tls::server_settings cluster_tls_settings() const {
    return {cluster_tls_cert, cluster_tls_key, cluster_tls_ca, tls::client_verification::require};
  }

  bool tls_enabled() const noexcept {
    return !tls_cert.empty();
  }
  /// The [tls] keys as the TLS library takes them.
  tls::server_settings tls_settings() const {
    return {tls_cert, tls_key, tls_client_ca, tls_verify_clients};
  }
};

/// Checks cross-field rules; returns every problem (`errc::invalid_config`,
/// `errc::invalid_value` for a value out of range), none if valid.
/// Configuration checks return lists, not `expected<>`: an operator gets
/// every problem of a file in one run.
std::vector<error> validate(const server_config& cfg);

/// True if `host` names a loopback address (127.0.0.0/8, ::1, localhost):
/// only those may be bound without authentication and TLS.
bool is_loopback_host(const std::string& host);

/// Reads auth.token-file into `cfg.token` (`errc::bad_config_file` naming
/// the file and why, or an empty file).
expected<> load_token_file(server_config& cfg);

/// Checks that the output files (log, trace, port file) can be written
/// without creating directories (`errc::unwritable_file`), that
/// `listen.host` resolves (`errc::resolve_failed`) and that the [tls] files
/// make a usable TLS context (`errc::invalid_value`, with OpenSSL's reason);
/// every problem, none if all is well.
std::vector<error> check_paths(const server_config& cfg);

/// Looks up an environment variable (injectable for tests).
using env_lookup = std::function<std::optional<std::string>(const std::string&)>;

/// The process environment.
env_lookup process_env();

/// Outcome of `parse_command_line`.
struct cli_result {
  /// True if the program should exit now (help, version, check, errors).
  bool exit = false;
  int exit_code = 0;
};

/// Fills `cfg` from defaults, the config file, the environment and `argv`,
/// handling --help, --version, --check-config and --dump-config. Errors and
/// informational output go to `err` and `out`.
cli_result parse_command_line(int argc, const char* const* argv, server_config& cfg,
                              std::ostream& out, std::ostream& err,
                              const env_lookup& env = process_env());

/// Reads the configuration again from the sources `parse_command_line`
/// used (`args` is its argv: the file named by --config or CONVOKE_CONFIG,
/// the environment, the flags, which still win), then the token file and
/// `validate()`; for SIGHUP. Does not load the credentials or TLS files
/// (the reload does that on its own) or check the output files (their keys
/// need a restart). Every problem, none if `cfg` is complete.
std::vector<error> reread_config(const std::vector<std::string>& args, server_config& cfg,
                                 const env_lookup& env = process_env());

/// Whether a changed key takes effect on SIGHUP ("log.level"); the others
/// need a restart. docs/signals.md says when each one applies.
bool reloadable(std::string_view key);

/// The operator's name for a Summoner connection from `ip`:`port`
/// (summoner.names: "ip:port" first, then "ip"); empty if none.
std::string summoner_name_for(const server_config& cfg, std::string_view ip, uint16_t port);

/// cluster.peers as a list of host:port (checked by validate()).
std::vector<host_port> cluster_peer_list(const server_config& cfg);

/// Every configuration key ("section.name"), in the order of --help.
std::vector<std::string> config_keys();

/// One key whose value differs between the running configuration and the
/// one read on SIGHUP.
struct config_change {
  std::string key;
  /// Values as TOML literals; auth.token is shown as "<redacted>".
  std::string old_value;
  std::string new_value;
  /// Applied; false: the key needs a restart and keeps its running value.
  bool applied = false;
};

/// What a reload would do.
struct reload_plan {
  /// The configuration to run with: the running one plus the applied keys.
  server_config next;
  /// Every changed key, in the order of --help.
  std::vector<config_change> changes;
  /// `validate()` problems of `next` (applied keys that do not fit the
  /// running values of keys needing a restart); if any, nothing may change.
  std::vector<error> errors;
};

/// Compares the running configuration with a (valid) one read on SIGHUP.
/// Turning TLS on or off (tls.cert set or cleared) needs a restart.
reload_plan plan_reload(const server_config& running, const server_config& read);

/// `convoke-server credentials add|remove|list FILE ...` (argv starts at
/// "credentials"): manages a credentials file; returns the exit code.
int credentials_command(int argc, const char* const* argv, std::ostream& out, std::ostream& err);

/// Applies one key ("listen.port") from text. Errors: `errc::unknown_key`
/// ("unknown key 'x'") or `errc::invalid_value` ("'soon' is not a duration
/// ..."); `cfg` is unchanged then.
expected<> set_option(server_config& cfg, const std::string& key, const std::string& value);

/// Reads a TOML config file into `cfg`. Returns every problem, each text
/// starting with "path:line:": `errc::bad_config_file` (missing file, TOML
/// syntax, a key outside a [section]), `errc::unknown_key`,
/// `errc::invalid_value`. None if the file was applied completely.
std::vector<error> load_file(server_config& cfg, const std::string& path);

/// One key of the effective configuration: `value` is a TOML literal that
/// is also valid JSON (a quoted string, a number or a boolean).
struct config_entry {
  std::string section;
  std::string name;
  std::string value;
};

/// Every key in `--help` order; the token is redacted ("<redacted>").
std::vector<config_entry> config_entries(const server_config& cfg);

/// The effective configuration as TOML (the token is redacted).
std::string dump_config(const server_config& cfg);

/// The commented sample configuration with every key at its default
/// (the content of deploy/config/convoke-server.toml).
std::string sample_config();

/// Environment variable name for a key: "flow.output-high-water" ->
/// "CONVOKE_FLOW_OUTPUT_HIGH_WATER".
std::string env_name(const std::string& key);

} // namespace convoke::server
