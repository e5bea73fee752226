#include "convoke/proto/codec.hpp"

#include <cstring>

#include "convoke/proto/wire_check.hpp"

namespace convoke::proto {

std::string_view to_code(frame_error err) noexcept {
  switch (err) {
  case frame_error::none:
    return "ok";
  case frame_error::empty:
    return "frame_empty";
  case frame_error::too_large:
    return "frame_too_large";
  case frame_error::undecodable:
    return "frame_undecodable";
  case frame_error::no_kind:
    return "frame_without_kind";
  }
  return "frame_error";
}

void write_header(char* dst, uint32_t len) noexcept {
  dst[0] = static_cast<char>((len >> 24) & 0xFF);
  dst[1] = static_cast<char>((len >> 16) & 0xFF);
  dst[2] = static_cast<char>((len >> 8) & 0xFF);
  dst[3] = static_cast<char>(len & 0xFF);
}

uint32_t read_header(const char* src) noexcept {
  auto b = reinterpret_cast<const unsigned char*>(src);
  return (uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) | (uint32_t{b[2]} << 8) | uint32_t{b[3]};
}

namespace {

template <class Buffer>
void append_frame_impl(const v1::Frame& frame, Buffer& out) {
  auto size = frame.ByteSizeLong();
  auto offset = out.size();
  out.resize(offset + header_size + size);
  auto dst = reinterpret_cast<char*>(out.data()) + offset;
  write_header(dst, static_cast<uint32_t>(size));
  frame.SerializeWithCachedSizesToArray(reinterpret_cast<uint8_t*>(dst + header_size));
}

} // namespace

void append_frame(const v1::Frame& frame, std::vector<char>& out) {
  append_frame_impl(frame, out);
}

void append_frame(const v1::Frame& frame, std::string& out) {
  append_frame_impl(frame, out);
}

std::string encode_frame(const v1::Frame& frame) {
  std::string out;
  append_frame(frame, out);
  return out;
}

frame_error decode_frame(std::string_view body, v1::Frame& out) {
  // Strict first: protobuf would take a field with the wrong wire type for
  // an unknown one and leave the typed field empty (see wire_check.hpp).
  if (!conforms(body, *v1::Frame::descriptor()))
    return frame_error::undecodable;
  if (!out.ParseFromArray(body.data(), static_cast<int>(body.size())))
    return frame_error::undecodable;
  if (out.kind_case() == v1::Frame::KIND_NOT_SET)
    return frame_error::no_kind;
  return frame_error::none;
}

bool frame_splitter::next(std::string_view& body) {
  if (error_ != frame_error::none)
    return false;
  auto avail = buf_.size() - pos_;
  if (avail < header_size)
    return false;
  auto len = read_header(buf_.data() + pos_);
  if (len == 0 || len > max_frame_bytes_) {
    // Fail as soon as the prefix is visible: never buffer an oversize body.
    error_ = len == 0 ? frame_error::empty : frame_error::too_large;
    bad_length_ = len;
    return false;
  }
  if (avail - header_size < len)
    return false;
  body = std::string_view{buf_.data() + pos_ + header_size, len};
  pos_ += header_size + len;
  return true;
}

void frame_splitter::compact() {
  if (pos_ == 0)
    return;
  if (pos_ == buf_.size()) {
    buf_.clear();
    // Nothing buffered: give back what a large frame or a burst grew (idle
    // connections keep at most 64 KiB; busy ones rarely end a read exactly
    // on a frame boundary, so this costs them next to nothing).
    if (buf_.capacity() > 64 * 1024)
      std::vector<char>{}.swap(buf_);
  } else {
    std::memmove(buf_.data(), buf_.data() + pos_, buf_.size() - pos_);
    buf_.resize(buf_.size() - pos_);
    if (buf_.capacity() > 256 * 1024 && buf_.size() < 64 * 1024)
      buf_.shrink_to_fit();
  }
  pos_ = 0;
}

} // namespace convoke::proto
