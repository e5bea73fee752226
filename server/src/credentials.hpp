#pragma once

// Identities, their rights and their token hashes: the credentials file
// (TOML, `auth.credentials`), free of CAF. docs/security.md describes the
// format and the threat model.
//
//   [identity.planner]
//   token-hash = "$argon2id$v=19$m=19456,t=2,p=1$..."  # never the token
//   names = ["planner", "planner.*"]   # agent names it may use
//   publish = ["tasks.>"]              # routes it may broadcast on
//   subscribe = ["results.>"]          # routes it may subscribe to
//   send = ["worker.*"]                # agents it may message directly
//   receive = true                     # may receive direct messages
//   observe = "none"                   # traces: none, metadata, payload
//   admin = false                      # admin HTTP endpoints
//   messages-per-second = 0            # 0: the server-wide default
//   bytes-per-second = 0
//
// A right that is absent is denied (an empty list), except `names`, which
// defaults to the identity's own name. Patterns follow proto/subject.hpp.

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "convoke/common/error.hpp"
#include "convoke/server/config.hpp"

namespace convoke::server {

/// How much of the message traces an identity may observe.
enum class observe_level : uint8_t { none, metadata, payload };

std::string_view to_string(observe_level level) noexcept;

/// What an identity may do. Lists hold patterns; `>` alone allows all.
struct rights {
  std::vector<std::string> publish;
  std::vector<std::string> subscribe;
  std::vector<std::string> send;
  bool receive = false;
  observe_level observe = observe_level::none;
  bool admin = false;

  /// Everything allowed: what anonymous agents and the shared token get.
  static rights all();

  /// May broadcast on `route` ("" = a broadcast without route, which
  /// needs the right to publish on every route, `>`).
  bool may_publish(std::string_view route) const noexcept;
  /// May subscribe to `pattern` (a route or a pattern it covers).
  bool may_subscribe(std::string_view pattern) const noexcept;
  /// May send a direct message to the agent `name`.
  bool may_send(std::string_view name) const noexcept;
  /// False if some subscription pattern is refused: then the agent receives
  /// broadcasts only on routes it subscribed to (never "everything").
  bool subscribes_everywhere() const noexcept;
  /// True if `send` allows every recipient.
  bool sends_everywhere() const noexcept;
};

/// Per-identity rate limits; 0 means the server-wide default.
struct identity_limits {
  uint64_t messages_per_second = 0;
  uint64_t bytes_per_second = 0;
};

struct identity {
  std::string name;
  /// argon2id hash in libsodium's string form (crypto_pwhash_str).
  std::string token_hash;
  /// Agent names (patterns) this identity may connect as.
  std::vector<std::string> names;
  struct rights rights;
  identity_limits limits;

  bool may_use_name(std::string_view agent_name) const noexcept;
};

/// The identities of a credentials file, by name.
class credential_store {
public:
  /// Reads and checks a credentials file. Every problem is returned, each
  /// text starting with "path:line:" (`errc::bad_config_file`,
  /// `errc::invalid_value`, `errc::unknown_key`).
  static tl::expected<std::shared_ptr<const credential_store>, std::vector<error>>
  load(const std::string& path);

  /// Parses credentials from TOML text (`origin` names it in errors).
  static tl::expected<std::shared_ptr<const credential_store>, std::vector<error>>
  parse(std::string_view text, const std::string& origin);

  /// The identity called `name`, or null.
  std::shared_ptr<const identity> find(std::string_view name) const;

  size_t size() const noexcept {
    return identities_.size();
  }

  const std::map<std::string, std::shared_ptr<const identity>, std::less<>>& all() const noexcept {
    return identities_;
  }

private:
  std::map<std::string, std::shared_ptr<const identity>, std::less<>> identities_;
};

/// Tokens: 32 bytes from the CSPRNG, hex-encoded (64 characters).
std::string generate_token();

/// Shortest and longest token the server verifies; anything else is refused
/// before any hashing (tokens are machine-generated, not passwords).
inline constexpr size_t min_token_length = 16;
inline constexpr size_t max_token_length = 256;

/// argon2id hash of `token` (libsodium, opslimit 2, memlimit 19 MiB: the
/// OWASP minimum for argon2id; tokens carry 256 bits, so the hash guards a
/// leaked file, not a weak secret).
expected<std::string> hash_token(std::string_view token);

/// Checks `token` against an argon2id hash string (constant time in the
/// token's content; libsodium).
bool verify_token(const std::string& hash, std::string_view token) noexcept;

/// Renders one identity as a TOML table (what `credentials add` writes).
std::string format_identity(const identity& id);

} // namespace convoke::server
