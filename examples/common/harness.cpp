#include "harness.hpp"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <mutex>

#include <CLI/CLI.hpp>

#include "convoke/common/logging.hpp"
#include "convoke/common/signals.hpp"
#include "convoke/server/server.hpp"

namespace example {

namespace {

std::mutex print_mtx;
int line_no = 0;
const auto t0 = std::chrono::steady_clock::now();

} // namespace

void say(std::string_view who, std::string_view text) {
  std::lock_guard guard{print_mtx};
  auto secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%3d [%6.3fs] %-12.*s %.*s\n", ++line_no, secs, static_cast<int>(who.size()),
              who.data(), static_cast<int>(text.size()), text.data());
  std::fflush(stdout);
}

struct harness::impl {
  std::unique_ptr<convoke::server::server> embedded;
  convoke::client_options opts;
  std::unique_ptr<convoke::runtime> rt;
  std::atomic<bool> finished{false};
  std::atomic<int> code{0};
};

harness::harness(std::string name, std::string description, int argc, char** argv,
                 server_tweak tweak)
  : impl_(std::make_unique<impl>()) {
  CLI::App app{description, name};
  std::string server;
  app.add_option("-s,--server", server,
                 "Address of a running convoke-server (default: start one in-process)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    exit_now_ = true;
    exit_code_ = app.exit(e) == 0 ? 0 : 2;
    return;
  }
  // Example output is the point: library logs only for problems, unless
  // CONVOKE_LOG_LEVEL asks for more.
  if (std::getenv("CONVOKE_LOG_LEVEL") == nullptr) {
    convoke::logging::options quiet;
    quiet.level = "warn";
    convoke::logging::configure(quiet);
  }
  convoke::block_termination_signals();
  auto& d = *impl_;
  d.opts.reconnect.initial_delay = std::chrono::milliseconds{50};
  if (server.empty()) {
    convoke::server::server_config cfg;
    cfg.port = 0;
    cfg.trace_enabled = false;
    // The admin listener's default port (7421) is fixed: examples run in
    // parallel (ctest -j) and beside a real server must not need it.
    cfg.admin_enabled = false;
    if (tweak)
      tweak(cfg);
    d.embedded = std::make_unique<convoke::server::server>(cfg);
    if (auto ok = d.embedded->start(); !ok) {
      std::fprintf(stderr, "%s: cannot start the in-process server: %s\n", name.c_str(),
                   ok.error().message().c_str());
      exit_now_ = true;
      exit_code_ = 1;
      return;
    }
    d.opts.port = d.embedded->port();
    sayf("example", "started an in-process convoke-server on 127.0.0.1:{}", d.opts.port);
  } else if (!convoke::set_server_address(d.opts, server)) {
    std::fprintf(stderr, "%s: invalid --server address '%s'\n", name.c_str(), server.c_str());
    exit_now_ = true;
    exit_code_ = 2;
    return;
  } else {
    sayf("example", "using convoke-server at {}:{}", d.opts.host, d.opts.port);
  }
  d.rt = std::make_unique<convoke::runtime>();
}

harness::~harness() {
  if (impl_->rt) {
    impl_->rt->stop_all();
    impl_->rt->wait();
    impl_->rt.reset();
  }
  if (impl_->embedded) {
    impl_->embedded->shutdown();
    impl_->embedded->wait();
  }
}

convoke::client_options harness::client() const {
  return impl_->opts;
}

void harness::start(convoke::agent& a) {
  impl_->rt->start(a, impl_->opts);
}

void harness::done(int code) {
  auto& d = *impl_;
  if (d.finished.exchange(true))
    return;
  d.code = code;
  d.rt->stop_all();
}

int harness::run(std::chrono::seconds timeout) {
  auto& d = *impl_;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  bool signalled = false;
  for (;;) {
    if (auto rc = d.rt->wait_for(std::chrono::milliseconds{20})) {
      if (signalled)
        return 0;
      if (!d.finished) {
        say("example", "the agents stopped before the scenario finished");
        return *rc != 0 ? *rc : 1;
      }
      return d.code != 0 ? d.code.load() : *rc;
    }
    if (auto sig = convoke::wait_termination_signal(std::chrono::milliseconds{0}); sig != 0) {
      sayf("example", "received {}: stopping the agents", convoke::signal_name(sig));
      signalled = true;
      d.finished = true;
      d.rt->stop_all();
    }
    if (!d.finished && std::chrono::steady_clock::now() > deadline) {
      sayf("example", "the scenario did not finish within {}s", timeout.count());
      done(1);
    }
  }
}

} // namespace example
