#include "convoke/server/server.hpp"

#include <malloc.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <optional>
#include <thread>

#include "acceptor.hpp"
#include "admin.hpp"
#include "caf/openssl/manager.hpp"
#include "caf/openssl/publish.hpp"
#include "convoke/common/logging.hpp"
#include "convoke/common/net.hpp"
#include "convoke/common/secure_random.hpp"
#include "convoke/common/signals.hpp"
#include "convoke/common/text.hpp"
#include "convoke/common/units.hpp"
#include "frozen_file.hpp"
#include "messages.hpp"
#include "service_notify.hpp"

namespace convoke::server {

namespace {

/// Connections the kernel completes before the acceptor takes them (also
/// what waits while accepting backs off at the descriptor limit); Linux
/// caps it at net.core.somaxconn.
constexpr int listen_backlog = 4096;

} // namespace

server_stats server_context::snapshot() const {
  auto get = [](const std::atomic<uint64_t>& x) { return x.load(std::memory_order_relaxed); };
  server_stats s;
  s.connections_total = get(stats.connections_total);
  s.connections_open = get(stats.connections_open);
  s.agents = get(stats.agents);
  s.messages_in = get(stats.messages_in);
  s.bytes_in = get(stats.bytes_in);
  s.bytes_out = get(stats.bytes_out);
  s.deliveries = get(stats.deliveries);
  s.undeliverable = get(stats.undeliverable);
  s.rejected = get(stats.rejected);
  s.dropped = get(stats.dropped);
  s.slow_consumers = get(stats.slow_consumers);
  s.protocol_errors = get(stats.protocol_errors);
  s.timeouts = get(stats.timeouts);
  s.input_pauses = get(stats.input_pauses);
  s.accept_errors = get(stats.accept_errors);
  s.buffered_bytes = get(stats.buffered_bytes);
  s.budget_exceeded = get(stats.budget_exceeded);
  s.budget_pauses = get(stats.budget_pauses);
  s.handshakes_evicted = get(stats.handshakes_evicted);
  s.released_bytes = get(stats.released_bytes);
  s.auth_failures = get(stats.auth_failures);
  s.auth_throttled = get(stats.auth_throttled);
  s.permission_denied = get(stats.permission_denied);
  s.rate_limited = get(stats.rate_limited);
  s.quarantines = get(stats.quarantines);
  s.quarantine_refused = get(stats.quarantine_refused);
  s.too_many_connections = get(stats.too_many_connections);
  s.principals_evicted = get(principals_evicted);
  s.tls_failures = get(stats.tls_failures);
  s.cluster_sent = get(stats.cluster_sent);
  s.cluster_received = get(stats.cluster_received);
  s.cluster_dropped = get(stats.cluster_dropped);
  if (trace) {
    s.trace_written = trace->written();
    s.trace_dropped = trace->dropped();
  }
  return s;
}

struct server::impl {
  context_ptr ctx = std::make_shared<server_context>();
  /// Copies of the cluster.tls-* files taken at start, which CAF's openssl
  /// module reads for every cluster connection (declared before `sys`,
  /// which uses them until it is gone).
  std::vector<internal::frozen_file> cluster_tls_files;
  std::unique_ptr<caf::actor_system_config> sys_cfg;
  std::unique_ptr<caf::actor_system> sys;
  caf::actor router;
  caf::actor listener;
  std::unique_ptr<acceptor> accept_loop;
  /// The Summoner compatibility listener's (summoner.listen), if any.
  std::unique_ptr<acceptor> summoner_accept;
  std::unique_ptr<admin_server> admin;
  uint16_t port = 0;
  uint16_t summoner_port = 0;
  /// The cluster actor and its port (cluster.name set).
  caf::actor cluster;
  uint16_t cluster_port = 0;
  std::atomic<bool> shutdown_requested{false};
  /// shutdown() and lame_duck() may race from two threads; both stop the
  /// acceptor (joining its thread).
  std::mutex accept_stop;
  bool stopped = false;
  /// alive_atom requests sent (relay_alive).
  uint64_t alive_asked = 0;
};

namespace {

/// The client address other nodes give this node's agents (reconnect_to).
std::string advertised_address(const server_config& cfg, uint16_t port) {
  if (!cfg.cluster_advertise.empty())
    return cfg.cluster_advertise;
  auto host = cfg.host;
  if (host == "0.0.0.0" || host == "::" || host.empty()) {
    char name[256] = {};
    if (::gethostname(name, sizeof name - 1) == 0)
      host = name;
  }
  auto addr = host.find(':') != std::string::npos ? fmt::format("[{}]:{}", host, port)
                                                  : fmt::format("{}:{}", host, port);
  return cfg.tls_enabled() ? "tls://" + addr : addr;
}

/// Joins the cluster (docs/cluster.md): publishes the cluster actor on
/// cluster.listen and tells it and the router who this node is.
expected<uint16_t> start_cluster(caf::actor_system& sys, const context_ptr& ctx_ptr,
                                 const caf::actor& router, uint16_t client_port,
                                 caf::actor& cluster) {
  auto& ctx = *ctx_ptr;
  auto& cfg = ctx.cfg;
  auto hp = parse_host_port(cfg.cluster_listen, "", 0).value_or(host_port{}); // validated
  auto random = crypto::random_u64();
  if (cfg.cluster_node.empty()) {
    char name[256] = {};
    ::gethostname(name, sizeof name - 1);
    ctx.node_name = default_node_name(name, random);
  } else {
    ctx.node_name = cfg.cluster_node;
  }
  auto prefix = pick_id_prefix(random >> 16, {});
  ctx.next_message_id.store(first_message_id(prefix));
  cluster = internal::spawn_cluster(sys, router, ctx_ptr);
  // With cluster.tls-*, CAF's openssl module: its middleman actor opens a
  // TLS acceptor for the same BASP broker (heartbeats and timeouts alike).
  auto port = sys.has_openssl_manager()
                ? caf::openssl::publish(cluster, hp.port, hp.host.c_str(), true)
                : sys.middleman().publish(cluster, hp.port, hp.host.c_str(), true);
  if (!port) {
    caf::anon_send_exit(cluster, caf::exit_reason::user_shutdown);
    return fail(errc::bind_failed, fmt::format("cluster.listen '{}': {}", cfg.cluster_listen,
                                               sys.render(port.error())));
  }
  internal::node_info me;
  me.cluster = cfg.cluster_name;
  me.node = ctx.node_name;
  me.boot = ctx.trace ? std::stoull(ctx.trace->boot(), nullptr, 16) : random;
  me.client_addr = advertised_address(cfg, client_port);
  me.cluster_addr = hp.host.find(':') != std::string::npos ? fmt::format("[{}]:{}", hp.host, *port)
                                                           : fmt::format("{}:{}", hp.host, *port);
  me.id_prefix = prefix;
  ctx.log_server->info("cluster node={} cluster={} listen={} peers={} id_prefix={:02x} tls={}",
                       logfmt_value(me.node), logfmt_value(me.cluster),
                       logfmt_value(me.cluster_addr), logfmt_value(cfg.cluster_peers), prefix,
                       sys.has_openssl_manager() ? "mutual" : "off");
  caf::anon_send(router, me);
  caf::anon_send(cluster, std::move(me));
  return *port;
}

} // namespace

server::server(server_config cfg) : impl_(std::make_unique<impl>()) {
  impl_->ctx->cfg = std::move(cfg);
}

server::~server() {
  if (impl_->sys && !impl_->stopped) {
    shutdown();
    wait();
  }
}

expected<> server::start() {
  auto& d = *impl_;
  auto& ctx = *d.ctx;
  auto& cfg = ctx.cfg;
  if (d.sys)
    return fail(errc::already_started, "server already started");
  if (auto errs = validate(cfg); !errs.empty())
    return fail(errs.front().code, "invalid configuration: " + errs.front().text);
  ctx.publish(std::make_shared<const server_config>(cfg));
  ctx.principals.set_max_idle(cfg.max_idle_principals);
  ctx.log_server = logging::get("server");
  ctx.log_session = logging::get("session");
  ctx.log_router = logging::get("router");
  ctx.throttle = login_throttle{cfg.failed_login_limit, cfg.failed_login_window};
  if (!cfg.credentials.empty()) {
    auto store = credential_store::load(cfg.credentials);
    if (!store) {
      std::string text;
      for (auto& e : store.error())
        text += (text.empty() ? "" : "; ") + e.text;
      return fail(errc::invalid_config, std::move(text));
    }
    ctx.log_server->info("credentials loaded file={} identities={}", logfmt_value(cfg.credentials),
                         (*store)->size());
    if (!cfg.summoner_listen.empty() && !(*store)->find(cfg.summoner_identity))
      return fail(errc::invalid_config,
                  fmt::format("summoner.identity '{}' is not an identity of {}",
                              cfg.summoner_identity, cfg.credentials));
    ctx.auth = std::make_unique<authenticator>(std::move(*store));
  }
  tap_limits tap_lim;
  tap_lim.max_subscribers = cfg.trace_max_observers;
  {
    // Always there: without a trace file it records only while an agent
    // observes (the live tap).
    trace_writer::options topts;
    topts.to_file = cfg.trace_enabled;
    topts.file = cfg.trace_file;
    topts.fmt = cfg.trace_format;
    topts.max_file_bytes = cfg.trace_max_file_bytes;
    topts.max_files = cfg.trace_max_files;
    topts.buffer_bytes = cfg.trace_buffer_bytes;
    auto trace = trace_writer::open(topts);
    if (!trace)
      return tl::unexpected{std::move(trace.error())};
    ctx.trace = std::move(*trace);
    ctx.trace->set_file_payload_bytes(cfg.trace_payload_bytes);
    // The live tap: the writer hands it every event while someone observes.
    ctx.tap = std::make_shared<trace_tap>(
      tap_lim, [w = ctx.trace.get()](bool observed) { w->set_observed(observed); });
    ctx.trace->set_consumer(ctx.tap.get());
    ctx.log_server->info("trace boot={} file={}", ctx.trace->boot(),
                         cfg.trace_enabled ? logfmt_value(cfg.trace_file) : std::string{"off"});
  }
  if (cfg.tls_enabled()) {
    auto c = tls::context::server(cfg.tls_settings());
    if (!c)
      return tl::unexpected{std::move(c.error())};
    ctx.set_tls_context(std::move(*c));
    ctx.log_server->info("tls enabled verify_clients={} {}", tls::to_string(cfg.tls_verify_clients),
                         ctx.tls_context()->description());
  }
  d.sys_cfg = std::make_unique<caf::actor_system_config>();
  d.sys_cfg->load<caf::io::middleman>();
  // All server actors are brokers on the multiplexer thread; the scheduler
  // only runs timers' deliveries. "sharing" avoids the work-stealing
  // workers' spinning on small machines (see docs/architecture.md).
  d.sys_cfg->set("scheduler.max-threads", 2);
  d.sys_cfg->set("scheduler.policy", caf::atom("sharing"));
  if (cfg.cluster_enabled()) {
    internal::register_cluster_types(*d.sys_cfg);
    // A silent node (SIGSTOP, a cut link) is found by BASP heartbeats,
    // which are off by default in CAF 0.17.
    d.sys_cfg->set("middleman.heartbeat-interval", caf::timespan{cfg.cluster_heartbeat});
    d.sys_cfg->set("middleman.connection-timeout", caf::timespan{cfg.cluster_timeout});
    if (cfg.cluster_tls_enabled()) {
      // CAF reads the files again for every cluster connection and throws
      // on its I/O thread if it cannot: it gets copies, taken once and
      // checked here (PEM, the key is the certificate's, the CA file holds
      // certificates, the certificate verifies against it).
      for (auto [key, path] : {std::pair{"cluster.tls-cert", &cfg.cluster_tls_cert},
                               std::pair{"cluster.tls-key", &cfg.cluster_tls_key},
                               std::pair{"cluster.tls-ca", &cfg.cluster_tls_ca}}) {
        auto f = internal::frozen_file::copy_of(key, *path);
        if (!f)
          return tl::unexpected{std::move(f.error())};
        d.cluster_tls_files.push_back(std::move(*f));
      }
      auto& files = d.cluster_tls_files;
      auto named = [&](std::string text) { // the operator's paths, not the copies'
        for (auto [copy, path] : {std::pair{&files[0], &cfg.cluster_tls_cert},
                                  std::pair{&files[1], &cfg.cluster_tls_key},
                                  std::pair{&files[2], &cfg.cluster_tls_ca}}) {
          auto from = "'" + copy->path() + "'", to = "'" + *path + "'";
          for (auto at = text.find(from); at != std::string::npos;
               at = text.find(from, at + to.size()))
            text.replace(at, from.size(), to);
        }
        return fail(errc::invalid_value, "[cluster]: " + text);
      };
      auto tls_check = tls::context::server(
        {files[0].path(), files[1].path(), files[2].path(), tls::client_verification::require});
      if (!tls_check)
        return named(tls_check.error().text);
      if (auto ok = tls::verify_as_peer(files[0].path(), files[2].path()); !ok)
        return named(ok.error().text);
      // Setting any of these turns on CAF's "authentication": both ends
      // present a certificate and require the other's to chain to the CA
      // (SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT).
      d.sys_cfg->openssl_certificate = d.cluster_tls_files[0].path();
      d.sys_cfg->openssl_key = d.cluster_tls_files[1].path();
      d.sys_cfg->openssl_cafile = d.cluster_tls_files[2].path();
      d.sys_cfg->load<caf::openssl::manager>();
      ctx.log_server->info("cluster tls enabled verify=require ca={} {}",
                           logfmt_value(cfg.cluster_tls_ca), (*tls_check)->description());
    }
  }
  d.sys = std::make_unique<caf::actor_system>(*d.sys_cfg);
  auto ls = net::tcp_listen(cfg.host, cfg.port, listen_backlog, cfg.listen_reuse_port);
  if (!ls) {
    d.sys.reset();
    // The text keeps the system's reason ("Address already in use").
    auto code = ls.error().code.category() == net::resolver_category() ? errc::resolve_failed
                                                                       : errc::bind_failed;
    return fail(code, std::move(ls.error().text));
  }
  d.port = ls->port;
  std::optional<net::listening_socket> summoner_ls;
  if (!cfg.summoner_listen.empty()) {
    auto hp = parse_host_port(cfg.summoner_listen, "", 0).value_or(host_port{}); // validated
    auto sl = net::tcp_listen(hp.host, hp.port, listen_backlog);
    if (!sl) {
      ::close(ls->fd);
      d.sys.reset();
      return fail(errc::bind_failed, "summoner.listen: " + sl.error().text);
    }
    summoner_ls = *sl;
    d.summoner_port = sl->port;
  }
  if (cfg.admin_enabled) {
    auto a = admin_server::start(d.ctx, d.port);
    if (!a) {
      ::close(ls->fd);
      if (summoner_ls)
        ::close(summoner_ls->fd);
      d.sys.reset();
      return tl::unexpected{std::move(a.error())};
    }
    d.admin = std::move(*a);
  }
  d.router = internal::spawn_router(*d.sys, d.ctx);
  d.listener = internal::spawn_listener(*d.sys, d.router, d.ctx);
  if (cfg.cluster_enabled()) {
    auto cport = start_cluster(*d.sys, d.ctx, d.router, d.port, d.cluster);
    if (!cport) {
      ::close(ls->fd);
      if (summoner_ls)
        ::close(summoner_ls->fd);
      caf::anon_send_exit(d.router, caf::exit_reason::user_shutdown);
      caf::anon_send_exit(d.listener, caf::exit_reason::user_shutdown);
      d.admin.reset();
      d.sys.reset();
      return tl::unexpected{std::move(cport.error())};
    }
    d.cluster_port = *cport;
  }
  d.accept_loop = std::make_unique<acceptor>(ls->fd, ctx.log_server, ctx.stats.accept_errors);
  d.accept_loop->start([listener = d.listener](int fd) {
    caf::anon_send(listener, internal::accepted_atom::value, fd);
  });
  if (summoner_ls) {
    d.summoner_accept
      = std::make_unique<acceptor>(summoner_ls->fd, ctx.log_server, ctx.stats.accept_errors);
    d.summoner_accept->start([listener = d.listener](int fd) {
      caf::anon_send(listener, internal::summoner_accepted_atom::value, fd);
    });
  }
  // Creating the system and spawning park a reference to CAF's logger in
  // this thread's TLS, and ~actor_system waits for the logger to die: stopping
  // the server from another thread would hang. Drop it so any thread may.
  caf::logger::set_current_actor_system(nullptr);
  ctx.log_server->info("listening name={} host={} port={} version={}", logfmt_value(cfg.name),
                       cfg.host, d.port, CONVOKE_VERSION);
  if (d.summoner_accept)
    ctx.log_server->info("summoner listening host={} port={} route={} (docs/summoner.md)",
                         parse_host_port(cfg.summoner_listen, "", 0)->host, d.summoner_port,
                         logfmt_value(cfg.summoner_route));
  if (d.admin)
    ctx.log_server->info("admin listening url={}://{}:{}/ endpoints=/healthz,/readyz,/varz,"
                         "/connz,/routez,/metrics,/trace,/tracez",
                         cfg.admin_tls ? "https" : "http", cfg.admin_host, d.admin->port());
  return {};
}

uint16_t server::port() const noexcept {
  return impl_->port;
}

uint16_t server::summoner_port() const noexcept {
  return impl_->summoner_port;
}

uint16_t server::cluster_port() const noexcept {
  return impl_->cluster_port;
}

uint16_t server::admin_port() const noexcept {
  return impl_->admin ? impl_->admin->port() : 0;
}

void server::shutdown() {
  auto& d = *impl_;
  if (!d.sys || d.shutdown_requested.exchange(true))
    return;
  // Sessions must be closed by this time, so that the whole drain (including
  // flushing traces and the final log line) fits in timeouts.drain.
  auto drain = d.ctx->cfg.drain_timeout;
  auto margin = std::min<std::chrono::milliseconds>(drain / 5, std::chrono::milliseconds{500});
  auto deadline = std::chrono::steady_clock::now() + drain - margin;
  d.ctx->close_deadline_ns.store(deadline.time_since_epoch().count(), std::memory_order_relaxed);
  d.ctx->draining.store(true, std::memory_order_relaxed); // /readyz: 503
  {
    std::lock_guard lock{d.accept_stop};
    if (d.accept_loop)
      d.accept_loop->stop(); // no new connections from here on
    if (d.summoner_accept)
      d.summoner_accept->stop();
  }
  caf::anon_send(d.listener, internal::drain_atom::value);
  caf::anon_send(d.router, internal::drain_atom::value);
}

void server::lame_duck() {
  auto& d = *impl_;
  auto& ctx = *d.ctx;
  if (d.shutdown_requested.load())
    return;
  // Under the lock: wait() may be ending the server on another thread (the
  // acceptor is null from then on).
  std::lock_guard lock{d.accept_stop};
  if (!d.accept_loop || ctx.lame_duck.exchange(true))
    return;
  ctx.draining.store(true, std::memory_order_relaxed); // /readyz: 503
  d.accept_loop->stop(); // the listening socket is closed: connects are refused
  if (d.summoner_accept)
    d.summoner_accept->stop();
  ctx.log_server->info("lame duck: stopped accepting; closing agents after grace={} "
                       "within duration={}",
                       format_duration(ctx.cfg.lame_duck_grace),
                       format_duration(ctx.cfg.lame_duck_duration));
  caf::anon_send(d.router, internal::lame_duck_atom::value, d.listener);
}

bool server::draining() const noexcept {
  return impl_->ctx->draining.load(std::memory_order_relaxed);
}

bool server::lame_duck_finished() const noexcept {
  return impl_->ctx->lame_duck_done.load();
}

void server::wait() {
  auto& d = *impl_;
  if (!d.sys || d.stopped)
    return;
  d.sys->await_all_actors_done();
  // The admin listener reads the server's state until here (probes see
  // "draining" during the drain).
  d.admin.reset();
  // Its worker may be answering a login: let it finish while the actor
  // system it sends the answer to still exists.
  d.ctx->auth.reset();
  {
    std::lock_guard lock{d.accept_stop};
    d.accept_loop.reset();
    d.summoner_accept.reset();
    d.stopped = true;
    d.router = nullptr;
    d.listener = nullptr;
    d.cluster = nullptr;
  }
  if (d.ctx->trace)
    d.ctx->trace->stop();
  auto s = d.ctx->snapshot();
  d.ctx->log_server->info(
    "stopped messages_in={} deliveries={} undeliverable={} rejected={} dropped={} "
    "slow_consumers={} "
    "protocol_errors={} timeouts={} accept_errors={} handshakes_evicted={} budget_exceeded={} "
    "budget_pauses={} auth_failures={} auth_throttled={} permission_denied={} rate_limited={} "
    "quarantines={} quarantine_refused={} too_many_connections={} principals_evicted={} "
    "tls_failures={} trace_written={} trace_dropped={}",
    s.messages_in, s.deliveries, s.undeliverable, s.rejected, s.dropped, s.slow_consumers,
    s.protocol_errors, s.timeouts, s.accept_errors, s.handshakes_evicted, s.budget_exceeded,
    s.budget_pauses, s.auth_failures, s.auth_throttled, s.permission_denied, s.rate_limited,
    s.quarantines, s.quarantine_refused, s.too_many_connections, s.principals_evicted,
    s.tls_failures, s.trace_written, s.trace_dropped);
  d.sys.reset();
  d.sys_cfg.reset();
}

void server::flush_traces(std::chrono::milliseconds limit) {
  if (auto& t = impl_->ctx->trace)
    t->flush(limit);
}

expected<std::string> server::reload_tls() {
  auto& ctx = *impl_->ctx;
  auto live = ctx.config(); // a reload may have named other files
  if (!live->tls_enabled())
    return fail(errc::invalid_config, "TLS is off (tls.cert is not set): nothing to reload");
  auto c = tls::context::server(live->tls_settings());
  if (!c)
    return tl::unexpected{std::move(c.error())};
  auto what = (*c)->description();
  ctx.set_tls_context(std::move(*c));
  return what;
}

expected<size_t> server::reload_credentials() {
  auto& ctx = *impl_->ctx;
  if (!ctx.auth)
    return fail(errc::invalid_config, "auth.credentials is not set: nothing to reload");
  auto store = credential_store::load(ctx.cfg.credentials);
  if (!store) {
    std::string text;
    for (auto& e : store.error())
      text += (text.empty() ? "" : "; ") + e.text;
    return fail(errc::invalid_config, std::move(text));
  }
  auto n = (*store)->size();
  ctx.auth->replace(std::move(*store));
  return n;
}

server_stats server::stats() const {
  return impl_->ctx->snapshot();
}

server::reload_result server::reload_config(const server_config& read) {
  auto& ctx = *impl_->ctx;
  auto plan = plan_reload(*ctx.config(), read);
  if (plan.errors.empty()) {
    if (ctx.trace)
      ctx.trace->set_file_payload_bytes(plan.next.trace_payload_bytes);
    ctx.publish(std::make_shared<const server_config>(std::move(plan.next)));
  }
  return {std::move(plan.changes), std::move(plan.errors)};
}

bool server::reopen_trace() {
  auto& t = impl_->ctx->trace;
  if (!t || !impl_->ctx->cfg.trace_enabled)
    return false;
  t->reopen();
  return true;
}

bool server::relay_alive() {
  auto& d = *impl_;
  if (!d.router)
    return false;
  bool answered = d.ctx->relay_answers.load(std::memory_order_relaxed) >= d.alive_asked;
  if (answered) {
    ++d.alive_asked;
    caf::anon_send(d.router, internal::alive_atom::value);
  }
  return answered;
}

const server_config& server::config() const noexcept {
  return impl_->ctx->cfg;
}

std::shared_ptr<const server_config> server::current_config() const {
  return impl_->ctx->config();
}

namespace {

/// Gives memory back to the operating system after a burst: glibc keeps
/// freed memory in its free lists (many small blocks of closed sessions, or
/// the large buffers of backlogs that were written out), so RSS stayed at
/// the burst's peak. Trims once the number of connections has fallen below
/// half its peak, or once sessions gave back 32 MiB of large output buffers
/// since the last trim (released_bytes) and then released nothing for a
/// second: the burst is over. Traffic that keeps growing and releasing
/// large buffers (large messages to a reader that keeps falling behind)
/// would only get back what it needs again, so it is not trimmed while it
/// lasts. Runs on the main thread (once a second), never on the relay
/// thread; malloc_trim takes a few milliseconds.
class memory_returner {
public:
  void check(uint64_t connections, uint64_t released_bytes) {
    peak_connections_ = std::max(peak_connections_, connections);
    bool fewer_connections = peak_connections_ >= 256 && connections <= peak_connections_ / 2;
    bool settled = released_bytes == released_last_check_;
    released_last_check_ = released_bytes;
    bool released = released_bytes - released_at_trim_ >= 32 * 1024 * 1024 && settled;
    if (!fewer_connections && !released)
      return;
    malloc_trim(0);
    peak_connections_ = connections;
    released_at_trim_ = released_bytes;
  }

private:
  uint64_t peak_connections_ = 0;
  uint64_t released_at_trim_ = 0;
  uint64_t released_last_check_ = 0;
};

bool write_port_file(const std::string& path, uint16_t port) {
  auto tmp = path + ".tmp";
  {
    std::ofstream out{tmp, std::ios::trunc};
    if (!(out << port << "\n"))
      return false;
  }
  return std::rename(tmp.c_str(), path.c_str()) == 0;
}

/// Logs every problem of a reload that was refused.
void log_reload_refused(const std::shared_ptr<spdlog::logger>& log,
                        const std::vector<error>& problems) {
  log->error("config reload failed, keeping the running configuration problems={}",
             problems.size());
  for (auto& e : problems)
    log->error("config reload problem reason={}", logfmt_value(e.message()));
}

/// The configuration part of SIGHUP: read the same sources again, apply
/// what can change, log each change and what needs a restart.
void reload_configuration(server& srv, const std::vector<std::string>& args,
                          const std::shared_ptr<spdlog::logger>& log) {
  server_config read;
  if (auto errs = reread_config(args, read); !errs.empty()) {
    log_reload_refused(log, errs);
    return;
  }
  auto before = srv.current_config();
  auto r = srv.reload_config(read);
  if (!r.errors.empty()) {
    log_reload_refused(log, r.errors);
    return;
  }
  std::string restart;
  size_t applied = 0;
  for (auto& c : r.changes) {
    if (!c.applied) {
      restart += (restart.empty() ? "" : ",") + c.key;
      continue;
    }
    ++applied;
    // The values are TOML literals (strings quoted as in logfmt); the
    // token is never shown.
    log->info("config reloaded key={} old={} new={}", c.key, c.old_value, c.new_value);
  }
  if (!restart.empty())
    log->warn("config changed but needs a restart; running values kept keys={}", restart);
  log->info("config reload done changed={} applied={} need_restart={}", r.changes.size(), applied,
            r.changes.size() - applied);
  // Logging last: the lines above still obey the old level.
  auto now = srv.current_config();
  if (now->log_format != before->log_format)
    logging::set_format(now->log_format);
  if (now->log_level != before->log_level)
    if (auto ok = logging::set_level(now->log_level); !ok) // validated: cannot fail
      log->error("cannot set log level reason={}", logfmt_value(ok.error().message()));
}

/// SIGHUP: reloads what can change while running: the configuration (with
/// `args`), then the TLS and credentials files. Whatever is invalid keeps
/// its running state.
void on_reload(server& srv, const std::vector<std::string>& args,
               const std::shared_ptr<spdlog::logger>& log) {
  service::reloading();
  log->info("received SIGHUP; reloading");
  if (!args.empty())
    reload_configuration(srv, args, log);
  auto live = srv.current_config();
  // New TLS files for new connections; existing ones keep theirs.
  if (!live->tls_enabled())
    log->info("received SIGHUP; nothing to reload for TLS (TLS is off)");
  else if (auto r = srv.reload_tls(); r)
    log->info("received SIGHUP; tls reloaded for new connections {}", *r);
  else
    log->error("received SIGHUP; tls reload failed, keeping the previous certificate "
               "reason={}",
               logfmt_value(r.error().message()));
  // The identities too: new logins use them, connected agents keep
  // the rights they logged in with.
  if (!live->credentials.empty()) {
    if (auto n = srv.reload_credentials(); n)
      log->info("received SIGHUP; credentials reloaded for new logins file={} identities={}",
                logfmt_value(live->credentials), *n);
    else
      log->error("received SIGHUP; credentials reload failed, keeping the previous "
                 "identities reason={}",
                 logfmt_value(n.error().message()));
  }
  service::ready(fmt::format("listening on {}:{}; reloaded", live->host, srv.port()));
}

/// SIGUSR1: reopens the log and trace files by their paths (after
/// logrotate renamed them).
void on_reopen(server& srv, const std::shared_ptr<spdlog::logger>& log) {
  log->info("received SIGUSR1; reopening the log and trace files");
  if (auto r = logging::reopen(); !r)
    log->error("cannot reopen the log file, still writing to the old one reason={}",
               logfmt_value(r.error().message()));
  else if (*r)
    log->info("log file reopened file={}", logfmt_value(srv.config().log_file));
  // The trace writer reopens on its own thread, between two batches, and
  // logs the outcome.
  if (!srv.reopen_trace())
    log->info("tracing is off; no trace file to reopen");
}

/// SIGUSR2: lame-duck mode (see server::lame_duck()).
void on_lame_duck(server& srv, const std::shared_ptr<spdlog::logger>& log) {
  if (srv.draining()) {
    log->info("received SIGUSR2; already {}", srv.lame_duck_finished() ? "stopping" : "draining");
    return;
  }
  log->info("received SIGUSR2; entering lame-duck mode");
  srv.lame_duck();
}

} // namespace

int run(server_config cfg, std::vector<std::string> args) {
  block_termination_signals(/*with_reload=*/true);
  if (auto ok = logging::configure({cfg.log_level, cfg.log_format, cfg.log_file}); !ok) {
    std::fprintf(stderr, "convoke-server: %s\n", ok.error().message().c_str());
    return 78;
  }
  auto log = logging::get("server");
  auto drain = cfg.drain_timeout;
  auto port_file = cfg.port_file;
  auto admin_port_file = cfg.admin_enabled ? cfg.admin_port_file : std::string{};
  auto summoner_port_file = cfg.summoner_listen.empty() ? std::string{} : cfg.summoner_port_file;
  auto cluster_port_file = cfg.cluster_enabled() ? cfg.cluster_port_file : std::string{};
  server srv{std::move(cfg)};
  if (auto ok = srv.start(); !ok) {
    auto& code = ok.error().code;
    log->critical("cannot start reason={} code={}", logfmt_value(ok.error().message()),
                  code.category() == error_category() ? to_string(static_cast<errc>(code.value()))
                                                      : code.category().name());
    return 1;
  }
  // The admin port first: a port file's presence tells scripts the server
  // is up, so everything it serves must be up by then.
  if (!admin_port_file.empty() && srv.admin_port() != 0
      && !write_port_file(admin_port_file, srv.admin_port()))
    log->error("cannot write port file path={}", logfmt_value(admin_port_file));
  if (!summoner_port_file.empty() && !write_port_file(summoner_port_file, srv.summoner_port()))
    log->error("cannot write port file path={}", logfmt_value(summoner_port_file));
  if (!cluster_port_file.empty() && !write_port_file(cluster_port_file, srv.cluster_port()))
    log->error("cannot write port file path={}", logfmt_value(cluster_port_file));
  if (!port_file.empty() && !write_port_file(port_file, srv.port()))
    log->error("cannot write port file path={}", logfmt_value(port_file));
  service::ready(fmt::format("listening on {}:{}", srv.config().host, srv.port()));
  // systemd's watchdog (WatchdogSec=): a ping every half interval, sent
  // only while the relay thread answers (a stuck relay gets restarted).
  auto watchdog = service::watchdog_interval();
  auto ping_every = std::chrono::milliseconds::max();
  if (watchdog) {
    ping_every = std::max(std::chrono::milliseconds{1},
                          std::chrono::duration_cast<std::chrono::milliseconds>(*watchdog / 2));
    log->info("systemd watchdog on interval={} ping_every={}",
              format_duration(std::chrono::duration_cast<std::chrono::milliseconds>(*watchdog)),
              format_duration(ping_every));
  }
  auto next_ping = std::chrono::steady_clock::now();
  auto ping_if_due = [&](bool need_relay) {
    if (!watchdog || std::chrono::steady_clock::now() < next_ping)
      return;
    next_ping = std::chrono::steady_clock::now() + ping_every;
    if (!need_relay || srv.relay_alive())
      service::watchdog_ping();
    else
      log->warn("relay thread did not answer the watchdog; not pinging systemd");
  };
  if (auto e = service::last_error(); !e.empty())
    log->warn("cannot notify the service manager reason={}", logfmt_value(e));
  int sig = 0;
  memory_returner returner;
  // Lame duck: the server stops on its own once every agent is gone; this
  // deadline is a backstop (each close is bounded by timeouts.drain).
  std::optional<std::chrono::steady_clock::time_point> lame_duck_deadline;
  auto lame_duck_limit = srv.config().lame_duck_duration + drain;
  while (sig == 0) {
    ping_if_due(true);
    if (lame_duck_deadline) {
      if (srv.lame_duck_finished())
        break;
      if (std::chrono::steady_clock::now() > *lame_duck_deadline) {
        log->warn("lame duck did not finish within lame-duck.duration + timeouts.drain; "
                  "draining");
        break;
      }
    }
    auto wait = lame_duck_deadline ? std::chrono::milliseconds{50} : std::chrono::seconds{1};
    sig = wait_termination_signal(std::min<std::chrono::milliseconds>(wait, ping_every),
                                  /*with_reload=*/true);
    if (sig == SIGHUP) {
      sig = 0;
      on_reload(srv, args, log);
    } else if (sig == SIGUSR1) {
      sig = 0;
      on_reopen(srv, log);
    } else if (sig == SIGUSR2) {
      sig = 0;
      on_lame_duck(srv, log);
      if (!lame_duck_deadline) {
        lame_duck_deadline = std::chrono::steady_clock::now() + lame_duck_limit;
        // Lame duck ends in the exit: systemd may count it as stopping.
        service::stopping("lame duck: closing the agents one by one");
      }
    }
    auto now = srv.stats();
    returner.check(now.connections_open, now.released_bytes);
    // A log file is written through a buffer (flushed at once only from
    // WARNING up): lines reach it within a second.
    log->flush();
  }
  if (sig != 0)
    log->info("received {}; draining drain_timeout={}", signal_name(sig), format_duration(drain));
  if (!lame_duck_deadline)
    service::stopping(fmt::format("draining after {}", signal_name(sig)));
  srv.shutdown();
  std::atomic<bool> done{false};
  std::thread waiter{[&] {
    srv.wait();
    done = true;
  }};
  auto deadline = std::chrono::steady_clock::now() + drain + std::chrono::seconds{2};
  while (!done) {
    // The drain is bounded (below), so the watchdog is fed without asking
    // the relay, which is stopping.
    ping_if_due(false);
    // A second Ctrl-C (SIGINT) means "now"; a SIGTERM during the drain (a
    // supervisor repeating itself) changes nothing, the drain is bounded.
    if (auto again = wait_termination_signal(std::chrono::milliseconds{50}, true);
        again == SIGINT) {
      log->warn("received {} again; exiting without waiting", signal_name(again));
      srv.flush_traces(std::chrono::milliseconds{500});
      log->flush();
      std::_Exit(130);
    } else if (again != 0) {
      log->info("received {} while draining; still draining", signal_name(again));
    }
    if (std::chrono::steady_clock::now() > deadline) {
      // A backstop for bugs: sessions are bounded by timeouts.drain.
      log->critical("drain did not finish in time; exiting");
      srv.flush_traces(std::chrono::seconds{1});
      log->flush();
      std::_Exit(1);
    }
  }
  waiter.join();
  if (!port_file.empty())
    std::remove(port_file.c_str());
  if (!admin_port_file.empty())
    std::remove(admin_port_file.c_str());
  if (!summoner_port_file.empty())
    std::remove(summoner_port_file.c_str());
  log->flush();
  return 0;
}

} // namespace convoke::server
