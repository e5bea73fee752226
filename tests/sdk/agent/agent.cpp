// An agent program built out of tree against the installed SDK (CMake
// package or pkg-config): two agents on a real server, one sends the other a
// message. Exit 0 only if it arrives intact and both sides agree on the
// version. Usage: sdk_agent HOST PORT
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <convoke/client.hpp>
#include <convoke/client/blocking_client.hpp>
#include <convoke/version.hpp>

namespace {

int fail(const std::string& what) {
  std::fprintf(stderr, "sdk_agent: %s\n", what.c_str());
  return 1;
}

} // namespace

int main(int argc, char** argv) {
  if (argc != 3)
    return fail("usage: sdk_agent HOST PORT");
  convoke::client_options opts;
  opts.host = argv[1];
  opts.port = static_cast<uint16_t>(std::atoi(argv[2]));
  convoke::blocking_client bob{opts, "sdk-bob"};
  convoke::blocking_client alice{opts, "sdk-alice"};
  std::string why;
  if (auto ec = bob.connect(&why))
    return fail("bob cannot connect: " + ec.message() + " " + why);
  if (auto ec = alice.connect(&why))
    return fail("alice cannot connect: " + ec.message() + " " + why);
  if (alice.session().server_version != CONVOKE_VERSION_STRING)
    return fail("server " + alice.session().server_version + ", SDK headers "
                + CONVOKE_VERSION_STRING);
  const std::string text = "hello from an out-of-tree agent";
  if (auto ec = alice.send_to("sdk-bob", text))
    return fail("send_to: " + ec.message());
  auto msg = bob.receive(std::chrono::seconds{10});
  if (!msg)
    return fail("bob received nothing");
  if (msg->payload != text || msg->sender != "sdk-alice")
    return fail("bob received '" + msg->payload + "' from '" + msg->sender + "'");
  alice.close();
  bob.close();
  std::printf("sdk_agent: ok, server %s %s, SDK %s\n", bob.session().server_name.c_str(),
              bob.session().server_version.c_str(), convoke::version_string);
  return 0;
}
