#include "process.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string_view>
#include <thread>

namespace convoke::test {

namespace {

std::string temp_path(const char* tag) {
  std::string tmpl = std::string{"/tmp/convoke-"} + tag + "-XXXXXX";
  auto fd = mkstemp(tmpl.data());
  if (fd < 0)
    throw std::runtime_error("mkstemp failed");
  close(fd);
  return tmpl;
}

/// The start of a sanitizer report in a child's stderr, or npos. Such a
/// report must fail the test even when the test does not look at stderr
/// (sanitizer builds, scripts/sanitize). Not counted: UBSan vptr reports
/// whose object memory "cannot be printed". UBSan tests readability with a
/// pipe, so at the descriptor limit (a fault test exhausts it on purpose)
/// it takes every object for one with an invalid vptr; a real dangling
/// object is AddressSanitizer's to report.
size_t sanitizer_report(const std::string& err) {
  size_t at = 0;
  while (at < err.size()) {
    auto end = err.find('\n', at);
    if (end == std::string::npos)
      end = err.size();
    std::string_view line{err.data() + at, end - at};
    for (const char* marker :
         {"ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "WARNING: ThreadSanitizer"})
      if (line.find(marker) != std::string_view::npos)
        return at;
    if (line.find("runtime error: ") != std::string_view::npos) {
      auto next = std::string_view{err}.substr(end, 200);
      bool unreadable = next.find("note: object has invalid vptr") != std::string_view::npos
                        && next.find("<memory cannot be printed>") != std::string_view::npos;
      if (!unreadable)
        return at;
    }
    at = end + 1;
  }
  return std::string::npos;
}

} // namespace

std::string read_file(const std::string& path) {
  std::ifstream in{path};
  return {std::istreambuf_iterator<char>{in}, {}};
}

process::process(std::vector<std::string> argv, std::string stdin_text,
                 std::map<std::string, std::string> env) {
  out_path_ = temp_path("out");
  err_path_ = temp_path("err");
  in_path_ = temp_path("in");
  std::ofstream{in_path_} << stdin_text;
  pid_ = fork();
  if (pid_ < 0)
    throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    // Child: fresh signal state (the test may block signals), redirect, exec.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    ::signal(SIGPIPE, SIG_DFL);
    auto in = open(in_path_.c_str(), O_RDONLY);
    auto out = open(out_path_.c_str(), O_WRONLY | O_TRUNC);
    auto err = open(err_path_.c_str(), O_WRONLY | O_TRUNC);
    dup2(in, 0);
    dup2(out, 1);
    dup2(err, 2);
    // Tests run in parallel: a convoke-server they start must not take the
    // shipped admin port (7421). A flag (or this process's env) still wins.
    setenv("CONVOKE_ADMIN_PORT", "0", 0);
    for (auto& [k, v] : env)
      setenv(k.c_str(), v.c_str(), 1);
    std::vector<char*> args;
    for (auto& a : argv)
      args.push_back(a.data());
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
}

process::~process() {
  if (running()) {
    kill(pid_, SIGKILL);
    wait(std::chrono::seconds{5});
  }
  auto err_text = read_file(err_path_);
  if (auto at = sanitizer_report(err_text); at != std::string::npos)
    ADD_FAILURE() << "sanitizer report from child process " << pid_ << ":\n"
                  << err_text.substr(at > 200 ? at - 200 : 0, 6000);
  std::remove(out_path_.c_str());
  std::remove(err_path_.c_str());
  std::remove(in_path_.c_str());
}

void process::signal(int signo) {
  if (!status_)
    kill(pid_, signo);
}

bool process::running() {
  if (status_)
    return false;
  int st = 0;
  auto r = waitpid(pid_, &st, WNOHANG);
  if (r == pid_) {
    status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return false;
  }
  return true;
}

std::optional<int> process::wait(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (running()) {
    if (std::chrono::steady_clock::now() > deadline)
      return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds{5});
  }
  return status_;
}

std::string process::out() const {
  return read_file(out_path_);
}

std::string process::err() const {
  return read_file(err_path_);
}

bool process::wait_output(const std::string& text, std::chrono::milliseconds timeout,
                          bool stderr_too) const {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (out().find(text) != std::string::npos
        || (stderr_too && err().find(text) != std::string::npos))
      return true;
    if (std::chrono::steady_clock::now() > deadline)
      return false;
    std::this_thread::sleep_for(std::chrono::milliseconds{10});
  }
}

std::string binary(const std::string& name) {
  return std::string{CONVOKE_BINARY_DIR} + "/" + name;
}

temp_dir::temp_dir() {
  char tmpl[] = "/tmp/convoke-e2e-XXXXXX";
  if (!mkdtemp(tmpl))
    throw std::runtime_error("mkdtemp failed");
  path = tmpl;
}

temp_dir::~temp_dir() {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
}

} // namespace convoke::test
