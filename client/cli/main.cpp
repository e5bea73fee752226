// convoke: command-line client built on the agent SDK.
//
//   convoke send   [--to AGENT | --route ROUTE] [MESSAGE...]   (stdin lines if none)
//   convoke listen [--route ROUTE]... [--json] [--count N]
//   convoke chat                                               (interactive)
//   convoke server check | agents | top                        (operators, admin API)
//   convoke trace [--file PATH]... [--follow] [filters] [--json]  (message traces; live
//                                                                 without --file)
//   convoke trace show TRACE-ID [--file PATH]... [--format text|mermaid|html]
//   convoke trace stats [--file PATH]... [--window 60s] [--json]
//   convoke --version
//
// Common options: --server [tls://]host:port[,...] (env CONVOKE_SERVER; several
// addresses, e.g. a cluster's nodes, are tried in turn), --name,
// --token (env CONVOKE_TOKEN), --reconnect, --tls-ca, --tls-cert, --tls-key,
// --tls-server-name. Exit codes: 0 success (including an
// orderly server shutdown), 1 connection or protocol failure, 2 usage.
// The operator commands talk HTTP to the admin listener (--admin, env
// CONVOKE_ADMIN); `server check` exits like a Nagios plugin (0 OK,
// 1 WARNING, 2 CRITICAL, 3 UNKNOWN). docs/operations.md has the details.
// `convoke trace` (docs/observing.md) also exits 3 when lines of a trace
// file were unreadable (skipped, each named file:line on stderr) and 4 when
// `trace show` finds no event with the trace id.

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <deque>
#include <iostream>
#include <memory>
#include <mutex>
#include <thread>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "admin_commands.hpp"
#include "convoke/client.hpp"
#include "convoke/common/logging.hpp"
#include "convoke/common/signals.hpp"
#include "convoke/common/text.hpp"
#include "convoke/common/units.hpp"
#include "convoke/proto/codec.hpp"
#include "trace_command.hpp"
#include "trace_live.hpp"

namespace {

using namespace convoke;

/// Output shared by all subcommands: human text or JSON lines.
struct printer {
  bool json = false;
  std::mutex mtx;

  static std::string time_of(int64_t ns) {
    auto ts = format_timestamp(ns > 0 ? ns : unix_now());
    return ts.substr(11, 12); // HH:MM:SS.mmm
  }

  static int64_t unix_now() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
  }

  void message(const convoke::message& m) {
    std::lock_guard guard{mtx};
    if (json) {
      std::string out = "{\"event\":\"message\"";
      fmt::format_to(std::back_inserter(out), ",\"id\":{}", m.id);
      auto field = [&](const char* key, const std::string& v) {
        fmt::format_to(std::back_inserter(out), ",\"{}\":", key);
        append_json_string(out, v);
      };
      field("from", m.sender);
      field("to", m.recipient.empty() ? "*" : m.recipient);
      if (!m.recipient.empty())
        out += ",\"direct\":true";
      if (!m.route.empty())
        field("route", m.route);
      if (!m.content_type.empty())
        field("content_type", m.content_type);
      field("payload", m.payload);
      if (!m.trace_id.empty())
        field("trace_id", m.trace_id);
      fmt::format_to(std::back_inserter(out), ",\"sent_unix_nanos\":{},\"relayed_unix_nanos\":{}}}",
                     m.sent_unix_nanos, m.relayed_unix_nanos);
      std::cout << out << std::endl;
      return;
    }
    // A direct message (sent to this agent by name) is marked "(direct)".
    std::cout << fmt::format("{} {} -> {}{}{}: {}", time_of(m.relayed_unix_nanos), m.sender,
                             m.recipient.empty() ? "*" : m.recipient,
                             m.recipient.empty() ? "" : " (direct)",
                             m.route.empty() ? "" : " [" + m.route + "]", m.payload)
              << std::endl;
  }

  /// Lifecycle and diagnostics: JSON on stdout, or text on stderr.
  void event(const std::string& kind, const std::string& code, const std::string& text) {
    std::lock_guard guard{mtx};
    if (json) {
      std::string out = "{\"event\":";
      append_json_string(out, kind);
      out += ",\"code\":";
      append_json_string(out, code);
      out += ",\"text\":";
      append_json_string(out, text);
      out += "}";
      std::cout << out << std::endl;
      return;
    }
    std::cerr << fmt::format("{} {}: {}{}", time_of(0), kind, code,
                             text.empty() ? "" : " (" + text + ")")
              << std::endl;
  }
};

/// An agent for the CLI: prints what happens, sends queued lines once
/// connected, and stops when told (end of input, --count reached).
class cli_agent : public agent {
public:
  cli_agent(std::string name, printer& out) : agent(std::move(name)), out_(out) {}

  std::string to;
  std::string route;
  std::vector<std::string> subscriptions;
  bool print_messages = false;
  bool chat_commands = false;
  long count = 0; // stop after this many messages (0 = never)

  void setup() override {
    for (auto& r : subscriptions)
      subscribe(r);
  }

  void on_connect(const session_info& s) override {
    out_.event(s.reconnected ? "reconnected" : "connected", s.agent_name,
               fmt::format("server {} {} at {}, session {}", s.server_name, s.server_version,
                           s.server, s.session_id));
    flush();
  }

  void on_message(const message& m) override {
    if (!print_messages || (count > 0 && received_ >= count))
      return; // frames still arriving while we stop
    out_.message(m);
    if (count > 0 && ++received_ >= count)
      stop(0);
  }

  void on_notice(const notice& n) override {
    out_.event("notice", n.code, n.text);
    // A problem with one of our messages makes the command fail (the Notice
    // may arrive after stop(0): a later stop(1) still sets the exit code).
    if (n.severity != notice::level::info && (n.client_seq != 0 || n.message_id != 0)) {
      failed_ = true;
      if (input_done_)
        stop(1);
    }
  }

  void on_disconnect(const disconnect_info& d) override {
    // Lines wait for the next session (another server of the list, or
    // --reconnect); without one to come they are lost, and said so.
    if (!pending_.empty() && !d.will_reconnect) {
      out_.event("error", "not_sent", fmt::format("{} lines were not sent", pending_.size()));
      failed_ = true;
      stop(1);
    }
    bool goodbye = d.code == "shutdown" || d.code == "replaced" || d.code == "client_exit"
                   || d.code == "lame_duck" || d.code == "name_conflict";
    // Where the next attempt goes, when that is news: another server (a
    // cluster node), or one the server sent us to.
    std::string next;
    if (d.will_reconnect && (d.next_server != d.server || !d.reconnect_to.empty()))
      next = fmt::format("; reconnecting to {} in {} ms", d.next_server, d.retry_in.count());
    else if (d.will_reconnect && (goodbye || d.retry_in.count() > 0))
      next = fmt::format("; reconnecting in {} ms", d.retry_in.count());
    out_.event(goodbye ? "goodbye" : "disconnected", d.code, d.reason + next);
  }

  /// Lines read and not sent yet (the stdin reader waits above a limit).
  std::atomic<int> backlog{0};

  /// Called (via post) for each input line; `eof` after the last one.
  void input(std::string line, bool eof) {
    if (!eof)
      pending_.push_back(std::move(line));
    input_done_ = eof;
    flush();
  }

private:
  void flush() {
    while (connected() && !pending_.empty()) {
      auto ec = send_line(pending_.front());
      if (ec == errc::send_buffer_full) {
        if (!retry_scheduled_) { // one retry timer at a time
          retry_scheduled_ = true;
          retry_ = after(std::chrono::milliseconds{10}, [this] {
            retry_scheduled_ = false;
            flush();
          });
        }
        return;
      }
      if (ec) {
        out_.event("error", to_string(static_cast<errc>(ec.value())), ec.message());
        failed_ = true;
      }
      pending_.pop_front();
      --backlog;
    }
    // End of input: leave once everything typed or piped in has been sent
    // (and every /who has its answer).
    if (input_done_ && pending_.empty() && listing_ == 0)
      stop(failed_ ? 1 : 0);
  }

  std::error_code send_line(const std::string& line) {
    if (!chat_commands) {
      if (!to.empty())
        return send_to(to, line);
      if (!route.empty())
        return publish(route, line);
      return broadcast(line);
    }
    // Chat: "/to NAME text", "/route R text", "/sub R", "/unsub R", "/who [PREFIX]",
    // "/quit"; "//text" broadcasts "/text"; any other "/word" is an error.
    if (line.rfind("//", 0) == 0)
      return broadcast(std::string_view{line}.substr(1));
    if (line.empty() || line.front() != '/')
      return broadcast(line);
    auto word_end = line.find(' ');
    auto cmd = line.substr(0, word_end);
    auto rest = word_end == std::string::npos ? std::string{} : line.substr(word_end + 1);
    auto split = [](const std::string& s) {
      auto sp = s.find(' ');
      return std::pair{s.substr(0, sp), sp == std::string::npos ? "" : s.substr(sp + 1)};
    };
    if (cmd == "/to") {
      auto [who, text] = split(rest);
      return send_to(who, text);
    }
    if (cmd == "/route") {
      auto [r, text] = split(rest);
      return publish(r, text);
    }
    if (cmd == "/sub") {
      subscribe(rest);
      out_.event("subscribed", rest, "");
      return {};
    }
    if (cmd == "/unsub") {
      unsubscribe(rest);
      out_.event("unsubscribed", rest, "");
      return {};
    }
    if (cmd == "/quit") {
      stop(0);
      return {};
    }
    if (cmd == "/who") {
      who(rest);
      return {};
    }
    if (cmd == "/help") {
      out_.event("help", "commands",
                 "text = broadcast, /to NAME text, /route ROUTE text, /sub ROUTE, "
                 "/unsub ROUTE, /who [PREFIX], /quit; //text sends \"/text\"");
      return {};
    }
    out_.event("error", "unknown_command",
               fmt::format("{} is not a command (/help lists them; //text sends a line "
                           "starting with '/'); nothing was sent",
                           cmd));
    return {};
  }

  /// /who: the connected agents (one page, sorted), as the server lets
  /// this agent see them.
  void who(const std::string& prefix) {
    ++listing_;
    list_agents(prefix).then([this, prefix](expected<agent_list> r) {
      --listing_;
      if (!r) {
        out_.event("error", "who_failed", r.error().message());
      } else {
        std::string names;
        for (auto& n : r->names)
          names += (names.empty() ? "" : ", ") + n;
        auto n = r->names.size();
        out_.event("who",
                   fmt::format("{} agent{}{}{}", n, n == 1 ? "" : "s",
                               prefix.empty() ? "" : " named " + prefix + "*",
                               r->truncated ? " (more: /who PREFIX narrows the list)" : ""),
                   names);
      }
      flush(); // end of input may have waited for this answer
    });
  }

  printer& out_;
  std::deque<std::string> pending_;
  bool input_done_ = false;
  long received_ = 0;
  bool failed_ = false;
  bool retry_scheduled_ = false;
  task<void> retry_;
  /// /who requests waiting for their answer.
  int listing_ = 0;
};

/// Reads stdin lines on a plain thread and posts them to the agent. The
/// thread is detached: it may be blocked in a read when the agent ends, and
/// the process exits regardless.
void feed_stdin(const std::shared_ptr<cli_agent>& a) {
  std::thread{[a] {
    std::string line;
    while (std::getline(std::cin, line)) {
      // Bounded: never read far ahead of what the connection takes.
      while (a->backlog.load() > 1000)
        std::this_thread::sleep_for(std::chrono::milliseconds{1});
      ++a->backlog;
      if (!a->post([a, line] { a->input(line, false); }))
        return;
    }
    a->post([a] { a->input({}, true); });
  }}.detach();
}

} // namespace

int main(int argc, char** argv) {
  CLI::App app{"convoke: send and receive Convoke messages from the command line, and watch a "
               "server (server check, agents, top)"};
  app.require_subcommand(1);
  app.set_version_flag(
    "--version", fmt::format("convoke {} (protocol {})", CONVOKE_VERSION, proto::protocol_version));
  std::string server = "127.0.0.1:7420";
  if (auto env = std::getenv("CONVOKE_SERVER"))
    server = env;
  std::string name;
  std::string token_file;
  std::string identity;
  std::string token_on_argv;
  bool reconnect = false;
  std::string tls_ca;
  std::string tls_cert;
  std::string tls_key;
  std::string tls_server_name;
  auto add_common = [&](CLI::App* cmd) {
    cmd
      ->add_option("-s,--server", server,
                   "Server address host:port, or tls://host:port for TLS; several, "
                   "comma-separated (the nodes of a cluster), are tried in turn "
                   "[env: CONVOKE_SERVER]")
      ->capture_default_str();
    cmd->add_option("--tls-ca", tls_ca,
                    "PEM CA file the server's certificate must chain to (tls:// addresses; "
                    "default: the system's CAs)");
    cmd->add_option("--tls-cert", tls_cert,
                    "PEM client certificate, for servers that require one (with --tls-key)");
    cmd->add_option("--tls-key", tls_key, "PEM private key of --tls-cert");
    cmd->add_option("--tls-server-name", tls_server_name,
                    "Name the server's certificate must carry (default: the host of --server)");
    cmd->add_option("-n,--name", name, "Agent name (default: assigned by the server)");
    cmd->add_option("--identity", identity,
                    "Identity to authenticate as (default: the agent name) "
                    "[env: CONVOKE_IDENTITY]");
    cmd->add_option("--token-file", token_file,
                    "File whose first line is the token (the identity's, or the server's "
                    "shared secret); else the environment variable CONVOKE_TOKEN");
    // Refused with a reason: a command line is readable by every user (ps).
    cmd->add_option("--token", token_on_argv)->group("");
    cmd->add_flag("--reconnect", reconnect, "Reconnect (with backoff) if the connection drops");
  };
  printer out;

  auto send_cmd = app.add_subcommand("send", "Send messages (arguments, or stdin lines)");
  add_common(send_cmd);
  std::string to;
  std::string route;
  std::vector<std::string> texts;
  auto to_opt = send_cmd->add_option("-t,--to", to, "Send directly to this agent");
  send_cmd->add_option("-r,--route", route, "Broadcast on this route")->excludes(to_opt);
  send_cmd->add_option("message", texts, "Messages to send (default: read lines from stdin)");

  auto listen_cmd = app.add_subcommand("listen", "Print received messages");
  add_common(listen_cmd);
  std::vector<std::string> routes;
  long count = 0;
  listen_cmd->add_option("-r,--route", routes, "Only broadcasts on these routes (repeatable)");
  listen_cmd->add_flag("--json", out.json, "One JSON object per line (events included)");
  listen_cmd->add_option("-c,--count", count, "Exit after this many messages");

  auto chat_cmd = app.add_subcommand("chat", "Interactive: type to broadcast, /help for more");
  add_common(chat_cmd);

  // -- operator commands (HTTP to the admin listener) -------------------------------
  std::string admin_url = "http://127.0.0.1:" + std::to_string(cli::default_admin_port);
  if (auto env = std::getenv("CONVOKE_ADMIN"))
    admin_url = env;
  std::string timeout_text = "5s";
  auto add_admin = [&](CLI::App* cmd) {
    cmd
      ->add_option("--admin", admin_url,
                   "Admin listener, http://host:port or https://host:port [env: CONVOKE_ADMIN]")
      ->capture_default_str();
    cmd->add_option("--identity", identity,
                    "Identity with admin = true to authenticate as (HTTP Basic user) "
                    "[env: CONVOKE_IDENTITY]");
    cmd->add_option("--token-file", token_file,
                    "File whose first line is the identity's token (or the server's shared "
                    "token); else the environment variable CONVOKE_TOKEN");
    cmd->add_option("--token", token_on_argv)->group("");
    cmd->add_option("--tls-ca", tls_ca,
                    "PEM CA file the admin listener's certificate must chain to (https:// "
                    "URLs; default: the system's CAs)");
    cmd->add_option("--timeout", timeout_text, "Time limit to connect and for each answer")
      ->capture_default_str();
  };
  auto server_cmd = app.add_subcommand("server", "Ask a running server (admin listener)");
  server_cmd->require_subcommand(1);
  auto check_cmd = server_cmd->add_subcommand(
    "check", "Health for scripts and monitoring: one line; exit 0 OK, 1 WARNING, 2 CRITICAL, "
             "3 UNKNOWN");
  add_admin(check_cmd);
  cli::check_thresholds thresholds;
  uint64_t conn_warn = 0;
  uint64_t conn_crit = 0;
  uint64_t min_agents = 0;
  auto conn_warn_opt = check_cmd->add_option("--max-connections", conn_warn,
                                             "WARNING at or above this many connections");
  auto conn_crit_opt = check_cmd->add_option("--max-connections-critical", conn_crit,
                                             "CRITICAL at or above this many connections");
  auto min_agents_opt
    = check_cmd->add_option("--min-agents", min_agents, "CRITICAL when fewer agents are connected");
  check_cmd->add_flag("--draining-critical", thresholds.draining_critical,
                      "A draining server (shutdown, lame duck) is CRITICAL, not WARNING");

  auto agents_cmd = app.add_subcommand("agents", "List the connected agents (admin /connz)");
  add_admin(agents_cmd);
  cli::agents_args agents_a;
  std::vector<std::string> connz_keys(cli::connz_sort_keys().begin(), cli::connz_sort_keys().end());
  agents_cmd->add_option("--name", agents_a.name, "Only agents whose name contains this");
  agents_cmd
    ->add_option("--sort", agents_a.sort,
                 "Sort key (name and session ascending, the others descending)")
    ->check(CLI::IsMember(connz_keys))
    ->capture_default_str();
  agents_cmd->add_flag("--json", agents_a.json,
                       "One JSON object per agent and line, as /connz describes it");

  auto top_cmd
    = app.add_subcommand("top", "Live table of the agents and their message rates (admin API)");
  add_admin(top_cmd);
  cli::top_args top_a;
  std::string interval_text = "1s";
  bool once = false;
  std::vector<std::string> top_keys(cli::top_sort_keys().begin(), cli::top_sort_keys().end());
  top_cmd
    ->add_option("--sort", top_a.sort,
                 "Sort key (name and session ascending, the others descending)")
    ->check(CLI::IsMember(top_keys))
    ->capture_default_str();
  top_cmd->add_option("--name", top_a.name, "Only agents whose name contains this");
  top_cmd->add_option("--interval", interval_text, "Time between two screens")
    ->capture_default_str();
  top_cmd->add_option("--iterations", top_a.iterations,
                      "Show this many screens, then exit (default: until q or Ctrl-C)");
  top_cmd->add_flag("--once", once, "One screen (rates over one interval), then exit");

  // -- message traces -------------------------------------------------------------
  auto trace_cmd = app.add_subcommand(
    "trace", "Message traces: from trace files (--file, trace.format = json) or live from a "
             "server (observe); show one conversation; statistics");
  trace_cmd->require_subcommand(0, 1);
  add_common(trace_cmd);
  cli::trace_list_args trace_a;
  std::string trace_hex;
  std::string since_text;
  trace_cmd
    ->add_option("-f,--file", trace_a.files,
                 "JSON trace file (its rotated files base.1.ext ... are read too, "
                 "oldest first); repeatable. Without it: live from --server")
    ->allow_extra_args(false);
  trace_cmd->add_flag("--follow", trace_a.follow,
                      "Keep reading: new lines of the file (across rotations), or live events");
  trace_cmd
    ->add_option("-a,--agent", trace_a.filter.agents,
                 "Only events of this agent (sender or recipient); repeatable")
    ->allow_extra_args(false);
  trace_cmd
    ->add_option("-r,--route", trace_a.filter.routes,
                 "Only events on routes matching this pattern (a.*, a.>); repeatable")
    ->allow_extra_args(false);
  trace_cmd->add_option("--trace", trace_hex, "Only events of this trace id (hex)");
  trace_cmd->add_option("--since", since_text,
                        "Only events since: a duration ago (5m, 2h) or an RFC 3339 time");
  trace_cmd->add_flag("--json", trace_a.json, "JSON lines (the trace file format)");
  auto show_cmd = trace_cmd->add_subcommand(
    "show", "One conversation (a trace id) as a sequence diagram: text, Mermaid or HTML");
  std::vector<std::string> show_files;
  std::string show_id;
  std::string show_format = "text";
  show_cmd->add_option("trace-id", show_id, "Trace id (hex)")->required();
  show_cmd->add_option("-f,--file", show_files, "JSON trace file (rotated files included)")
    ->required()
    ->allow_extra_args(false);
  show_cmd->add_option("--format", show_format, "text, mermaid or html")
    ->check(CLI::IsMember({"text", "mermaid", "html"}))
    ->capture_default_str();
  auto stats_cmd
    = trace_cmd->add_subcommand("stats", "Per agent and per route counts, rates and drops");
  std::vector<std::string> stats_files;
  std::string window_text = "60s";
  bool stats_json = false;
  stats_cmd->add_option("-f,--file", stats_files, "JSON trace file (rotated files included)")
    ->required()
    ->allow_extra_args(false);
  stats_cmd
    ->add_option("--window", window_text,
                 "The last span of the files counted (0: all), e.g. 60s, 5m, 1h")
    ->capture_default_str();
  stats_cmd->add_flag("--json", stats_json, "One JSON object");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return check_cmd->parsed() ? 3 : 2; // Nagios: UNKNOWN for bad arguments
  }

  if (check_cmd->parsed() || agents_cmd->parsed() || top_cmd->parsed()) {
    int usage = check_cmd->parsed() ? 3 : 2;
    auto target = cli::parse_admin_url(admin_url);
    if (!target) {
      std::cerr << "convoke: --admin: " << target.error().text << "\n";
      return usage;
    }
    auto timeout = parse_duration(timeout_text);
    if (!timeout || timeout->count() == 0) {
      std::cerr << "convoke: --timeout: '" << timeout_text
                << "' is not a duration like 500ms or 5s\n";
      return usage;
    }
    if (!token_on_argv.empty()) {
      std::cerr << "convoke: --token: tokens are not taken from the command line, where every "
                   "user can read them (ps); use --token-file FILE or CONVOKE_TOKEN\n";
      return usage;
    }
    if (!tls_ca.empty() && !target->https) {
      std::cerr << "convoke: --tls-ca needs an https:// --admin URL\n";
      return usage;
    }
    cli::admin_options ao;
    ao.target = *target;
    ao.ca_file = tls_ca;
    ao.timeout = *timeout;
    ao.user = identity;
    if (ao.user.empty())
      if (auto env = std::getenv("CONVOKE_IDENTITY"))
        ao.user = env;
    try {
      ao.password = read_token(token_file);
    } catch (const std::exception& e) {
      std::cerr << "convoke: " << e.what() << "\n";
      return usage;
    }
    if (check_cmd->parsed()) {
      if (conn_warn_opt->count() > 0)
        thresholds.connections_warn = conn_warn;
      if (conn_crit_opt->count() > 0)
        thresholds.connections_critical = conn_crit;
      if (min_agents_opt->count() > 0)
        thresholds.agents_min = min_agents;
      return cli::run_server_check(ao, thresholds);
    }
    if (agents_cmd->parsed())
      return cli::run_agents(ao, agents_a);
    auto interval = parse_duration(interval_text);
    if (!interval || interval->count() < 100) {
      std::cerr << "convoke: --interval: '" << interval_text
                << "' is not a duration of at least 100ms\n";
      return 2;
    }
    top_a.interval = *interval;
    if (once)
      top_a.iterations = 1;
    if (top_a.iterations < 0) {
      std::cerr << "convoke: --iterations must not be negative\n";
      return 2;
    }
    block_termination_signals(); // top reads them from a signalfd
    return cli::run_top(ao, top_a);
  }

  if (show_cmd->parsed()) {
    auto f = show_format == "mermaid" ? cli::show_format::mermaid
             : show_format == "html"  ? cli::show_format::html
                                      : cli::show_format::text;
    return cli::run_trace_show(show_files, show_id, f, std::cout, std::cerr);
  }
  if (stats_cmd->parsed()) {
    auto window = parse_duration(window_text);
    if (!window) {
      std::cerr << "convoke trace stats: --window: '" << window_text
                << "' is not a duration like 60s or 5m (0: everything)\n";
      return cli::trace_exit::usage;
    }
    return cli::run_trace_stats(stats_files, *window, stats_json, std::cout, std::cerr);
  }
  if (trace_cmd->parsed()) {
    if (!trace_hex.empty()) {
      auto id = from_hex(trace_hex);
      if (!id || id->empty()) {
        std::cerr << "convoke trace: --trace: '" << trace_hex << "' is not a trace id (hex)\n";
        return cli::trace_exit::usage;
      }
      trace_a.filter.trace_id = *id;
    }
    if (!since_text.empty()) {
      std::string error;
      auto since = cli::parse_since(since_text, printer::unix_now(), error);
      if (!since) {
        std::cerr << "convoke trace: --since: " << error << "\n";
        return cli::trace_exit::usage;
      }
      trace_a.filter.since_ns = *since;
    }
    for (auto& r : trace_a.filter.routes)
      if (r.empty()) {
        std::cerr << "convoke trace: --route: an empty pattern matches nothing\n";
        return cli::trace_exit::usage;
      }
    if (!trace_a.files.empty()) {
      if (trace_a.follow)
        block_termination_signals(); // the poll waits for them
      return cli::run_trace_list(trace_a, std::cout, std::cerr, [](std::chrono::milliseconds d) {
        return wait_termination_signal(d) != 0;
      });
    }
    // Live: from the server's tap (below, with the connection options).
  }

  client_options opts;
  if (std::string why; !set_server_address(opts, server, &why)) {
    std::cerr << "convoke: invalid --server address: " << why << "\n";
    return 2;
  }
  if (!opts.tls
      && !(tls_ca.empty() && tls_cert.empty() && tls_key.empty() && tls_server_name.empty())) {
    std::cerr << "convoke: --tls-* options need tls://host:port --server addresses\n";
    return 2;
  }
  if (tls_cert.empty() != tls_key.empty()) {
    std::cerr << "convoke: --tls-cert and --tls-key go together\n";
    return 2;
  }
  opts.tls_ca_file = tls_ca;
  opts.tls_cert_file = tls_cert;
  opts.tls_key_file = tls_key;
  opts.tls_server_name = tls_server_name;
  if (!token_on_argv.empty()) {
    std::cerr << "convoke: --token: tokens are not taken from the command line, where every "
                 "user can read them (ps); use --token-file FILE or CONVOKE_TOKEN\n";
    return 2;
  }
  if (identity.empty())
    if (auto env = std::getenv("CONVOKE_IDENTITY"))
      identity = env;
  try {
    opts.token = read_token(token_file);
  } catch (const std::exception& e) {
    std::cerr << "convoke: " << e.what() << "\n";
    return 2;
  }
  opts.identity = identity;
  opts.reconnect.enabled = reconnect;
  opts.role = "cli";

  block_termination_signals();
  // The CLI reports connection events itself; SDK logs only for problems
  // unless CONVOKE_LOG_LEVEL asks for more.
  if (std::getenv("CONVOKE_LOG_LEVEL") == nullptr) {
    logging::options quiet;
    quiet.level = "warn";
    logging::configure(quiet);
  }
  if (trace_cmd->parsed()) {
    opts.role = "cli-trace";
    auto t = std::make_shared<cli::trace_agent>(name, trace_a, reconnect, std::cout, std::cerr);
    int code = 0;
    {
      runtime rt;
      rt.start(*t, opts);
      code = rt.wait_with_signals();
    }
    std::cout.flush();
    if (code == 0 && t->missed() > 0)
      code = cli::trace_exit::unreadable; // not everything was shown
    return code;
  }
  auto a = std::make_shared<cli_agent>(name, out);
  if (send_cmd->parsed()) {
    a->to = to;
    a->route = route;
    opts.role = "cli-send";
  } else if (listen_cmd->parsed()) {
    a->subscriptions = routes;
    a->print_messages = true;
    a->count = count;
    opts.role = "cli-listen";
  } else {
    a->print_messages = true;
    a->chat_commands = true;
    opts.role = "cli-chat";
  }
  int rc = 0;
  {
    runtime rt;
    rt.start(*a, opts);
    if (send_cmd->parsed() && !texts.empty()) {
      a->backlog += static_cast<int>(texts.size());
      a->post([a, texts] {
        for (auto& t : texts)
          a->input(t, false);
        a->input({}, true);
      });
    } else if (!listen_cmd->parsed()) {
      feed_stdin(a);
    }
    rc = rt.wait_with_signals();
  }
  std::cout.flush();
  std::cerr.flush();
  // The stdin reader may still be blocked in a read holding the agent: leave
  // without waiting for it (everything else has shut down by now).
  std::_Exit(rc);
}
