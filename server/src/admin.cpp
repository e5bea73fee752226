#include "admin.hpp"

#include <sodium.h>
#include <strings.h>
#include <sys/socket.h>

#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

#include <httplib.h>

#include "admin_views.hpp"
#include "convoke/common/net.hpp"
#include "convoke/common/secure_random.hpp"
#include "convoke/common/text.hpp"
#include "convoke/proto/codec.hpp"
#include "http_front.hpp"
#include "trace_recent.hpp"
#include "trace_tap.hpp"
#include "web_assets.hpp"

namespace convoke::server {

namespace {

/// httplib's request handling without its connection handling: the
/// connections are http_front's (deadlines per request, see http_front.hpp).
class dispatcher final : public httplib::Server {
public:
  void serve(httplib::Stream& s) {
    bool closed = false;
    process_request(s, /*close_connection=*/true, closed, nullptr);
  }
};

void send_json(httplib::Response& res, int status, const nlohmann::json& body) {
  res.status = status;
  // Names and routes are UTF-8 by the protocol's rules; should anything
  // else slip through, it is replaced (U+FFFD) rather than failing the
  // request (nlohmann's dump() throws on invalid UTF-8 by default).
  res.set_content(body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n",
                  "application/json");
}

void send_error(httplib::Response& res, int status, const std::string& text) {
  send_json(res, status, {{"error", text}});
}

std::multimap<std::string, std::string> params_of(const httplib::Request& req) {
  std::multimap<std::string, std::string> out;
  for (auto& [k, v] : req.params)
    out.emplace(k, v);
  return out;
}

/// The web view's ring as an observer of the live tap. A batch goes into
/// the ring at once (a short lock), so it is always ready for the next.
class ring_subscriber final : public tap_subscriber {
public:
  explicit ring_subscriber(std::shared_ptr<recent_events> ring) : ring_(std::move(ring)) {}
  bool ready() override {
    return true;
  }
  void deliver(std::vector<trace::event>&& batch, uint64_t missed) override {
    ring_->add(std::move(batch), missed);
  }

private:
  std::shared_ptr<recent_events> ring_;
};

} // namespace

struct admin_server::impl {
  context_ptr ctx;
  uint16_t relay_port = 0;
  uint16_t port = 0;
  std::chrono::system_clock::time_point started = std::chrono::system_clock::now();
  std::unique_ptr<dispatcher> http;
  std::unique_ptr<http_front> front;

  // Rates: the sampler thread takes the totals once a second.
  std::thread sampler;
  std::mutex sample_mutex;
  std::condition_variable sample_wake;
  bool stopping = false;
  admin::rates last_rates;

  // The web view: the recent trace events, subscribed while /tracez is asked.
  std::unique_ptr<recent_feed> feed;

  // Failed Basic-auth logins by address (the relay's throttle is its own).
  std::mutex throttle_mutex;
  login_throttle throttle{10, std::chrono::seconds{60}};

  admin::server_facts facts() const {
    auto& cfg = ctx->cfg;
    return {cfg.name,
            CONVOKE_VERSION,
            proto::protocol_version,
            cfg.host,
            relay_port,
            port,
            started,
            ctx->draining.load(std::memory_order_relaxed),
            cfg.cluster_enabled() ? std::optional{ctx->cluster_view()} : std::nullopt};
  }

  void sample_loop() {
    auto prev = ctx->snapshot();
    auto prev_at = std::chrono::steady_clock::now();
    std::unique_lock lock{sample_mutex};
    while (!stopping) {
      sample_wake.wait_for(lock, std::chrono::seconds{1}, [&] { return stopping; });
      if (stopping)
        return;
      auto now = ctx->snapshot();
      auto at = std::chrono::steady_clock::now();
      double dt = std::chrono::duration<double>(at - prev_at).count();
      if (dt <= 0)
        continue;
      auto per_second
        = [&](uint64_t a, uint64_t b) { return b >= a ? static_cast<double>(b - a) / dt : 0.0; };
      last_rates = {
        per_second(prev.messages_in, now.messages_in), per_second(prev.deliveries, now.deliveries),
        per_second(prev.bytes_in, now.bytes_in), per_second(prev.bytes_out, now.bytes_out)};
      prev = now;
      prev_at = at;
      lock.unlock();
      feed->expire(std::chrono::steady_clock::now());
      lock.lock();
    }
  }

  /// Decides whether `req` may see the admin data; answers it if not.
  bool authorized(const httplib::Request& req, httplib::Response& res) {
    // The configuration in force: a reload (SIGHUP) may have rotated the
    // shared token, and the old one must stop working here too.
    auto live = ctx->config();
    auto& cfg = *live;
    bool with_credentials = ctx->auth != nullptr;
    if (!with_credentials && cfg.token.empty())
      return true; // no authentication configured (loopback, or --allow-anonymous)
    auto now = login_throttle::clock::now();
    {
      std::lock_guard lock{throttle_mutex};
      if (auto wait = throttle.blocked_for(req.remote_addr, now); wait.count() > 0) {
        res.set_header("Retry-After", std::to_string((wait.count() + 999) / 1000));
        send_error(res, 429, "too many failed logins from this address; try again later");
        return false;
      }
    }
    // A request without credentials is the usual first step of a client
    // (the 401 asks for them): only wrong credentials count as failures.
    auto challenge = [&](const std::string& text, bool failed = true) {
      if (failed) {
        std::lock_guard lock{throttle_mutex};
        throttle.failed(req.remote_addr, now);
      }
      res.set_header("WWW-Authenticate", "Basic realm=\"convoke\", charset=\"UTF-8\"");
      send_error(res, 401, text);
      return false;
    };
    auto header = req.get_header_value("Authorization");
    constexpr std::string_view basic = "Basic ";
    // The scheme is case-insensitive (RFC 7235 2.1).
    if (header.size() <= basic.size()
        || ::strncasecmp(header.c_str(), basic.data(), basic.size()) != 0)
      return challenge("authentication required: HTTP Basic with an identity and its token", false);
    auto encoded = header.substr(basic.size());
    std::string decoded(encoded.size(), '\0');
    size_t len = 0;
    if (encoded.size() > 4096
        || sodium_base642bin(reinterpret_cast<unsigned char*>(decoded.data()), decoded.size(),
                             encoded.data(), encoded.size(), nullptr, &len, nullptr,
                             sodium_base64_VARIANT_ORIGINAL)
             != 0)
      return challenge("the Authorization header is not valid Base64");
    decoded.resize(len);
    auto colon = decoded.find(':');
    if (colon == std::string::npos)
      return challenge("the Authorization header has no 'identity:token'");
    auto user = decoded.substr(0, colon);
    auto token = decoded.substr(colon + 1);
    if (!with_credentials) {
      if (!crypto::equal_constant_time(token, cfg.token))
        return challenge("the token is not valid");
      return true;
    }
    auto answer = std::make_shared<std::promise<std::shared_ptr<const identity>>>();
    auto result = answer->get_future();
    bool queued = ctx->auth->submit(user, token, [answer](authenticator::outcome o, auto id) {
      answer->set_value(o == authenticator::outcome::accepted ? std::move(id) : nullptr);
    });
    if (!queued || result.wait_for(std::chrono::seconds{10}) != std::future_status::ready) {
      res.set_header("Retry-After", "1");
      send_error(res, 503, "the server is busy checking logins; try again");
      return false;
    }
    auto id = result.get();
    // A good login takes nothing back from the throttle: failures are
    // counted here only when refused (unlike the relay, which counts them
    // up front and forgives an accepted one), so forgiving would let anyone
    // with one valid token alternate it with guesses for ever.
    if (!id)
      return challenge("the identity or its token is not valid");
    if (!id->rights.admin) {
      send_error(res, 403, "identity '" + user + "' does not have the admin right");
      return false;
    }
    return true;
  }

  /// The web view's ring for a /tracez request (subscribing it if needed),
  /// or null when the tap refuses it (answered 503).
  std::shared_ptr<recent_events> recent_ring(httplib::Response& res) {
    res.set_header("Cache-Control", "no-store");
    auto ring = feed->touch(std::chrono::steady_clock::now());
    if (!ring) {
      res.set_header("Retry-After", "5");
      send_error(res, 503, "cannot observe the trace now: " + ring.error().text);
      return nullptr;
    }
    return *ring;
  }

  void routes() {
    auto& s = *http;
    s.Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
      send_json(res, 200, {{"status", "ok"}});
    });
    s.Get("/readyz", [this](const httplib::Request&, httplib::Response& res) {
      if (ctx->draining.load(std::memory_order_relaxed))
        send_json(res, 503, {{"status", "draining"}});
      else
        send_json(res, 200, {{"status", "ready"}});
    });
    s.Get("/varz", [this](const httplib::Request& req, httplib::Response& res) {
      if (!authorized(req, res))
        return;
      admin::rates r;
      {
        std::lock_guard lock{sample_mutex};
        r = last_rates;
      }
      send_json(res, 200,
                admin::varz(facts(), *ctx->config(), ctx->snapshot(), r, admin::now_t::read()));
    });
    s.Get("/connz", [this](const httplib::Request& req, httplib::Response& res) {
      if (!authorized(req, res))
        return;
      auto q = admin::parse_connz_query(params_of(req));
      if (!q) {
        send_error(res, 400, q.error().text);
        return;
      }
      send_json(res, 200, admin::connz(ctx->registry.list(), *q, admin::now_t::read()));
    });
    s.Get("/routez", [this](const httplib::Request& req, httplib::Response& res) {
      if (!authorized(req, res))
        return;
      if (!req.params.empty()) {
        send_error(res, 400, "/routez takes no parameters");
        return;
      }
      send_json(res, 200, admin::routez(ctx->registry.list()));
    });
    s.Get("/metrics", [this](const httplib::Request& req, httplib::Response& res) {
      if (!authorized(req, res))
        return;
      res.set_content(
        admin::metrics(facts(), ctx->snapshot(), ctx->registry, admin::read_process_facts()),
        "text/plain; version=0.0.4; charset=utf-8");
    });
    // The web view (docs/observing.md): the page, and what it polls.
    s.Get("/trace", [this](const httplib::Request& req, httplib::Response& res) {
      if (!authorized(req, res))
        return;
      res.set_header("Cache-Control", "no-store");
      // Nothing but the page itself: no script, style or image from anywhere else.
      res.set_header("Content-Security-Policy",
                     "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                     "connect-src 'self'; img-src data:");
      res.set_content(std::string{web::trace_html()}, "text/html; charset=utf-8");
    });
    s.Get("/tracez", [this](const httplib::Request& req, httplib::Response& res) {
      if (!authorized(req, res))
        return;
      auto q = parse_tracez_query(params_of(req));
      if (!q) {
        send_error(res, 400, q.error().text);
        return;
      }
      auto ring = recent_ring(res);
      if (!ring)
        return;
      res.set_content(recent_events::to_json(ring->query(*q)), "application/json");
    });
    s.Get("/tracez/conversation", [this](const httplib::Request& req, httplib::Response& res) {
      if (!authorized(req, res))
        return;
      auto q = parse_tracez_query(params_of(req), /*conversation=*/true);
      if (!q) {
        send_error(res, 400, q.error().text);
        return;
      }
      auto ring = recent_ring(res);
      if (!ring)
        return;
      res.set_content(recent_events::to_json(ring->conversation(*q), to_hex(q->trace_id)),
                      "application/json");
    });
    // Everything else: 404 for an unknown path, 405 for another method on
    // a known one; httplib answers malformed requests with 400 and
    // oversized headers or URIs with 414/400 before any handler runs.
    s.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
      if (res.status == 404 && !res.body.empty())
        return;
      static const std::vector<std::string> known{"/healthz", "/readyz", "/varz",
                                                  "/connz",   "/routez", "/metrics",
                                                  "/trace",   "/tracez", "/tracez/conversation"};
      bool known_path = std::find(known.begin(), known.end(), req.path) != known.end();
      if (res.status == 404 && known_path && req.method != "GET" && req.method != "HEAD") {
        res.set_header("Allow", "GET, HEAD");
        send_error(res, 405, "method " + req.method.substr(0, 16) + " is not allowed here");
        return;
      }
      if (res.status == 404)
        send_error(res, 404,
                   "no such endpoint (try /healthz, /readyz, /varz, /connz, /routez, /metrics, "
                   "/trace, /tracez)");
      else if (res.body.empty())
        send_error(res, res.status,
                   "the request could not be served (HTTP " + std::to_string(res.status) + ")");
    });
    s.set_exception_handler(
      [this](const httplib::Request& req, httplib::Response& res, std::exception_ptr ep) {
        std::string what = "unknown";
        try {
          std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          what = e.what();
        } catch (...) {
        }
        ctx->log_server->error("admin request failed path={} reason={}",
                               logfmt_value(req.path.substr(0, 64)), logfmt_value(what));
        send_error(res, 500, "internal error");
      });
  }
};

expected<std::unique_ptr<admin_server>> admin_server::start(context_ptr ctx, uint16_t relay_port) {
  auto d = std::make_unique<impl>();
  d->ctx = std::move(ctx);
  d->relay_port = relay_port;
  auto& cfg = d->ctx->cfg;
  d->throttle = login_throttle{cfg.failed_login_limit, cfg.failed_login_window};
  tls::context_ptr tls_ctx;
  if (cfg.admin_tls) {
    // The server's certificate; clients of the admin endpoints are not
    // asked for certificates (they log in with Basic auth).
    auto c = tls::context::server({cfg.tls_cert, cfg.tls_key, {}, tls::client_verification::off});
    if (!c)
      return fail(errc::invalid_value, "admin.tls: " + c.error().text);
    tls_ctx = std::move(*c);
  }
  {
    auto* raw = d.get();
    recent_feed::source src;
    // Every event (all kinds but audience definitions, which the tap
    // sends before the first broadcast that refers to one), no payloads:
    // the page shows the flow, and payloads would cost the relay a copy.
    src.subscribe = [raw](std::shared_ptr<recent_events> ring) -> expected<uint64_t> {
      if (!raw->ctx->tap)
        return fail(std::errc::operation_not_supported, "this server has no live tap");
      auto everything = parse_tap_filter(tap_filter_spec{});
      if (!everything)
        return tl::unexpected{everything.error()};
      return raw->ctx->tap->subscribe(std::move(*everything),
                                      std::make_shared<ring_subscriber>(std::move(ring)));
    };
    src.unsubscribe = [raw](uint64_t id) {
      if (raw->ctx->tap)
        raw->ctx->tap->unsubscribe(id);
    };
    d->feed = std::make_unique<recent_feed>(std::move(src));
  }
  d->http = std::make_unique<dispatcher>();
  d->http->set_payload_max_length(64 * 1024); // GET only: no body is needed
  d->routes();
  auto ls = net::tcp_listen(cfg.admin_host, cfg.admin_port, 1024);
  if (!ls)
    return fail(errc::bind_failed, fmt::format("admin endpoints ({}:{}): {}", cfg.admin_host,
                                               cfg.admin_port, ls.error().text));
  d->port = ls->port;
  auto* raw = d.get();
  http_front::options fo;
  fo.listen_fd = ls->fd;
  fo.tls = std::move(tls_ctx);
  fo.deadline = cfg.admin_request_timeout;
  d->front = std::make_unique<http_front>(
    fo, [raw](httplib::Stream& s) { raw->http->serve(s); },
    [raw](std::string_view path) -> std::optional<http_front::quick_answer> {
      // Probes are answered by the I/O thread: never behind slow requests.
      if (path == "/healthz")
        return http_front::quick_answer{200, "{\"status\":\"ok\"}\n"};
      if (path == "/readyz")
        return raw->ctx->draining.load(std::memory_order_relaxed)
                 ? http_front::quick_answer{503, "{\"status\":\"draining\"}\n"}
                 : http_front::quick_answer{200, "{\"status\":\"ready\"}\n"};
      return std::nullopt;
    });
  d->sampler = std::thread{[raw] { raw->sample_loop(); }};
  return std::unique_ptr<admin_server>{new admin_server{std::move(d)}};
}

admin_server::admin_server(std::unique_ptr<impl> d) : impl_(std::move(d)) {}

admin_server::~admin_server() {
  auto& d = *impl_;
  d.front.reset(); // no requests from here on
  {
    std::lock_guard lock{d.sample_mutex};
    d.stopping = true;
  }
  d.sample_wake.notify_all();
  if (d.sampler.joinable())
    d.sampler.join();
  d.feed.reset(); // unsubscribes (the ring lives on while a delivery ends)
}

uint16_t admin_server::port() const noexcept {
  return impl_->port;
}

} // namespace convoke::server
