#pragma once

// The Summoner wire protocol (../shared/summoner-wire.md, docs/summoner.md),
// free of CAF and sockets: what the compatibility listener's sessions need to
// turn Summoner lines into Convoke envelopes and Convoke deliveries back into
// Summoner relay lines. Unit tests and a fuzz target drive it with bytes.
//
// Summoner clients send newline-terminated UTF-8 lines and receive
//   {"remote_addr": "<ip:port or agent name>", "content": "<line as a JSON string>"}\n
// for every line another client sent, plus plain `Warning: ...` lines.
//
// Mapping (docs/summoner.md has the table):
//   - a Summoner line becomes an envelope on `route` with the line's
//     address in the `summoner-remote-addr` header. The SDK's typed
//     envelope, written exactly as the SDK writes it
//     (`{"_version": "1.3.0", "_payload": P, "_type": T}`), becomes payload P
//     (application/json) with headers `summoner-version` and `summoner-type`
//     (T); any other JSON line is application/json, anything else
//     text/plain; charset=utf-8, the line itself as payload.
//   - a delivery becomes a relay line: remote_addr is the
//     `summoner-remote-addr` header if present, else the sender's name;
//     content is the typed envelope rebuilt byte for byte (so Summoner to
//     Summoner relaying is exact), else the payload as text if it is UTF-8,
//     else `{"content_type": "...", "base64": "..."}`.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace convoke::server::summoner {

/// The Summoner SDK reads lines of at most 64 KiB (asyncio's StreamReader
/// limit): the default bound of a relayed line, its '\n' included.
inline constexpr size_t sdk_line_limit = 64 * 1024;

inline constexpr std::string_view text_content_type = "text/plain; charset=utf-8";
inline constexpr std::string_view json_content_type = "application/json";
inline constexpr std::string_view header_remote_addr = "summoner-remote-addr";
inline constexpr std::string_view header_version = "summoner-version";
inline constexpr std::string_view header_type = "summoner-type";

// -- input: lines --------------------------------------------------------------

/// Cuts a byte stream into lines at '\n'. One '\r' before the '\n' is
/// removed (as the Rust server does); a '\r' anywhere else stays. A line
/// whose content (the bytes before its '\n', a '\r' included) grows beyond
/// `max_line` bytes is reported once (too_long) and then discarded up to its
/// '\n' without being buffered: of a line not yet complete, at most
/// `max_line` + 1 bytes are held (plus, until next() has taken them, the
/// complete lines of the last read). Allocates nothing per line.
class line_splitter {
public:
  enum class result : uint8_t {
    /// No complete line is buffered.
    none,
    /// `line` is the next line (without '\n' and a '\r' before it).
    line,
    /// The line being read is longer than max_line: it is discarded;
    /// `too_long_size()` says how many bytes of it were seen so far.
    too_long,
  };

  explicit line_splitter(size_t max_line);

  void append(const char* data, size_t size);

  /// The next line or event. `line` views into the buffer: valid until the
  /// next append() or compact().
  result next(std::string_view& line);

  /// At EOF: the last line if it had no '\n' (false if there is none, or if
  /// it was being discarded as too long). Call after next() returned none.
  /// A '\r' at its end stays (no '\n' follows it).
  bool take_last(std::string_view& line);

  /// Bytes held of a line not yet complete.
  size_t buffered() const noexcept;

  /// Bytes of the too-long line reported last (at least max_line + 1).
  size_t too_long_size() const noexcept;

  /// True while the rest of a too-long line is being discarded.
  bool discarding() const noexcept;

  size_t max_line() const noexcept;

  /// Drops the bytes of lines already returned (call once next() returned
  /// none).
  void compact();

private:
  static constexpr size_t npos = static_cast<size_t>(-1);

  std::vector<char> buf_;
  size_t start_ = 0; // first byte not yet returned
  size_t scan_ = 0;  // where the search for '\n' goes on
  size_t tail_ = 0;  // where the line not yet ended starts
  size_t max_line_;
  size_t too_long_size_ = 0; // of the too-long line reported last
  size_t discard_size_ = 0;  // bytes seen of the line being discarded
  // Start of the line append() cut (its first max_line + 1 bytes are kept
  // so that next() reports it in order), npos when there is none.
  size_t truncated_at_ = npos;
  bool discarding_ = false;
  bool reported_ = false; // next() has reported the line being discarded
};

/// What a line holds, for the envelope it becomes.
enum class line_kind : uint8_t {
  /// Not JSON: text/plain.
  text,
  /// A JSON value that is not the SDK's typed envelope: application/json.
  json,
  /// The SDK's typed envelope: payload = its _payload.
  typed,
};

struct line_message {
  line_kind kind = line_kind::text;
  /// The line, or (typed) the exact bytes of `_payload`'s value.
  std::string_view payload;
  /// typed: `_version`'s value without quotes (only plain versions of
  /// [0-9A-Za-z.+-] are recognised), and `_type`'s value (JSON) as written.
  std::string_view version;
  std::string_view type;
};

/// Classifies a line (valid UTF-8, checked by the caller). A typed envelope
/// is recognised only in the exact form the SDK writes, so that
/// rebuild_typed() gives back the same bytes; other JSON is `json`.
/// Nesting deeper than 256 levels is not JSON here (text).
line_message classify(std::string_view line);

/// True if `text` is exactly one JSON value (RFC 8259), with optional
/// whitespace around it, nested at most 256 deep.
bool is_json(std::string_view text);

/// Appends `{"_version": "<version>", "_payload": <payload>, "_type":
/// <type>}` to `out`, as the SDK writes it (json.dumps with its default
/// separators).
void rebuild_typed(std::string& out, std::string_view version, std::string_view payload,
                   std::string_view type);

/// Appends the length-prefixed frame Frame{envelope{route, payload,
/// content_type, headers, sent_unix_nanos}} for a line from `remote_addr`,
/// in the wire format the relay's fast path scans (envelope_scan.hpp).
void append_envelope_frame(std::vector<char>& out, const line_message& msg, std::string_view route,
                           std::string_view remote_addr, int64_t sent_ns);

// -- output: relay lines and warnings -----------------------------------------

/// Appends `"` + `s` escaped as a JSON string + `"`: `"` `\` and control
/// characters escaped, everything else (valid UTF-8) raw.
void append_json_string(std::string& out, std::string_view s);

/// Bytes append_json_string would append.
size_t json_string_size(std::string_view s) noexcept;

/// Appends `{"remote_addr": <addr>, "content": <content>}\n`.
void append_relay_line(std::string& out, std::string_view remote_addr, std::string_view content);

/// Bytes append_relay_line would append ('\n' included).
size_t relay_line_size(std::string_view remote_addr, std::string_view content) noexcept;

/// The fields of an envelope a relay line is made of.
struct delivery_fields {
  uint64_t message_id = 0;
  std::string_view sender;
  std::string_view payload;
  std::string_view content_type;
  std::string_view remote_addr; // header summoner-remote-addr
  std::string_view version;     // header summoner-version
  std::string_view type;        // header summoner-type
};

/// Reads one Delivery frame body (without its length prefix), as the router
/// sends them: Frame{delivery{message_id, sender, relayed, envelope}}.
/// False if it is not one.
bool read_delivery(std::string_view frame_body, delivery_fields& out);

/// The content a Summoner client gets for a delivery (see the mapping
/// above), appended to `out`.
void append_content(std::string& out, const delivery_fields& d);

/// What render_deliveries made of a run of frames.
struct render_result {
  /// Relay lines appended (one per message).
  uint64_t lines = 0;
  /// Messages whose relay line would exceed `max_line`: not rendered.
  uint64_t too_large = 0;
  uint64_t first_too_large = 0;
  uint64_t last_too_large = 0;
  /// Frames that were not Delivery frames (skipped; a bug if not 0).
  uint64_t malformed = 0;
};

/// Turns a run of length-prefixed Delivery frames into relay lines
/// appended to `out`; `scratch` is reused for the content.
render_result render_deliveries(std::string_view frames, size_t max_line, std::string& out,
                                std::string& scratch);

/// Warning lines Summoner agents know (their SDK tests
/// content.startswith("Warning:")).
inline constexpr std::string_view warning_rate_limited
  = "Warning: You are sending messages too quickly. Please slow down.\n";
inline constexpr std::string_view warning_inactivity
  = "Warning: You have been disconnected due to inactivity.\n";
inline constexpr std::string_view warning_shutdown = "Warning: Server is shutting down.\n";

/// The line for a Notice or Goodbye `code` with its `text`: the three known
/// Warnings above for rate_limited, idle_timeout, shutdown and lame_duck;
/// otherwise "Warning: <text> (<code>)\n" with line breaks in `text`
/// replaced by spaces.
std::string warning_line(std::string_view code, std::string_view text);

// -- names ---------------------------------------------------------------------

/// "ip:port", IPv6 as "[addr]:port" (what Summoner servers put in
/// remote_addr).
std::string remote_addr(std::string_view ip, uint16_t port);

/// The agent name of a Summoner connection without a configured name:
/// "summoner@<ip>:<port>" (IPv6 without brackets), a valid agent name.
std::string default_name(std::string_view ip, uint16_t port);

} // namespace convoke::server::summoner
