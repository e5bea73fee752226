// convoke: command-line client built on the agent SDK.
//
//   convoke send   [--to AGENT | --route ROUTE] [MESSAGE...]   (stdin lines if none)
//   convoke listen [--route ROUTE]... [--json] [--count N]
//   convoke chat                                               (interactive)
//
// Common options: --server [tls://]host:port (env CONVOKE_SERVER), --name,
// --token (env CONVOKE_TOKEN), --reconnect, --tls-ca, --tls-cert, --tls-key,
// --tls-server-name. Exit codes: 0 success (including an
// orderly server shutdown), 1 connection or protocol failure, 2 usage.

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

#include "convoke/client.hpp"
#include "convoke/common/logging.hpp"
#include "convoke/common/signals.hpp"
#include "convoke/common/text.hpp"

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
    std::cout << fmt::format("{} {} -> {}{}: {}", time_of(m.relayed_unix_nanos), m.sender,
                             m.recipient.empty() ? "*" : m.recipient,
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
    out_.event(
      s.reconnected ? "reconnected" : "connected", s.agent_name,
      fmt::format("server {} {}, session {}", s.server_name, s.server_version, s.session_id));
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
    if (!pending_.empty()) {
      out_.event("error", "not_sent", fmt::format("{} lines were not sent", pending_.size()));
      failed_ = true;
      stop(1);
    }
    if (d.code == "lame_duck" && d.will_reconnect)
      out_.event("goodbye", d.code,
                 fmt::format("{}; reconnecting in {} ms", d.reason, d.retry_in.count()));
    else if (d.code == "shutdown" || d.code == "replaced" || d.code == "client_exit"
             || d.code == "lame_duck")
      out_.event("goodbye", d.code, d.reason);
    else
      out_.event("disconnected", d.code, d.reason);
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
    // End of input: leave once everything typed or piped in has been sent.
    if (input_done_ && pending_.empty())
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
    // Chat: "/to NAME text", "/route R text", "/sub R", "/unsub R", "/quit".
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
    if (cmd == "/help") {
      out_.event("help", "commands",
                 "text = broadcast, /to NAME text, /route ROUTE text, /sub ROUTE, "
                 "/unsub ROUTE, /quit");
      return {};
    }
    return broadcast(line);
  }

  printer& out_;
  std::deque<std::string> pending_;
  bool input_done_ = false;
  long received_ = 0;
  bool failed_ = false;
  bool retry_scheduled_ = false;
  task<void> retry_;
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
  CLI::App app{"convoke: send and receive Convoke messages from the command line"};
  app.require_subcommand(1);
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
                   "Server address host:port, or tls://host:port for TLS [env: CONVOKE_SERVER]")
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

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return 2;
  }

  client_options opts;
  if (!set_server_address(opts, server)) {
    std::cerr << "convoke: invalid --server address '" << server << "'\n";
    return 2;
  }
  if (!opts.tls
      && !(tls_ca.empty() && tls_cert.empty() && tls_key.empty() && tls_server_name.empty())) {
    std::cerr << "convoke: --tls-* options need a tls://host:port --server address\n";
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
