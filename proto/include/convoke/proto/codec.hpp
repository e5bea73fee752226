#pragma once

/// @file
/// Length-prefixed framing of `convoke.v1.Frame` messages. CAF-free, so the
/// server, the SDK, the CLI, tests and benchmarks all share one codec.
///
/// Wire format: a 4-byte big-endian length N, then N bytes of one serialized
/// `Frame`. N = 0 or N > the configured maximum is a protocol error.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "convoke/v1/wire.pb.h"

namespace convoke::proto {

/// The protocol version described by wire.proto.
inline constexpr uint32_t protocol_version = 2;

/// Size of the length prefix.
inline constexpr size_t header_size = 4;

/// Default largest frame (the length value), 1 MiB.
inline constexpr uint32_t default_max_frame_bytes = 1u << 20;

/// What went wrong while splitting or decoding input.
enum class frame_error : uint8_t {
  none = 0,
  /// A length prefix of 0.
  empty,
  /// A length prefix above the configured maximum.
  too_large,
  /// A complete frame whose bytes are not a valid `Frame`.
  undecodable,
  /// A valid `Frame` with no member of `kind` set.
  no_kind,
};

/// Stable Notice code for a framing error (e.g. "frame_too_large").
std::string_view to_code(frame_error err) noexcept;

/// Appends one length-prefixed frame to `out`.
void append_frame(const v1::Frame& frame, std::vector<char>& out);
void append_frame(const v1::Frame& frame, std::string& out);

/// Returns one length-prefixed frame.
std::string encode_frame(const v1::Frame& frame);

/// Parses a frame body (without the prefix). Fails on undecodable bytes, on
/// fields whose wire type differs from the schema (see wire_check.hpp), and
/// on a `Frame` without a kind.
frame_error decode_frame(std::string_view body, v1::Frame& out);

/// Writes `len` as a 4-byte big-endian prefix at `dst`.
void write_header(char* dst, uint32_t len) noexcept;

/// Reads a 4-byte big-endian prefix at `src`.
uint32_t read_header(const char* src) noexcept;

/// Incremental splitter for a byte stream of length-prefixed frames. Handles
/// frames split across reads and many frames coalesced in one read. Memory is
/// bounded: it never buffers more than one maximal frame plus one read.
///
/// Usage: `append()` each read, then call `next()` until it returns false,
/// then `compact()`. After an error, `next()` keeps returning false and
/// `error()` tells what happened; the connection should be closed.
class frame_splitter {
public:
  explicit frame_splitter(uint32_t max_frame_bytes = default_max_frame_bytes)
    : max_frame_bytes_(max_frame_bytes) {}

  /// Appends received bytes.
  void append(const char* data, size_t size) {
    buf_.insert(buf_.end(), data, data + size);
  }

  /// Moves to the next complete frame. On success `body` views its bytes
  /// (valid until the next `append()` or `compact()`).
  bool next(std::string_view& body);

  /// Drops the bytes of frames already returned by `next()`.
  void compact();

  /// Sticky error state.
  frame_error error() const noexcept {
    return error_;
  }

  /// The offending length prefix after an `empty`/`too_large` error.
  uint32_t bad_length() const noexcept {
    return bad_length_;
  }

  /// Bytes received but not yet returned as frames.
  size_t buffered() const noexcept {
    return buf_.size() - pos_;
  }

  uint32_t max_frame_bytes() const noexcept {
    return max_frame_bytes_;
  }

  /// Changes the limit for frames not yet returned.
  void set_max_frame_bytes(uint32_t n) noexcept {
    max_frame_bytes_ = n;
  }

private:
  uint32_t max_frame_bytes_;
  std::vector<char> buf_;
  size_t pos_ = 0;
  frame_error error_ = frame_error::none;
  uint32_t bad_length_ = 0;
};

} // namespace convoke::proto
