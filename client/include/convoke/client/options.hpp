#pragma once

/// @file
/// Connection options of an agent.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace convoke {

/// Reconnection with exponential backoff and jitter.
///
/// With several servers (`client_options::servers`) the SDK goes round
/// them: a *round* tries each address once. After a failed attempt the next
/// address of the round is tried at once; after a lost session the first
/// attempt waits `initial_delay` (jittered, so that the agents of a dead
/// server do not all come back in the same instant); once every address of
/// a round has failed, the backoff below applies before the next round. With
/// one server a round is one attempt, so the delays are the same as ever.
struct reconnect_policy {
  /// Try again after a lost connection or a failed connect. Off, an agent
  /// with several servers still tries each once to get its first session,
  /// and stops when a session ends.
  bool enabled = true;
  /// First delay; each further failed round multiplies it by `multiplier`,
  /// up to `max_delay`. The counter resets after a successful session.
  std::chrono::milliseconds initial_delay{100};
  std::chrono::milliseconds max_delay{5000};
  double multiplier = 2.0;
  /// Each delay is randomized by +/- this fraction (0.2 = 20%).
  double jitter = 0.2;
  /// Give up after this many consecutive failed rounds (0 = never); with
  /// one server, after this many consecutive failures.
  int max_attempts = 0;
};

/// One server an agent can connect to.
struct server_address {
  std::string host = "127.0.0.1";
  uint16_t port = 7420;
  /// TLS (a tls:// address): encrypted, the server's certificate verified,
  /// with the TLS settings of `client_options`.
  bool tls = false;

  bool operator==(const server_address&) const = default;
};

/// The longest server address text accepted (`parse_server_address`).
inline constexpr size_t max_server_address_length = 512;

/// "host:port", "[v6]:port", with "tls://" in front for TLS.
std::string to_string(const server_address& a);

/// Parses one address: "host:port" (also ":port", "port", "[v6]:port"),
/// optionally with a scheme: "tls://" for TLS, "tcp://" or none for
/// plaintext. A missing host or port is taken from `defaults`. Nothing for
/// a malformed address, an unknown scheme, an empty host, port 0, or text
/// longer than `max_server_address_length`.
std::optional<server_address> parse_server_address(std::string_view text,
                                                   const server_address& defaults = {});

struct client_options {
  /// The server, when there is one (see `servers` for several).
  std::string host = "127.0.0.1";
  uint16_t port = 7420;
  /// Several servers, e.g. the nodes of a cluster (docs/cluster.md). When
  /// not empty, this is the agent's list and `host`, `port` and `tls` are
  /// not used: the agent connects to the first and, when an attempt fails
  /// or a session ends, goes on with the next one, round after round (see
  /// `reconnect_policy`). On a reconnect it presents its resume token
  /// wherever it lands, so a cluster node takes its name over. A server
  /// that sends the agent away (Goodbye "shutdown" or "lame_duck" with
  /// `reconnect_to`) names where to go first: those addresses are tried
  /// before the list's, if reconnecting is enabled. Such an address must
  /// have the scheme of the connection it came on (a TLS connection only
  /// sends the agent to tls:// addresses, a plaintext one only to plaintext
  /// ones; others are ignored and logged), at most 16 are taken, and it
  /// never changes this list. Each entry has its own `tls`; keep them all
  /// one kind (`set_server_address` refuses a mix): with plaintext entries
  /// beside TLS ones, whoever blocks the TLS servers gets the agent, and
  /// its token, in plaintext.
  std::vector<server_address> servers;
  /// Role label shown in server logs and traces.
  std::string role;
  /// Identity to authenticate as, when the server has a credentials file;
  /// empty means the identity named like the agent.
  std::string identity;
  /// The identity's token, or the server's shared secret. Programs should
  /// read it from a file or the environment (`read_token`), never argv.
  std::string token;
  /// Bound on the TCP connect and on the wait for Welcome.
  std::chrono::milliseconds connect_timeout{5000};
  reconnect_policy reconnect;
  /// Outgoing bytes that may wait for the socket before sends fail with
  /// `errc::send_buffer_full`.
  uint64_t max_pending_bytes = 8ull << 20;
  /// Received bytes that may wait for the agent before the SDK stops reading
  /// (TCP backpressure towards the server).
  uint64_t max_inbound_bytes = 4ull << 20;
  /// Time allowed on stop for teardown's messages and Goodbye to leave.
  std::chrono::milliseconds stop_timeout{2000};

  // TLS (set by a tls:// address): the connection is encrypted and the
  // server's certificate verified, host name included (always). With
  // `servers`, each address says for itself; the settings below apply to
  // every TLS address.
  bool tls = false;
  /// PEM CA certificates the server's certificate must chain to; empty:
  /// the system's trust store.
  std::string tls_ca_file;
  /// PEM client certificate and its key, for servers that ask for one
  /// (mutual TLS); both or neither.
  std::string tls_cert_file;
  std::string tls_key_file;
  /// The name the server's certificate must carry (DNS name or IP
  /// address); empty: the host of the address connected to. Also sent as
  /// SNI when it is a DNS name. Set, it applies to every address.
  std::string tls_server_name;
};

/// Reads a token: the first line of `file` if given, else the environment
/// variable `env_var`; "" if neither is set. Throws std::runtime_error if the
/// file cannot be read or is empty (a token file that is not there is an
/// error, not "no token").
std::string read_token(const std::string& file, const char* env_var = "CONVOKE_TOKEN");

/// The servers an agent with `opts` goes round: `servers` if not empty,
/// else the one address `host`, `port`, `tls`.
std::vector<server_address> server_list(const client_options& opts);

/// Sets the server address from text: one address (`parse_server_address`;
/// a missing host or port keeps `opts`') or several separated by commas,
/// e.g. "tls://a:7420,tls://b:7420" (spaces around an address are
/// ignored). One address sets `host`, `port` and `tls` and clears
/// `servers`; several set `servers`, and `host`, `port`, `tls` to the
/// first. Returns false, leaving `opts` as it was, for a malformed address,
/// an unknown scheme, an empty entry, or a list that mixes TLS and
/// plaintext (an attacker who blocks the TLS servers would get the agent,
/// and its token, in plaintext); `why` (if given) says which.
bool set_server_address(client_options& opts, const std::string& address,
                        std::string* why = nullptr);

} // namespace convoke
