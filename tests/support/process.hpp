#pragma once

// Child processes for end-to-end tests: spawn a binary with arguments, its
// output captured in files, send it signals, wait for its exit status.

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace convoke::test {

class process {
public:
  /// Starts `argv[0]` with `argv`; stdin from `stdin_text` (empty = /dev/null).
  explicit process(std::vector<std::string> argv, std::string stdin_text = {},
                   std::map<std::string, std::string> env = {});
  ~process(); // kills the child if it is still running

  process(const process&) = delete;
  process& operator=(const process&) = delete;

  int pid() const noexcept {
    return pid_;
  }

  void signal(int signo);

  /// Waits for the exit; the exit code, 128+signal if killed, nullopt on
  /// timeout.
  std::optional<int> wait(std::chrono::milliseconds timeout);

  bool running();

  /// Everything written so far.
  std::string out() const;
  std::string err() const;

  /// Waits until stdout (or stderr) contains `text`.
  bool wait_output(const std::string& text, std::chrono::milliseconds timeout,
                   bool stderr_too = true) const;

private:
  int pid_ = -1;
  std::optional<int> status_;
  std::string out_path_;
  std::string err_path_;
  std::string in_path_;
};

/// Path of a built binary (set by CMake).
std::string binary(const std::string& name);

/// A fresh temporary directory, removed by the destructor.
struct temp_dir {
  std::string path;
  temp_dir();
  ~temp_dir();
  std::string file(const std::string& name) const {
    return path + "/" + name;
  }
};

/// Contents of a file ("" if missing).
std::string read_file(const std::string& path);

} // namespace convoke::test
