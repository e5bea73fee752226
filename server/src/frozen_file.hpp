#pragma once

// A file's content taken once and kept unchanged: a sealed memfd, named by
// its /proc/self/fd path. CAF's openssl module reads the cluster.tls-* files
// again for every cluster connection, and a file that cannot be read then
// throws on CAF's I/O thread (the process ends). Handing it frozen copies
// made at start means what was checked at start is what every connection
// uses, whatever later happens to the files (docs/cluster.md).

#include <string>

#include "convoke/common/error.hpp"
#include "convoke/server/error.hpp"

namespace convoke::server::internal {

class frozen_file {
public:
  /// Copies `path` (at most 1 MiB) into a sealed memfd; `errc::bad_config_file`
  /// naming `key`, the path and why if it cannot.
  static expected<frozen_file> copy_of(const std::string& key, const std::string& path);

  frozen_file(frozen_file&& other) noexcept;
  frozen_file& operator=(frozen_file&& other) noexcept;
  frozen_file(const frozen_file&) = delete;
  frozen_file& operator=(const frozen_file&) = delete;
  ~frozen_file();

  /// A path that opens the copy (/proc/self/fd/N), valid while this lives.
  const std::string& path() const noexcept {
    return path_;
  }

private:
  frozen_file() = default;
  int fd_ = -1;
  std::string path_;
};

} // namespace convoke::server::internal
