#pragma once

// Helpers of the admin listener's tests: a raw TCP connection (for requests
// an HTTP client would not send) and a credentials file with an identity
// that has the admin right and one that has not.

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <fstream>
#include <string>

#include "credentials.hpp"
#include "process.hpp"

namespace convoke::test {

/// A plain socket connected to 127.0.0.1:port, or -1.
inline int connect_to(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

/// "ops" (admin = true) and "alice" (every right but admin).
struct admin_credentials {
  temp_dir dir;
  std::string path = dir.file("credentials.toml");
  std::string ops_token = server::generate_token();
  std::string alice_token = server::generate_token();

  admin_credentials() {
    std::ofstream out{path};
    server::identity ops;
    ops.name = "ops";
    ops.names = {"ops"};
    ops.rights = server::rights::all();
    ops.rights.admin = true;
    ops.token_hash = server::hash_token(ops_token).value();
    out << server::format_identity(ops) << "\n";
    server::identity alice;
    alice.name = "alice";
    alice.names = {"alice"};
    alice.rights = server::rights::all();
    alice.rights.admin = false; // a valid identity, without the admin right
    alice.token_hash = server::hash_token(alice_token).value();
    out << server::format_identity(alice);
  }
};

} // namespace convoke::test
