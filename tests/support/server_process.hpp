#pragma once

// A convoke-server child process for end-to-end tests: ephemeral port (read
// from its port file), JSON traces in a temporary directory.

#include <fstream>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "process.hpp"

namespace convoke::test {

/// A convoke-server process on an ephemeral port (read from its port file).
struct server_process {
  temp_dir dir;
  std::unique_ptr<process> proc;
  uint16_t port = 0;

  /// `extra`: more flags; `wrapper`: a command to run the server under
  /// (e.g. {"prlimit", "--nofile=64:64", "--"}), which must exec it; `env`:
  /// variables added to its environment.
  explicit server_process(std::vector<std::string> extra = {},
                          std::vector<std::string> wrapper = {},
                          std::map<std::string, std::string> env = {}) {
    std::vector<std::string> argv{binary("convoke-server"),
                                  "--listen.port",
                                  "0",
                                  "--listen.port-file",
                                  dir.file("port"),
                                  "--trace.file",
                                  dir.file("trace.jsonl"),
                                  "--trace.format",
                                  "json",
                                  "--admin.port",
                                  "0",
                                  "--admin.port-file",
                                  dir.file("admin-port")};
    argv.insert(argv.end(), extra.begin(), extra.end());
    argv.insert(argv.begin(), wrapper.begin(), wrapper.end());
    proc = std::make_unique<process>(argv, std::string{}, std::move(env));
    for (int i = 0; i < 500 && port == 0 && proc->running(); ++i) {
      auto text = read_file(dir.file("port"));
      if (!text.empty())
        port = static_cast<uint16_t>(std::stoi(text));
      else
        std::this_thread::sleep_for(std::chrono::milliseconds{10}); // polls the file
    }
    if (port == 0)
      throw std::runtime_error("server did not start: " + proc->err());
    // Written before the relay's port file, when the admin listener is on.
    if (auto text = read_file(dir.file("admin-port")); !text.empty())
      admin_port = static_cast<uint16_t>(std::stoi(text));
  }

  /// The admin listener's port (0 if it is off: --admin.enabled false).
  uint16_t admin_port = 0;

  std::string address() const {
    return "127.0.0.1:" + std::to_string(port);
  }

  std::vector<nlohmann::json> trace() const {
    std::vector<nlohmann::json> out;
    std::ifstream in{dir.file("trace.jsonl")};
    for (std::string line; std::getline(in, line);)
      out.push_back(nlohmann::json::parse(line));
    return out;
  }
};

} // namespace convoke::test
