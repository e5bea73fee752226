#include "trace_live.hpp"

#include <ostream>

#include <fmt/format.h>

#include "trace_view.hpp"

namespace convoke::cli {

trace_agent::trace_agent(std::string name, trace_list_args args, bool reconnect, std::ostream& out,
                         std::ostream& err)
  : agent(std::move(name)), args_(std::move(args)), reconnect_(reconnect), out_(out), err_(err) {}

void trace_agent::setup() {
  subscribe(quiet_route);
}

void trace_agent::on_connect(const session_info& s) {
  observe_options o;
  o.agents = args_.filter.agents;
  o.routes = args_.filter.routes;
  o.trace_id = args_.filter.trace_id;
  o.on_started = [this, server = s.server_name] {
    err_ << fmt::format("convoke trace: observing {} (Ctrl-C stops)", server) << std::endl;
  };
  // Started in on_connect: it belongs to this session, and a reconnect
  // (--reconnect) observes again.
  observing_ = observe(
    std::move(o), [this](const trace::event& ev) { print(ev); },
    [this](uint64_t n) {
      missed_ += n;
      err_ << fmt::format("convoke trace: missed {} events (this observer did not keep up; the "
                          "server never waits for observers)",
                          n)
           << std::endl;
    });
  observing_.then([this](expected<void> r) {
    if (r)
      return;
    auto code = r.error().code;
    if (code == errc::cancelled || code == errc::stopped)
      return; // Ctrl-C, or the session ended (on_disconnect decides)
    if (code == errc::connection_lost && reconnect_)
      return; // observed again on the next on_connect
    err_ << "convoke trace: " << to_string(static_cast<errc>(code.value())) << ": "
         << r.error().message() << std::endl;
    stop(trace_exit::failure);
  });
}

void trace_agent::on_disconnect(const disconnect_info& d) {
  err_ << fmt::format("convoke trace: disconnected: {}{}{}", d.code, d.reason.empty() ? "" : " (",
                      d.reason.empty() ? "" : d.reason + ")")
       << std::endl;
  // Without --reconnect the SDK ends the agent (exit 1; 0 for a shutdown).
}

void trace_agent::print(const trace::event& ev) {
  audiences_.learn(ev);
  auto copy = ev;
  audiences_.resolve(copy);
  if (!args_.filter.matches(copy))
    return;
  if (args_.json)
    out_ << trace::format_json(copy) << '\n';
  else
    out_ << render_line(copy) << '\n';
  out_.flush();
}

} // namespace convoke::cli
