#include "http_front.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <fmt/format.h>
#include <httplib.h>

namespace convoke::server {

namespace {

using clock = std::chrono::steady_clock;

const char* reason_phrase(int status) {
  switch (status) {
  case 200:
    return "OK";
  case 408:
    return "Request Timeout";
  case 431:
    return "Request Header Fields Too Large";
  case 503:
    return "Service Unavailable";
  default:
    return "Error";
  }
}

std::string response(int status, const std::string& body, bool head_only = false) {
  return fmt::format("HTTP/1.1 {} {}\r\nContent-Type: application/json\r\n"
                     "Content-Length: {}\r\nConnection: close\r\n\r\n{}",
                     status, reason_phrase(status), body.size(), head_only ? "" : body);
}

std::string error_body(const std::string& text) {
  return "{\"error\":\"" + text + "\"}\n"; // texts here are fixed ASCII
}

/// The socket address as text ("127.0.0.1", "::1") and port.
void address_of(int fd, bool peer, std::string& ip, int& port) {
  sockaddr_storage a{};
  socklen_t len = sizeof a;
  int rc = peer ? ::getpeername(fd, reinterpret_cast<sockaddr*>(&a), &len)
                : ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ip.clear();
  port = 0;
  if (rc != 0)
    return;
  char text[INET6_ADDRSTRLEN] = {};
  if (a.ss_family == AF_INET) {
    auto& v4 = reinterpret_cast<sockaddr_in&>(a);
    ::inet_ntop(AF_INET, &v4.sin_addr, text, sizeof text);
    port = ntohs(v4.sin_port);
  } else if (a.ss_family == AF_INET6) {
    auto& v6 = reinterpret_cast<sockaddr_in6&>(a);
    ::inet_ntop(AF_INET6, &v6.sin6_addr, text, sizeof text);
    port = ntohs(v6.sin6_port);
  }
  ip = text;
}

/// Sends all of `data` before `deadline` (the socket is non-blocking).
bool send_all(int fd, const char* data, size_t size, clock::time_point deadline) {
  while (size > 0) {
    auto n = ::send(fd, data, size, MSG_NOSIGNAL);
    if (n > 0) {
      data += n;
      size -= static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
      return false;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now());
    if (left.count() <= 0)
      return false;
    pollfd p{fd, POLLOUT, 0};
    ::poll(&p, 1, static_cast<int>(left.count()));
  }
  return true;
}

/// A connection on its way to a complete request head.
struct connection {
  int fd = -1;
  clock::time_point deadline;
  std::string head; // plaintext received so far
  std::unique_ptr<tls::channel> tls;
};

/// A complete request for a worker: the connection and what was read.
struct job {
  int fd = -1;
  std::string head;
  std::unique_ptr<tls::channel> tls;
};

/// httplib's view of a connection: the bytes read so far, then the socket;
/// every read and write bounded by one deadline.
class bounded_stream final : public httplib::Stream {
public:
  bounded_stream(job& j, clock::time_point deadline) : j_(j), deadline_(deadline) {}

  bool is_readable() const override {
    return pos_ < j_.head.size();
  }
  bool is_writable() const override {
    return clock::now() < deadline_;
  }

  ssize_t read(char* ptr, size_t size) override {
    // A GET has no body: everything httplib reads is in the head. A request
    // with a body longer than what came with the head is cut here.
    if (pos_ >= j_.head.size())
      return fill() ? read(ptr, size) : -1;
    auto n = std::min(size, j_.head.size() - pos_);
    std::copy_n(j_.head.data() + pos_, n, ptr);
    pos_ += n;
    return static_cast<ssize_t>(n);
  }

  ssize_t write(const char* ptr, size_t size) override {
    if (!j_.tls)
      return send_all(j_.fd, ptr, size, deadline_) ? static_cast<ssize_t>(size) : -1;
    j_.tls->write(ptr, size);
    out_.clear();
    j_.tls->take_output(out_);
    return send_all(j_.fd, out_.data(), out_.size(), deadline_) ? static_cast<ssize_t>(size) : -1;
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    address_of(j_.fd, true, ip, port);
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    address_of(j_.fd, false, ip, port);
  }
  socket_t socket() const override {
    return j_.fd;
  }

private:
  /// More plaintext from the socket (a body), within the deadline.
  bool fill() {
    char buf[4096];
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline_ - clock::now());
      if (left.count() <= 0)
        return false;
      pollfd p{j_.fd, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0)
        continue;
      auto n = ::recv(j_.fd, buf, sizeof buf, 0);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
        return false;
      if (n < 0)
        continue;
      if (!j_.tls) {
        j_.head.append(buf, static_cast<size_t>(n));
        return true;
      }
      std::vector<char> plain;
      if (!j_.tls->feed(buf, static_cast<size_t>(n), plain))
        return false;
      if (!plain.empty()) {
        j_.head.append(plain.data(), plain.size());
        return true;
      }
    }
  }

  job& j_;
  clock::time_point deadline_;
  size_t pos_ = 0;
  std::vector<char> out_;
};

} // namespace

struct http_front::impl {
  options opts;
  serve_fn serve;
  quick_fn quick;
  int epoll_fd = -1;
  int wake_fd = -1;
  std::thread io;
  std::vector<std::thread> workers;

  std::mutex mutex;
  std::condition_variable work;
  std::deque<job> queue;
  /// Sockets the workers are answering (cut at stop).
  std::unordered_set<int> serving;
  bool stopping = false;

  // I/O thread only.
  std::unordered_map<int, connection> conns;
  /// accept() failed for lack of resources: the listening socket is not
  /// watched until then.
  std::optional<clock::time_point> accept_paused_until;

  void watch(int fd) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    ::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev);
  }

  void close_conn(int fd) {
    ::epoll_ctl(epoll_fd, EPOLL_CTL_DEL, fd, nullptr);
    ::close(fd);
    conns.erase(fd);
  }

  /// Answers from the I/O thread (small: one non-blocking send) and closes.
  void answer_and_close(connection& c, const std::string& text) {
    if (c.tls) {
      c.tls->write(text.data(), text.size());
      c.tls->close();
      std::vector<char> out;
      c.tls->take_output(out);
      (void) ::send(c.fd, out.data(), out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    } else {
      (void) ::send(c.fd, text.data(), text.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    }
    ::shutdown(c.fd, SHUT_WR);
    close_conn(c.fd);
  }

  void accept_all() {
    for (;;) {
      int fd = ::accept4(opts.listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED) {
          // Out of descriptors or memory: the pending connection stays and
          // the (level-triggered) listening socket would wake us at once,
          // forever. Stop watching it for a while instead of spinning.
          ::epoll_ctl(epoll_fd, EPOLL_CTL_DEL, opts.listen_fd, nullptr);
          accept_paused_until = clock::now() + std::chrono::milliseconds{100};
        }
        return;
      }
      if (conns.size() >= opts.max_connections) {
        // The oldest connection still reading its head makes room: slow
        // clients evict each other, new ones get in.
        auto oldest = std::min_element(conns.begin(), conns.end(), [](auto& a, auto& b) {
          return a.second.deadline < b.second.deadline;
        });
        close_conn(oldest->first);
      }
      connection c;
      c.fd = fd;
      c.deadline = clock::now() + opts.deadline;
      if (opts.tls)
        c.tls = std::make_unique<tls::channel>(opts.tls);
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.fd = fd;
      if (::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev) != 0) {
        ::close(fd);
        continue;
      }
      conns.emplace(fd, std::move(c));
    }
  }

  void on_readable(int fd) {
    auto it = conns.find(fd);
    if (it == conns.end())
      return;
    auto& c = it->second;
    char buf[4096];
    std::vector<char> plain;
    for (;;) {
      auto n = ::recv(fd, buf, sizeof buf, 0);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        close_conn(fd);
        return;
      }
      if (n < 0) {
        if (errno == EINTR)
          continue;
        break;
      }
      if (!c.tls) {
        c.head.append(buf, static_cast<size_t>(n));
      } else {
        plain.clear();
        auto ok = c.tls->feed(buf, static_cast<size_t>(n), plain);
        std::vector<char> out;
        c.tls->take_output(out); // handshake answers, alerts
        if (!out.empty()
            && ::send(fd, out.data(), out.size(), MSG_NOSIGNAL | MSG_DONTWAIT)
                 != static_cast<ssize_t>(out.size())) {
          close_conn(fd); // a handshake flight does not fit: give up
          return;
        }
        if (!ok) {
          close_conn(fd);
          return;
        }
        c.head.append(plain.data(), plain.size());
      }
      if (c.head.size() > opts.max_head_bytes) {
        answer_and_close(c, response(431, error_body("the request head is too large")));
        return;
      }
      if (c.head.find("\r\n\r\n") != std::string::npos) {
        complete(c);
        return;
      }
    }
  }

  /// A request head is complete: answer a probe here, else hand it over.
  void complete(connection& c) {
    // "GET /healthz HTTP/1.1": method, target, version.
    auto line_end = c.head.find("\r\n");
    std::string_view line{c.head.data(), line_end};
    auto sp1 = line.find(' ');
    auto sp2 = line.rfind(' ');
    if (sp1 != std::string_view::npos && sp2 > sp1) {
      auto method = line.substr(0, sp1);
      auto target = line.substr(sp1 + 1, sp2 - sp1 - 1);
      if (method == "GET" || method == "HEAD")
        if (auto a = quick(target)) {
          answer_and_close(c, response(a->status, a->body, method == "HEAD"));
          return;
        }
    }
    ::epoll_ctl(epoll_fd, EPOLL_CTL_DEL, c.fd, nullptr);
    {
      std::lock_guard lock{mutex};
      if (queue.size() >= opts.max_queued) {
        answer_and_close(c, response(503, error_body("the admin listener is busy; try again")));
        return;
      }
      queue.push_back({c.fd, std::move(c.head), std::move(c.tls)});
    }
    work.notify_one();
    conns.erase(c.fd); // the worker owns the socket now
  }

  void expire(clock::time_point now) {
    std::vector<int> late;
    for (auto& [fd, c] : conns)
      if (c.deadline <= now)
        late.push_back(fd);
    for (int fd : late)
      answer_and_close(conns.at(fd), response(408, error_body("the request took too long")));
  }

  void io_loop() {
    epoll_event events[64];
    for (;;) {
      auto now = clock::now();
      expire(now);
      if (accept_paused_until && *accept_paused_until <= now) {
        accept_paused_until.reset();
        watch(opts.listen_fd);
      }
      int timeout = accept_paused_until ? 100 : 250; // deadlines are checked at least this often
      for (auto& [fd, c] : conns)
        timeout = std::min<int>(
          timeout,
          static_cast<int>(
            std::chrono::duration_cast<std::chrono::milliseconds>(c.deadline - now).count())
            + 1);
      int n = ::epoll_wait(epoll_fd, events, 64, std::max(timeout, 0));
      for (int i = 0; i < n; ++i) {
        int fd = events[i].data.fd;
        if (fd == wake_fd)
          return;
        if (fd == opts.listen_fd)
          accept_all();
        else
          on_readable(fd);
      }
    }
  }

  void work_loop() {
    for (;;) {
      job j;
      {
        std::unique_lock lock{mutex};
        work.wait(lock, [&] { return stopping || !queue.empty(); });
        if (stopping)
          return;
        j = std::move(queue.front());
        queue.pop_front();
        serving.insert(j.fd);
      }
      auto deadline = clock::now() + opts.deadline;
      {
        bounded_stream s{j, deadline};
        serve(s);
      }
      if (j.tls) {
        j.tls->close();
        std::vector<char> out;
        j.tls->take_output(out);
        send_all(j.fd, out.data(), out.size(), deadline);
      }
      {
        std::lock_guard lock{mutex};
        serving.erase(j.fd);
      }
      // Closing with unread input would reset the connection and could
      // destroy the answer on its way: half-close, then close.
      ::shutdown(j.fd, SHUT_WR);
      ::close(j.fd);
    }
  }
};

http_front::http_front(options opts, serve_fn serve, quick_fn quick)
  : impl_(std::make_unique<impl>()) {
  auto& d = *impl_;
  d.opts = std::move(opts);
  d.serve = std::move(serve);
  d.quick = std::move(quick);
  d.epoll_fd = ::epoll_create1(EPOLL_CLOEXEC);
  d.wake_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  // The listening socket must not block accept4 in the I/O loop.
  int one = 1;
  ::ioctl(d.opts.listen_fd, FIONBIO, &one);
  d.watch(d.opts.listen_fd);
  d.watch(d.wake_fd);
  for (size_t i = 0; i < d.opts.workers; ++i)
    d.workers.emplace_back([&d] { d.work_loop(); });
  d.io = std::thread{[&d] { d.io_loop(); }};
}

http_front::~http_front() {
  auto& d = *impl_;
  uint64_t one = 1;
  (void) ::write(d.wake_fd, &one, sizeof one);
  d.io.join();
  for (auto& [fd, c] : d.conns)
    ::close(fd);
  d.conns.clear();
  {
    std::lock_guard lock{d.mutex};
    d.stopping = true;
    for (auto& j : d.queue)
      ::close(j.fd);
    d.queue.clear();
    // Answers in progress end now: their reads and writes fail at once.
    for (int fd : d.serving)
      ::shutdown(fd, SHUT_RDWR);
  }
  d.work.notify_all();
  for (auto& t : d.workers)
    t.join();
  ::close(d.opts.listen_fd);
  ::close(d.wake_fd);
  ::close(d.epoll_fd);
}

} // namespace convoke::server
