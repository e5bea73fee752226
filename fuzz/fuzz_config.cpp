// fuzz_config: the server configuration (server/src/config.cpp).
//
// 1. The input as a TOML file (a memfd, read through /proc/self/fd/N):
//    load_file, validate, dump_config. Every problem load_file reports has a
//    code of the server's category and a text. The dump never shows a non-empty
//    auth.token (it prints "<redacted>"), and it is itself a valid file that
//    loads without errors and dumps to the same text.
// 2. If the input looks like a command line (it has a NUL byte or starts
//    with '-'; a TOML file has neither, and parse_command_line costs 4 times
//    a file round trip), the input split on NUL bytes into at most 32
//    arguments after "convoke-server": parse_command_line with an empty
//    environment and string streams. It must not crash or throw (libFuzzer reports an escaped
//    exception or an exit() as a crash), and what it prints redacts the token.
//    Arguments may name files (--config, --log.file, ...): the fuzzer runs in
//    a scratch directory (scripts/fuzz); Convoke only reads and never creates
//    or changes them.

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "check.hpp"
#include "convoke/server/config.hpp"

namespace {

using namespace convoke;

/// A memory file, rewritten for each input; its path is /proc/self/fd/N.
struct mem_file {
  int fd = ::memfd_create("convoke-fuzz-config", 0);
  std::string path = "/proc/self/fd/" + std::to_string(fd);

  const std::string& write(std::string_view text) const {
    FUZZ_CHECK(fd >= 0 && ::ftruncate(fd, 0) == 0);
    FUZZ_CHECK(::pwrite(fd, text.data(), text.size(), 0) == static_cast<ssize_t>(text.size()));
    return path;
  }
};

/// Every "token = ..." line shows "<redacted>", or "" for an empty token.
void check_redacted(std::string_view text, const std::string& token) {
  for (size_t pos = 0; (pos = text.find("\ntoken = ", pos)) != std::string_view::npos; ++pos) {
    auto value = text.substr(pos + 9, text.find('\n', pos + 1) - pos - 9);
    FUZZ_CHECK(value == "\"<redacted>\"" || (token.empty() && value == "\"\""));
  }
}

void fuzz_file(std::string_view input) {
  static const mem_file file;
  static const mem_file again;
  server::server_config cfg;
  auto errs = server::load_file(cfg, file.write(input));
  for (auto& e : errs) // a problem has a server code and says what is wrong
    FUZZ_CHECK(e.code.category() == server::error_category() && !e.text.empty());
  auto problems = server::validate(cfg);
  auto dump = server::dump_config(cfg);
  check_redacted(dump, cfg.token);

  server::server_config reloaded;
  FUZZ_CHECK(server::load_file(reloaded, again.write(dump)).empty());
  FUZZ_CHECK(server::dump_config(reloaded) == dump);
  FUZZ_CHECK(server::validate(reloaded).size() == problems.size());
}

void fuzz_command_line(std::string_view input) {
  std::vector<std::string> args{"convoke-server"};
  for (size_t pos = 0; pos <= input.size() && args.size() <= 32;) {
    auto end = std::min(input.find('\0', pos), input.size());
    args.emplace_back(input.substr(pos, end - pos));
    pos = end + 1;
  }
  std::vector<const char*> argv;
  for (auto& a : args)
    argv.push_back(a.c_str());
  argv.push_back(nullptr);

  server::server_config cfg;
  std::ostringstream out;
  std::ostringstream err;
  auto no_env = [](const std::string&) -> std::optional<std::string> { return std::nullopt; };
  auto r
    = server::parse_command_line(static_cast<int>(args.size()), argv.data(), cfg, out, err, no_env);
  FUZZ_CHECK(r.exit || r.exit_code == 0);
  FUZZ_CHECK(r.exit_code == 0 || !err.str().empty());
  check_redacted("\n" + out.str(), cfg.token);
}

/// Inputs seen and how many went through parse_command_line (printed at exit).
struct counts {
  uint64_t inputs = 0;
  uint64_t command_lines = 0;
  ~counts() {
    std::fprintf(stderr, "fuzz_config: %llu inputs, %llu also as command lines\n",
                 static_cast<unsigned long long>(inputs),
                 static_cast<unsigned long long>(command_lines));
  }
} counted;

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input{reinterpret_cast<const char*>(data), size};
  ++counted.inputs;
  fuzz_file(input);
  if (input.find('\0') != std::string_view::npos || input.starts_with('-')) {
    ++counted.command_lines;
    fuzz_command_line(input);
  }
  return 0;
}
