#include "frozen_file.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <utility>

#include <fmt/format.h>

namespace convoke::server::internal {

namespace {

constexpr size_t max_size = 1 << 20;

} // namespace

expected<frozen_file> frozen_file::copy_of(const std::string& key, const std::string& path) {
  auto bad = [&](const std::string& why) {
    return fail(errc::bad_config_file, fmt::format("{} '{}': {}", key, path, why));
  };
  std::ifstream in{path, std::ios::binary};
  if (!in)
    return bad(fmt::format("cannot be read: {}", std::strerror(errno)));
  std::string text;
  char buf[8192];
  while (in.read(buf, sizeof buf) || in.gcount() > 0) {
    text.append(buf, static_cast<size_t>(in.gcount()));
    if (text.size() > max_size)
      return bad("larger than 1 MiB");
  }
  if (in.bad())
    return bad(fmt::format("cannot be read: {}", std::strerror(errno)));
  frozen_file out;
  out.fd_ = ::memfd_create(key.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (out.fd_ < 0)
    return bad(fmt::format("cannot copy it (memfd_create): {}", std::strerror(errno)));
  size_t done = 0;
  while (done < text.size()) {
    auto n = ::write(out.fd_, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return bad(fmt::format("cannot copy it: {}", std::strerror(errno)));
    done += static_cast<size_t>(n);
  }
  if (::fcntl(out.fd_, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) != 0)
    return bad(fmt::format("cannot seal its copy: {}", std::strerror(errno)));
  out.path_ = fmt::format("/proc/self/fd/{}", out.fd_);
  return out;
}

frozen_file::frozen_file(frozen_file&& other) noexcept
  : fd_(std::exchange(other.fd_, -1)), path_(std::move(other.path_)) {}

frozen_file& frozen_file::operator=(frozen_file&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0)
      ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    path_ = std::move(other.path_);
  }
  return *this;
}

frozen_file::~frozen_file() {
  if (fd_ >= 0)
    ::close(fd_);
}

} // namespace convoke::server::internal
