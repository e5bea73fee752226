// convoke-server: command line -> configuration -> run.
#include <iostream>

#include "convoke/server/config.hpp"
#include "convoke/server/server.hpp"

int main(int argc, char** argv) {
  convoke::server::server_config cfg;
  auto res = convoke::server::parse_command_line(argc, argv, cfg, std::cout, std::cerr);
  if (res.exit)
    return res.exit_code;
  return convoke::server::run(std::move(cfg));
}
