#include "convoke/common/signals.hpp"

#include <cerrno>
#include <csignal>
#include <ctime>

#include <pthread.h>

namespace convoke {

namespace {

sigset_t termination_set(bool with_reload) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  if (with_reload) {
    sigaddset(&set, SIGHUP);  // reload
    sigaddset(&set, SIGUSR1); // reopen log and trace files
    sigaddset(&set, SIGUSR2); // lame-duck mode
  }
  return set;
}

} // namespace

void block_termination_signals(bool with_reload) {
  auto set = termination_set(with_reload);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
}

int wait_termination_signal(std::chrono::milliseconds timeout, bool with_reload) {
  auto set = termination_set(with_reload);
  timespec ts{};
  ts.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  ts.tv_nsec = static_cast<long>((timeout.count() % 1000) * 1'000'000);
  for (;;) {
    auto sig = sigtimedwait(&set, nullptr, &ts);
    if (sig > 0)
      return sig;
    if (errno == EINTR)
      continue;
    return 0; // EAGAIN: timeout
  }
}

const char* signal_name(int signo) {
  switch (signo) {
  case SIGINT:
    return "SIGINT";
  case SIGTERM:
    return "SIGTERM";
  case SIGHUP:
    return "SIGHUP";
  case SIGUSR1:
    return "SIGUSR1";
  case SIGUSR2:
    return "SIGUSR2";
  default:
    return "signal";
  }
}

} // namespace convoke
