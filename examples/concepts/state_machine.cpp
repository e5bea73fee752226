// Concept: agent behaviour as a state machine (the Summoner "flows" chapter).
//
// CAF's become() swaps an actor's message handlers: each state is a set of
// handlers, and a transition is a become(). Here an initiator runs a small
// handshake, idle -> awaiting-ack -> established. Incoming Convoke messages
// are handed to the current state's handlers, so a message that the state
// does not expect is caught by that state's fallback instead of being
// processed by mistake. (convoke::interop::become keeps the SDK's own
// handlers and swaps only the agent's.)
//
// Scenario: the responder sends an early DATA before its ACK. In state
// awaiting-ack the initiator ignores it; after ACK it is established and
// exchanges DATA.

#include "../common/harness.hpp"
#include "convoke/client/caf_interop.hpp"

using namespace std::chrono_literals;
using example::sayf;

/// A Convoke message handed to the current state's handlers.
using wire_atom = caf::atom_constant<caf::atom("wire")>;

class initiator : public convoke::agent {
public:
  explicit initiator(example::harness& h) : agent("initiator"), h_(h) {}

  void setup() override {
    enter("idle", caf::message_handler{[this](wire_atom, const std::string& p) {
            if (p == "READY")
              start_handshake();
            else
              sayf(name(), "[idle] ignoring '{}'", p);
          }});
  }

  void on_connect(const convoke::session_info&) override {
    // Is the responder there? If not, its READY broadcast will tell us.
    probe_ = request("responder", "there?", 2s);
    probe_.then([this](convoke::expected<convoke::message> r) {
      if (r)
        to_state("READY");
    });
  }

  void on_message(const convoke::message& m) override {
    to_state(m.payload);
  }

private:
  /// Hands a message to whichever state is current.
  void to_state(const std::string& payload) {
    auto self = convoke::interop::self(*this);
    self->send(self, wire_atom::value, payload);
  }

  void start_handshake() {
    {
      send_to("responder", "SYN");
      enter("awaiting-ack", caf::message_handler{[this](wire_atom, const std::string& p) {
              if (p != "ACK") {
                sayf(name(), "[awaiting-ack] '{}' is not expected here: ignored", p);
                return;
              }
              enter("established", caf::message_handler{[this](wire_atom, const std::string& p) {
                      sayf(name(), "[established] received '{}'", p);
                      if (p == "DATA pong")
                        h_.done();
                    }});
              send_to("responder", "DATA ping");
            }});
    }
  }

  void enter(const std::string& state, caf::message_handler handlers) {
    sayf(name(), "state: {} -> {}", state_, state);
    state_ = state;
    convoke::interop::become(*this, std::move(handlers)); // become()
  }

  example::harness& h_;
  convoke::task<convoke::message> probe_;
  std::string state_ = "(start)";
};

class responder : public convoke::agent {
public:
  responder() : agent("responder") {}
  void on_connect(const convoke::session_info&) override {
    broadcast("READY"); // for an initiator that came first
  }
  void on_message(const convoke::message& m) override {
    if (m.is_request()) {
      reply(m, "here");
      return;
    }
    sayf(name(), "received '{}'", m.payload);
    if (m.payload == "SYN") {
      send_to(m.sender, "DATA too-early"); // out of order on purpose
      send_to(m.sender, "ACK");
    } else if (m.payload == "DATA ping") {
      send_to(m.sender, "DATA pong");
    }
  }
};

int main(int argc, char** argv) {
  example::harness h{"convoke-example-state-machine",
                     "per-state handlers with become(): idle -> awaiting-ack -> established", argc,
                     argv};
  if (h.exit_now())
    return h.exit_code();
  responder r;
  initiator i{h};
  h.start(r);
  h.start(i);
  return h.run();
}
