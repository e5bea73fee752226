// convoke-server: command line -> configuration -> run.
#include <iostream>
#include <string_view>
#include <vector>

#include "convoke/server/config.hpp"
#include "convoke/server/server.hpp"

int main(int argc, char** argv) {
  if (argc > 1 && std::string_view{argv[1]} == "credentials")
    return convoke::server::credentials_command(argc - 1, argv + 1, std::cout, std::cerr);
  convoke::server::server_config cfg;
  auto res = convoke::server::parse_command_line(argc, argv, cfg, std::cout, std::cerr);
  if (res.exit)
    return res.exit_code;
  // SIGHUP reads the configuration again from the same command line.
  return convoke::server::run(std::move(cfg), std::vector<std::string>(argv, argv + argc));
}
