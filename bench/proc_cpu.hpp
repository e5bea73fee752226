#pragma once

// CPU time of a process, for the benchmarks' "server CPU" figures.

#include <unistd.h>

#include <fstream>
#include <iterator>
#include <sstream>
#include <string>

namespace convoke::bench {

/// CPU seconds (user + system) process `pid` has used, from
/// /proc/<pid>/stat; negative if it cannot be read.
inline double process_cpu_seconds(int pid) {
  if (pid <= 0)
    return -1;
  std::ifstream in{"/proc/" + std::to_string(pid) + "/stat"};
  std::string stat{std::istreambuf_iterator<char>{in}, {}};
  // The command name (field 2) may hold spaces and ')': fields count from
  // the last ')'.
  auto close_paren = stat.rfind(')');
  if (close_paren == std::string::npos || close_paren + 2 > stat.size())
    return -1;
  std::istringstream rest{stat.substr(close_paren + 2)};
  std::string field;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14)
      utime = std::stoull(field);
    if (i == 15)
      stime = std::stoull(field);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

} // namespace convoke::bench
