// Server configuration: precedence, validation, CLI behaviour, sample file.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>

#include "convoke/server/config.hpp"
#include "test_certs.hpp"

using namespace convoke;
using namespace convoke::server;
using convoke::test::test_certs;
using convoke::test::write_text;
using namespace std::chrono_literals;

namespace {

struct temp_file {
  std::string path;
  explicit temp_file(const std::string& content) {
    char tmpl[] = "/tmp/convoke-config-XXXXXX";
    int fd = mkstemp(tmpl);
    close(fd);
    path = tmpl;
    std::ofstream{path} << content;
  }
  ~temp_file() {
    std::remove(path.c_str());
  }
};

struct outcome {
  cli_result res;
  server_config cfg;
  std::string out;
  std::string err;
};

outcome run(std::vector<std::string> args, std::map<std::string, std::string> env = {}) {
  args.insert(args.begin(), "convoke-server");
  std::vector<const char*> argv;
  for (auto& a : args)
    argv.push_back(a.c_str());
  outcome o;
  std::ostringstream out, err;
  o.res = parse_command_line(static_cast<int>(argv.size()), argv.data(), o.cfg, out, err,
                             [&](const std::string& k) -> std::optional<std::string> {
                               if (auto i = env.find(k); i != env.end())
                                 return i->second;
                               return std::nullopt;
                             });
  o.out = out.str();
  o.err = err.str();
  return o;
}

/// "# key = value" lines of the sample (not help text that contains " = ").
bool is_key_line(const std::string& line) {
  auto eq = line.find(" = ");
  return line.rfind("# ", 0) == 0 && eq != std::string::npos
         && line.substr(2, eq - 2).find_first_of(" ()") == std::string::npos;
}

} // namespace

/// Every problem validate() finds, one per line.
static std::string texts(const server::server_config& cfg) {
  std::string all;
  for (auto& e : server::validate(cfg))
    all += e.text + "\n";
  return all;
}

TEST(Config, DefaultsAreValid) {
  server_config cfg;
  EXPECT_TRUE(validate(cfg).empty());
  auto o = run({});
  EXPECT_FALSE(o.res.exit);
  EXPECT_EQ(o.cfg.port, 7420);
  EXPECT_EQ(o.cfg.host, "127.0.0.1");
}

TEST(Config, PrecedenceDefaultsFileEnvFlags) {
  temp_file f{"[listen]\nport = 1111\nhost = \"0.0.0.0\"\n[timeouts]\nidle = \"45s\"\n"
              "[flow]\noutput-high-water = \"16MiB\"\n"};
  // file only
  auto o = run({"--config", f.path});
  EXPECT_EQ(o.cfg.port, 1111);
  EXPECT_EQ(o.cfg.host, "0.0.0.0");
  EXPECT_EQ(o.cfg.idle_timeout, 45s);
  EXPECT_EQ(o.cfg.output_high_water, 16u << 20);
  EXPECT_EQ(o.cfg.name, "convoke"); // untouched default
  // env beats file
  o = run({"--config", f.path}, {{"CONVOKE_LISTEN_PORT", "2222"}});
  EXPECT_EQ(o.cfg.port, 2222);
  EXPECT_EQ(o.cfg.host, "0.0.0.0");
  // flag beats env
  o = run({"--config", f.path, "--listen.port", "3333"}, {{"CONVOKE_LISTEN_PORT", "2222"}});
  EXPECT_EQ(o.cfg.port, 3333);
  o = run({"-p", "4444"});
  EXPECT_EQ(o.cfg.port, 4444);
  // CONVOKE_CONFIG names the file
  o = run({}, {{"CONVOKE_CONFIG", f.path}});
  EXPECT_EQ(o.cfg.port, 1111);
}

TEST(Config, ReusePortIsOffByDefaultAndSetByFileEnvOrFlag) {
  EXPECT_FALSE(server_config{}.listen_reuse_port);
  EXPECT_FALSE(run({}).cfg.listen_reuse_port);
  temp_file f{"[listen]\nreuse-port = true\n"};
  auto o = run({"--config", f.path});
  EXPECT_FALSE(o.res.exit) << o.err;
  EXPECT_TRUE(o.cfg.listen_reuse_port);
  o = run({}, {{"CONVOKE_LISTEN_REUSE_PORT", "true"}});
  EXPECT_TRUE(o.cfg.listen_reuse_port) << o.err;
  o = run({"--listen.reuse-port", "true"});
  EXPECT_TRUE(o.cfg.listen_reuse_port) << o.err;
  EXPECT_TRUE(validate(o.cfg).empty());
  o = run({"--listen.reuse-port", "sometimes"});
  EXPECT_EQ(o.res.exit_code, 78);
  EXPECT_NE(o.err.find("--listen.reuse-port: 'sometimes'"), std::string::npos) << o.err;
}

TEST(Config, UnknownKeyInFileIsAnErrorWithItsLine) {
  temp_file f{"[listen]\nport = 1\n\n[listen]\n"};
  temp_file g{"# comment\n[limits]\nmax-frame-bytes = \"1MiB\"\nmax-framebytes = 5\n"};
  auto o = run({"--config", g.path});
  EXPECT_TRUE(o.res.exit);
  EXPECT_EQ(o.res.exit_code, 78);
  EXPECT_NE(o.err.find(g.path + ":4: unknown key 'limits.max-framebytes'"), std::string::npos)
    << o.err;
}

TEST(Config, TomlSyntaxErrorNamesTheLine) {
  temp_file f{"[listen]\nport = = 3\n"};
  auto o = run({"--config", f.path});
  EXPECT_EQ(o.res.exit_code, 78);
  EXPECT_NE(o.err.find(f.path + ":2:"), std::string::npos) << o.err;
}

TEST(Config, MissingFileIsAnError) {
  auto o = run({"--config", "/nonexistent/convoke.toml"});
  EXPECT_EQ(o.res.exit_code, 78);
  EXPECT_NE(o.err.find("/nonexistent/convoke.toml"), std::string::npos) << o.err;
}

TEST(Config, BadValuesNameTheirSource) {
  auto o = run({}, {{"CONVOKE_TIMEOUTS_IDLE", "soon"}});
  EXPECT_EQ(o.res.exit_code, 78);
  EXPECT_NE(o.err.find("environment CONVOKE_TIMEOUTS_IDLE: 'soon' is not a duration"),
            std::string::npos)
    << o.err;
  o = run({"--listen.port", "70000"});
  EXPECT_EQ(o.res.exit_code, 78);
  EXPECT_NE(o.err.find("--listen.port: 70000 is outside the allowed range 0..65535"),
            std::string::npos)
    << o.err;
  o = run({"--flow.slow-consumer", "ignore"});
  EXPECT_NE(o.err.find("'ignore' is not a policy"), std::string::npos) << o.err;
  o = run({"--limits.max-frame-bytes", "10"});
  EXPECT_NE(o.err.find("outside the allowed range 1KiB..64MiB"), std::string::npos) << o.err;
}

TEST(Config, CrossFieldRules) {
  auto o = run({"--timeouts.idle", "5s", "--timeouts.heartbeat-interval", "5s"});
  EXPECT_EQ(o.res.exit_code, 78);
  EXPECT_NE(o.err.find("must be shorter than timeouts.idle"), std::string::npos) << o.err;
  o = run({"--timeouts.idle", "0", "--timeouts.heartbeat-interval", "5s"});
  EXPECT_FALSE(o.res.exit) << o.err; // idle timeout disabled: any interval
  o = run({"--limits.max-frame-bytes", "4MiB", "--flow.output-high-water", "1MiB"});
  EXPECT_NE(o.err.find("flow.output-high-water (1MiB) must be at least"), std::string::npos);
}

TEST(Config, ABytesBurstTooSmallForTheLargestFrameIsAnError) {
  // The largest message could never pass the bucket.
  auto o = run({"--limits.bytes-per-second", "64KiB", "--limits.bytes-burst", "512KiB"});
  EXPECT_EQ(o.res.exit_code, 78);
  EXPECT_NE(o.err.find("limits.bytes-burst (512KiB) must be at least limits.max-frame-bytes"),
            std::string::npos)
    << o.err;
  o = run({"--limits.bytes-per-second", "64KiB"}); // burst 0: the rule makes it big enough
  EXPECT_FALSE(o.res.exit) << o.err;
  o = run({"--limits.bytes-burst", "512KiB"}); // no bytes limit: the burst does not matter
  EXPECT_FALSE(o.res.exit) << o.err;
  o = run({"--limits.quarantine-for", "0"});
  EXPECT_EQ(o.res.exit_code, 78) << "a quarantine of no time";
}

TEST(Config, UnknownFlagIsAUsageError) {
  auto o = run({"--listen.prot", "1"});
  EXPECT_EQ(o.res.exit_code, 2);
  EXPECT_NE(o.err.find("--help"), std::string::npos);
}

TEST(Config, HelpListsEveryKeyWithDefaultAndEnv) {
  auto o = run({"--help"});
  EXPECT_TRUE(o.res.exit);
  EXPECT_EQ(o.res.exit_code, 0);
  server_config defaults;
  std::istringstream sample{sample_config()};
  std::string line;
  int keys = 0;
  for (std::string section; std::getline(sample, line);) {
    if (line.rfind("[", 0) == 0)
      section = line.substr(1, line.size() - 2);
    if (is_key_line(line)) {
      auto key = section + "." + line.substr(2, line.find(" = ") - 2);
      EXPECT_NE(o.out.find("--" + key), std::string::npos) << key;
      EXPECT_NE(o.out.find(env_name(key)), std::string::npos) << key;
      ++keys;
    }
  }
  EXPECT_GE(keys, 25);
}

TEST(Config, CheckAndDumpConfig) {
  auto o = run({"--check-config"});
  EXPECT_EQ(o.res.exit_code, 0);
  EXPECT_NE(o.out.find("configuration OK"), std::string::npos);
  o = run({"--check-config", "--listen.port", "-1"});
  EXPECT_EQ(o.res.exit_code, 78);
  o = run({"--dump-config", "-p", "9"}, {{"CONVOKE_AUTH_TOKEN", "hunter2"}});
  EXPECT_EQ(o.res.exit_code, 0);
  EXPECT_NE(o.out.find("port = 9"), std::string::npos);
  EXPECT_EQ(o.out.find("hunter2"), std::string::npos) << "token must be redacted";
  EXPECT_NE(o.out.find("token = \"<redacted>\""), std::string::npos);
  o = run({"--version"});
  EXPECT_NE(o.out.find("convoke-server " CONVOKE_VERSION), std::string::npos);
}

TEST(Config, DumpedConfigLoadsBackToTheSameValues) {
  server_config cfg;
  cfg.port = 1234;
  cfg.idle_timeout = 90s;
  cfg.slow_consumer = slow_consumer_policy::drop;
  cfg.trace_format = logging::format::json;
  temp_file f{dump_config(cfg)};
  server_config back;
  EXPECT_TRUE(load_file(back, f.path).empty());
  EXPECT_EQ(dump_config(back), dump_config(cfg));
}

TEST(Config, SampleConfigIsTheShippedFileAndParsesToDefaults) {
  std::ifstream in{CONVOKE_SOURCE_DIR "/deploy/config/convoke-server.toml"};
  ASSERT_TRUE(in) << "deploy/config/convoke-server.toml is missing";
  std::string shipped{std::istreambuf_iterator<char>{in}, {}};
  EXPECT_EQ(shipped, sample_config()) << "regenerate it: convoke-server --print-sample-config > "
                                         "deploy/config/convoke-server.toml";
  // Uncommenting every key must give the defaults back.
  std::string uncommented;
  std::istringstream lines{shipped};
  for (std::string line; std::getline(lines, line);)
    if (is_key_line(line))
      uncommented += line.substr(2) + "\n";
    else if (line.rfind("[", 0) == 0)
      uncommented += line + "\n";
  temp_file f{uncommented};
  server_config cfg;
  EXPECT_TRUE(load_file(cfg, f.path).empty());
  EXPECT_EQ(dump_config(cfg), dump_config(server_config{}));
}

TEST(Config, SetOptionErrorsHaveCodes) {
  server_config cfg;
  auto unknown = set_option(cfg, "listen.prot", "1");
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().code, server::errc::unknown_key);
  EXPECT_EQ(unknown.error().text, "unknown key 'listen.prot'");
  auto bad = set_option(cfg, "timeouts.idle", "soon");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, server::errc::invalid_value);
  EXPECT_EQ(bad.error().text.rfind("'soon' is not a duration", 0), 0u) << bad.error().text;
  auto range = set_option(cfg, "listen.port", "70000");
  ASSERT_FALSE(range);
  EXPECT_EQ(range.error().code, server::errc::invalid_value);
  EXPECT_EQ(range.error().text, "70000 is outside the allowed range 0..65535");
  EXPECT_EQ(dump_config(cfg), dump_config(server_config{})) << "a failed set changed the config";
  ASSERT_TRUE(set_option(cfg, "listen.port", "7000"));
  EXPECT_EQ(cfg.port, 7000);
}

TEST(Config, FileProblemsHaveCodesAndLines) {
  temp_file f{"[listen]\nport = 1\nprot = 2\n[timeouts]\nidle = \"soon\"\ndrain = [1]\n"};
  server_config cfg;
  auto errs = load_file(cfg, f.path);
  ASSERT_EQ(errs.size(), 3u); // every problem, in key order
  EXPECT_EQ(errs[0].code, server::errc::unknown_key);
  EXPECT_EQ(errs[0].text, f.path + ":3: unknown key 'listen.prot'");
  EXPECT_EQ(errs[1].code, server::errc::invalid_value);
  EXPECT_EQ(errs[1].text, f.path + ":6: timeouts.drain must be a string, integer or boolean");
  EXPECT_EQ(errs[2].code, server::errc::invalid_value);
  EXPECT_EQ(errs[2].text.rfind(f.path + ":5: timeouts.idle: 'soon' is not a duration", 0), 0u)
    << errs[2].text;
  EXPECT_EQ(cfg.port, 1) << "valid keys still apply";

  temp_file syntax{"[listen]\nport = = 3\n"};
  errs = load_file(cfg, syntax.path);
  ASSERT_EQ(errs.size(), 1u);
  EXPECT_EQ(errs[0].code, server::errc::bad_config_file);
  errs = load_file(cfg, "/nonexistent/convoke.toml");
  ASSERT_EQ(errs.size(), 1u);
  EXPECT_EQ(errs[0].code, server::errc::bad_config_file);
  EXPECT_NE(errs[0].text.find("/nonexistent/convoke.toml"), std::string::npos) << errs[0].text;
}

TEST(Config, ValidationProblemsHaveCodes) {
  server_config cfg;
  cfg.idle_timeout = 5s;
  cfg.heartbeat_interval = 5s;
  cfg.name.clear();
  auto errs = validate(cfg);
  ASSERT_EQ(errs.size(), 2u);
  EXPECT_EQ(errs[0].code, server::errc::invalid_config);
  EXPECT_NE(errs[0].text.find("must be shorter than timeouts.idle"), std::string::npos);
  EXPECT_EQ(errs[1].code, server::errc::invalid_value);
  EXPECT_EQ(errs[1].text, "server.name must not be empty");
}

TEST(Config, UnwritableOutputFilesAreFoundBeforeTheRun) {
  server_config cfg;
  cfg.log_file = "/nonexistent-dir/server.log";
  cfg.trace_file = "/dev/null/trace.log";
  cfg.port_file = "/tmp";
  auto errs = check_paths(cfg);
  ASSERT_EQ(errs.size(), 3u);
  for (auto& e : errs)
    EXPECT_EQ(e.code, server::errc::unwritable_file) << e.text;
  EXPECT_EQ(errs[0].text.rfind("log.file '/nonexistent-dir/server.log': directory "
                               "'/nonexistent-dir' does not exist",
                               0),
            0u)
    << errs[0].text;
  EXPECT_EQ(errs[1].text.rfind("trace.file '/dev/null/trace.log'", 0), 0u) << errs[1].text;
  EXPECT_EQ(errs[2].text, "listen.port-file '/tmp' is a directory, not a file");
}

TEST(Config, ServerErrorCodesHaveACategoryNamesAndMessages) {
  std::error_code ec = server::errc::bind_failed;
  EXPECT_STREQ(ec.category().name(), "convoke.server");
  EXPECT_EQ(ec.message(), "cannot listen on the address");
  EXPECT_EQ(server::to_string(server::errc::unknown_key), "unknown_key");
  for (int i = 1; i <= static_cast<int>(server::errc::already_started); ++i) { // the last code
    auto e = static_cast<server::errc>(i);
    EXPECT_NE(server::to_string(e), "unknown") << i;
    EXPECT_NE(std::error_code(e).message(), "unknown error") << i;
  }
}

TEST(Config, TokensAreNeverTakenFromTheCommandLine) {
  auto o = run({"--check-config", "--auth.token", "hunter2"});
  EXPECT_EQ(o.res.exit_code, 78);
  EXPECT_NE(o.err.find("--auth.token: secrets are not taken from the command line"),
            std::string::npos)
    << o.err;
  EXPECT_NE(o.err.find("auth.token-file"), std::string::npos) << "says what to do instead";
  EXPECT_EQ(o.err.find("hunter2"), std::string::npos) << "never echoed";
}

TEST(Config, TheTokenFileGivesTheSharedTokenWhichDumpConfigRedacts) {
  temp_file f{"s3cret-from-a-file\n"};
  auto o = run({"--dump-config", "--auth.token-file", f.path});
  EXPECT_EQ(o.res.exit_code, 0) << o.err;
  EXPECT_EQ(o.cfg.token, "s3cret-from-a-file");
  EXPECT_EQ(o.out.find("s3cret"), std::string::npos);
  temp_file empty{""};
  o = run({"--check-config", "--auth.token-file", empty.path});
  EXPECT_EQ(o.res.exit_code, 78);
  EXPECT_NE(o.err.find("the first line is empty"), std::string::npos) << o.err;
  o = run({"--check-config", "--auth.token-file", "/nonexistent/token"});
  EXPECT_EQ(o.res.exit_code, 78);
  EXPECT_NE(o.err.find("'/nonexistent/token' cannot be read"), std::string::npos) << o.err;
}

TEST(Config, ANonLoopbackAddressNeedsAuthenticationAndTlsOrAnExplicitOptOut) {
  auto o = run({"--check-config", "--listen.host", "0.0.0.0"});
  EXPECT_EQ(o.res.exit_code, 78);
  EXPECT_NE(o.err.find("is not a loopback address and agents are not authenticated"),
            std::string::npos)
    << o.err;
  EXPECT_NE(o.err.find("--allow-anonymous"), std::string::npos) << o.err;
  EXPECT_NE(o.err.find("--allow-plaintext"), std::string::npos) << o.err;
  o = run({"--check-config", "--listen.host", "0.0.0.0", "--allow-anonymous"});
  EXPECT_EQ(o.res.exit_code, 78) << "TLS is still missing";
  EXPECT_EQ(o.err.find("not authenticated"), std::string::npos) << o.err;
  o = run({"--check-config", "--listen.host", "0.0.0.0", "--allow-anonymous", "--allow-plaintext"});
  EXPECT_EQ(o.res.exit_code, 0) << o.err;
  for (auto host : {"127.0.0.1", "127.1.2.3", "::1", "localhost"})
    EXPECT_EQ(run({"--check-config", "--listen.host", host}).res.exit_code, 0) << host;
  EXPECT_TRUE(is_loopback_host("127.0.0.1"));
  EXPECT_FALSE(is_loopback_host("::"));
  EXPECT_FALSE(is_loopback_host("10.0.0.1"));
  EXPECT_FALSE(is_loopback_host("example.com"));
}

TEST(Config, AMalformedCredentialsFileIsRefusedWithFileAndLine) {
  temp_file f{"[identity.alice]\n"
              "token-hash = \"plaintext-token\"\n"
              "publish = [\"a..b\"]\n"
              "colour = \"blue\"\n"};
  auto o = run({"--check-config", "--auth.credentials", f.path});
  EXPECT_EQ(o.res.exit_code, 78);
  EXPECT_NE(o.err.find(f.path + ":2: identity.alice.token-hash must be an argon2id hash"),
            std::string::npos)
    << o.err;
  EXPECT_NE(o.err.find(f.path + ":3: identity.alice.publish: 'a..b' has an empty token"),
            std::string::npos)
    << o.err;
  EXPECT_NE(o.err.find(f.path + ":4: unknown key 'colour' in identity.alice"), std::string::npos)
    << o.err;
  temp_file syntax{"[identity.alice\n"};
  o = run({"--check-config", "--auth.credentials", syntax.path});
  EXPECT_EQ(o.res.exit_code, 78);
  EXPECT_NE(o.err.find(syntax.path + ":1:"), std::string::npos) << o.err;
  o = run({"--check-config", "--auth.credentials", f.path}, {{"CONVOKE_AUTH_TOKEN", "x"}});
  EXPECT_NE(o.err.find("auth.token and auth.credentials exclude each other"), std::string::npos)
    << o.err;
}

TEST(Config, TlsKeysNeedEachOtherAndTheirFilesMustLoad) {
  // Keys that mean nothing without tls.cert, and a verification without CA.
  auto alone = run({"--tls.verify-clients", "require", "--check-config"});
  EXPECT_EQ(alone.res.exit_code, 78);
  EXPECT_NE(alone.err.find("need tls.cert"), std::string::npos) << alone.err;
  EXPECT_NE(alone.err.find("needs tls.client-ca"), std::string::npos) << alone.err;
  auto bad = run({"--tls.verify-clients", "sometimes"});
  EXPECT_EQ(bad.res.exit_code, 78);
  EXPECT_NE(bad.err.find("off, optional or require"), std::string::npos) << bad.err;
  // The files are loaded by --check-config: a certificate that is not PEM
  // is found before the run, with the file's name.
  temp_file not_pem{"not a certificate\n"};
  auto unusable = run({"--tls.cert", not_pem.path, "--tls.key", not_pem.path, "--check-config"},
                      {{"CONVOKE_TLS_VERIFY_CLIENTS", "off"}});
  EXPECT_EQ(unusable.res.exit_code, 78);
  EXPECT_NE(unusable.err.find("[tls]: certificate file '" + not_pem.path + "'"), std::string::npos)
    << unusable.err;
  auto dumped = run({"--tls.cert", "/x.pem", "--tls.key", "/x.key", "--tls.client-ca", "/ca.pem",
                     "--tls.verify-clients", "optional"});
  EXPECT_EQ(dumped.cfg.tls_cert, "/x.pem");
  EXPECT_EQ(dumped.cfg.tls_verify_clients, tls::client_verification::optional);
  EXPECT_NE(dump_config(dumped.cfg)
              .find("[tls]\ncert = \"/x.pem\"\nkey = \"/x.key\"\nclient-ca = "
                    "\"/ca.pem\"\nverify-clients = \"optional\"\n"),
            std::string::npos)
    << dump_config(dumped.cfg);
}

TEST(Config, TheAdminListenerFollowsTheRelaysRulesBeyondLoopback) {
  server_config cfg;
  EXPECT_EQ(texts(cfg), "");
  cfg.admin_host = "0.0.0.0";
  auto t = texts(cfg);
  EXPECT_NE(t.find("admin.host '0.0.0.0' is not a loopback address and there is no "
                   "authentication"),
            std::string::npos)
    << t;
  EXPECT_NE(t.find("admin.tls is off"), std::string::npos) << t;
  cfg.allow_anonymous = true;
  cfg.allow_plaintext = true;
  EXPECT_EQ(texts(cfg), "");
  cfg.admin_enabled = false;
  cfg.allow_anonymous = cfg.allow_plaintext = false;
  EXPECT_EQ(texts(cfg), "") << "a listener that is off needs nothing";
  server_config tls;
  tls.admin_tls = true;
  EXPECT_NE(texts(tls).find("admin.tls needs tls.cert"), std::string::npos);
  server_config same;
  same.admin_port = same.port;
  EXPECT_NE(texts(same).find("admin.port 7420 is listen.port too"), std::string::npos);
}

TEST(Config, TheSummonerListenerHasRulesOfItsOwn) {
  server_config cfg;
  cfg.summoner_listen = "127.0.0.1:8888";
  EXPECT_EQ(texts(cfg), "");
  cfg.summoner_listen = "8888";
  EXPECT_NE(texts(cfg).find("summoner.listen '8888' is not host:port"), std::string::npos);
  cfg.summoner_listen = "0.0.0.0:8888";
  EXPECT_NE(texts(cfg).find("Summoner clients cannot use TLS"), std::string::npos) << texts(cfg);
  cfg.allow_plaintext = true;
  EXPECT_EQ(texts(cfg), "");
  cfg.summoner_listen = "[::1]:8888";
  cfg.allow_plaintext = false;
  EXPECT_EQ(texts(cfg), "") << "IPv6 loopback";
  server_config token;
  token.summoner_listen = "127.0.0.1:0";
  token.token = "secret-token";
  EXPECT_NE(texts(token).find("would let Summoner clients in without the token"),
            std::string::npos);
  server_config creds;
  creds.summoner_listen = "127.0.0.1:0";
  creds.credentials = "/etc/convoke/credentials.toml";
  EXPECT_NE(texts(creds).find("needs summoner.identity"), std::string::npos);
  creds.summoner_identity = "summoner-agents";
  EXPECT_EQ(texts(creds), "");
  server_config stray;
  stray.summoner_identity = "x";
  EXPECT_NE(texts(stray).find("summoner.identity needs auth.credentials"), std::string::npos);
  server_config route;
  route.summoner_listen = "127.0.0.1:0";
  route.summoner_route = "bad route with spaces";
  EXPECT_NE(texts(route).find("summoner.route"), std::string::npos);
}

TEST(Config, ClusterKeysAreChecked) {
  server_config cfg;
  cfg.cluster_name = "prod";
  EXPECT_EQ(texts(cfg), "");
  cfg.cluster_peers = "127.0.0.1:7422, node-b:7422,,[::1]:9";
  EXPECT_EQ(texts(cfg), "");
  auto peers = cluster_peer_list(cfg);
  ASSERT_EQ(peers.size(), 3u);
  EXPECT_EQ(peers[1].host, "node-b");
  EXPECT_EQ(peers[2].host, "::1");
  cfg.cluster_peers = "nohost,10.0.0.1:0";
  EXPECT_NE(texts(cfg).find("cluster.peers: 'nohost' is not host:port"), std::string::npos);
  EXPECT_NE(texts(cfg).find("cluster.peers: '10.0.0.1:0' is not host:port"), std::string::npos);
  cfg.cluster_peers.clear();
  cfg.cluster_listen = "0.0.0.0:7422";
  EXPECT_NE(texts(cfg).find("the cluster link is not authenticated"), std::string::npos);
  cfg.allow_plaintext = true;
  EXPECT_EQ(texts(cfg), "");
  cfg.cluster_listen = "7422";
  EXPECT_NE(texts(cfg).find("cluster.listen '7422' is not host:port"), std::string::npos);
  cfg.cluster_listen = "127.0.0.1:0";
  cfg.cluster_timeout = std::chrono::milliseconds{500};
  cfg.cluster_heartbeat = std::chrono::milliseconds{500};
  EXPECT_NE(texts(cfg).find("cluster.timeout (500ms) must be longer than cluster.heartbeat"),
            std::string::npos);
  cfg.cluster_timeout = std::chrono::seconds{5};
  cfg.cluster_name = "bad name";
  EXPECT_NE(texts(cfg).find("cluster.name"), std::string::npos);
  cfg.cluster_name = "ok";
  cfg.cluster_node = "bad node!";
  EXPECT_NE(texts(cfg).find("cluster.node"), std::string::npos);
  server_config off; // without cluster.name, the other keys are not looked at
  off.cluster_listen = "garbage";
  off.cluster_tls_cert = "node.crt";
  EXPECT_EQ(texts(off), "");

  // Cluster TLS: all three keys or none; with them, a listener beyond
  // loopback needs no --allow-plaintext.
  server_config t;
  t.cluster_name = "prod";
  t.cluster_listen = "0.0.0.0:7422";
  EXPECT_NE(texts(t).find("set cluster.tls-cert, cluster.tls-key and cluster.tls-ca"),
            std::string::npos)
    << texts(t);
  t.cluster_tls_cert = "node.crt";
  t.cluster_tls_key = "node.key";
  EXPECT_NE(texts(t).find("cluster.tls-cert, cluster.tls-key and cluster.tls-ca go together"),
            std::string::npos)
    << texts(t);
  EXPECT_FALSE(t.cluster_tls_enabled());
  t.cluster_tls_ca = "cluster-ca.crt";
  EXPECT_TRUE(t.cluster_tls_enabled());
  EXPECT_EQ(texts(t), "");
  t.cluster_tls_cert.clear();
  EXPECT_NE(texts(t).find("go together"), std::string::npos);
  EXPECT_NE(texts(t).find("is not a loopback address"), std::string::npos);
  t.cluster_tls_key.clear();
  t.cluster_tls_ca.clear();
  t.cluster_listen = "127.0.0.1:0";
  EXPECT_EQ(texts(t), "");
}

TEST(Config, ClusterTlsFilesAreLoadedBeforeTheRun) {
  test_certs certs;
  auto check = [](std::vector<std::string> extra) {
    std::vector<std::string> args{"--check-config", "--cluster.name", "prod"};
    args.insert(args.end(), extra.begin(), extra.end());
    return run(args);
  };
  auto good = check({"--cluster.tls-cert", certs.server.cert, "--cluster.tls-key", certs.server.key,
                     "--cluster.tls-ca", certs.ca, "--cluster.listen", "0.0.0.0:7422"});
  EXPECT_EQ(good.res.exit_code, 0) << good.err;
  // A missing file is named, with the key's section; exit 78 as every
  // configuration error.
  auto missing = (certs.dir / "missing.crt").string();
  auto o = check({"--cluster.tls-cert", missing, "--cluster.tls-key", certs.server.key,
                  "--cluster.tls-ca", certs.ca});
  EXPECT_EQ(o.res.exit_code, 78);
  EXPECT_NE(o.err.find("[cluster]: certificate file '" + missing + "'"), std::string::npos)
    << o.err;
  // A key that is not the certificate's.
  o = check({"--cluster.tls-cert", certs.server.cert, "--cluster.tls-key", certs.client.key,
             "--cluster.tls-ca", certs.ca});
  EXPECT_EQ(o.res.exit_code, 78);
  EXPECT_NE(o.err.find("[cluster]: key file '" + certs.client.key + "': key values mismatch"),
            std::string::npos)
    << o.err;
  // A CA file without a certificate.
  auto empty = (certs.dir / "empty.pem").string();
  write_text(empty, "not a certificate\n");
  o = check({"--cluster.tls-cert", certs.server.cert, "--cluster.tls-key", certs.server.key,
             "--cluster.tls-ca", empty});
  EXPECT_EQ(o.res.exit_code, 78);
  EXPECT_NE(o.err.find("client CA file '" + empty + "'"), std::string::npos) << o.err;
  // This node's own certificate must pass the other nodes' check: chain to
  // cluster.tls-ca, be valid now, serve as TLS server and client.
  o = check({"--cluster.tls-cert", certs.other_server.cert, "--cluster.tls-key",
             certs.other_server.key, "--cluster.tls-ca", certs.ca});
  EXPECT_EQ(o.res.exit_code, 78);
  EXPECT_NE(o.err.find("[cluster]: certificate '" + certs.other_server.cert
                       + "' does not verify against '" + certs.ca + "' as a TLS server"),
            std::string::npos)
    << o.err;
  o = check({"--cluster.tls-cert", certs.expired.cert, "--cluster.tls-key", certs.expired.key,
             "--cluster.tls-ca", certs.ca});
  EXPECT_EQ(o.res.exit_code, 78);
  EXPECT_NE(o.err.find("certificate has expired"), std::string::npos) << o.err;
  // Only some of the three.
  o = check({"--cluster.tls-cert", certs.server.cert});
  EXPECT_EQ(o.res.exit_code, 78);
  EXPECT_NE(o.err.find("go together"), std::string::npos) << o.err;
}

TEST(Config, SummonerNamesAreParsedCheckedAndLookedUpExactAddressFirst) {
  auto o = run(
    {"--check-config", "--summoner.names", "10.0.0.5=planner, 10.0.0.5:9001=tools,[::1]:7=six"});
  ASSERT_EQ(o.res.exit_code, 0) << o.err;
  EXPECT_EQ(summoner_name_for(o.cfg, "10.0.0.5", 9001), "tools");
  EXPECT_EQ(summoner_name_for(o.cfg, "10.0.0.5", 9002), "planner");
  EXPECT_EQ(summoner_name_for(o.cfg, "::1", 7), "six");
  EXPECT_EQ(summoner_name_for(o.cfg, "10.0.0.6", 9001), "");
  for (auto bad :
       {"planner", "10.0.0.5=", "host.example=x", "10.0.0.5=bad name", "10.0.0.5:0=x", "[::1]=x"}) {
    auto b = run({"--check-config", "--summoner.names", bad});
    EXPECT_EQ(b.res.exit_code, 78) << bad;
    EXPECT_NE(b.err.find("summoner.names"), std::string::npos) << bad << ": " << b.err;
  }
}
