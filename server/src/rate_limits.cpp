#include "rate_limits.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cmath>
#include <cstring>

namespace convoke::server {

rate_limit_settings rate_limit_settings::from_config(const server_config& cfg) {
  rate_limit_settings s;
  s.messages_per_second = cfg.messages_per_second;
  s.messages_burst
    = cfg.messages_burst > 0 ? cfg.messages_burst : static_cast<double>(cfg.messages_per_second);
  s.bytes_per_second = static_cast<double>(cfg.bytes_per_second);
  s.bytes_burst = cfg.bytes_burst > 0 ? static_cast<double>(cfg.bytes_burst)
                                      : std::max(static_cast<double>(cfg.bytes_per_second),
                                                 static_cast<double>(cfg.max_frame_bytes));
  s.quarantine_after = cfg.quarantine_after;
  s.quarantine_window = cfg.quarantine_window;
  s.quarantine_for = cfg.quarantine_for;
  return s;
}

// -- token_bucket ----------------------------------------------------------------

void token_bucket::configure(double rate, double burst, clock::time_point now) noexcept {
  bool fresh = rate_ <= 0;
  if (!fresh)
    refill(now);
  rate_ = rate;
  burst_ = std::max(burst, 1.0);
  tokens_ = fresh ? burst_ : std::min(tokens_, burst_);
  last_ = now;
}

void token_bucket::refill(clock::time_point now) noexcept {
  if (unlimited() || now <= last_)
    return;
  auto secs = std::chrono::duration<double>(now - last_).count();
  last_ = now;
  tokens_ = std::min(burst_, tokens_ + secs * rate_);
}

std::chrono::nanoseconds token_bucket::wait_for(double n) const noexcept {
  if (has(n))
    return std::chrono::nanoseconds{0};
  auto secs = (n - tokens_) / rate_;
  return std::chrono::nanoseconds{static_cast<int64_t>(std::ceil(secs * 1e9))};
}

// -- rate_limits -------------------------------------------------------------------

namespace {

std::chrono::milliseconds ceil_ms(std::chrono::nanoseconds d) {
  auto ms = std::chrono::ceil<std::chrono::milliseconds>(d);
  return std::max(ms, std::chrono::milliseconds{1});
}

} // namespace

rate_limits::admission rate_limits::admit(std::string_view name,
                                          const rate_limit_settings& settings, uint64_t session,
                                          time_point now) {
  maybe_sweep(now);
  auto key = std::string{name};
  auto [it, created] = entries_.try_emplace(key);
  auto& p = it->second;
  if (created)
    p.name = key;
  if (p.quarantined_until && now < *p.quarantined_until)
    return {nullptr, ceil_ms(*p.quarantined_until - now)};
  p.quarantined_until.reset();
  p.settings = settings;
  p.messages.configure(settings.messages_per_second, settings.messages_burst, now);
  p.bytes.configure(settings.bytes_per_second, settings.bytes_burst, now);
  if (p.idle) {
    idle_.erase(p.idle_pos);
    p.idle = false;
  }
  p.sessions.push_back(session);
  return {&p, std::chrono::milliseconds{0}};
}

void rate_limits::release(principal& p, uint64_t session, time_point now) {
  std::erase(p.sessions, session);
  if (p.sessions.empty() && !p.idle) {
    p.idle = true;
    p.idle_pos = idle_.insert(idle_.end(), &p);
  }
  maybe_sweep(now);
  // Over the cap even after sweeping: the least recently active goes.
  while (idle_.size() > max_idle_) {
    auto oldest = idle_.front();
    if (!stale(*oldest, now))
      ++evicted_;
    erase(*oldest);
  }
}

rate_decision rate_limits::take(principal& p, uint64_t bytes, time_point now) {
  rate_decision d;
  if (p.quarantined_until) {
    if (now < *p.quarantined_until) {
      d.what = rate_decision::verdict::quarantined;
      d.retry_after = ceil_ms(*p.quarantined_until - now);
      return d;
    }
    p.quarantined_until.reset(); // over: a session admitted before it may go on
  }
  auto size = static_cast<double>(bytes);
  p.messages.refill(now);
  p.bytes.refill(now);
  bool messages_ok = p.messages.has(1);
  bool bytes_ok = p.bytes.has(size);
  if (messages_ok && bytes_ok) {
    p.messages.take(1);
    p.bytes.take(size);
    return d;
  }
  d.what = rate_decision::verdict::limited;
  auto wait_messages = p.messages.wait_for(1);
  auto wait_bytes = p.bytes.wait_for(size);
  d.limit = !messages_ok && (bytes_ok || wait_messages >= wait_bytes) ? limit_kind::messages
                                                                      : limit_kind::bytes;
  d.retry_after = ceil_ms(std::max(wait_messages, wait_bytes));
  if (p.breaches > 0 && now - p.last_breach < breach_spacing)
    return d;
  if (p.breaches == 0 || now - p.window_start >= p.settings.quarantine_window) {
    p.window_start = now;
    p.breaches = 0;
  }
  ++p.breaches;
  p.last_breach = now;
  d.breach = true;
  if (p.settings.quarantine_after > 0 && p.breaches >= p.settings.quarantine_after) {
    p.quarantined_until = now + p.settings.quarantine_for;
    p.breaches = 0;
    d.what = rate_decision::verdict::quarantined;
    d.quarantine_started = true;
    d.retry_after = ceil_ms(p.settings.quarantine_for);
  }
  return d;
}

std::optional<std::chrono::milliseconds> rate_limits::quarantine_left(std::string_view name,
                                                                      time_point now) const {
  auto it = entries_.find(std::string{name});
  if (it == entries_.end() || !it->second.quarantined_until || now >= *it->second.quarantined_until)
    return std::nullopt;
  return ceil_ms(*it->second.quarantined_until - now);
}

bool rate_limits::stale(principal& p, time_point now) const {
  if (!p.sessions.empty())
    return false;
  if (p.quarantined_until && now < *p.quarantined_until)
    return false;
  if (p.breaches > 0 && now - p.window_start < p.settings.quarantine_window)
    return false;
  p.messages.refill(now);
  p.bytes.refill(now);
  return p.messages.full() && p.bytes.full();
}

void rate_limits::sweep(time_point now) {
  last_sweep_ = now;
  for (auto it = idle_.begin(); it != idle_.end();) {
    auto p = *it++;
    if (stale(*p, now))
      erase(*p);
  }
}

void rate_limits::maybe_sweep(time_point now) {
  if (!last_sweep_ || now - *last_sweep_ >= sweep_interval)
    sweep(now);
}

void rate_limits::erase(principal& p) {
  if (p.idle)
    idle_.erase(p.idle_pos);
  entries_.erase(p.name); // p is gone after this
}

// -- address_counts -----------------------------------------------------------------

bool address_counts::admit(const std::string& address, uint32_t limit) {
  auto& n = counts_[address];
  if (limit > 0 && n >= limit) {
    if (n == 0)
      counts_.erase(address);
    return false;
  }
  ++n;
  return true;
}

void address_counts::release(const std::string& address) {
  auto it = counts_.find(address);
  if (it == counts_.end())
    return;
  if (--it->second == 0)
    counts_.erase(it);
}

uint32_t address_counts::open(const std::string& address) const {
  auto it = counts_.find(address);
  return it == counts_.end() ? 0 : it->second;
}

std::string peer_address(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0)
    return "unknown";
  char buf[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET) {
    auto& a = reinterpret_cast<sockaddr_in&>(ss);
    if (::inet_ntop(AF_INET, &a.sin_addr, buf, sizeof(buf)) == nullptr)
      return "unknown";
    return buf;
  }
  if (ss.ss_family == AF_INET6) {
    auto& a = reinterpret_cast<sockaddr_in6&>(ss);
    if (IN6_IS_ADDR_V4MAPPED(&a.sin6_addr)) {
      in_addr v4{};
      std::memcpy(&v4, &a.sin6_addr.s6_addr[12], sizeof(v4));
      if (::inet_ntop(AF_INET, &v4, buf, sizeof(buf)) == nullptr)
        return "unknown";
      return buf;
    }
    if (::inet_ntop(AF_INET6, &a.sin6_addr, buf, sizeof(buf)) == nullptr)
      return "unknown";
    return buf;
  }
  return "unknown";
}

} // namespace convoke::server
