#pragma once

// A blocking test client that behaves as the Summoner SDK (summoner-core
// 1.3.0) does on the wire (../shared/summoner-wire.md): newline-terminated
// UTF-8 lines out, typed envelopes written as Python's json.dumps writes
// them, lines read with asyncio's 64 KiB StreamReader limit, relay lines
// recovered as the SDK's recover_with_types does, `Warning:` lines
// recognised. A line the SDK could not read (longer than 64 KiB, not UTF-8)
// is a test failure here: the SDK would drop it or crash.

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace convoke::test {

using namespace std::chrono_literals;

/// JSON values with their keys in insertion order, as Python dicts keep
/// them.
using pyjson = nlohmann::ordered_json;

/// The SDK's read limit (asyncio.StreamReader's default): a line of more
/// bytes ('\n' included) is dropped by the SDK or makes readline() raise.
inline constexpr size_t summoner_sdk_line_limit = 64 * 1024;

/// The envelope version summoner-core 1.3.0 writes.
inline constexpr std::string_view summoner_sdk_version = "1.3.0";

/// `json.dumps(value)` with Python's defaults: separators ", " and ": ",
/// ensure_ascii (every non-ASCII code point as \uXXXX, lower-case hex,
/// surrogate pairs above U+FFFF; DEL as \u007f), floats as repr() writes
/// them, keys in insertion order.
std::string py_json_dumps(const pyjson& value);

/// `json.dumps(s)` of one string.
std::string py_json_string(std::string_view s);

/// The SDK's type tree of a payload (parse_v0_0_1): "str", "int", "float",
/// "bool", "null" at the leaves; lists and objects recurse.
pyjson summoner_type_tree(const pyjson& payload);

/// The line the SDK sends for `payload` (wrap_with_types):
/// `{"_version": "1.3.0", "_payload": <payload>, "_type": <types>}\n`.
std::string summoner_typed_line(const pyjson& payload,
                                std::string_view version = summoner_sdk_version);

/// One line the server sent, read as the SDK reads it.
struct summoner_line {
  /// The line without its '\n' (and, if the server ended without one, as
  /// it was).
  std::string raw;
  /// True if the line ended with '\n'.
  bool terminated = false;
  /// A `Warning:` notice (the SDK tests content.startswith("Warning:")).
  bool warning = false;
  /// A relay line `{"remote_addr": ..., "content": "<string>"}`: its
  /// fields as sent (content is the other client's line).
  bool relay = false;
  std::string remote_addr;
  std::string content;
  /// What the SDK's recover_with_types makes of the line: for a relay line
  /// whose content is a typed envelope, {"remote_addr", "content":
  /// <typed payload>}; otherwise the fully recovered JSON value, or the
  /// text itself.
  pyjson recovered;
};

/// Applies the SDK's recover_with_types to one received line (without
/// '\n').
pyjson summoner_recover(std::string_view line);

/// True if `s` is valid UTF-8 (no overlong forms, no surrogates, at most
/// U+10FFFF), as Python's bytes.decode() requires.
bool valid_utf8(std::string_view s);

class summoner_client {
public:
  summoner_client() = default;
  explicit summoner_client(uint16_t port, const std::string& host = "127.0.0.1");

  /// Connects from `source` (another loopback address such as
  /// "127.0.0.2"): the server sees another peer address.
  static summoner_client from_address(uint16_t port, const std::string& source);

  /// Connects with SO_RCVBUF set before connecting (a receiver that reads
  /// slowly, or not at all).
  static summoner_client with_receive_buffer(uint16_t port, int bytes);

  ~summoner_client();
  summoner_client(summoner_client&& other) noexcept;
  summoner_client& operator=(summoner_client&& other) noexcept;

  bool connected() const noexcept {
    return fd_ >= 0;
  }

  /// The client's own address as the server sees it ("127.0.0.1:40000").
  std::string local_addr() const;
  uint16_t local_port() const;

  /// Writes `bytes` as they are (any bytes, split lines, no '\n', ...).
  bool send_raw(std::string_view bytes);

  /// Writes `text` + "\n".
  bool send_line(std::string_view text);

  /// Writes the SDK's typed envelope of `payload` (summoner_typed_line).
  bool send_typed(const pyjson& payload);

  /// Shuts down the sending side (the server sees EOF; reading goes on).
  void shutdown_write();

  /// The next line as the SDK's _read_line_safe gets it. A line longer
  /// than the SDK's limit or not UTF-8 is reported as a test failure (the
  /// SDK would drop it or crash) and returned anyway. nullopt on timeout
  /// or EOF (see eof()).
  std::optional<summoner_line> read(std::chrono::milliseconds timeout = 3s);

  /// Reads until a relay line arrives (failing the test on a Warning or
  /// other line meanwhile unless `skip_warnings`).
  std::optional<summoner_line> read_relay(std::chrono::milliseconds timeout = 3s,
                                          bool skip_warnings = false);

  /// Reads until a Warning line arrives, skipping relay lines (counted in
  /// `skipped` if given).
  std::optional<summoner_line> read_warning(std::chrono::milliseconds timeout = 3s,
                                            size_t* skipped = nullptr);

  /// True if the server closes the connection within `timeout`; the lines
  /// before the close are appended to `before`.
  bool wait_closed(std::chrono::milliseconds timeout, std::vector<summoner_line>* before = nullptr);

  /// True once the server closed its side and every line was read.
  bool eof() const noexcept {
    return eof_ && buf_.empty();
  }

  /// Bytes received so far.
  uint64_t bytes_received() const noexcept {
    return received_;
  }

  void close();

private:
  bool fill(std::chrono::steady_clock::time_point deadline);

  int fd_ = -1;
  std::string buf_;
  bool eof_ = false;
  uint64_t received_ = 0;
};

} // namespace convoke::test
