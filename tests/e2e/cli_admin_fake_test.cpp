// End to end: `convoke server check`, `agents` and `top` as processes
// against a stand-in admin listener (cpp-httplib in this test) that serves
// the admin API's JSON: exit codes, Basic credentials, paging, rates, and
// hostile answers, independent of a server's state. The tests against a
// real convoke-server are in cli_ops_e2e_test.cpp.

#include <gtest/gtest.h>

#include <poll.h>
#include <pty.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <fstream>
#include <mutex>
#include <thread>

#include <fmt/format.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "process.hpp"
#include "test_certs.hpp"
#include "wait.hpp"

using namespace convoke::test;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

/// A fake admin listener on 127.0.0.1 and an ephemeral port.
class fake_admin {
public:
  /// Requires "Authorization: Basic base64(ops:s3cret-token)" on /varz and
  /// /connz when set.
  bool require_auth = false;
  bool draining = false;
  int agents = 3;
  /// Page size the fake enforces, whatever the client asks.
  int page_size = 2;
  /// /connz answers this instead, when set.
  std::string connz_override;
  /// Each /connz: the producer's in_msgs grow by 50 and its uptime by 0.5 s.
  std::atomic<int> connz_calls{0};

  /// With `tls`: HTTPS with that certificate.
  explicit fake_admin(const cert_files* tls = nullptr)
    : srv_(tls == nullptr
             ? std::make_unique<httplib::Server>()
             : std::make_unique<httplib::SSLServer>(tls->cert.c_str(), tls->key.c_str())),
      https_(tls != nullptr) {
    auto& srv_ = *this->srv_;
    srv_.Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
      res.set_content(R"({"status":"ok"})", "application/json");
    });
    srv_.Get("/readyz", [this](const httplib::Request&, httplib::Response& res) {
      res.status = draining ? 503 : 200;
      res.set_content(draining ? R"({"status":"draining"})" : R"({"status":"ready"})",
                      "application/json");
    });
    srv_.Get("/varz", [this](const httplib::Request& req, httplib::Response& res) {
      if (!authorized(req, res))
        return;
      json v = {{"server_name", "convoke"},
                {"version", "9.8.7"},
                {"uptime_seconds", 65.0},
                {"draining", draining},
                {"connections", agents + 1},
                {"agents", agents},
                {"config", {{"limits.max-agents", 100}}},
                {"totals", {{"messages_in", 1000}, {"deliveries", 2000}, {"dropped", 3}}},
                {"rates",
                 {{"messages_in_per_second", 100.0},
                  {"deliveries_per_second", 200.0},
                  {"bytes_in_per_second", 4096.0},
                  {"bytes_out_per_second", 8192.0}}}};
      res.set_content(v.dump(), "application/json");
    });
    srv_.Get("/connz", [this](const httplib::Request& req, httplib::Response& res) {
      if (!authorized(req, res))
        return;
      {
        std::lock_guard guard{mtx_};
        queries_.push_back(req.target);
      }
      if (!connz_override.empty()) {
        res.set_content(connz_override, "application/json");
        return;
      }
      int call = ++connz_calls;
      auto offset = std::stoi(req.get_param_value("offset"));
      json rows = json::array();
      for (int i = offset; i < agents && i < offset + page_size; ++i) {
        bool producer = i == 0;
        rows.push_back({{"session", i + 1},
                        {"name", producer ? "producer" : fmt::format("agent-{}", i)},
                        {"address", fmt::format("127.0.0.1:{}", 40000 + i)},
                        {"sdk", "convoke-cpp"},
                        {"sdk_version", "9.8.7"},
                        {"uptime_seconds", producer ? 10.0 + 0.5 * call : 10.0},
                        {"idle_seconds", 0.1},
                        {"in_msgs", producer ? 50 * call : 7},
                        {"out_msgs", 0},
                        {"pending_bytes", 0},
                        {"dropped", 0},
                        {"routes", json::array({"news"})}});
      }
      json page
        = {{"total", agents}, {"offset", offset}, {"limit", page_size}, {"connections", rows}};
      res.set_content(page.dump(), "application/json");
    });
    port_ = srv_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread{[this] { this->srv_->listen_after_bind(); }};
    // stop() does nothing before the accept loop runs: wait for it.
    eventually([this] { return this->srv_->is_running(); });
  }

  ~fake_admin() {
    srv_->stop();
    thread_.join();
  }

  std::string url(bool https) const {
    return fmt::format("{}://127.0.0.1:{}", https ? "https" : "http", port_);
  }

  std::string url() const {
    return url(https_);
  }

  std::vector<std::string> queries() {
    std::lock_guard guard{mtx_};
    return queries_;
  }

private:
  bool authorized(const httplib::Request& req, httplib::Response& res) {
    if (!require_auth || req.get_header_value("Authorization") == "Basic b3BzOnMzY3JldC10b2tlbg==")
      return true;
    res.status = 401;
    res.set_header("WWW-Authenticate", "Basic realm=\"convoke\"");
    res.set_content(R"({"error":"credentials required"})", "application/json");
    return false;
  }

  std::unique_ptr<httplib::Server> srv_;
  bool https_ = false;
  int port_ = 0;
  std::thread thread_;
  std::mutex mtx_;
  std::vector<std::string> queries_;
};

std::vector<std::string> convoke_args(std::initializer_list<std::string> args) {
  std::vector<std::string> out{binary("convoke")};
  out.insert(out.end(), args);
  return out;
}

} // namespace

TEST(CliAdminFake, ServerCheckExitCodesFollowNagios) {
  fake_admin admin;
  process ok{convoke_args({"server", "check", "--admin", admin.url()})};
  ASSERT_EQ(ok.wait(10s), 0) << ok.out() << ok.err();
  EXPECT_EQ(ok.out().rfind("OK: convoke 9.8.7 ready agents=3 connections=4 uptime=1m05s", 0), 0u)
    << ok.out();
  EXPECT_NE(ok.out().find("| agents=3;;;0;100"), std::string::npos) << ok.out();

  process few{convoke_args({"server", "check", "--admin", admin.url(), "--min-agents", "5"})};
  EXPECT_EQ(few.wait(10s), 2) << few.out();
  EXPECT_NE(few.out().find("CRITICAL: "), std::string::npos) << few.out();
  EXPECT_NE(few.out().find("agents 3 < 5"), std::string::npos) << few.out();

  process busy{convoke_args({"server", "check", "--admin", admin.url(), "--max-connections", "4"})};
  EXPECT_EQ(busy.wait(10s), 1) << busy.out();

  admin.draining = true;
  process draining{convoke_args({"server", "check", "--admin", admin.url()})};
  EXPECT_EQ(draining.wait(10s), 1) << draining.out();
  EXPECT_EQ(draining.out().rfind("WARNING: convoke 9.8.7 draining", 0), 0u) << draining.out();
  process draining_critical{
    convoke_args({"server", "check", "--admin", admin.url(), "--draining-critical"})};
  EXPECT_EQ(draining_critical.wait(10s), 2) << draining_critical.out();

  process bad_arg{convoke_args({"server", "check", "--admin", admin.url(), "--bogus"})};
  EXPECT_EQ(bad_arg.wait(10s), 3) << "bad arguments are UNKNOWN";
  process bad_url{convoke_args({"server", "check", "--admin", "ftp://x"})};
  EXPECT_EQ(bad_url.wait(10s), 3);
  EXPECT_NE(bad_url.err().find("invalid admin URL"), std::string::npos) << bad_url.err();
}

TEST(CliAdminFake, UnreachableServerIsCritical) {
  int port = 0;
  { // a port that was free a moment ago, with nobody listening now
    fake_admin gone;
    port = std::stoi(gone.url().substr(gone.url().rfind(':') + 1));
  }
  auto url = fmt::format("http://127.0.0.1:{}", port);
  process p{convoke_args({"server", "check", "--admin", url, "--timeout", "2s"})};
  EXPECT_EQ(p.wait(10s), 2);
  EXPECT_EQ(p.out().rfind("CRITICAL: cannot reach convoke admin at " + url + "/healthz", 0), 0u)
    << p.out();
  process agents{convoke_args({"agents", "--admin", url})};
  EXPECT_EQ(agents.wait(10s), 1);
  EXPECT_NE(agents.err().find("cannot reach convoke admin"), std::string::npos) << agents.err();
}

TEST(CliAdminFake, CredentialsGoAsBasicAuthFromAFileOrTheEnvironmentNeverArgv) {
  fake_admin admin;
  admin.require_auth = true;
  process without{convoke_args({"server", "check", "--admin", admin.url()})};
  EXPECT_EQ(without.wait(10s), 3) << without.out();
  EXPECT_NE(without.out().find("UNKNOWN: "), std::string::npos);
  EXPECT_NE(without.out().find("answered 401"), std::string::npos) << without.out();

  temp_dir dir;
  std::ofstream{dir.file("token")} << "s3cret-token\n";
  process with_file{convoke_args({"server", "check", "--admin", admin.url(), "--identity", "ops",
                                  "--token-file", dir.file("token")})};
  EXPECT_EQ(with_file.wait(10s), 0) << with_file.out() << with_file.err();
  process with_env{convoke_args({"agents", "--admin", admin.url()}),
                   {},
                   {{"CONVOKE_TOKEN", "s3cret-token"}, {"CONVOKE_IDENTITY", "ops"}}};
  EXPECT_EQ(with_env.wait(10s), 0) << with_env.err();
  process denied{convoke_args({"agents", "--admin", admin.url()})};
  EXPECT_EQ(denied.wait(10s), 1);
  EXPECT_NE(denied.err().find("--token-file"), std::string::npos) << denied.err();
  process on_argv{convoke_args({"agents", "--admin", admin.url(), "--token", "s3cret-token"})};
  EXPECT_EQ(on_argv.wait(10s), 2);
  EXPECT_NE(on_argv.err().find("not taken from the command line"), std::string::npos);
}

TEST(CliAdminFake, AgentsPagesThroughEveryPage) {
  fake_admin admin;
  admin.agents = 5;
  process p{convoke_args({"agents", "--admin", admin.url(), "--sort", "in_msgs", "--name", "a b"})};
  ASSERT_EQ(p.wait(10s), 0) << p.err();
  auto out = p.out();
  EXPECT_EQ(out.rfind("NAME", 0), 0u) << out;
  for (auto n : {"producer", "agent-1", "agent-2", "agent-3", "agent-4"})
    EXPECT_NE(out.find(n), std::string::npos) << n << "\n" << out;
  auto q = admin.queries();
  ASSERT_EQ(q.size(), 3u) << "5 agents in pages of 2";
  EXPECT_EQ(q[0], "/connz?sort=in_msgs&order=desc&offset=0&limit=1000&name=a%20b");
  EXPECT_NE(q[2].find("offset=4"), std::string::npos) << q[2];

  process j{convoke_args({"agents", "--admin", admin.url(), "--json"})};
  ASSERT_EQ(j.wait(10s), 0) << j.err();
  std::istringstream lines{j.out()};
  int n = 0;
  for (std::string line; std::getline(lines, line); ++n)
    EXPECT_TRUE(json::parse(line).contains("sdk_version")) << line;
  EXPECT_EQ(n, 5);

  process bad_sort{convoke_args({"agents", "--admin", admin.url(), "--sort", "nope"})};
  EXPECT_EQ(bad_sort.wait(10s), 2);
}

TEST(CliAdminFake, HostileAnswersAreErrorsNotCrashes) {
  fake_admin admin;
  admin.connz_override = R"({"total": 1, "connections": [{"name": {"x": 1}}]})";
  process p{convoke_args({"agents", "--admin", admin.url()})};
  EXPECT_EQ(p.wait(10s), 1);
  EXPECT_NE(p.err().find("'name' is not a string"), std::string::npos) << p.err();
  admin.connz_override = "<html>not json</html>";
  process q{convoke_args({"top", "--admin", admin.url(), "--once", "--interval", "100ms"})};
  EXPECT_EQ(q.wait(10s), 1);
  EXPECT_NE(q.err().find("did not answer with a JSON object"), std::string::npos) << q.err();
}

TEST(CliAdminFake, TopShowsRatesFromTwoSnapshotsWithoutControlCodesWhenPiped) {
  fake_admin admin;
  process p{
    convoke_args({"top", "--admin", admin.url(), "--iterations", "2", "--interval", "100ms"})};
  ASSERT_EQ(p.wait(10s), 0) << p.err();
  auto out = p.out();
  EXPECT_EQ(out.find('\x1b'), std::string::npos) << "no ANSI codes when stdout is not a tty";
  EXPECT_EQ(out.rfind("convoke 9.8.7 at " + admin.url(), 0), 0u) << out;
  // Two screens; the producer's 50 messages per 0.5 s (by its uptime) are
  // 100 per second, and it sorts first (in_rate).
  size_t screens = 0;
  for (auto at = out.find("convoke 9.8.7 at"); at != std::string::npos;
       at = out.find("convoke 9.8.7 at", at + 1))
    ++screens;
  EXPECT_EQ(screens, 2u) << out;
  auto header = out.find("NAME");
  ASSERT_NE(header, std::string::npos) << out;
  auto first_row = out.substr(out.find('\n', header) + 1);
  first_row = first_row.substr(0, first_row.find('\n'));
  EXPECT_EQ(first_row.rfind("producer", 0), 0u) << out;
  EXPECT_NE(first_row.find("  100  "), std::string::npos) << first_row;
  EXPECT_NE(out.find("messages in 100/s"), std::string::npos) << out;
}

TEST(CliAdminFake, TopQuitsCleanlyOnSigint) {
  fake_admin admin;
  process p{convoke_args({"top", "--admin", admin.url(), "--interval", "100ms"})};
  ASSERT_TRUE(p.wait_output("producer", 10s, false)) << p.err();
  p.signal(SIGINT);
  EXPECT_EQ(p.wait(5s), 0) << p.err();
}

TEST(CliAdminFake, HttpsIsVerifiedAgainstTheGivenCa) {
  test_certs certs;
  fake_admin admin{&certs.server};
  process ok{convoke_args({"server", "check", "--admin", admin.url(), "--tls-ca", certs.ca})};
  EXPECT_EQ(ok.wait(10s), 0) << ok.out() << ok.err();
  process wrong_ca{
    convoke_args({"server", "check", "--admin", admin.url(), "--tls-ca", certs.other_ca})};
  EXPECT_EQ(wrong_ca.wait(10s), 2) << wrong_ca.out();
  EXPECT_NE(wrong_ca.out().find("certificate"), std::string::npos) << wrong_ca.out();
  process plain{convoke_args({"server", "check", "--admin", admin.url(false), "--timeout", "2s"})};
  EXPECT_EQ(plain.wait(10s), 2) << plain.out();
  process ca_on_http{convoke_args({"agents", "--admin", admin.url(false), "--tls-ca", certs.ca})};
  EXPECT_EQ(ca_on_http.wait(10s), 2);
  EXPECT_NE(ca_on_http.err().find("--tls-ca needs an https:// --admin URL"), std::string::npos)
    << ca_on_http.err();
}

TEST(CliAdminFake, TopOnATerminalRedrawsAndQuitsOnQRestoringTheTerminal) {
  fake_admin admin;
  int master = -1;
  winsize ws{};
  ws.ws_row = 30;
  ws.ws_col = 160;
  auto bin = binary("convoke");
  auto url = admin.url();
  pid_t pid = ::forkpty(&master, nullptr, nullptr, &ws);
  ASSERT_GE(pid, 0) << std::strerror(errno);
  if (pid == 0) {
    ::execl(bin.c_str(), bin.c_str(), "top", "--admin", url.c_str(), "--interval", "100ms",
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  std::string out;
  // Reads until `text` appears at or after `from`.
  auto read_until
    = [&](const std::string& text, std::chrono::milliseconds timeout, size_t from = 0) {
        auto deadline = std::chrono::steady_clock::now() + timeout;
        while (out.find(text, from) == std::string::npos) {
          auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
          if (left.count() <= 0)
            return false;
          pollfd p{master, POLLIN, 0};
          if (::poll(&p, 1, static_cast<int>(left.count())) <= 0)
            continue;
          char buf[4096];
          auto n = ::read(master, buf, sizeof buf);
          if (n <= 0)
            return false;
          out.append(buf, static_cast<size_t>(n));
        }
        return true;
      };
  // Two screens, each drawn over the last.
  ASSERT_TRUE(read_until("producer", 10s)) << out;
  auto first = out.find("\x1b[H\x1b[2J");
  ASSERT_NE(first, std::string::npos) << "the screen is cleared on a terminal";
  ASSERT_TRUE(read_until("\x1b[H\x1b[2J", 10s, first + 1)) << out;
  EXPECT_NE(out.find("\x1b[?25l"), std::string::npos) << "the cursor is hidden";
  ASSERT_EQ(::write(master, "q", 1), 1);
  int status = -1;
  ASSERT_TRUE(eventually([&] {
    read_until("\x1b[?25h", 50ms); // keep the pty drained
    return ::waitpid(pid, &status, WNOHANG) == pid;
  }))
    << "top did not quit on q";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_NE(out.find("\x1b[?25h"), std::string::npos) << "the cursor is shown again";
  termios t{};
  ASSERT_EQ(::tcgetattr(master, &t), 0) << std::strerror(errno); // the pty's (the child's) modes
  EXPECT_NE(t.c_lflag & ECHO, 0u) << "echo is restored";
  EXPECT_NE(t.c_lflag & ICANON, 0u) << "line input is restored";
  ::close(master);
}
