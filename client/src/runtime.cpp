// The runtime: one actor system hosting any number of agents.
#include "convoke/client/runtime.hpp"

#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>

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
  {
    std::lock_guard guard{d.mtx};
    d.handles.push_back(detail::agent_core::handle_of(a));
  }
  impl::release_tls();
}

void runtime::stop_all() {
  std::vector<std::shared_ptr<detail::agent_handle>> handles;
  {
    std::lock_guard guard{impl_->mtx};
    handles = impl_->handles;
  }
  for (auto& h : handles)
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
  auto log = logging::get("agent");
  bool stopping = false;
  auto second_signal_exits = [&](int sig) {
    log->warn("received {} again; exiting without waiting", signal_name(sig));
    log->flush();
    std::_Exit(130);
  };
  std::optional<int> code;
  while (!code) {
    code = wait_for(std::chrono::milliseconds{50});
    if (auto sig = wait_termination_signal(std::chrono::milliseconds{0}); sig != 0) {
      if (stopping)
        second_signal_exits(sig);
      log->info("received {}; stopping agents", signal_name(sig));
      stopping = true;
      stop_all();
    }
  }
  // A signal that stopped the agents means a clean exit (0); a signal while
  // only jobs are left does not hide an agent's own exit code.
  auto stopped_by_signal = stopping;
  // The agents are done, but blocking jobs (detached actors) may still run,
  // and the actor system waits for them. Keep listening for signals
  // meanwhile, so that a job that never returns cannot make the process
  // unkillable by Ctrl-C.
  auto& sys = *impl_->sys;
  std::atomic<bool> idle{false};
  std::thread waiter{[&] {
    sys.await_all_actors_done();
    idle = true;
  }};
  auto announced = false;
  auto since = std::chrono::steady_clock::now();
  while (!idle) {
    if (auto sig = wait_termination_signal(std::chrono::milliseconds{50}); sig != 0) {
      if (stopping)
        second_signal_exits(sig);
      stopping = true;
      log->info("received {}; waiting for blocking jobs (again to exit now)", signal_name(sig));
    }
    if (!announced && std::chrono::steady_clock::now() - since > std::chrono::seconds{2}) {
      announced = true;
      log->warn("waiting for blocking jobs to finish (Ctrl-C to exit without waiting)");
    }
  }
  waiter.join();
  impl::release_tls();
  return stopped_by_signal ? 0 : *code;
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
