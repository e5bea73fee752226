// convoke-bench: load generator for Convoke (and, for comparison, NATS).
//
// Scenarios (one summary line each, --json for a JSON object):
//   fanout       1 publisher -> N subscribers, closed loop (bounded window):
//                delivered messages/s and server CPU seconds per million deliveries
//                (--subscriptions K [--patterns]: each subscriber holds K route
//                subscriptions, one matching the published route)
//   latency      open loop at a fixed rate to N subscribers: p50/p99/p99.9
//                end-to-end latency, losses and reorderings
//   direct       M sender/receiver pairs, direct messages, closed loop
//   connections  K idle agents: connect time and server RSS per connection
//   soak         minutes of mixed load with connection churn (Convoke): server
//                RSS and descriptors sampled every second must stay flat
//
// The generator uses plain sockets and hand-rolled wire code (bench/wire.cpp),
// one publishing thread and one epoll receiving thread, so that its own cost
// stays below the server's; it reports its own CPU time next to the server's.
// With --tls-ca every connection is TLS (OpenSSL on the socket; for NATS
// after its plaintext INFO line, as NATS 2.9 clients do); start the server
// with TLS yourself (--server-arg), as bench/compare.sh does with TLS=1.

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <httplib.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "convoke/common/net.hpp"
#include "convoke/common/units.hpp"
#include "convoke/proto/codec.hpp"
#include "convoke/v1/wire.pb.h"
#include "histogram.hpp"
#include "proc_cpu.hpp"
#include "wire.hpp"

using namespace convoke;
using namespace convoke::bench;
using namespace std::chrono_literals;

namespace {

/// Waits a little when the publisher is ahead of its window: a short sleep
/// instead of a spin, so the generator leaves the CPU to the server.
void idle_wait() {
  timespec ts{0, 20'000};
  nanosleep(&ts, nullptr);
}

int64_t mono_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1'000'000'000LL + ts.tv_nsec;
}

[[noreturn]] void fail(const std::string& what) {
  throw std::runtime_error(what);
}

// -- the server under test --------------------------------------------------------

/// Reads the admin endpoints /metrics and /connz every `interval` while a
/// scenario runs, as a monitoring system would (--scrape-ms): what does
/// watching the server cost its relaying? Runs on the generator's CPU.
class scraper {
public:
  scraper(uint16_t admin_port, std::chrono::milliseconds interval) {
    thread_ = std::thread{[this, admin_port, interval] {
      httplib::Client c{"127.0.0.1", admin_port};
      c.set_read_timeout(5);
      auto next = std::chrono::steady_clock::now();
      while (!stop_) {
        for (const char* path : {"/metrics", "/connz?limit=1000"}) {
          auto start = std::chrono::steady_clock::now();
          auto r = c.Get(path);
          auto took = std::chrono::steady_clock::now() - start;
          ++(r && r->status == 200 ? ok_ : failed_);
          slowest_ = std::max(slowest_, took);
          bytes_ += r ? r->body.size() : 0;
        }
        next += interval;
        std::this_thread::sleep_until(next); // pacing, one scrape per interval
      }
    }};
  }

  ~scraper() {
    stop_ = true;
    thread_.join();
    std::fprintf(
      stderr, "scraper: %llu requests answered, %llu failed, slowest %.1f ms, %.0f KiB read\n",
      static_cast<unsigned long long>(ok_.load()), static_cast<unsigned long long>(failed_.load()),
      std::chrono::duration<double, std::milli>(slowest_).count(),
      static_cast<double>(bytes_) / 1024);
  }

private:
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> ok_{0};
  std::atomic<uint64_t> failed_{0};
  std::chrono::steady_clock::duration slowest_{};
  uint64_t bytes_ = 0;
};

struct server_handle {
  pid_t pid = 0; // 0 when external and unknown
  std::string host = "127.0.0.1";
  uint16_t port = 0;
  bool owned = false;
  std::unique_ptr<scraper> scrape;
  /// Every server process measured (--server-pid, one per cluster node);
  /// empty: just `pid`.
  std::vector<pid_t> pids;
  /// When set (--node-names), a connection must land on the server of this
  /// name (Welcome.server_name): when several nodes share one port
  /// (listen.reuse-port), join() reconnects until the kernel picks it.
  std::string node_name;
  /// The cluster's nodes (--server a,b / --node-names), not owned; empty
  /// for a single server.
  std::vector<std::unique_ptr<server_handle>> nodes;

  /// Where connections for node `k` go (this server when there are none).
  const server_handle& node(int k) const {
    return nodes.empty() ? *this : *nodes[static_cast<size_t>(k) % nodes.size()];
  }

  ~server_handle() {
    scrape.reset();
    if (owned && pid > 0) {
      ::kill(pid, SIGTERM);
      int st = 0;
      for (int i = 0; i < 500 && waitpid(pid, &st, WNOHANG) == 0; ++i)
        std::this_thread::sleep_for(10ms);
      ::kill(pid, SIGKILL);
      waitpid(pid, &st, 0);
    }
  }

  /// CPU seconds (user + system) used so far, summed over `pids`.
  double cpu_seconds() const {
    if (pids.empty()) {
      auto s = bench::process_cpu_seconds(pid);
      return s < 0 ? NAN : s;
    }
    double sum = 0;
    for (auto p : pids) {
      auto s = bench::process_cpu_seconds(p);
      if (s < 0)
        return NAN;
      sum += s;
    }
    return sum;
  }

  /// Resident set size in KiB.
  size_t rss_kib() const {
    if (pid <= 0)
      return 0;
    std::ifstream in{"/proc/" + std::to_string(pid) + "/status"};
    for (std::string line; std::getline(in, line);)
      if (line.rfind("VmRSS:", 0) == 0)
        return std::stoul(line.substr(6));
    return 0;
  }
};

uint16_t free_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

void raise_fd_limit() {
  rlimit lim{};
  getrlimit(RLIMIT_NOFILE, &lim);
  lim.rlim_cur = lim.rlim_max;
  setrlimit(RLIMIT_NOFILE, &lim);
}

/// Pins the calling thread (and the threads and processes it creates later)
/// to one CPU; false if that is not possible.
bool pin_to_cpu(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return sched_setaffinity(0, sizeof(set), &set) == 0;
}

/// `cpu` >= 0 pins the server to that CPU (taskset), so that server and
/// generator never share one.
std::unique_ptr<server_handle> start_server(protocol_kind proto, const std::string& bin,
                                            const std::vector<std::string>& extra, int cpu,
                                            int scrape_ms) {
  auto h = std::make_unique<server_handle>();
  h->owned = true;
  h->port = free_port();
  uint16_t admin_port = 0;
  std::vector<std::string> argv{bin};
  if (proto == protocol_kind::convoke) {
    // All load comes from 127.0.0.1: no per-address limit (10000 agents).
    for (auto a : {"--listen.port", "PORT", "--trace.enabled", "false", "--log.level", "warn",
                   "--limits.max-connections-per-address", "0"})
      argv.emplace_back(std::string{a} == "PORT" ? std::to_string(h->port) : a);
    if (scrape_ms > 0) {
      admin_port = free_port();
      argv.insert(argv.end(), {"--admin.port", std::to_string(admin_port)});
    }
  } else {
    for (auto a : {"-a", "127.0.0.1", "-p", "PORT"})
      argv.emplace_back(std::string{a} == "PORT" ? std::to_string(h->port) : a);
  }
  argv.insert(argv.end(), extra.begin(), extra.end());
  h->pid = fork();
  if (h->pid == 0) {
    if (cpu >= 0 && !pin_to_cpu(cpu))
      _exit(126);
    std::vector<char*> args;
    for (auto& a : argv)
      args.push_back(a.data());
    args.push_back(nullptr);
    int devnull = open("/dev/null", O_WRONLY);
    dup2(devnull, 1);
    if (proto == protocol_kind::nats)
      dup2(devnull, 2); // its startup banner; errors show as failed connects
    execv(args[0], args.data());
    _exit(127);
  }
  for (int i = 0; i < 300; ++i) {
    auto c = net::tcp_connect(h->host, h->port, 200ms);
    if (c) {
      close(*c);
      if (admin_port != 0)
        h->scrape = std::make_unique<scraper>(admin_port, std::chrono::milliseconds{scrape_ms});
      return h;
    }
    int st = 0;
    if (waitpid(h->pid, &st, WNOHANG) == h->pid) {
      h->pid = 0;
      fail("the server exited at once: " + bin);
    }
    std::this_thread::sleep_for(20ms);
  }
  fail("the server did not start listening: " + bin);
}

// -- connections ----------------------------------------------------------------

/// TLS for every connection when set (--tls-ca).
SSL_CTX* tls_ctx = nullptr;

std::string tls_errors() {
  std::string out;
  while (auto e = ERR_get_error()) {
    auto r = ERR_reason_error_string(e);
    out += (out.empty() ? "" : "; ") + std::string{r != nullptr ? r : "?"};
  }
  return out;
}

struct connection {
  int fd = -1;
  SSL* ssl = nullptr;                                   // TLS, or plaintext when null
  std::vector<char> buf = std::vector<char>(16 * 1024); // grows when full
  size_t len = 0;
  std::string out;  // replies (PONG, heartbeat answers)
  std::string name; // the agent's name (join() may change it to land on a node)

  ~connection() {
    if (ssl != nullptr)
      SSL_free(ssl);
    if (fd >= 0)
      close(fd);
  }

  void send(const std::string& bytes) {
    if (ssl == nullptr) {
      if (!net::write_all(fd, bytes.data(), bytes.size()))
        fail(std::string{"write failed: "} + std::strerror(errno));
      return;
    }
    size_t at = 0;
    while (at < bytes.size()) {
      auto n = SSL_write(ssl, bytes.data() + at, static_cast<int>(bytes.size() - at));
      if (n > 0) {
        at += static_cast<size_t>(n);
        continue;
      }
      auto e = SSL_get_error(ssl, n);
      if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
        fail("TLS write failed: " + tls_errors());
      pollfd p{fd, static_cast<short>(e == SSL_ERROR_WANT_WRITE ? POLLOUT : POLLIN), 0};
      poll(&p, 1, 1000);
    }
  }

  /// One read into the buffer, without blocking: >0 bytes read, 0 nothing
  /// now, -1 EOF or error.
  ssize_t read_now() {
    if (len == buf.size())
      buf.resize(buf.size() * 2);
    if (ssl == nullptr) {
      auto n = recv(fd, buf.data() + len, buf.size() - len, MSG_DONTWAIT);
      if (n > 0)
        len += static_cast<size_t>(n);
      return n > 0 ? n : (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -1);
    }
    auto n = SSL_read(ssl, buf.data() + len, static_cast<int>(buf.size() - len));
    if (n > 0) {
      len += static_cast<size_t>(n);
      return n;
    }
    auto e = SSL_get_error(ssl, n);
    return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? 0 : -1;
  }

  /// Reads once (blocking up to `timeout`); false on EOF/timeout.
  bool read_some(std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      if (ssl == nullptr || SSL_pending(ssl) == 0) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
        pollfd p{fd, POLLIN, 0};
        if (left.count() <= 0 || poll(&p, 1, static_cast<int>(left.count())) <= 0)
          return false;
      }
      auto n = read_now();
      if (n > 0)
        return true;
      if (n < 0)
        return false;
    }
  }

  void consume(size_t n) {
    std::memmove(buf.data(), buf.data() + n, len - n);
    len -= n;
  }
};

/// Connects; with TLS also runs the handshake (NATS: after its plaintext
/// INFO line). The socket stays non-blocking: reads never wait.
std::unique_ptr<connection> open_connection(const server_handle& srv,
                                            protocol_kind proto = protocol_kind::convoke) {
  auto res = net::tcp_connect(srv.host, srv.port, 5s);
  if (!res)
    fail(res.error().text);
  auto c = std::make_unique<connection>();
  c->fd = *res;
  if (tls_ctx == nullptr) {
    net::set_blocking(*res, true);
    return c;
  }
  net::set_blocking(*res, false);
  if (proto == protocol_kind::nats) { // INFO {...}\r\n in plaintext first
    std::string info;
    while (info.size() < 2 || info.compare(info.size() - 2, 2, "\r\n") != 0) {
      pollfd p{c->fd, POLLIN, 0};
      char ch;
      if (poll(&p, 1, 5000) <= 0 || recv(c->fd, &ch, 1, 0) != 1)
        fail("no INFO from nats-server");
      info.push_back(ch);
    }
  }
  c->ssl = SSL_new(tls_ctx);
  SSL_set_fd(c->ssl, c->fd);
  SSL_set_tlsext_host_name(c->ssl, "localhost");
  SSL_set1_host(c->ssl, "localhost");
  for (;;) {
    auto r = SSL_connect(c->ssl);
    if (r == 1)
      break;
    auto e = SSL_get_error(c->ssl, r);
    if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
      fail("TLS handshake failed: " + tls_errors());
    pollfd p{c->fd, static_cast<short>(e == SSL_ERROR_WANT_WRITE ? POLLOUT : POLLIN), 0};
    if (poll(&p, 1, 5000) <= 0)
      fail("TLS handshake timed out");
  }
  return c;
}

/// Reads until `step` (which parses what is buffered and returns the bytes
/// it used) reports the handshake done; fails on an error or after 5 s.
void await_handshake(connection& c, const std::string& what,
                     const std::function<size_t(bool& done, std::string& err)>& step) {
  for (;;) {
    if (!c.read_some(5s))
      fail("no " + what);
    bool done = false;
    std::string err;
    c.consume(step(done, err));
    if (!err.empty())
      fail(what + ": " + err);
    if (done)
      return;
  }
}

/// Connects and completes the handshake; NATS subscribers subscribe.
/// `route` (Convoke): a route subscription in Hello, e.g. so that a publisher
/// receives no broadcasts.
/// `subjects` (both protocols): further subscriptions, e.g. the route
/// patterns of `fanout --subscriptions`.
/// Connections per server name (Welcome.server_name), for the placement
/// line of a cluster run.
std::map<std::string, int> landed;

std::unique_ptr<connection> join(const server_handle& srv, protocol_kind proto,
                                 const std::string& name, const std::string& subscribe_to,
                                 const std::string& route = {},
                                 const std::vector<std::string>& subjects = {}) {
  std::string out;
  if (proto == protocol_kind::convoke) {
    auto routes = subjects;
    if (!route.empty())
      routes.push_back(route);
    // With srv.node_name, reconnect (under a fresh name: the last one may
    // still be registered) until the kernel hands the connection to that
    // node; with 2 nodes that takes 2 tries on average.
    for (int attempt = 0; attempt < 200; ++attempt) {
      auto c = open_connection(srv, proto);
      c->name = attempt == 0 ? name : name + "." + std::to_string(attempt);
      out.clear();
      convoke_append_hello(out, c->name, routes);
      c->send(out);
      std::string server;
      await_handshake(*c, "Welcome for " + c->name, [&](bool& done, std::string& err) {
        return convoke_parse(c->buf.data(), c->len, [&](const convoke_event& ev) {
          if (ev.kind == convoke_event::welcome) {
            done = true;
            server = std::string{ev.text};
          }
          if (ev.kind == convoke_event::notice)
            err = std::string{ev.text};
        });
      });
      if (!srv.node_name.empty() && server != srv.node_name)
        continue;
      ++landed[server];
      return c;
    }
    fail("no connection landed on node " + srv.node_name + " in 200 tries");
  }
  auto c = open_connection(srv, proto);
  c->name = name;
  nats_append_connect(out, name);
  if (!subscribe_to.empty())
    nats_append_sub(out, subscribe_to, 1);
  for (size_t i = 0; i < subjects.size(); ++i)
    nats_append_sub(out, subjects[i], static_cast<int>(i) + 2);
  out += "PING\r\n";
  c->send(out);
  await_handshake(*c, "PONG for " + name, [&](bool& done, std::string& err) {
    return nats_parse(c->buf.data(), c->len, [&](const nats_event& ev) {
      done = done || ev.kind == nats_event::pong;
      if (ev.kind == nats_event::err)
        err = std::string{ev.text};
    });
  });
  return c;
}

// -- receiving --------------------------------------------------------------------

/// One epoll thread reading every subscriber connection.
class receiver {
public:
  struct sub {
    std::unique_ptr<connection> conn;
    std::atomic<uint64_t> received{0};
    std::vector<uint64_t> next_seq;  // per publisher
    std::atomic<bool> probed{false}; // a warm-up probe arrived
    uint64_t lost = 0;
    uint64_t reordered = 0;
  };

  receiver(protocol_kind proto, std::vector<std::unique_ptr<connection>> conns, size_t publishers,
           bool measure_latency)
    : proto_(proto), latency_(measure_latency) {
    epfd_ = epoll_create1(0);
    for (auto& c : conns) {
      auto s = std::make_unique<sub>();
      s->conn = std::move(c);
      s->next_seq.assign(publishers, 0);
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.ptr = s.get();
      epoll_ctl(epfd_, EPOLL_CTL_ADD, s->conn->fd, &ev);
      subs_.push_back(std::move(s));
    }
    thread_ = std::thread{[this] { run(); }};
  }

  ~receiver() {
    stop_ = true;
    thread_.join();
    close(epfd_);
  }

  uint64_t min_received() const {
    uint64_t m = UINT64_MAX;
    for (auto& s : subs_)
      m = std::min(m, s->received.load(std::memory_order_acquire));
    return m;
  }

  uint64_t received(size_t i) const {
    return subs_[i]->received.load(std::memory_order_acquire);
  }

  /// True once receiver `i` (every receiver: -1) had a warm-up probe.
  bool probed(int i = -1) const {
    if (i >= 0)
      return subs_[static_cast<size_t>(i)]->probed.load(std::memory_order_acquire);
    for (auto& s : subs_)
      if (!s->probed.load(std::memory_order_acquire))
        return false;
    return true;
  }

  uint64_t total_received() const {
    uint64_t n = 0;
    for (auto& s : subs_)
      n += s->received.load(std::memory_order_acquire);
    return n;
  }

  /// After stop: losses are what never arrived up to `sent` per publisher.
  void tally(const std::vector<uint64_t>& sent_per_publisher, uint64_t& lost, uint64_t& reordered) {
    lost = 0;
    reordered = 0;
    for (auto& s : subs_) {
      for (size_t p = 0; p < sent_per_publisher.size(); ++p)
        if (s->next_seq[p] < sent_per_publisher[p])
          lost += sent_per_publisher[p] - s->next_seq[p];
      lost += s->lost;
      reordered += s->reordered;
    }
  }

  histogram& latencies() {
    return hist_;
  }

  void stop() {
    stop_ = true;
  }

private:
  void run() {
    epoll_event events[64];
    while (!stop_) {
      auto n = epoll_wait(epfd_, events, 64, 20);
      auto now = latency_ ? mono_ns() : 0;
      for (int i = 0; i < n; ++i)
        drain(*static_cast<sub*>(events[i].data.ptr), now);
    }
  }

  void on_payload(sub& s, std::string_view payload, int64_t now) {
    if (payload.size() < min_payload)
      return;
    auto h = read_payload_header(payload.data());
    if (h.publisher == probe_publisher) {
      s.probed.store(true, std::memory_order_release);
      return;
    }
    if (h.publisher < s.next_seq.size()) {
      auto& next = s.next_seq[h.publisher];
      if (h.seq > next)
        s.lost += h.seq - next; // a gap; counted lost unless it shows up later
      if (h.seq < next) {
        ++s.reordered;
        if (s.lost > 0)
          --s.lost;
      } else {
        next = h.seq + 1;
      }
    }
    if (latency_)
      hist_.record(now - h.sent_ns);
    s.received.fetch_add(1, std::memory_order_release);
  }

  void drain(sub& s, int64_t now) {
    auto& c = *s.conn;
    for (;;) {
      auto n = c.read_now();
      if (n <= 0)
        break;
      size_t used = 0;
      c.out.clear();
      if (proto_ == protocol_kind::convoke) {
        used = convoke_parse(c.buf.data(), c.len, [&](const convoke_event& ev) {
          if (ev.kind == convoke_event::envelope)
            on_payload(s, ev.payload, now);
          else if (ev.kind == convoke_event::heartbeat && ev.heartbeat_seq != 0)
            convoke_append_heartbeat_reply(c.out, ev.heartbeat_seq);
          else if (ev.kind == convoke_event::notice)
            std::cerr << "notice: " << ev.text << "\n";
        });
        if (used == SIZE_MAX)
          fail("framing error from the server");
      } else {
        used = nats_parse(c.buf.data(), c.len, [&](const nats_event& ev) {
          if (ev.kind == nats_event::msg)
            on_payload(s, ev.payload, now);
          else if (ev.kind == nats_event::ping)
            c.out += "PONG\r\n";
          else if (ev.kind == nats_event::err)
            std::cerr << "nats: " << ev.text << "\n";
        });
      }
      c.consume(used);
      if (!c.out.empty())
        c.send(c.out);
      if (c.ssl == nullptr && static_cast<size_t>(n) < 16 * 1024)
        break; // likely drained; let epoll tell us about more (TLS: read to WANT_READ)
    }
  }

  protocol_kind proto_;
  bool latency_;
  int epfd_ = -1;
  std::vector<std::unique_ptr<sub>> subs_;
  histogram hist_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// -- publishing -------------------------------------------------------------------

struct publisher {
  std::unique_ptr<connection> conn;
  uint32_t index = 0;
  std::string target; // recipient (convoke direct) or subject (nats)
  std::string route;  // convoke broadcasts: their route (empty: none)
  bool direct = false;
  uint64_t seq = 0;
  std::string payload;
  std::string out;

  void add(int64_t now) {
    write_payload_header(payload.data(), {seq++, now, index});
    if (conn == nullptr)
      return;
    if (protocol == protocol_kind::convoke)
      convoke_append_envelope(out, direct ? target : std::string_view{}, route, payload);
    else
      nats_append_pub(out, target, payload);
  }

  /// Sends one warm-up probe now (not counted by receivers).
  void probe() {
    write_payload_header(payload.data(), {0, mono_ns(), probe_publisher});
    if (protocol == protocol_kind::convoke)
      convoke_append_envelope(out, direct ? target : std::string_view{}, route, payload);
    else
      nats_append_pub(out, target, payload);
    flush();
  }

  void flush() {
    if (!out.empty()) {
      conn->send(out);
      out.clear();
    }
  }

  protocol_kind protocol = protocol_kind::convoke;
};

struct usage {
  double wall = 0;
  double server_cpu = 0;
  double bench_cpu = 0;
};

double self_cpu_seconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec)
         + static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

struct options {
  std::string scenario = "fanout";
  protocol_kind proto = protocol_kind::convoke;
  std::string server;
  std::string server_bin;
  std::vector<std::string> server_args;
  int subscribers = 10;
  int subscriptions = 0; // fanout/latency: per receiver; 0 = plain broadcast
  bool patterns = false;
  int payload = 100;
  double seconds = 5;
  int window = 1000;
  int burst = 64;
  int rate = 10000;
  int pairs = 10;
  int server_cpu = -1;
  int bench_cpu = -1;
  int connections = 1000;
  int churn = 200;
  double warmup = 60;
  std::string samples;
  bool json = false;
  std::string tls_ca;
  int scrape_ms = 0;
  /// fanout/latency: one more agent observes every trace event (Observe).
  bool observe = false;
  /// Cluster runs: the node names behind --server (see server_handle), the
  /// publisher's node, the receivers' nodes (round robin), and for direct
  /// whether each pair's receiver is on the next node instead of its
  /// sender's.
  std::vector<std::string> node_names;
  int pub_node = 0;
  std::vector<int> sub_nodes;
  bool cross = false;
  std::vector<int> server_pids;
};

std::string proto_name(protocol_kind p) {
  return p == protocol_kind::convoke ? "convoke" : "nats";
}

std::unique_ptr<server_handle> server_for(const options& o) {
  if (o.server.empty()) {
    auto bin = o.server_bin;
    if (bin.empty())
      bin = o.proto == protocol_kind::convoke ? CONVOKE_SERVER_BIN : "/usr/sbin/nats-server";
    auto args = o.server_args;
    if (o.proto == protocol_kind::convoke && o.subscriptions > 0)
      args.insert(args.begin(), {"--limits.max-routes", std::to_string(o.subscriptions)});
    return start_server(o.proto, bin, args, o.server_cpu, o.scrape_ms);
  }
  std::vector<std::unique_ptr<server_handle>> at;
  std::stringstream list{o.server};
  for (std::string item; std::getline(list, item, ',');) {
    auto hp = parse_host_port(item, "127.0.0.1", 7420);
    if (!hp)
      fail("invalid --server " + item);
    at.push_back(std::make_unique<server_handle>());
    at.back()->host = hp->host;
    at.back()->port = hp->port;
  }
  if (at.empty())
    fail("invalid --server " + o.server);
  auto h = std::make_unique<server_handle>();
  h->host = at[0]->host;
  h->port = at[0]->port;
  h->pid = o.server_pids.empty() ? 0 : o.server_pids[0];
  for (auto p : o.server_pids)
    h->pids.push_back(p);
  auto n = std::max(at.size(), o.node_names.size());
  if (n > 1 || !o.node_names.empty())
    for (size_t k = 0; k < n; ++k) {
      auto node = std::make_unique<server_handle>();
      node->host = at[k % at.size()]->host;
      node->port = at[k % at.size()]->port;
      if (k < o.node_names.size())
        node->node_name = o.node_names[k];
      h->nodes.push_back(std::move(node));
    }
  return h;
}

int sub_node(const options& o, int i) {
  return o.sub_nodes.empty() ? 0 : o.sub_nodes[static_cast<size_t>(i) % o.sub_nodes.size()];
}

/// Cluster runs: sends warm-up probes until every receiver had one (the
/// nodes have learnt of each other's subscriptions); fails after 10 s.
void warm_up(const server_handle& srv, std::vector<publisher*> pubs, const receiver& rx,
             bool per_pair) {
  if (srv.nodes.size() < 2)
    return;
  for (int round = 0; round < 500; ++round) {
    bool all = true;
    for (size_t i = 0; i < pubs.size(); ++i)
      if (!rx.probed(per_pair ? static_cast<int>(i) : -1)) {
        all = false;
        pubs[i]->probe();
      }
    if (all)
      return;
    std::this_thread::sleep_for(20ms);
  }
  fail("warm-up: probes did not reach every receiver in 10 s (is the cluster formed?)");
}

/// Cluster runs: how many connections each node took (stderr).
void print_placement() {
  if (landed.size() < 2)
    return;
  std::string line = "placement:";
  for (auto& [server, count] : landed)
    line += " " + server + "=" + std::to_string(count);
  std::cerr << line << "\n";
}

void print(const options& o, const std::string& line, const std::string& json) {
  std::cout << line << std::endl;
  if (o.json)
    std::cout << json << std::endl;
}

// -- scenarios --------------------------------------------------------------------

publisher make_publisher(const options& o, const server_handle& srv, const std::string& name,
                         uint32_t index, std::string target, bool direct) {
  publisher p;
  p.protocol = o.proto;
  p.index = index;
  p.conn = join(srv, o.proto, name, {});
  p.target = std::move(target);
  p.direct = direct;
  p.payload.assign(static_cast<size_t>(std::max<int>(o.payload, min_payload)), 'x');
  return p;
}

/// The route every receiver of `fanout --subscriptions` matches once.
constexpr const char* hot_route = "bench.eu.paris";

/// The subscriptions of receiver `i` with `fanout --subscriptions K`: one
/// that matches `hot_route` ("bench.eu.paris", or with --patterns
/// "bench.*.paris" / "bench.>") and K-1 distinct ones that do not (exact
/// "s<i>.t<k>", or patterns mixing "*" and ">" in several positions).
std::vector<std::string> receiver_subjects(const options& o, int i) {
  std::vector<std::string> xs;
  if (o.subscriptions <= 0)
    return xs;
  xs.push_back(!o.patterns ? std::string{hot_route} : i % 2 == 0 ? "bench.*.paris" : "bench.>");
  for (int k = 1; k < o.subscriptions; ++k) {
    if (!o.patterns)
      xs.push_back(fmt::format("s{}.t{}", i, k));
    else if (k % 3 == 0)
      xs.push_back(fmt::format("s{}.t{}.*", i, k));
    else if (k % 3 == 1)
      xs.push_back(fmt::format("s{}.t{}.>", i, k));
    else
      xs.push_back(fmt::format("*.s{}.t{}", i, k));
  }
  return xs;
}

/// The fanout/latency set-up: a server, `o.subscribers` subscribers to
/// "bench" (a broadcast for Convoke, a subject for NATS), one publisher.
/// With `o.subscriptions`, the subscribers hold that many subscriptions
/// each instead and the publisher sends on `hot_route`.
/// An agent tapping every trace event (Observe with no filter), as an
/// operator watching everything would: its own thread reads, parses and
/// counts the TraceEvents frames, and answers heartbeats.
class tap_observer {
public:
  tap_observer(const server_handle& srv)
    : conn_(join(srv, protocol_kind::convoke, "bench.observer", "", "bench.observer.none")) {
    v1::Frame f;
    f.mutable_observe()->set_request_id(1);
    std::vector<char> out;
    proto::append_frame(f, out);
    conn_->send(std::string{out.begin(), out.end()});
    thread_ = std::thread{[this] { run(); }};
  }
  ~tap_observer() {
    stop_ = true;
    thread_.join();
  }
  uint64_t events() const {
    return events_.load();
  }
  uint64_t missed() const {
    return missed_.load();
  }
  std::string refusal() const {
    std::lock_guard guard{mtx_};
    return refusal_;
  }

private:
  void run() {
    v1::Frame f;
    while (!stop_) {
      if (!conn_->read_some(100ms))
        continue;
      size_t at = 0;
      while (conn_->len - at >= proto::header_size) {
        auto n = proto::read_header(conn_->buf.data() + at);
        if (conn_->len - at < proto::header_size + n)
          break;
        if (f.ParseFromArray(conn_->buf.data() + at + proto::header_size, static_cast<int>(n))) {
          if (f.has_trace_events()) {
            events_ += static_cast<uint64_t>(f.trace_events().events_size());
            missed_ += f.trace_events().missed();
          } else if (f.has_heartbeat() && f.heartbeat().seq() != 0) {
            std::string reply;
            convoke_append_heartbeat_reply(reply, f.heartbeat().seq());
            conn_->send(reply);
          } else if (f.has_notice() && f.notice().request_id() == 1) {
            std::lock_guard guard{mtx_};
            refusal_ = f.notice().code() + ": " + f.notice().text();
          }
        }
        at += proto::header_size + n;
      }
      conn_->consume(at);
    }
  }

  std::unique_ptr<connection> conn_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> events_{0};
  std::atomic<uint64_t> missed_{0};
  mutable std::mutex mtx_;
  std::string refusal_;
};

/// The observer's line (--observe): what it saw and missed.
void print_observer(const options& o, const tap_observer* obs, double secs) {
  if (obs == nullptr)
    return;
  auto refused = obs->refusal();
  print(o,
        fmt::format("observer (every trace event): {} events ({:.0f} k/s), missed={}{}",
                    obs->events(), static_cast<double>(obs->events()) / secs / 1e3, obs->missed(),
                    refused.empty() ? "" : ", refused: " + refused),
        fmt::format(R"({{"scenario":"observer","events":{},"events_per_s":{:.0f},"missed":{}}})",
                    obs->events(), static_cast<double>(obs->events()) / secs, obs->missed()));
}

struct fanout_rig {
  std::unique_ptr<server_handle> srv;
  publisher pub;
  std::unique_ptr<receiver> rx;
  std::unique_ptr<tap_observer> observer;

  fanout_rig(const options& o, bool measure_latency) : srv(server_for(o)) {
    std::vector<std::unique_ptr<connection>> subs;
    bool routed = o.subscriptions > 0;
    for (int i = 0; i < o.subscribers; ++i)
      subs.push_back(join(srv->node(sub_node(o, i)), o.proto, "sub-" + std::to_string(i),
                          routed ? "" : "bench", {}, receiver_subjects(o, i)));
    pub = make_publisher(o, srv->node(o.pub_node), "pub", 0, routed ? hot_route : "bench", false);
    if (routed)
      pub.route = hot_route;
    rx = std::make_unique<receiver>(o.proto, std::move(subs), 1, measure_latency);
    warm_up(*srv, {&pub}, *rx, false);
    print_placement();
    if (o.observe)
      observer = std::make_unique<tap_observer>(*srv);
    std::this_thread::sleep_for(200ms); // let every subscription settle
  }
};

void run_fanout(const options& o) {
  fanout_rig rig{o, /*measure_latency=*/false};
  auto& srv = rig.srv;
  auto& pub = rig.pub;
  auto& rx = *rig.rx;
  auto cpu0 = srv->cpu_seconds();
  auto self0 = self_cpu_seconds();
  auto t0 = mono_ns();
  auto end = t0 + static_cast<int64_t>(o.seconds * 1e9);
  while (mono_ns() < end) {
    auto in_flight = pub.seq - rx.min_received();
    if (in_flight + static_cast<uint64_t>(o.burst) > static_cast<uint64_t>(o.window)) {
      idle_wait(); // never spin: the generator must not take the server's CPU
      continue;
    }
    auto now = mono_ns();
    for (int k = 0; k < o.burst; ++k)
      pub.add(now);
    pub.flush();
  }
  auto t1 = mono_ns();
  auto delivered = rx.total_received();
  auto cpu1 = srv->cpu_seconds();
  auto self1 = self_cpu_seconds();
  // Let the rest arrive, then count losses (there must be none).
  for (int i = 0; i < 200 && rx.min_received() < pub.seq; ++i)
    std::this_thread::sleep_for(10ms);
  rx.stop();
  uint64_t lost = 0, reordered = 0;
  rx.tally({pub.seq}, lost, reordered);
  auto secs = static_cast<double>(t1 - t0) / 1e9;
  auto rate = static_cast<double>(delivered) / secs;
  auto cpu_per_m = (cpu1 - cpu0) / (static_cast<double>(delivered) / 1e6);
  print(o,
        fmt::format("fanout proto={} subscribers={} subscriptions={}{} payload={}B window={}: "
                    "{:.2f} M deliveries/s "
                    "({:.0f} k msgs/s in), server cpu {:.3f} s per M deliveries, server cpu "
                    "{:.2f} s, bench cpu {:.2f} s in {:.1f} s, lost={} reordered={}",
                    proto_name(o.proto), o.subscribers, o.subscriptions,
                    o.patterns ? " (patterns)" : "", o.payload, o.window, rate / 1e6,
                    static_cast<double>(pub.seq) / secs / 1e3, cpu_per_m, cpu1 - cpu0,
                    self1 - self0, secs, lost, reordered),
        fmt::format(R"({{"scenario":"fanout","protocol":"{}","subscribers":{},)"
                    R"("subscriptions":{},"patterns":{},"payload":{},)"
                    R"("deliveries_per_s":{:.0f},"published_per_s":{:.0f},)"
                    R"("server_cpu_s_per_million":{:.4f},"server_cpu_s":{:.3f},)"
                    R"("bench_cpu_s":{:.3f},"seconds":{:.3f},"lost":{},"reordered":{}}})",
                    proto_name(o.proto), o.subscribers, o.subscriptions, o.patterns, o.payload,
                    rate, static_cast<double>(pub.seq) / secs, cpu_per_m, cpu1 - cpu0,
                    self1 - self0, secs, lost, reordered));
  print_observer(o, rig.observer.get(), secs);
}

void run_latency(const options& o) {
  fanout_rig rig{o, /*measure_latency=*/true};
  auto& srv = rig.srv;
  auto& pub = rig.pub;
  auto& rx = *rig.rx;
  auto cpu0 = srv->cpu_seconds();
  auto t0 = mono_ns();
  auto total = static_cast<uint64_t>(o.rate * o.seconds);
  auto interval = 1e9 / o.rate;
  while (pub.seq < total) {
    // Open loop: each message leaves at its scheduled time, whatever the
    // server does (no coordinated omission).
    auto due = t0 + static_cast<int64_t>(static_cast<double>(pub.seq) * interval);
    auto now = mono_ns();
    if (now < due) {
      auto wait = due - now;
      if (wait > 60'000) {
        timespec ts{0, wait - 50'000};
        nanosleep(&ts, nullptr);
      }
      continue;
    }
    // Each message carries its *intended* send time: if the generator was
    // held up (a full socket), the delay counts against the latency instead
    // of disappearing from it (coordinated omission).
    for (auto intended = t0 + static_cast<int64_t>(static_cast<double>(pub.seq) * interval);
         pub.seq < total && intended <= now;
         intended = t0 + static_cast<int64_t>(static_cast<double>(pub.seq) * interval))
      pub.add(intended);
    pub.flush();
  }
  auto t1 = mono_ns();
  auto expected = pub.seq * static_cast<uint64_t>(o.subscribers);
  for (int i = 0; i < 300 && rx.total_received() < expected; ++i)
    std::this_thread::sleep_for(10ms);
  auto cpu1 = srv->cpu_seconds();
  rx.stop();
  uint64_t lost = 0, reordered = 0;
  rx.tally({pub.seq}, lost, reordered);
  auto& h = rx.latencies();
  auto us = [&](double q) { return static_cast<double>(h.quantile(q)) / 1e3; };
  auto secs = static_cast<double>(t1 - t0) / 1e9;
  print(o,
        fmt::format("latency proto={} subscribers={} rate={}/s payload={}B: p50={:.1f}us "
                    "p99={:.1f}us p99.9={:.1f}us max={:.1f}us delivered={} lost={} "
                    "reordered={} server cpu {:.2f} s in {:.1f} s",
                    proto_name(o.proto), o.subscribers, o.rate, o.payload, us(0.5), us(0.99),
                    us(0.999), static_cast<double>(h.max()) / 1e3, rx.total_received(), lost,
                    reordered, cpu1 - cpu0, secs),
        fmt::format(R"({{"scenario":"latency","protocol":"{}","subscribers":{},"rate":{},)"
                    R"("payload":{},"p50_us":{:.2f},"p99_us":{:.2f},"p999_us":{:.2f},)"
                    R"("max_us":{:.2f},"delivered":{},"lost":{},"reordered":{},)"
                    R"("server_cpu_s":{:.3f},"server_cpu_s_per_million":{:.4f}}})",
                    proto_name(o.proto), o.subscribers, o.rate, o.payload, us(0.5), us(0.99),
                    us(0.999), static_cast<double>(h.max()) / 1e3, rx.total_received(), lost,
                    reordered, cpu1 - cpu0,
                    (cpu1 - cpu0) / (static_cast<double>(rx.total_received()) / 1e6)));
  print_observer(o, rig.observer.get(), secs);
}

void run_direct(const options& o) {
  auto srv = server_for(o);
  std::vector<std::unique_ptr<connection>> rx_conns;
  std::vector<publisher> pubs(static_cast<size_t>(o.pairs));
  // Cluster runs: pair i's sender is on node i, its receiver on the same
  // node or (--cross) on the next one.
  for (int i = 0; i < o.pairs; ++i) {
    auto subject = "d." + std::to_string(i);
    rx_conns.push_back(
      join(srv->node(o.cross ? i + 1 : i), o.proto, "rx-" + std::to_string(i), subject));
    pubs[static_cast<size_t>(i)]
      = make_publisher(o, srv->node(i), "tx-" + std::to_string(i), static_cast<uint32_t>(i),
                       o.proto == protocol_kind::convoke ? rx_conns.back()->name : subject, true);
  }
  receiver rx{o.proto, std::move(rx_conns), static_cast<size_t>(o.pairs), false};
  std::vector<publisher*> probing;
  for (auto& p : pubs)
    probing.push_back(&p);
  warm_up(*srv, probing, rx, true);
  print_placement();
  std::this_thread::sleep_for(200ms);
  auto cpu0 = srv->cpu_seconds();
  auto self0 = self_cpu_seconds();
  auto t0 = mono_ns();
  auto end = t0 + static_cast<int64_t>(o.seconds * 1e9);
  while (mono_ns() < end) {
    bool any = false;
    auto now = mono_ns();
    for (size_t i = 0; i < pubs.size(); ++i) {
      auto& p = pubs[i];
      auto in_flight = p.seq - rx.received(i);
      if (in_flight + static_cast<uint64_t>(o.burst) > static_cast<uint64_t>(o.window))
        continue;
      for (int k = 0; k < o.burst; ++k)
        p.add(now);
      p.flush();
      any = true;
    }
    if (!any)
      idle_wait();
  }
  auto t1 = mono_ns();
  auto delivered = rx.total_received();
  auto cpu1 = srv->cpu_seconds();
  auto self1 = self_cpu_seconds();
  std::vector<uint64_t> sent;
  uint64_t total_sent = 0;
  for (auto& p : pubs) {
    sent.push_back(p.seq);
    total_sent += p.seq;
  }
  for (int i = 0; i < 200 && rx.total_received() < total_sent; ++i)
    std::this_thread::sleep_for(10ms);
  rx.stop();
  uint64_t lost = 0, reordered = 0;
  // Each receiver only gets its own sender's messages.
  for (size_t i = 0; i < pubs.size(); ++i) {
    auto got = rx.received(i);
    if (got < pubs[i].seq)
      lost += pubs[i].seq - got;
  }
  auto secs = static_cast<double>(t1 - t0) / 1e9;
  auto rate = static_cast<double>(delivered) / secs;
  print(o,
        fmt::format("direct proto={} pairs={} payload={}B: {:.2f} M messages/s, server cpu "
                    "{:.3f} s per M, server cpu {:.2f} s, bench cpu {:.2f} s in {:.1f} s, "
                    "lost={}",
                    proto_name(o.proto), o.pairs, o.payload, rate / 1e6,
                    (cpu1 - cpu0) / (static_cast<double>(delivered) / 1e6), cpu1 - cpu0,
                    self1 - self0, secs, lost),
        fmt::format(R"({{"scenario":"direct","protocol":"{}","pairs":{},"payload":{},)"
                    R"("messages_per_s":{:.0f},"server_cpu_s":{:.3f},)"
                    R"("server_cpu_s_per_million":{:.4f},"bench_cpu_s":{:.3f},"lost":{}}})",
                    proto_name(o.proto), o.pairs, o.payload, rate, cpu1 - cpu0,
                    (cpu1 - cpu0) / (static_cast<double>(delivered) / 1e6), self1 - self0, lost));
  (void) reordered;
}

void run_connections(const options& o) {
  auto srv = server_for(o);
  std::this_thread::sleep_for(300ms);
  auto rss0 = srv->rss_kib();
  std::vector<std::unique_ptr<connection>> conns;
  conns.reserve(static_cast<size_t>(o.connections));
  auto t0 = mono_ns();
  for (int i = 0; i < o.connections; ++i)
    conns.push_back(join(*srv, o.proto, "idle-" + std::to_string(i), "idle"));
  auto t1 = mono_ns();
  std::this_thread::sleep_for(1s); // let the server settle
  auto rss1 = srv->rss_kib();
  auto per = rss0 > 0 ? static_cast<double>(rss1 - rss0) / o.connections : NAN;
  auto secs = static_cast<double>(t1 - t0) / 1e9;
  print(o,
        fmt::format("connections proto={} count={}: connected in {:.2f} s ({:.0f}/s), server "
                    "RSS {:.1f} MiB -> {:.1f} MiB = {:.2f} KiB per connection",
                    proto_name(o.proto), o.connections, secs, o.connections / secs,
                    static_cast<double>(rss0) / 1024, static_cast<double>(rss1) / 1024, per),
        fmt::format(R"({{"scenario":"connections","protocol":"{}","count":{},)"
                    R"("connect_seconds":{:.3f},"rss_before_kib":{},"rss_after_kib":{},)"
                    R"("rss_per_connection_kib":{:.3f}}})",
                    proto_name(o.proto), o.connections, secs, rss0, rss1, per));
}

/// Open descriptors of a process (0 if unknown).
size_t open_fds(pid_t pid) {
  if (pid <= 0)
    return 0;
  size_t n = 0;
  for ([[maybe_unused]] auto& e :
       std::filesystem::directory_iterator{"/proc/" + std::to_string(pid) + "/fd"})
    ++n;
  return n;
}

/// Least-squares slope of ys over xs (units of y per unit of x).
double slope(const std::vector<double>& xs, const std::vector<double>& ys) {
  auto n = static_cast<double>(xs.size());
  if (xs.size() < 2)
    return 0;
  double sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    sx += xs[i];
    sy += ys[i];
    sxx += xs[i] * xs[i];
    sxy += xs[i] * ys[i];
  }
  auto den = n * sxx - sx * sx;
  return den == 0 ? 0 : (n * sxy - sx * sy) / den;
}

/// Soak: steady mixed load plus connection churn for `seconds`; the
/// server's RSS and descriptors are sampled every second and, after the
/// warm-up, must show no trend. Load: one publisher broadcasting at `rate`
/// to `subscribers`, a second one sending direct messages to sub-0 at
/// rate/10, a third sending 10 messages/s to an agent that does not exist;
/// every second `churn` agents connect, say Hello and leave (half with a
/// Goodbye, half by closing), and churn/10 connect and never say Hello.
void run_soak(const options& o) {
  if (o.proto != protocol_kind::convoke)
    fail("soak runs against Convoke only");
  auto srv = server_for(o);
  std::vector<std::unique_ptr<connection>> subs;
  for (int i = 0; i < o.subscribers; ++i)
    subs.push_back(join(*srv, o.proto, "sub-" + std::to_string(i), {}));
  // Publishers subscribe to a route nobody uses: they receive no broadcasts
  // (they never read, and would otherwise be cut off as slow consumers).
  auto quiet_publisher = [&](const std::string& name, uint32_t index, std::string target) {
    publisher p;
    p.protocol = o.proto;
    p.index = index;
    p.conn = join(*srv, o.proto, name, {}, "soak.unused");
    p.target = std::move(target);
    p.direct = !p.target.empty();
    p.payload.assign(static_cast<size_t>(std::max<int>(o.payload, min_payload)), 'x');
    return p;
  };
  auto bcast = quiet_publisher("pub-broadcast", 0, {});
  auto direct = quiet_publisher("pub-direct", 1, "sub-0");
  auto noise = quiet_publisher("pub-nobody", 2, "nobody");
  // Sequence checks for the broadcasts (publisher 0, to every subscriber);
  // sub-0 also counts the direct ones.
  receiver rx{o.proto, std::move(subs), 1, false};
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> churned{0};
  std::atomic<uint64_t> churn_errors{0};
  // Churn: its own thread, so that slow handshakes never delay the load.
  std::thread churner{[&] {
    uint64_t k = 0;
    auto next = mono_ns();
    while (!stop) {
      std::vector<std::unique_ptr<connection>> silent;
      for (int i = 0; i < o.churn && !stop; ++i) {
        try {
          // Half of them receive broadcasts while connected, half do not.
          auto c = join(*srv, o.proto, "churn-" + std::to_string(k), {},
                        k % 2 == 0 ? std::string{} : std::string{"soak.churn"});
          ++k;
          if (i % 2 == 0) {
            std::string bye;
            convoke_append_goodbye(bye);
            c->send(bye);
          }
          ++churned;
        } catch (const std::exception&) {
          ++churn_errors;
        }
      }
      for (int i = 0; i < o.churn / 10; ++i)
        if (auto r = net::tcp_connect(srv->host, srv->port, 1s))
          silent.push_back(std::make_unique<connection>()), silent.back()->fd = *r;
      next += 1'000'000'000;
      while (!stop && mono_ns() < next)
        std::this_thread::sleep_for(10ms);
    }
  }};
  std::ofstream samples;
  if (!o.samples.empty()) {
    samples.open(o.samples);
    samples << "second,rss_kib,fds,server_cpu_s,delivered,churned\n";
  }
  std::vector<double> xs, rss, fds;
  auto t0 = mono_ns();
  auto next_sample = t0 + 1'000'000'000;
  auto per_tick = std::max(1, o.rate / 100); // 10 ms ticks
  char drain[65536];
  while (mono_ns() - t0 < static_cast<int64_t>(o.seconds * 1e9)) {
    auto now = mono_ns();
    for (int i = 0; i < per_tick; ++i)
      bcast.add(now);
    bcast.flush();
    for (int i = 0; i < std::max(1, per_tick / 10); ++i)
      direct.add(now);
    direct.flush();
    static int noise_tick = 0;
    if (++noise_tick % 10 == 0) {
      noise.add(now);
      noise.flush();
      while (recv(noise.conn->fd, drain, sizeof(drain), MSG_DONTWAIT) > 0) // its Notices
        ;
    }
    if (now >= next_sample) {
      auto second = static_cast<double>(now - t0) / 1e9;
      auto r = static_cast<double>(srv->rss_kib());
      auto f = static_cast<double>(open_fds(srv->pid));
      if (second >= o.warmup) {
        xs.push_back(second);
        rss.push_back(r);
        fds.push_back(f);
      }
      if (samples)
        samples << fmt::format("{:.0f},{:.0f},{:.0f},{:.2f},{},{}\n", second, r, f,
                               srv->cpu_seconds(), rx.total_received(), churned.load());
      next_sample += 1'000'000'000;
    }
    std::this_thread::sleep_for(10ms);
  }
  stop = true;
  churner.join();
  std::this_thread::sleep_for(500ms); // the last messages arrive
  rx.stop();
  uint64_t lost = 0, reordered = 0;
  rx.tally({bcast.seq}, lost, reordered);
  auto direct_expected = bcast.seq + direct.seq;
  if (rx.received(0) < direct_expected)
    lost += direct_expected - rx.received(0);
  if (xs.empty())
    fail("the soak is shorter than its warm-up");
  auto [rmin, rmax] = std::minmax_element(rss.begin(), rss.end());
  auto [fmin, fmax] = std::minmax_element(fds.begin(), fds.end());
  auto rss_slope = slope(xs, rss) * 60; // KiB per minute
  auto fd_slope = slope(xs, fds) * 60;
  print(o,
        fmt::format("soak {:.0f} s (warm-up {:.0f} s): server RSS {:.1f}..{:.1f} MiB, trend "
                    "{:+.1f} KiB/min; descriptors {:.0f}..{:.0f}, trend {:+.2f}/min; churned {} "
                    "agents ({} failed); delivered {}, lost {}, reordered {}",
                    o.seconds, o.warmup, *rmin / 1024, *rmax / 1024, rss_slope, *fmin, *fmax,
                    fd_slope, churned.load(), churn_errors.load(), rx.total_received(), lost,
                    reordered),
        fmt::format(R"({{"scenario":"soak","seconds":{:.0f},"warmup":{:.0f},"rss_min_kib":{:.0f},)"
                    R"("rss_max_kib":{:.0f},"rss_trend_kib_per_min":{:.2f},"fds_min":{:.0f},)"
                    R"("fds_max":{:.0f},"fds_trend_per_min":{:.3f},"churned":{},"churn_failed":{},)"
                    R"("delivered":{},"lost":{},"reordered":{}}})",
                    o.seconds, o.warmup, *rmin, *rmax, rss_slope, *fmin, *fmax, fd_slope,
                    churned.load(), churn_errors.load(), rx.total_received(), lost, reordered));
}

} // namespace

int main(int argc, char** argv) {
  CLI::App app{"convoke-bench: load generator for Convoke (and NATS, for comparison)"};
  options o;
  std::string proto = "convoke";
  app.add_option("scenario", o.scenario, "fanout | latency | direct | connections | soak")
    ->required()
    ->check(CLI::IsMember({"fanout", "latency", "direct", "connections", "soak"}));
  app.add_option("--protocol", proto, "convoke | nats")
    ->check(CLI::IsMember({"convoke", "nats"}))
    ->capture_default_str();
  app.add_option("--server", o.server,
                 "host:port of a running server (default: start one); a cluster: "
                 "host:port,host:port,... (node 0, node 1, ...)");
  app.add_option("--server-bin", o.server_bin,
                 "Server program to start (default: the built convoke-server, or "
                 "/usr/sbin/nats-server)");
  app.add_option("--server-arg", o.server_args, "Extra argument for a started server");
  app.add_option("--server-cpu", o.server_cpu, "Pin a started server to this CPU");
  app.add_option("--scrape-ms", o.scrape_ms,
                 "Read a started Convoke server's /metrics and /connz every this many ms "
                 "while measuring (0: no scraping)");
  app.add_option("--bench-cpu", o.bench_cpu, "Pin the generator to this CPU");
  int wire = 2;
  app
    .add_option("--convoke-protocol", wire,
                "Protocol version to announce (1 to measure a version 1 server)")
    ->check(CLI::Range(1, 2))
    ->capture_default_str();
  app
    .add_option("--server-pid", o.server_pids,
                "PID of --server, for its CPU and RSS; a cluster: every node's, comma-separated "
                "(CPU is their sum)")
    ->delimiter(',');
  app
    .add_option("--node-names", o.node_names,
                "Cluster nodes by server.name, comma-separated (node 0, node 1, ...): each "
                "connection reconnects until Welcome names its node (nodes sharing one port "
                "with listen.reuse-port; --server may then be one address)")
    ->delimiter(',');
  app.add_option("--pub-node", o.pub_node, "fanout/latency: the publisher's node")
    ->capture_default_str();
  app
    .add_option("--sub-nodes", o.sub_nodes,
                "fanout/latency: the receivers' nodes, round robin (e.g. 1 or 0,1; default 0)")
    ->delimiter(',');
  app.add_flag("--cross", o.cross,
               "direct: pair i's receiver on node i+1 instead of its sender's node i");
  app.add_option("-n,--subscribers", o.subscribers, "fanout/latency receivers")
    ->capture_default_str();
  app
    .add_option("--subscriptions", o.subscriptions,
                "fanout/latency: subscriptions per receiver, one of which matches the "
                "published route (0: plain broadcast)")
    ->capture_default_str();
  app.add_flag("--patterns", o.patterns, "with --subscriptions: route patterns (* and >)");
  app.add_option("--payload", o.payload, "payload bytes")->capture_default_str();
  app.add_option("--seconds", o.seconds, "measurement time")->capture_default_str();
  app.add_option("--window", o.window, "closed loop: messages in flight per publisher")
    ->capture_default_str();
  app.add_option("--burst", o.burst, "messages per write")->capture_default_str();
  app.add_option("--rate", o.rate, "latency: messages/s in")->capture_default_str();
  app.add_option("--pairs", o.pairs, "direct: sender/receiver pairs")->capture_default_str();
  app.add_option("--connections", o.connections, "connections: idle agents")->capture_default_str();
  app.add_option("--churn", o.churn, "soak: agents connecting and leaving per second")
    ->capture_default_str();
  app.add_option("--warmup", o.warmup, "soak: seconds before samples count")->capture_default_str();
  app.add_option("--samples", o.samples, "soak: write one CSV line per second to this file");
  app.add_flag("--json", o.json, "also print one JSON object per result");
  app.add_flag("--observe", o.observe,
               "fanout/latency (Convoke): one more agent observes every trace event (Observe "
               "without a filter); its events and missed count are reported");
  app.add_option("--tls-ca", o.tls_ca,
                 "Connect with TLS, verifying the server (as localhost) against this CA; start "
                 "the server with TLS through --server-arg");
  CLI11_PARSE(app, argc, argv);
  o.proto = proto == "nats" ? protocol_kind::nats : protocol_kind::convoke;
  convoke_hello_version = static_cast<uint32_t>(wire);
  if (o.bench_cpu >= 0 && !pin_to_cpu(o.bench_cpu)) {
    std::cerr << "convoke-bench: cannot pin to CPU " << o.bench_cpu << "\n";
    return 1;
  }
  std::signal(SIGPIPE, SIG_IGN);
  raise_fd_limit();
  if (!o.tls_ca.empty()) {
    tls_ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(tls_ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(tls_ctx, SSL_VERIFY_PEER, nullptr);
    if (SSL_CTX_load_verify_locations(tls_ctx, o.tls_ca.c_str(), nullptr) != 1) {
      std::cerr << "convoke-bench: --tls-ca " << o.tls_ca << ": " << tls_errors() << "\n";
      return 1;
    }
  }
  try {
    if (o.scenario == "fanout")
      run_fanout(o);
    else if (o.scenario == "latency")
      run_latency(o);
    else if (o.scenario == "direct")
      run_direct(o);
    else if (o.scenario == "soak")
      run_soak(o);
    else
      run_connections(o);
  } catch (const std::exception& ex) {
    std::cerr << "convoke-bench: " << ex.what() << "\n";
    return 1;
  }
  return 0;
}
