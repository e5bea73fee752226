// Operating a running convoke-server with signals and systemd's notify
// protocol: SIGHUP reloads the configuration under load, SIGUSR1 reopens
// the log and trace files after a rename (as logrotate does), and
// sd_notify messages reach a socket this test owns. Real processes, real
// signals, real sockets.

#include <gtest/gtest.h>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <thread>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "process.hpp"
#include "raw_client.hpp"
#include "server_process.hpp"
#include "wait.hpp"

using namespace convoke;
using namespace convoke::test;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

raw_client join(uint16_t port, const std::string& name) {
  raw_client c{port};
  auto w = c.hello(name);
  EXPECT_TRUE(w.has_welcome()) << name << ": " << w.ShortDebugString();
  return c;
}

std::string envelopes(int count, size_t payload, const std::string& to) {
  std::string out;
  for (int i = 0; i < count; ++i) {
    v1::Frame f;
    f.mutable_envelope()->set_recipient(to);
    f.mutable_envelope()->set_payload(std::string(payload, 'p'));
    proto::append_frame(f, out);
  }
  return out;
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream{path, std::ios::trunc} << text;
}

size_t count_of(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1))
    ++n;
  return n;
}

/// The counter `key` of the server's final log line ("stopped ...").
uint64_t stat_of(const std::string& log, const std::string& key) {
  auto line = log.rfind("stopped messages_in=");
  if (line == std::string::npos)
    return 0;
  auto at = log.find(" " + key + "=", line);
  if (at == std::string::npos)
    return 0;
  return std::stoull(log.substr(at + key.size() + 2));
}

/// Agents relaying continuously: "pub" sends direct messages to "sub" in
/// batches, keeping at most `window` of them unread (so that the reader is
/// never a slow consumer), until finish().
class relay_load {
public:
  explicit relay_load(uint16_t port) : pub_(join(port, "pub")), sub_(join(port, "sub")) {
    reader_ = std::jthread{[this] {
      for (;;) {
        if (sub_.read_delivery(1s)) {
          ++received_;
          continue;
        }
        if (stop_reading_)
          return;
      }
    }};
    writer_ = std::jthread{[this] {
      auto batch = envelopes(batch_size, 100, "sub");
      while (!stop_sending_) {
        if (!eventually(
              [&] { return stop_sending_ || (sent_ < limit_ && sent_ - received_ < window); }, 60s))
          return; // the reader stalled: the counts will say so
        if (stop_sending_)
          return;
        if (!pub_.send_bytes(batch))
          return;
        sent_ += batch_size;
      }
    }};
  }

  ~relay_load() {
    stop_sending_ = true;
    stop_reading_ = true;
  }

  uint64_t received() const {
    return received_;
  }

  /// Sends no more than `n` messages in all (until raised again).
  void limit(uint64_t n) {
    limit_ = n;
  }

  /// Stops sending and waits until everything sent was received; false if
  /// some never arrives.
  bool finish() {
    stop_sending_ = true;
    writer_.join();
    bool all = eventually([&] { return received_ == sent_; }, 20s);
    stop_reading_ = true;
    reader_.join();
    return all;
  }

  uint64_t sent() const {
    return sent_;
  }

private:
  static constexpr int batch_size = 100;
  static constexpr uint64_t window = 2000;
  raw_client pub_;
  raw_client sub_;
  std::atomic<uint64_t> sent_{0};
  std::atomic<uint64_t> received_{0};
  std::atomic<uint64_t> limit_{std::numeric_limits<uint64_t>::max()};
  std::atomic<bool> stop_sending_{false};
  std::atomic<bool> stop_reading_{false};
  std::jthread reader_;
  std::jthread writer_;
};

/// The paths the process's descriptors refer to (/proc/PID/fd).
std::vector<std::string> open_files(int pid) {
  std::vector<std::string> out;
  std::error_code ec;
  for (auto& e : fs::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec)) {
    std::error_code lec;
    auto target = fs::read_symlink(e.path(), lec);
    if (!lec)
      out.push_back(target.string());
  }
  return out;
}

std::vector<std::string> lines_of(const std::string& path) {
  std::vector<std::string> out;
  std::ifstream in{path};
  for (std::string line; std::getline(in, line);)
    out.push_back(line);
  return out;
}

/// An AF_UNIX datagram socket standing in for systemd's NOTIFY_SOCKET.
class notify_socket {
public:
  explicit notify_socket(std::string path) : path_(std::move(path)) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path_.c_str());
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
      throw std::runtime_error("cannot bind " + path_);
  }
  ~notify_socket() {
    ::close(fd_);
  }

  const std::string& path() const {
    return path_;
  }

  /// The next datagram, "" on timeout.
  std::string next(std::chrono::milliseconds timeout) {
    timeval tv{static_cast<time_t>(timeout.count() / 1000),
               static_cast<suseconds_t>((timeout.count() % 1000) * 1000)};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char buf[4096];
    auto n = ::recv(fd_, buf, sizeof buf, 0);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string{};
  }

  /// Reads datagrams until one contains `what` (skipping watchdog pings
  /// unless they are asked for); "" on timeout.
  std::string wait_for(const std::string& what, std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      auto m = next(100ms);
      if (m.find(what) != std::string::npos)
        return m;
    }
    return {};
  }

private:
  std::string path_;
  int fd_ = -1;
};

} // namespace

TEST(Signals, SighupUnderLoadRaisesTheLogLevelWithoutLosingAMessage) {
  temp_dir dir;
  auto config = dir.file("convoke.toml");
  write_file(config, "[log]\nlevel = \"info\"\n");
  server_process srv{{"--config", config, "--timeouts.drain", "2s"}};
  relay_load load{srv.port};
  ASSERT_TRUE(eventually([&] { return load.received() > 5000; }, 20s));
  // At info, a new connection logs nothing at debug.
  { auto probe = join(srv.port, "probe-1"); }
  EXPECT_EQ(count_of(srv.proc->err(), "connection accepted"), 0u) << srv.proc->err();

  write_file(config, "[log]\nlevel = \"debug\"\n");
  srv.proc->signal(SIGHUP);
  ASSERT_TRUE(
    srv.proc->wait_output("config reloaded key=log.level old=\"info\" new=\"debug\"", 10s))
    << srv.proc->err();
  ASSERT_TRUE(srv.proc->wait_output("config reload done changed=1 applied=1 need_restart=0", 5s));
  EXPECT_TRUE(srv.proc->running()) << "SIGHUP must not end the server";
  auto during = load.received();
  { auto probe = join(srv.port, "probe-2"); }
  ASSERT_TRUE(srv.proc->wait_output("connection accepted", 5s)) << srv.proc->err();
  // The relay went on through the reload.
  ASSERT_TRUE(eventually([&] { return load.received() > during + 5000; }, 20s));

  // An invalid file: every problem is logged and the running configuration
  // (debug included) stays.
  write_file(config, "[log]\nlevel = \"loud\"\n[timeouts]\nidle = \"soon\"\n");
  srv.proc->signal(SIGHUP);
  ASSERT_TRUE(srv.proc->wait_output(
    "config reload failed, keeping the running configuration problems=2", 10s))
    << srv.proc->err();
  EXPECT_TRUE(srv.proc->wait_output("'loud' is not a log level", 5s));
  EXPECT_TRUE(srv.proc->wait_output("'soon' is not a duration", 5s));
  auto accepted = count_of(srv.proc->err(), "connection accepted");
  { auto probe = join(srv.port, "probe-3"); }
  EXPECT_TRUE(
    eventually([&] { return count_of(srv.proc->err(), "connection accepted") > accepted; }, 5s))
    << "debug logging must survive a refused reload";
  // A file that does not parse at all.
  write_file(config, "[log\n");
  srv.proc->signal(SIGHUP);
  ASSERT_TRUE(srv.proc->wait_output(
    "config reload failed, keeping the running configuration problems=1", 10s));

  ASSERT_TRUE(load.finish()) << "sent " << load.sent() << ", received " << load.received();
  srv.proc->signal(SIGTERM);
  ASSERT_EQ(srv.proc->wait(10s), 0) << srv.proc->err();
  auto err = srv.proc->err();
  EXPECT_EQ(stat_of(err, "messages_in"), load.sent()) << err;
  EXPECT_EQ(stat_of(err, "deliveries"), load.sent()) << err;
  EXPECT_EQ(stat_of(err, "dropped"), 0u) << err;
}

TEST(Signals, SighupAppliesLimitsToNewSessionsAndNamesTheKeysThatNeedARestart) {
  temp_dir dir;
  auto config = dir.file("convoke.toml");
  write_file(config, "[limits]\nmax-frame-bytes = \"1MiB\"\n");
  // --listen.port 0 (from server_process) wins over the file's port.
  server_process srv{{"--config", config, "--timeouts.drain", "2s"}};
  raw_client before{srv.port};
  auto w1 = before.hello("before");
  ASSERT_TRUE(w1.has_welcome());
  EXPECT_EQ(w1.welcome().limits().max_frame_bytes(), 1u << 20);

  // timeouts.drain is in the file and on the command line: the flag wins.
  write_file(config, "[server]\nname = \"renamed\"\n[listen]\nport = 9\n"
                     "[limits]\nmax-frame-bytes = \"64KiB\"\nmax-routes = 100\n"
                     "[timeouts]\ndrain = \"3s\"\n");
  srv.proc->signal(SIGHUP);
  ASSERT_TRUE(srv.proc->wait_output(
    "config reloaded key=limits.max-frame-bytes old=\"1MiB\" new=\"64KiB\"", 10s))
    << srv.proc->err();
  ASSERT_TRUE(srv.proc->wait_output(
    "config changed but needs a restart; running values kept keys=server.name,limits.max-routes",
    5s))
    << srv.proc->err();
  EXPECT_TRUE(srv.proc->wait_output("config reload done changed=3 applied=1 need_restart=2", 5s))
    << "the flags still win: listen.port and timeouts.drain did not change\n"
    << srv.proc->err();

  raw_client after{srv.port};
  auto w2 = after.hello("after");
  ASSERT_TRUE(w2.has_welcome());
  EXPECT_EQ(w2.welcome().limits().max_frame_bytes(), 64u << 10);
  EXPECT_EQ(w2.welcome().server_name(), "convoke") << "server.name needs a restart";
  EXPECT_EQ(w2.welcome().limits().max_routes(), 256u) << "limits.max-routes needs a restart";
  // The older session keeps the limit it was told.
  std::string big(100 << 10, 'b');
  ASSERT_TRUE(before.send_envelope("after", big));
  auto d = after.read_delivery(5s);
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->envelope().payload().size(), big.size());
  // The newer one may not send it.
  ASSERT_TRUE(after.send_envelope("before", big));
  std::vector<v1::Frame> frames;
  EXPECT_TRUE(after.wait_closed(5s, &frames));
  bool refused = false;
  for (auto& f : frames)
    refused |= f.has_notice() && f.notice().code() == "frame_too_large";
  EXPECT_TRUE(refused);

  srv.proc->signal(SIGTERM);
  EXPECT_EQ(srv.proc->wait(10s), 0) << srv.proc->err();
}

TEST(Signals, SighupRotatesTheSharedTokenAndNeverLogsIt) {
  temp_dir dir;
  auto token_file = dir.file("token");
  write_file(token_file, "first-secret-1234\n");
  server_process srv{
    {"--auth.token-file", token_file, "--auth.failed-login-delay", "0s", "--timeouts.drain", "2s"}};
  raw_client a{srv.port};
  ASSERT_TRUE(a.login("a", "", "first-secret-1234").has_welcome());

  write_file(token_file, "second-secret-5678\n");
  srv.proc->signal(SIGHUP);
  ASSERT_TRUE(srv.proc->wait_output("config reloaded key=auth.token old=\"<redacted>\" "
                                    "new=\"<redacted>\"",
                                    10s))
    << srv.proc->err();
  raw_client old_token{srv.port};
  auto refused = old_token.login("b", "", "first-secret-1234");
  ASSERT_TRUE(refused.has_notice()) << refused.ShortDebugString();
  EXPECT_EQ(refused.notice().code(), "auth_failed");
  raw_client new_token{srv.port};
  EXPECT_TRUE(new_token.login("c", "", "second-secret-5678").has_welcome());
  // The session that logged in before goes on.
  ASSERT_TRUE(a.ping());
  // The admin API takes the token in force too: the old one is refused.
  auto admin_status = [&](const std::string& token) {
    httplib::Client c{"127.0.0.1", srv.admin_port};
    c.set_read_timeout(5);
    c.set_basic_auth("ops", token);
    auto r = c.Get("/varz");
    return r ? r->status : -1;
  };
  EXPECT_EQ(admin_status("first-secret-1234"), 401);
  EXPECT_EQ(admin_status("second-secret-5678"), 200);

  srv.proc->signal(SIGTERM);
  EXPECT_EQ(srv.proc->wait(10s), 0) << srv.proc->err();
  auto err = srv.proc->err();
  EXPECT_EQ(err.find("first-secret"), std::string::npos) << err;
  EXPECT_EQ(err.find("second-secret"), std::string::npos) << err;
}

TEST(Signals, SigusrOneReopensTheLogAndTraceFilesAndNoRecordIsCutOrLost) {
  temp_dir dir;
  auto log = dir.file("server.log");
  server_process srv{{"--log.file", log, "--timeouts.drain", "2s"}};
  auto trace = srv.dir.file("trace.jsonl");
  // At most 30000 messages, so that every trace record fits in the trace
  // queue (65536) and in one file (no size rotation): the counts are exact.
  relay_load load{srv.port};
  load.limit(10000);
  ASSERT_TRUE(eventually([&] { return load.received() > 5000; }, 20s));

  // logrotate: rename, then signal, while messages are relayed.
  load.limit(20000);
  fs::rename(log, log + ".rotated");
  fs::rename(trace, trace + ".rotated");
  srv.proc->signal(SIGUSR1);
  ASSERT_TRUE(eventually(
    [&] { return read_file(log).find("trace file reopened") != std::string::npos; }, 10s))
    << read_file(log) << read_file(log + ".rotated");
  load.limit(30000);
  ASSERT_TRUE(eventually([&] { return load.received() == 30000; }, 20s)) << load.received();
  // No descriptor of the server refers to the renamed files any more.
  for (auto& f : open_files(srv.proc->pid())) {
    EXPECT_EQ(f.find("server.log.rotated"), std::string::npos) << f;
    EXPECT_EQ(f.find("trace.jsonl.rotated"), std::string::npos) << f;
  }

  ASSERT_TRUE(load.finish()) << "sent " << load.sent() << ", received " << load.received();
  srv.proc->signal(SIGTERM);
  ASSERT_EQ(srv.proc->wait(10s), 0) << srv.proc->err();

  auto old_log = read_file(log + ".rotated");
  auto new_log = read_file(log);
  EXPECT_NE(old_log.find("received SIGUSR1; reopening the log and trace files"), std::string::npos)
    << old_log;
  EXPECT_NE(new_log.find("log file reopened"), std::string::npos) << new_log;
  EXPECT_EQ(stat_of(new_log, "messages_in"), load.sent()) << new_log;
  EXPECT_EQ(stat_of(new_log, "trace_dropped"), 0u) << new_log;
  // Every relayed message has exactly one whole record, in one of the files.
  uint64_t relays = 0;
  std::set<uint64_t> ids;
  for (auto& path : {trace + ".rotated", trace}) {
    auto text = read_file(path);
    ASSERT_FALSE(text.empty()) << path;
    EXPECT_EQ(text.back(), '\n') << path << " ends inside a record";
    for (auto& line : lines_of(path)) {
      auto j = nlohmann::json::parse(line); // a cut record would not parse
      if (j["event"] == "relay") {
        ++relays;
        ids.insert(j["message_id"].get<uint64_t>());
      }
    }
  }
  EXPECT_EQ(load.sent(), 30000u);
  EXPECT_EQ(relays, load.sent());
  EXPECT_EQ(ids.size(), load.sent());
}

TEST(Signals, SystemdHearsReadyReloadingWatchdogAndStopping) {
  temp_dir dir;
  notify_socket sd{dir.file("notify.sock")};
  server_process srv{
    {"--timeouts.drain", "2s"}, {}, {{"NOTIFY_SOCKET", sd.path()}, {"WATCHDOG_USEC", "200000"}}};
  auto ready = sd.wait_for("READY=1", 10s);
  ASSERT_NE(ready, "");
  EXPECT_NE(ready.find("STATUS=listening on 127.0.0.1:" + std::to_string(srv.port)),
            std::string::npos)
    << ready;
  // Pings every 100 ms (half of WATCHDOG_USEC).
  ASSERT_NE(sd.wait_for("WATCHDOG=1", 2s), "");
  ASSERT_NE(sd.wait_for("WATCHDOG=1", 1s), "");
  EXPECT_TRUE(srv.proc->wait_output("systemd watchdog on interval=200ms ping_every=100ms", 1s))
    << srv.proc->err();

  srv.proc->signal(SIGHUP);
  auto reloading = sd.wait_for("RELOADING=1", 10s);
  ASSERT_NE(reloading, "");
  auto at = reloading.find("MONOTONIC_USEC=");
  ASSERT_NE(at, std::string::npos) << reloading;
  timespec now{};
  clock_gettime(CLOCK_MONOTONIC, &now);
  auto usec = std::stoull(reloading.substr(at + 15));
  auto now_usec
    = static_cast<uint64_t>(now.tv_sec) * 1'000'000u + static_cast<uint64_t>(now.tv_nsec) / 1000u;
  EXPECT_LE(usec, now_usec);
  EXPECT_GT(usec + 10'000'000u, now_usec) << "MONOTONIC_USEC is the reload's time";
  auto again = sd.wait_for("READY=1", 10s);
  EXPECT_NE(again.find("reloaded"), std::string::npos) << again;

  srv.proc->signal(SIGTERM);
  auto stopping = sd.wait_for("STOPPING=1", 10s);
  EXPECT_NE(stopping.find("STATUS=draining after SIGTERM"), std::string::npos) << stopping;
  EXPECT_EQ(srv.proc->wait(10s), 0) << srv.proc->err();
}
