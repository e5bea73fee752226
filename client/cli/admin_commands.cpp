#include "admin_commands.hpp"

#include <poll.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <optional>

#include <fmt/format.h>

namespace convoke::cli {

namespace {

using steady = std::chrono::steady_clock;

/// The sentence for an answer that is not 200 (or no answer).
std::string describe_failure(const admin_options& opts, const std::string& path,
                             const http_answer& a) {
  auto url = opts.target.url() + path;
  if (a.status == 0)
    return fmt::format("cannot reach convoke admin at {}: {}", url, a.error);
  auto text = fmt::format("{} answered {}: {}", url, a.status, error_text(a.body));
  if (a.status == 401 || a.status == 403)
    text += " (give an admin identity with --identity and its token with --token-file or "
            "CONVOKE_TOKEN)";
  return text;
}

expected<std::vector<agent_row>> fetch_agents(const admin_options& opts, const std::string& sort,
                                              const std::string& name) {
  page_collector pages;
  for (;;) {
    auto path = connz_query(sort, name, pages.offset(), 1000);
    auto a = admin_get(opts, path);
    if (a.status != 200)
      return fail(std::errc::io_error, describe_failure(opts, path, a));
    auto page = parse_connz(a.body);
    if (!page)
      return tl::unexpected{page.error()};
    if (!pages.add(std::move(*page)))
      break;
  }
  return std::move(pages.rows());
}

struct snapshot {
  server_vars vars;
  std::vector<agent_row> rows;
  steady::time_point at;
};

expected<snapshot> fetch_snapshot(const admin_options& opts, const std::string& name) {
  snapshot s;
  auto a = admin_get(opts, "/varz");
  if (a.status != 200)
    return fail(std::errc::io_error, describe_failure(opts, "/varz", a));
  auto v = parse_varz(a.body);
  if (!v)
    return tl::unexpected{v.error()};
  s.vars = std::move(*v);
  auto rows = fetch_agents(opts, "session", name);
  if (!rows)
    return tl::unexpected{rows.error()};
  s.rows = std::move(*rows);
  s.at = steady::now();
  return s;
}

/// The terminal while `top` runs: keys without Enter and without echo (so
/// that q quits), the cursor hidden; all restored when it ends.
class terminal_guard {
public:
  terminal_guard(bool raw_input, bool screen) : screen_(screen) {
    if (raw_input && ::tcgetattr(STDIN_FILENO, &saved_) == 0) {
      auto raw = saved_;
      raw.c_lflag &= static_cast<tcflag_t>(~(ICANON | ECHO));
      raw.c_cc[VMIN] = 1;
      raw.c_cc[VTIME] = 0;
      restore_input_ = ::tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0;
    }
    if (screen_)
      std::fputs("\x1b[?25l", stdout); // hide the cursor
  }
  ~terminal_guard() {
    if (restore_input_)
      ::tcsetattr(STDIN_FILENO, TCSANOW, &saved_);
    if (screen_)
      std::fputs("\x1b[?25h", stdout); // show it again
    std::fflush(stdout);
  }
  terminal_guard(const terminal_guard&) = delete;
  terminal_guard& operator=(const terminal_guard&) = delete;

private:
  termios saved_{};
  bool restore_input_ = false;
  bool screen_ = false;
};

/// Rows of the table that fit the terminal (all when not a terminal).
size_t rows_that_fit(bool tty) {
  winsize ws{};
  if (!tty || ::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) != 0 || ws.ws_row == 0)
    return SIZE_MAX;
  return ws.ws_row > 6 ? static_cast<size_t>(ws.ws_row) - 6 : 1;
}

} // namespace

int run_server_check(const admin_options& opts, const check_thresholds& t) {
  auto healthz = admin_get(opts, "/healthz");
  http_answer readyz;
  http_answer varz;
  if (healthz.status == 200) {
    readyz = admin_get(opts, "/readyz");
    if (readyz.status != 0)
      varz = admin_get(opts, "/varz");
  }
  auto r = evaluate_check(opts.target.url(), healthz, readyz, varz, t);
  std::cout << r.line << std::endl;
  return static_cast<int>(r.status);
}

int run_agents(const admin_options& opts, const agents_args& args) {
  auto rows = fetch_agents(opts, args.sort, args.name);
  if (!rows) {
    std::cerr << "convoke: " << rows.error().message() << "\n";
    return 1;
  }
  if (args.json) {
    for (auto& r : *rows)
      std::cout << r.json << "\n";
  } else if (rows->empty()) {
    std::cout << (args.name.empty()
                    ? "no agents connected\n"
                    : fmt::format("no connected agent's name contains '{}'\n", args.name));
  } else {
    std::cout << agents_table(*rows).render();
  }
  std::cout.flush();
  return 0;
}

int run_top(const admin_options& opts, const top_args& args) {
  bool tty_out = ::isatty(STDOUT_FILENO) == 1;
  bool tty_in = ::isatty(STDIN_FILENO) == 1;
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  int sfd = ::signalfd(-1, &signals, SFD_CLOEXEC);
  if (sfd < 0) {
    std::cerr << "convoke: signalfd: " << std::strerror(errno) << "\n";
    return 1;
  }
  terminal_guard term{tty_in, tty_out};
  bool keys = tty_in;
  // Waits up to `d`; true if the user quit (q, Ctrl-C, SIGTERM).
  auto wait_quit = [&](std::chrono::milliseconds d) {
    auto deadline = steady::now() + d;
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - steady::now());
      if (left.count() <= 0)
        return false;
      pollfd fds[2] = {{sfd, POLLIN, 0}, {STDIN_FILENO, POLLIN, 0}};
      int n = ::poll(fds, keys ? 2 : 1, static_cast<int>(left.count()));
      if (n < 0 && errno != EINTR)
        return true;
      if (n <= 0)
        continue;
      if (fds[0].revents != 0)
        return true;
      if (keys && fds[1].revents != 0) {
        char c = 0;
        auto got = ::read(STDIN_FILENO, &c, 1);
        if (got <= 0)
          keys = false; // end of input: Ctrl-C still quits
        else if (c == 'q' || c == 'Q')
          return true;
      }
    }
  };
  auto draw = [&](const std::string& body) {
    std::string screen = tty_out ? "\x1b[H\x1b[2J" + body : body + "\n";
    std::fwrite(screen.data(), 1, screen.size(), stdout);
    std::fflush(stdout);
  };
  auto url = opts.target.url();
  auto prev = fetch_snapshot(opts, args.name);
  int rc = 0;
  if (!prev) {
    std::cerr << "convoke: " << prev.error().message() << "\n";
    rc = 1;
  }
  for (long shown = 0; rc == 0 && (args.iterations == 0 || shown < args.iterations);) {
    if (wait_quit(args.interval))
      break;
    auto cur = fetch_snapshot(opts, args.name);
    if (!cur) {
      if (tty_out && args.iterations == 0) { // live: say it and keep trying
        draw(fmt::format("{}\nretrying every {} ms (q quits)\n", cur.error().message(),
                         args.interval.count()));
        continue;
      }
      std::cerr << "convoke: " << cur.error().message() << "\n";
      rc = 1;
      break;
    }
    auto elapsed = std::chrono::duration<double>(cur->at - prev->at).count();
    auto rows = compute_rates(prev->rows, cur->rows, elapsed);
    sort_top(rows, args.sort);
    draw(top_header(url, cur->vars) + "\n" + top_table(rows).render(rows_that_fit(tty_out)));
    prev = std::move(cur);
    ++shown;
  }
  ::close(sfd);
  return rc;
}

} // namespace convoke::cli
