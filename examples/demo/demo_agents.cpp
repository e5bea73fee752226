// convoke-demo: a few agents talking through a Convoke server, for the
// README quick start. Run it next to `convoke-server`; the server's trace
// lines show every relayed message with its id.
//
//   weather-station  publishes a reading on route "weather" every second
//   planner          listens to "weather", asks the calculator to convert
//                    each reading (request/reply), broadcasts its plan
//   calculator       answers requests (direct messages)
//   archivist        no subscriptions: sees every broadcast, counts them
//
// Usage: convoke-demo [--server host:port] [--duration seconds]

#include <cstdio>
#include <mutex>
#include <random>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "convoke/client.hpp"
#include "convoke/common/signals.hpp"

using namespace convoke;
using namespace std::chrono_literals;

namespace {

std::mutex print_mtx;

template <class... Ts>
void say(const std::string& who, fmt::format_string<Ts...> f, Ts&&... xs) {
  std::lock_guard guard{print_mtx};
  std::printf("demo  %-16s %s\n", who.c_str(), fmt::format(f, std::forward<Ts>(xs)...).c_str());
  std::fflush(stdout);
}

class weather_station : public agent {
public:
  weather_station() : agent("weather-station") {}
  void setup() override {
    readings_ = every(
      1s,
      [this] {
        if (!connected())
          return;
        std::uniform_real_distribution<double> d{15.0, 25.0};
        auto reading = fmt::format("{:.1f}C", d(rng_));
        say(name(), "publishes {} on route weather", reading);
        publish("weather", reading);
      },
      "publish reading");
  }

private:
  convoke::task<void> readings_;
  std::mt19937 rng_{42};
};

class calculator : public agent {
public:
  calculator() : agent("calculator") {}
  void on_message(const message& m) override {
    if (!m.is_request())
      return;
    auto celsius = std::stod(m.payload);
    auto answer = fmt::format("{:.1f}F", celsius * 9 / 5 + 32);
    say(name(), "answers {} ({} -> {})", m.sender, m.payload, answer);
    reply(m, answer);
  }
};

class planner : public agent {
public:
  planner() : agent("planner") {}
  void setup() override {
    on_route("weather", [this](const message& m) {
      say(name(), "<- {} [weather] {}; asking calculator", m.sender, m.payload);
      request("calculator", m.payload, 2s).then([this](convoke::expected<message> r) {
        if (r)
          say(name(), "<- calculator replied {}", r->payload);
        else
          say(name(), "request failed: {}", r.error().message());
      });
    });
    plans_ = every(
      3s,
      [this] {
        if (connected()) {
          say(name(), "broadcasts its plan");
          broadcast("plan: picnic if above 20C");
        }
      },
      "broadcast plan");
  }

private:
  convoke::task<void> plans_;
};

class archivist : public agent {
public:
  archivist() : agent("archivist") {}
  void on_message(const message& m) override {
    ++seen_;
    say(name(), "archived #{} from {}{}: {}", seen_, m.sender,
        m.route.empty() ? "" : " [" + m.route + "]", m.payload);
  }
  void teardown() override {
    say(name(), "archived {} messages in total", seen_);
  }

private:
  int seen_ = 0;
};

} // namespace

int main(int argc, char** argv) {
  CLI::App app{"convoke-demo: demo agents exchanging messages through a Convoke server"};
  std::string server = "127.0.0.1:7420";
  int seconds = 8;
  app.add_option("-s,--server", server, "Server address")->capture_default_str();
  app.add_option("-d,--duration", seconds, "Seconds to run (0 = until Ctrl-C)")
    ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  client_options opts;
  if (!set_server_address(opts, server)) {
    std::fprintf(stderr, "convoke-demo: invalid --server '%s'\n", server.c_str());
    return 2;
  }
  block_termination_signals();
  weather_station ws;
  calculator calc;
  planner plan;
  archivist arch;
  runtime rt;
  // A timer on one agent ends the demo (Ctrl-C ends it earlier). Set before
  // the agent runs, it starts with it.
  convoke::task<void> time_up;
  if (seconds > 0)
    time_up = ws.after(std::chrono::seconds{seconds}, [&] {
      say("demo", "time is up: stopping the agents");
      rt.stop_all();
    });
  for (agent* a : std::initializer_list<agent*>{&calc, &arch, &plan, &ws})
    rt.start(*a, opts);
  return rt.wait_with_signals();
}
