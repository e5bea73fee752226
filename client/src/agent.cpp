// The agent actor: runs every hook and handler of one agent, speaks the
// protocol over its connection broker, and maps the asyncio-style API
// (tasks, blocking jobs, requests) onto actor idioms: delayed self-sends for
// timers, detached actors for blocking work, messages for results.

#include <spdlog/logger.h>

#include <fmt/format.h>

#include "backoff.hpp"
#include "convoke/caf_support/self_send.hpp"
#include "convoke/client/caf_interop.hpp"
#include "convoke/common/logging.hpp"
#include "convoke/common/text.hpp"
#include "convoke/common/units.hpp"
#include "convoke/proto/rules.hpp"
#include "convoke/proto/subject.hpp"
#include "convoke/proto/trace_wire.hpp"
#include "internal.hpp"

namespace convoke {

namespace detail {

namespace {

namespace codes = proto::codes;

} // namespace

// -- agent_handle -------------------------------------------------------------

bool agent_handle::post(std::function<void()> fn) {
  std::lock_guard guard{mtx};
  if (!actor)
    return false;
  caf::anon_send(actor, post_atom::value, closure{std::move(fn)});
  return true;
}

bool agent_handle::stop(int exit_code) {
  std::lock_guard guard{mtx};
  if (!actor)
    return false;
  caf::anon_send(actor, stop_atom::value, exit_code);
  return true;
}

// -- agent_core: agent code ---------------------------------------------------

std::optional<std::string> agent_core::catching(const std::function<void()>& fn) {
  try {
    fn();
    return std::nullopt;
  } catch (const std::exception& ex) {
    return std::string{*ex.what() != 0 ? ex.what() : "exception"};
  } catch (...) {
    return std::string{"unknown exception"};
  }
}

void agent_core::report_error(const std::string& where, const std::string& what, bool count) {
  if (count)
    ++stats_of(*user).errors;
  try {
    user->on_error(error_info{where, what});
  } catch (...) {
    log->error("on_error threw while handling an error where={}", logfmt_value(where));
  }
}

bool agent_core::guarded(const std::string& where, const std::function<void()>& fn) {
  auto failure = catching(fn);
  if (failure)
    report_error(where, *failure);
  return !failure;
}

void agent_core::fail_requests(errc code, const std::string& text) {
  auto pending = std::move(requests);
  requests.clear();
  for (auto& [id, req] : pending)
    registry().fail(*req.cell, error{make_error_code(code), text});
  auto lists = std::move(list_requests);
  list_requests.clear();
  for (auto& [id, cell] : lists)
    registry().fail(*cell, error{make_error_code(code), text});
  if (observing) {
    auto cell = std::move(observing->cell);
    observing.reset();
    registry().fail(*cell, error{make_error_code(code), text});
  }
}

// -- agent_core: tasks ----------------------------------------------------------

void agent_core::start_timer(std::shared_ptr<task_cell<void>> cell, duration interval,
                             std::function<void()> fn, bool periodic) {
  if (cell->status != task_status::running)
    return; // cancelled before the agent ran
  auto id = cell->id;
  cell->on_cancel = [this, id] { timers.erase(id); };
  timers.emplace(id, timer{interval, std::move(fn), std::move(cell), periodic});
  caf_support::delayed_self_send(self, interval, task_tick_atom::value, id);
}

void agent_core::on_timer(task_id id) {
  auto i = timers.find(id);
  if (i == timers.end())
    return;               // cancelled
  auto fn = i->second.fn; // the task may cancel itself
  auto cell = i->second.cell;
  if (!i->second.periodic) {
    timers.erase(i);
    if (auto failure = catching(fn)) {
      ++stats_of(*user).errors;
      registry().fail(*cell, error{make_error_code(errc::failed), *failure});
    } else {
      registry().succeed(*cell);
    }
    return;
  }
  guarded(cell->label(), fn);
  if (auto j = timers.find(id); j != timers.end())
    caf_support::delayed_self_send(self, j->second.interval, task_tick_atom::value, id);
}

void agent_core::start_worker(const std::shared_ptr<task_cell_base>& cell, bool blocking,
                              std::function<void(const cancel_token&)> work,
                              std::function<void(child_core*)> child,
                              std::function<void(const std::string&)> finish) {
  if (cell->status != task_status::running)
    return; // cancelled before the agent ran
  auto id = cell->id;
  auto flag = std::make_shared<std::atomic<bool>>(false);
  workers.emplace(id, worker{flag, std::move(finish)});
  auto me = caf::actor{self};
  if (blocking) {
    cell->on_cancel = [this, id, flag] {
      flag->store(true);
      workers.erase(id);
    };
    // A detached actor: its own thread, so blocking there stalls nobody.
    self->spawn<caf::detached>(
      [work = std::move(work), flag, me, id](caf::event_based_actor* job) mutable {
        std::string failure;
        try {
          work(cancel_token{flag});
        } catch (const std::exception& ex) {
          failure = *ex.what() != 0 ? ex.what() : "exception";
        } catch (...) {
          failure = "unknown exception";
        }
        job->send(me, job_done_atom::value, id, failure);
        job->quit();
      });
    return;
  }
  auto c = spawn_child(*self, id, std::move(child));
  children.emplace(c.address(), id);
  cell->on_cancel = [this, id, c, raw = cell.get()] {
    workers.erase(id);
    if (children.count(c.address()) == 0)
      return; // already gone: nothing to wait for
    // The continuation learns of the cancellation once the child has run its
    // cleanup and is gone (child_gone, or its exit message, releases it).
    registry().hold(*raw, id);
    self->send_exit(c, caf::exit_reason::user_shutdown);
  };
}

void agent_core::child_gone(task_id id) {
  registry().release_held(id);
  if (awaiting_children && registry().held() == 0)
    finish();
}

void agent_core::on_worker_done(task_id id, const std::string& failure) {
  auto i = workers.find(id);
  if (i == workers.end())
    return; // cancelled: the result is ignored
  auto finish = std::move(i->second.finish);
  workers.erase(i);
  if (!failure.empty())
    ++stats_of(*user).errors;
  finish(failure);
}

// -- agent_core: lifecycle ----------------------------------------------------

void agent_core::start() {
  for (auto& r : initial_routes_of(*user))
    routes.insert(r);
  for (auto& [r, h] : initial_handlers_of(*user))
    set_route_handler(r, h);
  task_registry::hooks hooks;
  hooks.defer = [this](std::function<void()> fn) {
    self->send(self, post_atom::value, closure{std::move(fn)});
  };
  hooks.guarded
    = [this](const std::string& where, const std::function<void()>& fn) { guarded(where, fn); };
  hooks.unhandled
    // Counted already where the task failed (on_timer, on_worker_done).
    = [this](const std::string& where, const error& e) { report_error(where, e.message(), false); };
  registry().attach(std::move(hooks));
  // Tasks started before the agent ran start now, in order.
  auto waiting = std::move(waiting_starts_of(*user));
  waiting_starts_of(*user).clear();
  for (auto& start : waiting)
    start(*this);
  guarded("setup", [this] { user->setup(); });
  if (!link.stopping())
    connect();
}

void agent_core::connect() {
  auto g = link.connect();
  goodbye_code.clear();
  goodbye_reason.clear();
  goodbye_hint = std::chrono::milliseconds{0};
  goodbye_to.clear();
  refusal.reset();
  splitter = proto::frame_splitter{max_inbound_frame};
  // A fresh counter: a closing old connection must not touch the new one's.
  out_pending = std::make_shared<std::atomic<uint64_t>>(0);
  spawn_connector(self->system(), opts, link.target(), caf::actor{self}, g, out_pending);
}

void agent_core::on_connected(uint64_t g, caf::actor c) {
  if (!link.connected(g, steady::now())) {
    self->send_exit(c, caf::exit_reason::user_shutdown); // stale or unwanted
    return;
  }
  conn = std::move(c);
  auto& confirmed = session_of(*user).agent_name;
  write(
    make_hello(confirmed.empty() ? requested_name(*user) : confirmed, opts, routes, resume_token));
  hello_routes = routes;
  caf_support::delayed_self_send(self, opts.connect_timeout, handshake_timeout_atom::value, g);
}

void agent_core::on_connect_failed(uint64_t g, const std::string& reason) {
  if (!link.attempt_failed(g))
    return;
  handle_disconnect("connect_failed", reason);
}

void agent_core::on_disconnected(uint64_t g, const std::string& reason) {
  if (g != link.generation())
    return;
  conn = nullptr;
  if (link.closing()) {
    finish();
    return;
  }
  if (!goodbye_code.empty())
    handle_disconnect(goodbye_code, goodbye_reason, std::chrono::milliseconds{0}, goodbye_hint,
                      goodbye_to);
  else if (refusal)
    handle_disconnect(refusal->code, refusal->text, refusal->retry_after); // e.g. quarantined
  else
    handle_disconnect("connection_lost", reason);
}

void agent_core::handle_disconnect(std::string code, std::string reason,
                                   std::chrono::milliseconds at_least,
                                   std::chrono::milliseconds hint,
                                   const std::vector<std::string>& reconnect_to) {
  if (conn) {
    self->send_exit(conn, caf::exit_reason::user_shutdown);
    conn = nullptr;
  }
  auto end = link.disconnect(code, reason, at_least, hint, reconnect_to);
  auto& info = end.info;
  if (end.was_connected || !requests.empty())
    fail_requests(errc::connection_lost, "connection lost: " + reason);
  if (end.was_connected)
    registry().end_session(); // tasks started in on_connect belong to it
  if (end.was_connected)
    log->info("disconnected agent={} server={} code={} reason={} reconnect_in_ms={} next={}",
              logfmt_value(user->name()), logfmt_value(info.server), code, logfmt_value(reason),
              info.will_reconnect ? info.retry_in.count() : -1, logfmt_value(info.next_server));
  else
    log->warn("cannot connect agent={} server={} code={} reason={} reconnect_in_ms={} next={}",
              logfmt_value(user->name()), logfmt_value(info.server), code, logfmt_value(reason),
              info.will_reconnect ? info.retry_in.count() : -1, logfmt_value(info.next_server));
  if (!info.reconnect_to.empty() || info.reconnect_to_ignored > 0) {
    std::string taken;
    for (auto& a : info.reconnect_to)
      taken += (taken.empty() ? "" : ",") + a;
    // Ignored addresses are the server's mistake (or worse): said, not used.
    log->log(info.reconnect_to_ignored > 0 ? spdlog::level::warn : spdlog::level::info,
             "server sent the agent elsewhere agent={} reconnect_to={} ignored={}",
             logfmt_value(user->name()), logfmt_value(taken), info.reconnect_to_ignored);
  }
  guarded("on_disconnect", [&] { user->on_disconnect(info); });
  if (link.stopping()) {
    if (stop_started) // otherwise stop_now() comes and ends it
      finish();
  } else if (info.will_reconnect)
    caf_support::delayed_self_send(self, info.retry_in, reconnect_atom::value, link.generation());
  else if (end.give_up)
    stop(end.exit_code);
}

void agent_core::stop(int code) {
  if (link.stopping()) {
    // A failure noticed while stopping (e.g. a late Notice) still counts.
    if (exit_code == 0)
      exit_code = code;
    fate->exit_code = exit_code;
    return;
  }
  link.begin_stop(); // from now on: no reconnect, new requests fail
  exit_code = code;
  fate->exit_code = code;
  // The rest is a message of its own, so that no continuation runs inside
  // the call that stopped the agent (often another continuation).
  self->send(self, stop_now_atom::value);
}

void agent_core::stop_now() {
  if (stop_started)
    return;
  end_agent_code("the agent is stopping", "the agent stopped");
  if (link.close_for_stop()) {
    v1::Frame f;
    f.mutable_goodbye()->set_code(std::string{codes::client_exit});
    f.mutable_goodbye()->set_reason("agent stopped");
    write(f);
    self->send(conn, close_atom::value);
    arm_stop_deadline();
    return;
  }
  finish();
}

void agent_core::end_agent_code(const char* request_text, const char* task_text) {
  stop_started = true;
  // Every request ends exactly once: pending ones fail now, before
  // teardown() closes what their continuations might use.
  fail_requests(errc::stopped, request_text);
  if (!fate->teardown_done) {
    fate->teardown_done = true;
    guarded("teardown", [this] { user->teardown(); });
  }
  // Requests sent by teardown() still fail as stopped; every other task ends
  // cancelled, and all of it is delivered now (cancelled child tasks once
  // they have cleaned up).
  fail_requests(errc::stopped, request_text);
  registry().end_all(error{make_error_code(errc::cancelled), task_text});
}

void agent_core::arm_stop_deadline() {
  if (stop_deadline_armed)
    return;
  stop_deadline_armed = true;
  caf_support::delayed_self_send(self, opts.stop_timeout, stop_deadline_atom::value);
}

void agent_core::finish() {
  if (conn)
    self->send_exit(conn, caf::exit_reason::user_shutdown);
  conn = nullptr;
  link.finished();
  // Cancelled child tasks run their cleanup before their continuations learn
  // of it and before the agent goes away, within the stop deadline.
  if (registry().held() > 0 && !stop_deadline_passed) {
    awaiting_children = true;
    arm_stop_deadline();
    return;
  }
  // Outcomes still queued (e.g. of requests made in teardown) are delivered
  // before the actor goes away.
  registry().flush();
  registry().detach();
  fate->exit_code = exit_code;
  self->quit();
}

void agent_core::abort(const std::string& what) {
  // An exception escaped a handler the SDK does not guard (one installed
  // through caf_interop.hpp): the actor quits after this, so everything a
  // stop does happens now, on the actor, while its state is alive.
  log->error("unhandled exception in an actor handler agent={} what={}; the agent stops",
             logfmt_value(user->name()), logfmt_value(what));
  ++stats_of(*user).errors;
  if (exit_code == 0)
    exit_code = 1;
  fate->exit_code = exit_code;
  link.begin_stop();
  end_agent_code("the agent failed", "the agent failed");
  registry().flush();
  registry().detach();
  if (conn)
    self->send_exit(conn, caf::exit_reason::user_shutdown);
  conn = nullptr;
  link.finished();
}

agent_core::~agent_core() {
  // Whatever happened, no task may keep a hook into this state.
  if (user != nullptr)
    user->tasks().abandon();
}

// -- agent_core: protocol -----------------------------------------------------

bool agent_core::write(const v1::Frame& f) {
  if (!conn)
    return false;
  std::vector<char> buf;
  proto::append_frame(f, buf);
  out_pending->fetch_add(buf.size());
  self->send(conn, write_atom::value, std::move(buf));
  return true;
}

std::error_code agent_core::send_envelope(std::string_view recipient, std::string_view route,
                                          std::string_view payload, const send_options& so,
                                          uint64_t request_id, uint64_t in_reply_to) {
  if (!link.connected())
    return link.stopping() ? errc::stopped : errc::not_connected;
  if (auto err = check_addressing(recipient, route))
    return err;
  if (out_pending->load() > opts.max_pending_bytes)
    return errc::send_buffer_full;
  auto f = make_envelope(recipient, route, payload, so, next_seq, request_id, in_reply_to);
  // The server would refuse a larger frame and close the connection.
  if (auto limit = session_of(*user).max_frame_bytes; limit > 0 && f.ByteSizeLong() > limit)
    return errc::message_too_large;
  ++next_seq;
  write(f);
  ++stats_of(*user).sent;
  return {};
}

void agent_core::send_subscription(bool subscribe, const std::string& route) {
  if (!link.connected())
    return; // the current set goes out in the next Hello
  v1::Frame f;
  if (subscribe)
    f.mutable_subscribe()->add_routes(route);
  else
    f.mutable_unsubscribe()->add_routes(route);
  write(f);
}

void agent_core::on_frames(uint64_t g, const std::vector<char>& bytes) {
  if (g != link.generation())
    return;
  link.received(steady::now());
  splitter.append(bytes.data(), bytes.size());
  std::string_view body;
  while (splitter.next(body)) {
    if (proto::decode_frame(body, frame) != proto::frame_error::none) {
      log->error("undecodable frame from server bytes={}", body.size());
      continue;
    }
    handle_frame(frame);
    if (g != link.generation()) // the frame ended this connection
      break;
  }
  splitter.compact();
  if (auto err = splitter.error(); err != proto::frame_error::none && g == link.generation()) {
    // Larger than the server announced (limits.max_delivery_bytes), or 0.
    handle_disconnect(std::string{proto::to_code(err)},
                      fmt::format("the server sent a frame of {} bytes; the limit it announced is "
                                  "{}",
                                  splitter.bad_length(), splitter.max_frame_bytes()));
    return;
  }
  if (conn && g == link.generation())
    self->send(conn, credit_atom::value, static_cast<uint64_t>(bytes.size()));
}

void agent_core::handle_frame(v1::Frame& f) {
  switch (f.kind_case()) {
  case v1::Frame::kWelcome:
    handle_welcome(f.welcome());
    break;
  case v1::Frame::kDelivery:
    handle_delivery(*f.mutable_delivery());
    break;
  case v1::Frame::kHeartbeat:
    if (auto seq = f.heartbeat().seq(); seq != 0) {
      write(make_heartbeat_reply(seq));
      ++stats_of(*user).heartbeats;
    }
    break;
  case v1::Frame::kNotice:
    handle_notice(f.notice());
    break;
  case v1::Frame::kAgentList:
    handle_agent_list(*f.mutable_agent_list());
    break;
  case v1::Frame::kTraceEvents:
    handle_trace_events(f.trace_events());
    break;
  case v1::Frame::kGoodbye:
    goodbye_code = f.goodbye().code();
    goodbye_reason = f.goodbye().reason();
    // At most a day (link_machine::max_hint): the value is the server's.
    goodbye_hint = std::chrono::milliseconds{static_cast<int64_t>(std::min<uint64_t>(
      f.goodbye().reconnect_after_ms(), static_cast<uint64_t>(link_machine::max_hint.count())))};
    // Not trusted: link_machine::accept_hints checks them (and looks at the
    // first few only). The copy is bounded by the frame size limit.
    goodbye_to.assign(f.goodbye().reconnect_to().begin(), f.goodbye().reconnect_to().end());
    // A Goodbye that ends the agent for good (replaced, name_conflict) is
    // a warning: someone else holds the name now.
    log->log(goodbye_code == codes::client_exit  ? spdlog::level::debug
             : link_machine::fatal(goodbye_code) ? spdlog::level::warn
                                                 : spdlog::level::info,
             "goodbye from server agent={} code={} reason={} reconnect_after_ms={} "
             "reconnect_to_count={}",
             logfmt_value(user->name()), goodbye_code, logfmt_value(goodbye_reason),
             goodbye_hint.count(), f.goodbye().reconnect_to_size());
    break;
  default:
    log->warn("unexpected frame from server kind={}", static_cast<int>(f.kind_case()));
  }
}

void agent_core::handle_welcome(const v1::Welcome& w) {
  if (link.current() != link_machine::state::handshaking)
    return;
  auto& s = session_of(*user);
  s = to_session(w, had_session);
  s.server = to_string(link.target());
  had_session = true;
  resume_token = w.resume_token();
  auto watchdog_due = link.welcome(s, steady::now());
  // Frames the server sends are at most what it announced.
  if (s.max_delivery_bytes > 0) {
    splitter.set_max_frame_bytes(std::min(s.max_delivery_bytes, max_inbound_frame));
    if (conn) // the connection checks it first, before buffering a body
      self->send(conn, limit_atom::value, static_cast<uint64_t>(s.max_delivery_bytes));
  }
  ++stats_of(*user).connects;
  log->info("connected agent={} server={} session={} address={}{}", logfmt_value(s.agent_name),
            logfmt_value(s.server_name), s.session_id, logfmt_value(s.server),
            s.reconnected ? " reconnected=true" : "");
  if (watchdog_due)
    caf_support::delayed_self_send(self, s.heartbeat_interval, watchdog_atom::value,
                                   link.generation());
  // Subscriptions changed between Hello and Welcome: catch the server up.
  for (auto& r : routes)
    if (hello_routes.count(r) == 0)
      send_subscription(true, r);
  for (auto& r : hello_routes)
    if (routes.count(r) == 0)
      send_subscription(false, r);
  auto info = s;
  in_on_connect = true;
  guarded("on_connect", [&] { user->on_connect(info); });
  in_on_connect = false;
}

void agent_core::handle_delivery(v1::Delivery& e) {
  ++stats_of(*user).received;
  if (stop_started) {
    // teardown() has run and closed what handlers use: a message still in
    // flight when the agent stopped is not handed to agent code, but said.
    ++stats_of(*user).after_teardown;
    log->info("message arrived after teardown; not handled agent={} from={} message_id={}",
              logfmt_value(user->name()), logfmt_value(e.sender()), e.message_id());
    return;
  }
  auto m = to_message(e);
  if (m.in_reply_to != 0) {
    if (auto i = requests.find(m.in_reply_to); i != requests.end()) {
      if (m.sender != i->second.recipient) {
        // Request ids are unguessable, but a peer may still learn one (e.g.
        // from the recipient): only the recipient answers a request.
        ++stats_of(*user).forged_replies;
        log->warn("reply from an agent the request was not sent to ignored agent={} from={} "
                  "expected={}",
                  logfmt_value(user->name()), logfmt_value(m.sender),
                  logfmt_value(i->second.recipient));
        return;
      }
      auto cell = std::move(i->second.cell);
      requests.erase(i);
      registry().succeed(*cell, std::move(m));
      return;
    }
  }
  if (!m.route.empty())
    if (auto h = route_handler(m.route)) {
      auto handler = *h; // the handler may change the handlers
      guarded("route handler '" + m.route + "'", [&] { handler(m); });
      return;
    }
  guarded("on_message", [&] { user->on_message(m); });
}

void agent_core::set_route_handler(const std::string& route, agent::message_handler handler) {
  if (!proto::is_pattern(route)) {
    route_handlers[route] = std::move(handler);
    return;
  }
  for (auto& [p, h] : pattern_handlers)
    if (p == route) {
      h = std::move(handler);
      return;
    }
  pattern_handlers.emplace_back(route, std::move(handler));
}

void agent_core::erase_route_handler(const std::string& route) {
  if (route_handlers.erase(route) > 0)
    return;
  std::erase_if(pattern_handlers, [&](auto& ph) { return ph.first == route; });
}

const agent::message_handler* agent_core::route_handler(const std::string& route) const {
  if (auto i = route_handlers.find(route); i != route_handlers.end())
    return &i->second;
  for (auto& [p, h] : pattern_handlers)
    if (proto::pattern_matches(p, route))
      return &h;
  return nullptr;
}

void agent_core::handle_notice(const v1::Notice& n) {
  ++stats_of(*user).notices;
  auto x = to_notice(n);
  if (x.severity == notice::level::error) {
    refusal = x;
    log->warn("server notice agent={} code={} text={}", logfmt_value(user->name()), x.code,
              logfmt_value(x.text));
  }
  if (x.request_id != 0)
    if (auto i = requests.find(x.request_id); i != requests.end()) {
      auto cell = std::move(i->second.cell);
      requests.erase(i);
      registry().fail(*cell, error{make_error_code(errc::refused), x.code + ": " + x.text});
    }
  if (x.request_id != 0)
    if (auto i = list_requests.find(x.request_id); i != list_requests.end()) {
      auto cell = std::move(i->second);
      list_requests.erase(i);
      registry().fail(*cell, error{make_error_code(errc::refused), x.code + ": " + x.text});
    }
  if (x.request_id != 0 && observing && observing->request_id == x.request_id) {
    auto cell = std::move(observing->cell);
    observing.reset();
    registry().fail(*cell, error{make_error_code(errc::refused), x.code + ": " + x.text});
  }
  // Also after teardown(): a Notice is about what this agent sent (e.g. its
  // last message went nowhere), and the server sends it before its Goodbye.
  guarded("on_notice", [&] { user->on_notice(x); });
}

void agent_core::handle_agent_list(v1::AgentList& l) {
  auto i = list_requests.find(l.request_id());
  if (i == list_requests.end()) {
    log->debug("agent list for no pending request agent={} request_id={}",
               logfmt_value(user->name()), l.request_id());
    return; // timed out or cancelled
  }
  auto cell = std::move(i->second);
  list_requests.erase(i);
  agent_list out;
  out.names.reserve(static_cast<size_t>(l.agents_size()));
  for (auto& n : *l.mutable_agents())
    out.names.push_back(std::move(n));
  out.truncated = l.truncated();
  registry().succeed(*cell, std::move(out));
}

void agent_core::handle_trace_events(const v1::TraceEvents& t) {
  if (!observing || observing->request_id != t.request_id())
    return; // stopped, or a batch still on its way from before
  auto id = observing->request_id;
  // Agent code may cancel the observation from a callback: check each time.
  auto still = [&] { return observing && observing->request_id == id; };
  if (!observing->started) {
    observing->started = true;
    if (auto fn = observing->on_started)
      guarded("observe on_started", fn);
  }
  if (t.missed() > 0 && still() && observing->on_missed) {
    auto fn = observing->on_missed;
    guarded("observe on_missed", [&] { fn(t.missed()); });
  }
  for (auto& te : t.events()) {
    if (!still())
      return;
    auto ev = proto::from_wire(te);
    if (!ev)
      continue; // a kind this SDK does not know
    auto fn = observing->on_event;
    guarded("observe on_event", [&] { fn(*ev); });
  }
}

// -- child tasks (agent::spawn_task) -------------------------------------------

struct child_core {
  caf::event_based_actor* self = nullptr;
  caf::actor parent;
  task_id id = 0;
  /// Timers set with ctx.after() that have not fired yet.
  size_t timers = 0;
  bool done = false;
  std::function<void()> cleanup; // ctx.on_cancel()
};

void child_on_cancel(child_core* c, std::function<void()> fn) {
  if (c != nullptr)
    c->cleanup = std::move(fn);
}

void child_after(child_core* c, duration delay, std::function<void()> fn) {
  if (c == nullptr || c->done)
    return;
  ++c->timers;
  caf_support::delayed_self_send(c->self, delay, post_atom::value, closure{std::move(fn)});
}

void child_done(child_core* c, std::string failure) {
  if (c == nullptr || c->done)
    return;
  c->done = true;
  c->self->send(c->parent, job_done_atom::value, c->id, failure);
  c->self->quit();
}

namespace {

struct child_state {
  child_core core;
  /// Owns what the body captured (the task_context), for the child's life.
  std::function<void(child_core*)> body;
};

/// Runs a step of a child task; a throw fails it, and a task that has nothing
/// left to do (no timer pending) without having ended fails too, rather than
/// waiting forever.
void run_child_step(child_core& c, const std::function<void()>& fn) {
  try {
    fn();
  } catch (const std::exception& ex) {
    child_done(&c, *ex.what() != 0 ? ex.what() : "exception");
  } catch (...) {
    child_done(&c, "unknown exception");
  }
  if (!c.done && c.timers == 0)
    child_done(&c, "the task ended without calling succeed() or fail()");
}

caf::behavior child_actor(caf::stateful_actor<child_state>* self, caf::actor parent, task_id id,
                          std::function<void(child_core*)> body) {
  auto& c = self->state.core;
  c.self = self;
  c.parent = std::move(parent);
  c.id = id;
  // The parent's exit message: a cancellation (or the agent went away). The
  // cleanup runs, then the child quits; the link tells the parent.
  self->set_exit_handler([self](const caf::exit_msg& msg) {
    auto& core = self->state.core;
    if (!core.done && core.cleanup) {
      core.done = true;
      try {
        core.cleanup();
      } catch (...) {
        // Nobody to report to: the task is already cancelled.
      }
    }
    // Said explicitly: CAF 0.17 drops the link to the sender of an exit
    // message before the handler runs, so the parent would not hear of it.
    self->send(core.parent, child_gone_atom::value, core.id);
    self->quit(msg.reason);
  });
  self->state.body = std::move(body);
  run_child_step(c, [self] { self->state.body(&self->state.core); });
  return {
    [self](post_atom, const closure& step) {
      auto& core = self->state.core;
      if (core.timers > 0)
        --core.timers;
      if (!core.done)
        run_child_step(core, step.fn);
    },
  };
}

} // namespace

caf::actor spawn_child(caf::event_based_actor& parent, task_id id,
                       std::function<void(child_core*)> body) {
  return parent.spawn<caf::linked>(child_actor, caf::actor{&parent}, id, std::move(body));
}

// -- the actor ----------------------------------------------------------------

namespace {

caf::behavior agent_actor(caf::stateful_actor<agent_core>* self, agent* user, client_options opts,
                          std::function<void(int)> on_exit) {
  auto& st = self->state;
  st.self = self;
  st.user = user;
  st.opts = std::move(opts);
  st.link = link_machine{st.opts, crypto::random_u64()};
  st.fate->on_exit = std::move(on_exit);
  st.log = logging::get("agent");
  agent_core::core_of(*user) = &st;
  // The functor runs after CAF has destroyed the actor's state: everything it
  // needs lives in `fate`, shared with the state.
  self->attach_functor([fate = st.fate, user](const caf::error& reason) {
    agent_core::core_of(*user) = nullptr;
    auto& handle = agent_core::handle_of(*user);
    if (handle) {
      std::lock_guard guard{handle->mtx};
      handle->actor = nullptr;
    }
    auto code = fate->exit_code;
    if (!fate->teardown_done) {
      // The actor died abnormally (e.g. an exception escaped a handler
      // installed with interop::become): teardown() still runs, exactly once.
      fate->teardown_done = true;
      try {
        user->teardown();
      } catch (...) {
      }
      if (code == 0)
        code = 1;
    } else if (reason && reason != caf::exit_reason::normal && code == 0) {
      code = 1;
    }
    if (fate->on_exit)
      fate->on_exit(code);
  });
  self->set_exception_handler([self](caf::scheduled_actor*, std::exception_ptr& ep) -> caf::error {
    std::string what = "unknown exception";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& ex) {
      what = ex.what();
    } catch (...) {
    }
    self->state.abort(what);
    return caf::make_error(caf::sec::runtime_error);
  });
  self->set_exit_handler([self](const caf::exit_msg& msg) {
    auto& st = self->state;
    // A child task ended: its outcome came as a message (or it was
    // cancelled: its cancellation can be delivered now).
    if (auto i = st.children.find(msg.source); i != st.children.end()) {
      auto id = i->second;
      st.children.erase(i);
      st.child_gone(id);
      return;
    }
    // A linked child ending normally is no reason to stop; the connection
    // broker reports its end separately.
    if (msg.source == st.conn.address() || !msg.reason || msg.reason == caf::exit_reason::normal)
      return;
    st.stop(0);
  });
  // An error message nobody handles (e.g. a request made through the CAF
  // interop without an error handler) would quit the actor: report instead.
  self->set_error_handler([self](caf::error& err) {
    auto& st = self->state;
    ++agent_core::stats_of(*st.user).errors;
    st.guarded("on_error", [&] {
      st.user->on_error(error_info{"unhandled error message", caf::to_string(err)});
    });
  });
  self->set_down_handler([self](caf::down_msg& dm) {
    auto& st = self->state;
    if (st.down_handler)
      st.guarded("down handler", [&] { st.down_handler(dm); });
  });
  st.sdk_handlers = caf::message_handler{
    [self](connected_atom, uint64_t g, caf::actor c) { self->state.on_connected(g, c); },
    [self](connect_failed_atom, uint64_t g, const std::string& reason) {
      self->state.on_connect_failed(g, reason);
    },
    [self](frames_atom, uint64_t g, const std::vector<char>& bytes) {
      self->state.on_frames(g, bytes);
    },
    [self](disconnected_atom, uint64_t g, const std::string& reason) {
      self->state.on_disconnected(g, reason);
    },
    [self](reconnect_atom, uint64_t g) {
      auto& st = self->state;
      if (st.link.reconnect_due(g))
        st.connect();
    },
    [self](handshake_timeout_atom, uint64_t g) {
      auto& st = self->state;
      if (st.link.handshake_expired(g))
        st.handle_disconnect(
          "handshake_timeout",
          fmt::format("no Welcome within {}", format_duration(st.opts.connect_timeout)));
    },
    [self](watchdog_atom, uint64_t g) {
      auto& st = self->state;
      auto now = agent_core::steady::now();
      auto check = st.link.watchdog(g, now);
      if (check.silent)
        st.handle_disconnect(
          "server_silent",
          fmt::format("nothing received from the server for {} ms", check.silence.count()));
      else if (check.next)
        caf_support::delayed_self_send(
          self, std::chrono::duration_cast<duration>(*check.next - now), watchdog_atom::value, g);
    },
    [self](task_tick_atom, task_id id) { self->state.on_timer(id); },
    [self](job_done_atom, task_id id, const std::string& failure) {
      self->state.on_worker_done(id, failure);
    },
    [self](child_gone_atom, task_id id) {
      // A cancelled child task ran its cleanup and is gone.
      auto& st = self->state;
      std::erase_if(st.children, [id](const auto& kv) { return kv.second == id; });
      st.child_gone(id);
    },
    [self](request_timeout_atom, uint64_t wire_id, int64_t timeout_ms) {
      auto& st = self->state;
      auto i = st.requests.find(wire_id);
      if (i == st.requests.end())
        return;
      auto cell = std::move(i->second.cell);
      st.requests.erase(i);
      st.registry().fail(*cell, error{make_error_code(errc::timeout),
                                      fmt::format("no reply within {} ms", timeout_ms)});
    },
    [self](list_timeout_atom, uint64_t wire_id, int64_t timeout_ms) {
      auto& st = self->state;
      auto i = st.list_requests.find(wire_id);
      if (i == st.list_requests.end())
        return;
      auto cell = std::move(i->second);
      st.list_requests.erase(i);
      st.registry().fail(*cell, error{make_error_code(errc::timeout),
                                      fmt::format("no agent list within {} ms", timeout_ms)});
    },
    [self](post_atom, const closure& c) { self->state.guarded("posted function", c.fn); },
    [self](stop_atom, int code) { self->state.stop(code); },
    [self](stop_now_atom) { self->state.stop_now(); },
    [self](stop_deadline_atom) {
      auto& st = self->state;
      st.stop_deadline_passed = true;
      if (st.awaiting_children)
        st.log->warn("stop deadline reached; child tasks still cleaning up count={}",
                     st.registry().held());
      else
        st.log->warn("stop deadline reached; closing without waiting for the server");
      st.finish();
    },
  };
  // Install the SDK's behavior before setup() runs, so that a become() in
  // setup() (caf_interop.hpp) is not overwritten by a returned behavior.
  self->become(st.sdk_handlers);
  st.start();
  return {};
}

} // namespace

caf::actor spawn_agent(caf::actor_system& sys, agent& a, client_options opts,
                       std::function<void(int)> on_exit) {
  auto& handle = agent_core::handle_of(a);
  if (!handle)
    handle = std::make_shared<agent_handle>();
  std::lock_guard guard{handle->mtx};
  auto actor = sys.spawn(agent_actor, &a, std::move(opts), std::move(on_exit));
  handle->actor = actor;
  return actor;
}

} // namespace detail

// -- caf_interop.hpp ------------------------------------------------------------

namespace interop {

namespace {

detail::agent_core& core_or_throw(agent& a) {
  auto c = a.core();
  if (c == nullptr)
    throw std::logic_error("convoke::interop: the agent is not running");
  return *c;
}

} // namespace

caf::event_based_actor* self(agent& a) {
  return core_or_throw(a).self;
}

caf::actor_system& system(agent& a) {
  return core_or_throw(a).self->system();
}

void become(agent& a, caf::message_handler handlers) {
  auto& c = core_or_throw(a);
  c.self->become(c.sdk_handlers.or_else(handlers));
}

void on_down(agent& a, std::function<void(const caf::down_msg&)> handler) {
  core_or_throw(a).down_handler = std::move(handler);
}

} // namespace interop

// -- agent member functions -----------------------------------------------------

agent::agent(std::string name)
  : requested_name_(std::move(name)), tasks_(std::make_unique<detail::task_registry>()) {}

agent::~agent() = default;

void agent::on_notice(const notice& n) {
  if (n.severity == notice::level::error)
    return; // logged with the refusal (agent_core::handle_notice)
  auto level = n.severity == notice::level::warning ? spdlog::level::warn : spdlog::level::debug;
  logging::get("agent")->log(level,
                             "server notice agent={} code={} text={} client_seq={} message_id={} "
                             "request_id={}",
                             logfmt_value(name()), n.code, logfmt_value(n.text), n.client_seq,
                             n.message_id, n.request_id);
}

void agent::on_error(const error_info& err) {
  logging::get("agent")->error("error in agent code agent={} where={} what={}",
                               logfmt_value(name()), logfmt_value(err.where),
                               logfmt_value(err.what));
}

std::error_code agent::broadcast(std::string_view payload, const send_options& opts) {
  if (!core_)
    return errc::not_connected;
  return core_->send_envelope({}, {}, payload, opts, 0, 0);
}

std::error_code agent::publish(std::string_view route, std::string_view payload,
                               const send_options& opts) {
  if (!core_)
    return errc::not_connected;
  if (route.empty())
    return errc::invalid_argument;
  return core_->send_envelope({}, route, payload, opts, 0, 0);
}

std::error_code agent::send_to(std::string_view recipient, std::string_view payload,
                               const send_options& opts) {
  if (!core_)
    return errc::not_connected;
  if (recipient.empty())
    return errc::invalid_argument;
  return core_->send_envelope(recipient, {}, payload, opts, 0, 0);
}

task<message> agent::request(std::string_view recipient, std::string_view payload, duration timeout,
                             const send_options& opts) {
  auto cell = open_task<message>(task_options{"request"});
  // An immediate failure is delivered later, never inside this call.
  auto fail_now = [&](errc code, std::string text) {
    tasks_->fail_later(*cell, error{make_error_code(code), std::move(text)});
    return task<message>{cell};
  };
  if (!core_)
    return fail_now(errc::not_connected, "the agent is not running");
  if (core_->link.stopping())
    return fail_now(errc::stopped, "the agent is stopping");
  if (recipient.empty())
    return fail_now(errc::invalid_argument, "a request needs a recipient");
  auto& c = *core_;
  // The request id is unguessable (CSPRNG), so that no other agent can answer
  // in the recipient's place; replies must also come from the recipient.
  uint64_t wire_id = 0;
  do
    wire_id = crypto::random_nonzero_u64();
  while (c.requests.count(wire_id) > 0);
  if (auto err = c.send_envelope(recipient, {}, payload, opts, wire_id, 0))
    return fail_now(static_cast<errc>(err.value()), err.message());
  c.requests.emplace(wire_id, detail::agent_core::pending_request{std::string{recipient}, cell});
  cell->on_cancel = [&c, wire_id] { c.requests.erase(wire_id); };
  caf_support::delayed_self_send(c.self, timeout, detail::request_timeout_atom::value, wire_id,
                                 static_cast<int64_t>(timeout.count()));
  return task<message>{std::move(cell)};
}

namespace {

/// Why a request that needs the server's `feature` cannot be sent now, or
/// nullopt if it can.
std::optional<std::pair<errc, std::string>> cannot_ask(detail::agent_core* core,
                                                       const session_info& s,
                                                       std::string_view feature,
                                                       std::string_view what) {
  if (core == nullptr)
    return std::pair{errc::not_connected, std::string{"the agent is not running"}};
  if (core->link.stopping())
    return std::pair{errc::stopped, std::string{"the agent is stopping"}};
  if (!core->link.connected())
    return std::pair{errc::not_connected, std::string{"not connected to a server"}};
  if (!s.has_feature(feature))
    return std::pair{errc::unsupported,
                     fmt::format("server {} {} does not {} (no \"{}\" feature in its Welcome)",
                                 s.server_name, s.server_version, what, feature)};
  return std::nullopt;
}

} // namespace

task<agent_list> agent::list_agents(std::string_view prefix, const list_options& lo) {
  auto cell = open_task<agent_list>(task_options{"list_agents"});
  auto fail_now = [&](errc code, std::string text) {
    tasks_->fail_later(*cell, error{make_error_code(code), std::move(text)});
    return task<agent_list>{cell};
  };
  if (auto why = cannot_ask(core_, session_, "list_agents", "list agents"))
    return fail_now(why->first, std::move(why->second));
  auto& c = *core_;
  uint64_t wire_id = 0;
  do
    wire_id = crypto::random_nonzero_u64();
  while (c.requests.count(wire_id) > 0 || c.list_requests.count(wire_id) > 0);
  v1::Frame f;
  auto& req = *f.mutable_list_agents();
  req.set_request_id(wire_id);
  req.set_prefix(std::string{prefix});
  req.set_after(lo.after);
  req.set_limit(lo.limit);
  if (!c.write(f))
    return fail_now(errc::not_connected, "not connected to a server");
  c.list_requests.emplace(wire_id, cell);
  cell->on_cancel = [&c, wire_id] { c.list_requests.erase(wire_id); };
  auto timeout = std::chrono::duration_cast<duration>(lo.timeout);
  caf_support::delayed_self_send(c.self, timeout, detail::list_timeout_atom::value, wire_id,
                                 static_cast<int64_t>(timeout.count()));
  return task<agent_list>{std::move(cell)};
}

task<void> agent::observe(observe_options oo, std::function<void(const trace::event&)> on_event,
                          std::function<void(uint64_t)> on_missed) {
  auto cell = open_task<void>(task_options{"observe"});
  auto fail_now = [&](errc code, std::string text) {
    tasks_->fail_later(*cell, error{make_error_code(code), std::move(text)});
    return task<void>{cell};
  };
  if (auto why = cannot_ask(core_, session_, "observe", "offer trace observation"))
    return fail_now(why->first, std::move(why->second));
  auto& c = *core_;
  if (c.observing)
    return fail_now(errc::invalid_argument,
                    "this agent observes already; cancel that observe task first");
  if (!on_event)
    return fail_now(errc::invalid_argument, "observe needs an on_event callback");
  auto trace = detail::hex_to_bytes(oo.trace_id);
  if (!oo.trace_id.empty() && trace.empty())
    return fail_now(errc::invalid_argument, fmt::format("observe_options::trace_id '{}' is not hex",
                                                        oo.trace_id.substr(0, 64)));
  uint64_t wire_id = 0;
  do
    wire_id = crypto::random_nonzero_u64();
  while (c.requests.count(wire_id) > 0 || c.list_requests.count(wire_id) > 0);
  v1::Frame f;
  auto& o = *f.mutable_observe();
  o.set_request_id(wire_id);
  for (auto& a : oo.agents)
    o.add_agents(a);
  for (auto& r : oo.routes)
    o.add_routes(r);
  o.set_trace_id(std::move(trace));
  for (auto& e : oo.events)
    o.add_events(e);
  o.set_payload_bytes(oo.payload_bytes);
  if (!c.write(f))
    return fail_now(errc::not_connected, "not connected to a server");
  c.observing.emplace();
  c.observing->request_id = wire_id;
  c.observing->cell = cell;
  c.observing->on_event = std::move(on_event);
  c.observing->on_missed = std::move(on_missed);
  c.observing->on_started = std::move(oo.on_started);
  cell->on_cancel = [&c, wire_id] {
    if (!c.observing || c.observing->request_id != wire_id)
      return;
    c.observing.reset();
    v1::Frame stop;
    stop.mutable_observe()->set_request_id(wire_id);
    stop.mutable_observe()->set_stop(true);
    c.write(stop); // not connected: the observation ended with the session
  };
  return task<void>{std::move(cell)};
}

std::error_code agent::reply(const message& req, std::string_view payload,
                             const send_options& opts) {
  if (!core_)
    return errc::not_connected;
  if (req.request_id == 0 || req.sender.empty())
    return errc::invalid_argument;
  auto so = opts;
  if (so.trace_id.empty())
    so.trace_id = req.trace_id;
  return core_->send_envelope(req.sender, {}, payload, so, 0, req.request_id);
}

void agent::subscribe(const std::string& route) {
  if (!core_) {
    initial_routes_.push_back(route);
    return;
  }
  if (auto checked = proto::check_route_pattern(route); !checked) {
    core_->guarded("subscribe", [&] {
      throw std::invalid_argument("invalid route '" + route + "': " + checked.error().text);
    });
    return;
  }
  if (core_->routes.insert(route).second)
    core_->send_subscription(true, route);
}

void agent::unsubscribe(const std::string& route) {
  if (!core_)
    return;
  core_->erase_route_handler(route);
  if (core_->routes.erase(route) > 0)
    core_->send_subscription(false, route);
}

void agent::on_route(const std::string& route, message_handler handler) {
  if (!core_) {
    initial_handlers_.emplace_back(route, std::move(handler));
    subscribe(route);
    return;
  }
  core_->set_route_handler(route, std::move(handler));
  subscribe(route);
}

task<void> agent::every(duration interval, std::function<void()> fn, task_options opts) {
  auto cell = open_task<void>(opts);
  if (interval.count() <= 0) {
    tasks_->fail_later(*cell, error{make_error_code(errc::invalid_argument),
                                    "a periodic task needs a positive interval"});
    return task<void>{cell};
  }
  start_timer(cell, interval, std::move(fn), true);
  return task<void>{std::move(cell)};
}

task<void> agent::after(duration delay, std::function<void()> fn, task_options opts) {
  auto cell = open_task<void>(opts);
  start_timer(cell, std::max(delay, duration{0}), std::move(fn), false);
  return task<void>{std::move(cell)};
}

void agent::start_timer(std::shared_ptr<detail::task_cell<void>> cell, duration interval,
                        std::function<void()> fn, bool periodic) {
  if (core_) {
    core_->start_timer(std::move(cell), interval, std::move(fn), periodic);
    return;
  }
  if (cell->status != task_status::running)
    return; // the agent has stopped
  waiting_starts_.push_back(
    [cell = std::move(cell), interval, fn = std::move(fn), periodic](detail::agent_core& c) {
      c.start_timer(cell, interval, fn, periodic);
    });
}

void agent::start_worker(std::shared_ptr<detail::task_cell_base> cell, bool blocking,
                         std::function<void(const cancel_token&)> work,
                         std::function<void(detail::child_core*)> child,
                         std::function<void(const std::string& failure)> finish) {
  if (core_) {
    core_->start_worker(cell, blocking, std::move(work), std::move(child), std::move(finish));
    return;
  }
  if (cell->status != task_status::running)
    return; // the agent has stopped
  waiting_starts_.push_back([cell = std::move(cell), blocking, work = std::move(work),
                             child = std::move(child),
                             finish = std::move(finish)](detail::agent_core& c) mutable {
    c.start_worker(cell, blocking, std::move(work), std::move(child), std::move(finish));
  });
}

bool agent::in_on_connect() const noexcept {
  return core_ != nullptr && core_->in_on_connect;
}

void agent::stop(int exit_code) {
  if (core_) {
    core_->stop(exit_code);
    return;
  }
  if (handle_)
    handle_->stop(exit_code);
}

bool agent::post(std::function<void()> fn) {
  return handle_ && handle_->post(std::move(fn));
}

const std::string& agent::name() const noexcept {
  return session_.agent_name.empty() ? requested_name_ : session_.agent_name;
}

bool agent::connected() const noexcept {
  return core_ != nullptr && core_->link.connected();
}

const session_info& agent::session() const noexcept {
  return session_;
}

std::vector<std::string> agent::routes() const {
  if (!core_)
    return initial_routes_;
  return {core_->routes.begin(), core_->routes.end()};
}

agent_stats agent::stats() const noexcept {
  return stats_;
}

spdlog::logger& agent::log() {
  return *logging::get("agent");
}

} // namespace convoke
