// Summoner fan-out load generator (issue 12; bench/README.md, bench/summoner.sh).
//
// One sender and N receivers speak the Summoner protocol to a relay
// (convoke-server's Summoner listener, or summoner-core's Python server):
// the sender writes the SDK's typed envelope lines
//   {"_version": "1.3.0", "_payload": {"seq": <i>, "pad": "..."}, "_type": {...}}\n
// and every receiver reads relay lines {"remote_addr": ..., "content": "..."}.
// Closed loop: the sender stays at most --window lines ahead of the slowest
// receiver. Every received line is checked: it must be a relay line, its
// sequence number is extracted and compared with the one expected (gaps
// count as lost, going back as reordered). At the end the sender stops and
// the receivers get up to 5 s to read what is still on its way; what never
// came is lost. One thread, poll() over all sockets: pin it with taskset.
//
//   convoke-summoner-bench --server 127.0.0.1:8888 -n 10 --secs 5 [--server-pid PID] [--json]

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <arpa/inet.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "proc_cpu.hpp"

namespace {

using clock_type = std::chrono::steady_clock;

int connect_to(const std::string& host, uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  if (fd < 0 || ::inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1
      || ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    std::perror("connect");
    std::exit(2);
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  return fd;
}

/// CPU seconds (user + system) of a process, from /proc; -1 if unknown.
double cpu_seconds(int pid) {
  return convoke::bench::process_cpu_seconds(pid);
}

struct receiver {
  int fd = -1;
  std::string buf;
  uint64_t next = 0; // the sequence number expected next
  uint64_t lines = 0;
  uint64_t lost = 0;
  uint64_t reordered = 0;
  uint64_t malformed = 0;
  uint64_t warnings = 0;
  uint64_t warm = 0; // warm-up lines (not counted)
};

/// Checks one line: a relay line whose content holds `\"seq\": <n>`.
void check_line(receiver& r, std::string_view line) {
  if (line.find(R"(\"warm\": )") != std::string_view::npos) {
    ++r.warm;
    return;
  }
  ++r.lines;
  if (line.rfind("Warning:", 0) == 0) {
    ++r.warnings;
    return;
  }
  static constexpr std::string_view head = R"({"remote_addr": ")";
  static constexpr std::string_view key = R"(\"seq\": )";
  auto c = line.find(R"(, "content": ")");
  auto k = line.find(key);
  if (line.rfind(head, 0) != 0 || c == std::string_view::npos || k == std::string_view::npos
      || line.substr(line.size() - 2) != "\"}") {
    ++r.malformed;
    return;
  }
  uint64_t seq = 0;
  size_t i = k + key.size();
  if (i >= line.size() || line[i] < '0' || line[i] > '9') {
    ++r.malformed;
    return;
  }
  for (; i < line.size() && line[i] >= '0' && line[i] <= '9'; ++i)
    seq = seq * 10 + static_cast<uint64_t>(line[i] - '0');
  if (seq == r.next) {
    ++r.next;
  } else if (seq > r.next) {
    r.lost += seq - r.next;
    r.next = seq + 1;
  } else {
    ++r.reordered;
  }
}

/// Reads what is there; false on EOF or error.
bool drain(receiver& r) {
  char tmp[1 << 16];
  for (;;) {
    auto n = ::recv(r.fd, tmp, sizeof(tmp), 0);
    if (n > 0) {
      r.buf.append(tmp, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      break;
    return false;
  }
  size_t start = 0;
  for (;;) {
    auto nl = r.buf.find('\n', start);
    if (nl == std::string::npos)
      break;
    check_line(r, std::string_view{r.buf}.substr(start, nl - start));
    start = nl + 1;
  }
  r.buf.erase(0, start);
  return true;
}

std::string warm_line(uint64_t k) {
  return R"({"_version": "1.3.0", "_payload": {"warm": )" + std::to_string(k)
         + R"(}, "_type": {"warm": "int"}})" + "\n";
}

std::string typed_line(uint64_t seq, const std::string& pad) {
  return R"({"_version": "1.3.0", "_payload": {"seq": )" + std::to_string(seq) + R"(, "pad": ")"
         + pad + R"("}, "_type": {"seq": "int", "pad": "str"}})" + "\n";
}

} // namespace

int main(int argc, char** argv) {
  CLI::App app{"Summoner fan-out: 1 sender, N Summoner receivers, typed-envelope lines"};
  std::string server = "127.0.0.1:8888";
  int n = 10;
  double secs = 5;
  uint64_t window = 1000;
  size_t pad_size = 40;
  int server_pid = 0;
  bool as_json = false;
  std::string label = "convoke";
  app.add_option("--server", server, "host:port of the Summoner relay");
  app.add_option("-n,--receivers", n, "receivers");
  app.add_option("--secs", secs, "seconds of sending");
  app.add_option("--window", window, "lines in flight ahead of the slowest receiver");
  app.add_option("--pad", pad_size, "bytes of padding in each payload");
  app.add_option("--server-pid", server_pid, "the relay's pid, for its CPU time");
  app.add_option("--label", label, "name of the relay in the output");
  app.add_flag("--json", as_json, "print a JSON object too");
  CLI11_PARSE(app, argc, argv);

  auto colon = server.rfind(':');
  auto host = server.substr(0, colon);
  auto port = static_cast<uint16_t>(std::stoi(server.substr(colon + 1)));
  std::vector<receiver> rs(static_cast<size_t>(n));
  for (auto& r : rs)
    r.fd = connect_to(host, port);
  int sender = connect_to(host, port);
  // The relay registers connections as it accepts them: warm-up lines from
  // the sender tell when every receiver is there (they are not counted).
  std::string pad(pad_size, 'x');
  std::vector<pollfd> pfds;
  for (auto& r : rs)
    pfds.push_back({r.fd, POLLIN, 0});
  pfds.push_back({sender, POLLOUT, 0});

  std::string out;
  uint64_t sent = 0; // lines fully handed to the socket or queued in `out`
  size_t out_pos = 0;
  bool sending = true;
  clock_type::time_point t0{};
  double cpu0 = -1;
  auto min_next = [&] {
    uint64_t m = UINT64_MAX;
    for (auto& r : rs)
      m = std::min(m, r.next);
    return m;
  };
  auto all_warm = [&] {
    for (auto& r : rs)
      if (r.warm == 0)
        return false;
    return true;
  };
  // Warm-up: a line every 100 ms until every receiver saw one (a receiver
  // not yet registered misses those before).
  for (auto start = clock_type::now();;) {
    static uint64_t k = 0;
    auto line = warm_line(k++);
    if (::send(sender, line.data(), line.size(), MSG_NOSIGNAL)
        != static_cast<ssize_t>(line.size())) {
      std::fprintf(stderr, "warm-up send failed\n");
      return 2;
    }
    auto until = clock_type::now() + std::chrono::milliseconds{100};
    while (clock_type::now() < until && !all_warm()) {
      ::poll(pfds.data(), static_cast<nfds_t>(rs.size()), 10);
      for (auto& r : rs)
        if (!drain(r)) {
          std::fprintf(stderr, "receiver closed during warm-up\n");
          return 2;
        }
    }
    if (all_warm())
      break;
    if (clock_type::now() - start > std::chrono::seconds{10}) {
      std::fprintf(stderr, "receivers did not all register within 10 s\n");
      return 2;
    }
  }
  sent = 0; // the measurement starts from here
  t0 = clock_type::now();
  cpu0 = cpu_seconds(server_pid);
  auto stop_at
    = t0 + std::chrono::duration_cast<clock_type::duration>(std::chrono::duration<double>{secs});
  clock_type::time_point drain_deadline{};
  bool closed = false;
  for (;;) {
    auto now = clock_type::now();
    if (sending && now >= stop_at) {
      sending = false;
      drain_deadline = now + std::chrono::seconds{5};
    }
    // Fill the sender's buffer up to the window.
    if (sending && out_pos == out.size()) {
      out.clear();
      out_pos = 0;
      auto floor = min_next();
      for (int k = 0; k < 64 && sent < floor + window; ++k)
        out += typed_line(sent++, pad);
    }
    pfds.back().events = out_pos < out.size() ? POLLOUT : 0;
    ::poll(pfds.data(), static_cast<nfds_t>(pfds.size()), 10);
    if (out_pos < out.size()) {
      auto w = ::send(sender, out.data() + out_pos, out.size() - out_pos, MSG_NOSIGNAL);
      if (w > 0)
        out_pos += static_cast<size_t>(w);
    }
    for (size_t i = 0; i < rs.size(); ++i)
      if (rs[i].fd >= 0 && !drain(rs[i])) {
        ::close(rs[i].fd);
        rs[i].fd = pfds[i].fd = -1;
        closed = true;
      }
    if (!sending && out_pos == out.size()) {
      if (min_next() >= sent || clock_type::now() > drain_deadline)
        break;
    }
  }
  auto t_done = clock_type::now();
  double cpu1 = cpu_seconds(server_pid);
  uint64_t lines = 0, lost = 0, reordered = 0, malformed = 0, warnings = 0;
  for (auto& r : rs) {
    lines += r.lines;
    lost += r.lost + (sent > r.next ? sent - r.next : 0); // what never came
    reordered += r.reordered;
    malformed += r.malformed;
    warnings += r.warnings;
  }
  double elapsed = std::chrono::duration<double>(t_done - t0).count();
  double rate = static_cast<double>(lines) / elapsed;
  double cpu = cpu0 >= 0 && cpu1 >= 0 ? cpu1 - cpu0 : -1;
  std::printf("summoner fanout %s N=%d: %.0f lines/s received (%llu lines in %.2fs, %llu sent), "
              "server CPU %.2fs (%.3f s per M lines), lost %llu, reordered %llu, malformed %llu, "
              "warnings %llu%s\n",
              label.c_str(), n, rate, static_cast<unsigned long long>(lines), elapsed,
              static_cast<unsigned long long>(sent), cpu,
              cpu >= 0 ? cpu / (static_cast<double>(lines) / 1e6) : -1.0,
              static_cast<unsigned long long>(lost), static_cast<unsigned long long>(reordered),
              static_cast<unsigned long long>(malformed), static_cast<unsigned long long>(warnings),
              closed ? ", a receiver was disconnected" : "");
  if (as_json)
    std::printf("{\"label\":\"%s\",\"n\":%d,\"lines_per_s\":%.1f,\"lines\":%llu,\"sent\":%llu,"
                "\"secs\":%.3f,\"server_cpu_s\":%.3f,\"lost\":%llu,\"reordered\":%llu,"
                "\"malformed\":%llu,\"warnings\":%llu,\"disconnected\":%s}\n",
                label.c_str(), n, rate, static_cast<unsigned long long>(lines),
                static_cast<unsigned long long>(sent), elapsed, cpu,
                static_cast<unsigned long long>(lost), static_cast<unsigned long long>(reordered),
                static_cast<unsigned long long>(malformed),
                static_cast<unsigned long long>(warnings), closed ? "true" : "false");
  for (auto& r : rs)
    if (r.fd >= 0)
      ::close(r.fd);
  ::close(sender);
  return lost == 0 && malformed == 0 && !closed ? 0 : 1;
}
