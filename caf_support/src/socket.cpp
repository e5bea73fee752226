#include "convoke/caf_support/socket.hpp"

#include <sys/socket.h>

#include "caf/io/scribe.hpp"

#include "convoke/caf_support/self_send.hpp"

namespace convoke::caf_support {

int socket_fd(caf::io::connection_handle hdl) noexcept {
  return static_cast<int>(hdl.id());
}

size_t write_now(int fd, const char* data, size_t size) noexcept {
  auto sent = ::send(fd, data, size, MSG_DONTWAIT | MSG_NOSIGNAL);
  return sent > 0 ? static_cast<size_t>(sent) : 0;
}

void send_fin(int fd) noexcept {
  ::shutdown(fd, SHUT_WR);
}

void shut_down(int fd) noexcept {
  ::shutdown(fd, SHUT_RDWR);
}

void read_gate::pause(caf::io::abstract_broker* self, caf::io::connection_handle hdl) {
  if (paused_)
    return;
  paused_ = true;
  self->halt(hdl);
}

void read_gate::resume(caf::io::abstract_broker* self, caf::io::connection_handle hdl) {
  if (!paused_)
    return;
  paused_ = false;
  self->trigger(hdl);
  delayed_self_send(self, retrigger_delay, retrigger_atom::value);
}

void read_gate::on_retrigger(caf::io::abstract_broker* self, caf::io::connection_handle hdl) {
  if (!paused_)
    self->trigger(hdl);
}

} // namespace convoke::caf_support
