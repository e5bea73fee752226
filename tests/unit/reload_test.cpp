// Reloading and reopening without a server: which configuration keys a
// SIGHUP applies, reading the configuration again from the same sources,
// the docs/signals.md table, and reopening the log and trace files after a
// rename (as logrotate does).
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "convoke/common/logging.hpp"
#include "convoke/server/config.hpp"
#include "trace.hpp"
#include "wait.hpp"

using namespace convoke;
using namespace convoke::server;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

struct temp_dir {
  fs::path path;
  temp_dir() {
    char tmpl[] = "/tmp/convoke-reload-XXXXXX";
    path = mkdtemp(tmpl);
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string file(const std::string& name) const {
    return (path / name).string();
  }
};

void write(const std::string& path, const std::string& text) {
  std::ofstream{path, std::ios::trunc} << text;
}

std::vector<std::string> lines_of(const std::string& path) {
  std::vector<std::string> out;
  std::ifstream in{path};
  for (std::string line; std::getline(in, line);)
    out.push_back(line);
  return out;
}

std::string content(const std::string& path) {
  std::ifstream in{path};
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

env_lookup env_of(std::map<std::string, std::string> vars) {
  return [vars](const std::string& k) -> std::optional<std::string> {
    if (auto i = vars.find(k); i != vars.end())
      return i->second;
    return std::nullopt;
  };
}

const config_change* change_of(const reload_plan& p, const std::string& key) {
  for (auto& c : p.changes)
    if (c.key == key)
      return &c;
  return nullptr;
}

} // namespace

TEST(Reload, TheSameSourcesAreReadAgainAndTheFlagsStillWin) {
  temp_dir dir;
  auto file = dir.file("convoke.toml");
  write(file, "[log]\nlevel = \"info\"\n[limits]\nmax-agents = 10\n[listen]\nport = 1111\n");
  std::vector<std::string> args{"convoke-server", "--config", file, "--limits.max-agents", "20"};
  auto env = env_of({{"CONVOKE_TIMEOUTS_IDLE", "45s"}});
  server_config first;
  ASSERT_TRUE(reread_config(args, first, env).empty());
  EXPECT_EQ(first.max_agents, 20u);
  EXPECT_EQ(first.idle_timeout, 45s);
  EXPECT_EQ(first.port, 1111);

  // The operator edits the file: the flag still wins over it, the
  // environment still applies, the rest of the file is new.
  write(file, "[log]\nlevel = \"debug\"\n[limits]\nmax-agents = 30\n[listen]\nport = 2222\n");
  server_config second;
  ASSERT_TRUE(reread_config(args, second, env).empty());
  EXPECT_EQ(second.log_level, "debug");
  EXPECT_EQ(second.max_agents, 20u);
  EXPECT_EQ(second.idle_timeout, 45s);
  EXPECT_EQ(second.port, 2222);

  // CONVOKE_CONFIG names the file when --config does not.
  server_config by_env;
  ASSERT_TRUE(
    reread_config({"convoke-server"}, by_env, env_of({{"CONVOKE_CONFIG", file}})).empty());
  EXPECT_EQ(by_env.max_agents, 30u);
}

TEST(Reload, EveryProblemOfABrokenFileIsReported) {
  temp_dir dir;
  auto file = dir.file("convoke.toml");
  std::vector<std::string> args{"convoke-server", "--config", file};
  write(file, "[log\nlevel = \"debug\"\n");
  server_config cfg;
  auto errs = reread_config(args, cfg, env_of({}));
  ASSERT_EQ(errs.size(), 1u);
  EXPECT_EQ(errs[0].code, errc::bad_config_file);
  EXPECT_NE(errs[0].text.find(file + ":1:"), std::string::npos) << errs[0].text;

  write(file, "[log]\nlevel = \"loud\"\n[timeouts]\nidle = \"soon\"\n[nope]\nx = 1\n");
  server_config cfg2;
  errs = reread_config(args, cfg2, env_of({}));
  ASSERT_EQ(errs.size(), 3u);
  std::string all;
  for (auto& e : errs)
    all += e.text + "\n";
  EXPECT_NE(all.find("log.level: 'loud' is not a log level"), std::string::npos) << all;
  EXPECT_NE(all.find("timeouts.idle: 'soon' is not a duration"), std::string::npos) << all;
  EXPECT_NE(all.find("unknown key 'nope.x'"), std::string::npos) << all;

  // Values that parse but do not fit together: validate() speaks.
  write(file, "[timeouts]\nheartbeat-interval = \"40s\"\nidle = \"30s\"\n");
  server_config cfg3;
  errs = reread_config(args, cfg3, env_of({}));
  ASSERT_EQ(errs.size(), 1u);
  EXPECT_EQ(errs[0].code, errc::invalid_config);
  EXPECT_NE(errs[0].text.find("timeouts.heartbeat-interval"), std::string::npos);

  // A token file that went away.
  write(file, "[auth]\ntoken-file = \"" + dir.file("missing") + "\"\n");
  server_config cfg4;
  errs = reread_config(args, cfg4, env_of({}));
  ASSERT_EQ(errs.size(), 1u);
  EXPECT_NE(errs[0].text.find("cannot be read"), std::string::npos) << errs[0].text;
}

TEST(Reload, ReloadableKeysAreAppliedAndTheOthersKeepTheirRunningValues) {
  server_config running;
  server_config read = running;
  read.log_level = "debug";
  read.max_frame_bytes = 64 << 10;
  read.port = 9999;
  read.trace_file = "/var/log/elsewhere.log";
  read.drain_timeout = 9s;
  auto plan = plan_reload(running, read);
  ASSERT_TRUE(plan.errors.empty());
  ASSERT_EQ(plan.changes.size(), 5u);
  EXPECT_EQ(plan.next.log_level, "debug");
  EXPECT_EQ(plan.next.max_frame_bytes, 64u << 10);
  EXPECT_EQ(plan.next.port, 7420);
  EXPECT_EQ(plan.next.trace_file, "-");
  EXPECT_EQ(plan.next.drain_timeout, 5s);
  auto level = change_of(plan, "log.level");
  ASSERT_NE(level, nullptr);
  EXPECT_TRUE(level->applied);
  EXPECT_EQ(level->old_value, "\"info\"");
  EXPECT_EQ(level->new_value, "\"debug\"");
  auto frame = change_of(plan, "limits.max-frame-bytes");
  ASSERT_NE(frame, nullptr);
  EXPECT_EQ(frame->new_value, "\"64KiB\"");
  for (auto key : {"listen.port", "trace.file", "timeouts.drain"}) {
    auto c = change_of(plan, key);
    ASSERT_NE(c, nullptr) << key;
    EXPECT_FALSE(c->applied) << key;
  }
  // Nothing changed: nothing to say.
  EXPECT_TRUE(plan_reload(running, running).changes.empty());
}

TEST(Reload, TheTokenIsNeverShown) {
  server_config running;
  running.token = "old-secret";
  server_config read = running;
  read.token = "new-secret";
  auto plan = plan_reload(running, read);
  ASSERT_TRUE(plan.errors.empty());
  ASSERT_EQ(plan.changes.size(), 1u);
  EXPECT_TRUE(plan.changes[0].applied);
  EXPECT_EQ(plan.next.token, "new-secret");
  EXPECT_EQ(plan.changes[0].old_value, "\"<redacted>\"");
  EXPECT_EQ(plan.changes[0].new_value, "\"<redacted>\"");
}

TEST(Reload, TurningTlsOnOrOffNeedsARestart) {
  server_config running;
  server_config read = running;
  read.tls_cert = "/etc/convoke/server.crt";
  read.tls_key = "/etc/convoke/server.key";
  auto plan = plan_reload(running, read);
  ASSERT_TRUE(plan.errors.empty());
  ASSERT_EQ(plan.changes.size(), 2u);
  for (auto& c : plan.changes)
    EXPECT_FALSE(c.applied) << c.key;
  EXPECT_FALSE(plan.next.tls_enabled());
  // Other files while TLS stays on: applied (the TLS reload loads them).
  server_config tls_on = read;
  server_config other = read;
  other.tls_cert = "/etc/convoke/new.crt";
  auto swap = plan_reload(tls_on, other);
  ASSERT_EQ(swap.changes.size(), 1u);
  EXPECT_TRUE(swap.changes[0].applied);
  EXPECT_EQ(swap.next.tls_cert, "/etc/convoke/new.crt");
}

TEST(Reload, AppliedKeysThatClashWithRunningValuesChangeNothing) {
  // A shared token next to a credentials file that needs a restart to go.
  server_config running;
  running.credentials = "/etc/convoke/credentials.toml";
  server_config read;
  read.token = "shared";
  auto plan = plan_reload(running, read);
  ASSERT_EQ(plan.errors.size(), 1u);
  EXPECT_NE(plan.errors[0].text.find("auth.token and auth.credentials exclude each other"),
            std::string::npos)
    << plan.errors[0].text;
  EXPECT_NE(plan.errors[0].text.find("running values"), std::string::npos);
}

TEST(Reload, EveryKeyIsInTheDocsTableWithItsReloadability) {
  // docs/signals.md: "| `section.key` | reload ... |" or "| restart |".
  auto doc = content(CONVOKE_SOURCE_DIR "/docs/signals.md");
  ASSERT_FALSE(doc.empty());
  std::regex row{R"(^\| `([a-z-]+\.[a-z-]+)` \| (reload|restart)\b)"};
  std::map<std::string, bool> documented;
  std::istringstream in{doc};
  for (std::string line; std::getline(in, line);) {
    std::smatch m;
    if (std::regex_search(line, m, row))
      documented[m[1]] = m[2] == "reload";
  }
  auto keys = config_keys();
  EXPECT_EQ(documented.size(), keys.size());
  for (auto& k : keys) {
    auto i = documented.find(k);
    ASSERT_NE(i, documented.end()) << k << " is missing from docs/signals.md";
    EXPECT_EQ(i->second, reloadable(k)) << k;
  }
}

TEST(Reload, TheLogFileIsReopenedByItsPathAfterARename) {
  temp_dir dir;
  auto path = dir.file("server.log");
  logging::options opts;
  opts.file = path;
  ASSERT_TRUE(logging::configure(opts));
  auto log = logging::get("reload-test");
  log->info("before rotation n=1");
  log->debug("hidden at info");
  log->flush();
  fs::rename(path, dir.file("server.log.1"));
  log->info("after the rename, still the old file n=2");
  auto r = logging::reopen();
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_TRUE(*r);
  log->info("after the reopen n=3");
  ASSERT_TRUE(logging::set_level("debug"));
  log->debug("debug now shown n=4");
  logging::set_format(logging::format::json);
  log->info("as json n=5");
  log->flush();
  auto old_lines = lines_of(dir.file("server.log.1"));
  ASSERT_EQ(old_lines.size(), 2u);
  EXPECT_NE(old_lines[0].find("n=1"), std::string::npos);
  EXPECT_NE(old_lines[1].find("n=2"), std::string::npos);
  auto new_lines = lines_of(path);
  ASSERT_EQ(new_lines.size(), 3u) << content(path);
  EXPECT_NE(new_lines[0].find("n=3"), std::string::npos);
  EXPECT_NE(new_lines[1].find(" debug reload-test debug now shown n=4"), std::string::npos)
    << new_lines[1];
  auto j = nlohmann::json::parse(new_lines[2]);
  EXPECT_EQ(j["n"], 5);
  // The directory became a file (spdlog would create a missing directory):
  // the error says so, the old file stays.
  fs::remove_all(dir.path);
  write(dir.path.string(), "not a directory");
  auto gone = logging::reopen();
  ASSERT_FALSE(gone);
  EXPECT_NE(gone.error().text.find("cannot open log file"), std::string::npos);
  // Back to standard error, as the other tests expect; nothing to reopen.
  ASSERT_TRUE(logging::configure({}));
  auto none = logging::reopen();
  ASSERT_TRUE(none);
  EXPECT_FALSE(*none);
}

TEST(Reload, TheTraceFileIsReopenedBetweenRecordsAndNoneIsLost) {
  temp_dir dir;
  auto path = dir.file("trace.jsonl");
  trace_writer::options opts;
  opts.file = path;
  opts.fmt = logging::format::json;
  auto opened = trace_writer::open(opts);
  ASSERT_TRUE(opened) << opened.error().message();
  auto& w = *opened;
  constexpr uint64_t total = 60000;
  auto push = [&](uint64_t from, uint64_t to) {
    for (auto i = from; i < to; ++i) {
      record_fields f;
      f.message_id = i + 1;
      f.sender = "alice";
      f.recipient = "bob";
      f.ts_ns = 1'700'000'000'000'000'000;
      w->record(f);
    }
  };
  push(0, total / 2);
  ASSERT_TRUE(w->flush(5s));
  fs::rename(path, dir.file("trace.jsonl.1"));
  // The request lands while records keep coming.
  w->reopen();
  push(total / 2, total - 100);
  ASSERT_TRUE(test::eventually([&] { return w->reopened() == 1; }));
  // Whether the writer took the records above before or after reopening
  // is its choice; these come after it, so they must be in the new file.
  push(total - 100, total);
  w->stop();
  EXPECT_EQ(w->dropped(), 0u);
  EXPECT_EQ(w->written(), total);
  std::set<uint64_t> ids;
  size_t in_new = 0;
  for (auto name : {"trace.jsonl.1", "trace.jsonl"}) {
    auto lines = lines_of(dir.file(name));
    if (std::string{name} == "trace.jsonl")
      in_new = lines.size();
    for (auto& line : lines) {
      auto j = nlohmann::json::parse(line); // a record cut in two would not parse
      EXPECT_TRUE(ids.insert(j["message_id"].get<uint64_t>()).second);
    }
  }
  EXPECT_EQ(ids.size(), total);
  EXPECT_GE(in_new, 100u);
  EXPECT_LE(in_new, total / 2);
}
