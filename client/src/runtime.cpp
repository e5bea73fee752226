// The runtime: one actor system hosting any number of agents.
#include "convoke/client/runtime.hpp"

#include <condition_variable>
#include <cstdlib>
#include <mutex>

#include "convoke/common/logging.hpp"
#include "convoke/common/signals.hpp"
#include "internal.hpp"

namespace convoke {

struct runtime::impl {
  std::unique_ptr<caf::actor_system_config> cfg;
  std::unique_ptr<caf::actor_system> sys;
  mutable std::mutex mtx;
  std::condition_variable cv;
  size_t running = 0;
  int first_error = 0;
  std::vector<std::shared_ptr<detail::agent_handle>> handles;

  /// CAF parks a reference to its logger in the TLS of threads that create
  /// the system or spawn, and ~actor_system waits for that logger to die; so
  /// non-actor threads drop the reference after each call (see server.cpp).
  static void release_tls() {
    caf::logger::set_current_actor_system(nullptr);
  }
};

runtime::runtime(runtime_options opts) : impl_(std::make_unique<impl>()) {
  auto& d = *impl_;
  d.cfg = std::make_unique<caf::actor_system_config>();
  d.cfg->load<caf::io::middleman>();
  d.cfg->set("scheduler.max-threads", std::max(1, opts.threads));
  // Work sharing: idle workers sleep instead of spinning (2-core machines).
  d.cfg->set("scheduler.policy", caf::atom("sharing"));
  d.sys = std::make_unique<caf::actor_system>(*d.cfg);
  impl::release_tls();
}

runtime::~runtime() {
  stop_all();
  wait();
  impl_->sys.reset(); // waits for connections, connectors and blocking jobs
}

void runtime::start(agent& a, client_options opts) {
  auto& d = *impl_;
  {
    std::lock_guard guard{d.mtx};
    ++d.running;
  }
  detail::spawn_agent(*d.sys, a, std::move(opts), [&d](int code) {
    std::lock_guard guard{d.mtx};
    --d.running;
    if (code != 0 && d.first_error == 0)
      d.first_error = code;
    d.cv.notify_all();
  });
  d.handles.push_back(detail::agent_core::handle_of(a));
  impl::release_tls();
}

void runtime::stop_all() {
  for (auto& h : impl_->handles)
    h->stop(0);
  impl::release_tls();
}

int runtime::wait() {
  auto& d = *impl_;
  std::unique_lock guard{d.mtx};
  d.cv.wait(guard, [&] { return d.running == 0; });
  return d.first_error;
}

std::optional<int> runtime::wait_for(std::chrono::milliseconds timeout) {
  auto& d = *impl_;
  std::unique_lock guard{d.mtx};
  if (!d.cv.wait_for(guard, timeout, [&] { return d.running == 0; }))
    return std::nullopt;
  return d.first_error;
}

int runtime::wait_with_signals() {
  bool stopping = false;
  for (;;) {
    if (auto code = wait_for(std::chrono::milliseconds{50}))
      return stopping ? 0 : *code;
    if (auto sig = wait_termination_signal(std::chrono::milliseconds{0}); sig != 0) {
      auto log = logging::get("agent");
      if (stopping) {
        log->warn("received {} again; exiting without waiting", signal_name(sig));
        log->flush();
        std::_Exit(130);
      }
      log->info("received {}; stopping agents", signal_name(sig));
      stopping = true;
      stop_all();
    }
  }
}

size_t runtime::running() const {
  std::lock_guard guard{impl_->mtx};
  return impl_->running;
}

int run_client(agent& a, client_options opts) {
  block_termination_signals();
  runtime rt;
  rt.start(a, std::move(opts));
  return rt.wait_with_signals();
}

} // namespace convoke
