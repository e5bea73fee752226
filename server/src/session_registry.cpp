#include "session_registry.hpp"

#include <algorithm>
#include <stdexcept>

namespace convoke::server {

namespace {

std::vector<uint64_t> size_bounds() {
  // 64 B to 16 MiB, by powers of 4.
  std::vector<uint64_t> b;
  for (uint64_t x = 64; x <= (16u << 20); x *= 4)
    b.push_back(x);
  return b;
}

std::vector<uint64_t> latency_bounds() {
  // 10 µs to 10 s in 1-2.5-5 steps.
  std::vector<uint64_t> b;
  for (uint64_t decade = 10'000; decade <= 10'000'000'000ull; decade *= 10)
    for (uint64_t m : {10, 25, 50})
      if (decade * m / 10 <= 10'000'000'000ull)
        b.push_back(decade * m / 10);
  return b;
}

} // namespace

histogram::histogram(std::vector<uint64_t> bounds) {
  if (bounds.size() > max_bounds || !std::is_sorted(bounds.begin(), bounds.end()))
    throw std::invalid_argument("histogram bounds: at most 24, ascending");
  n_bounds_ = bounds.size();
  std::copy(bounds.begin(), bounds.end(), bounds_.begin());
}

histogram::snapshot histogram::read() const {
  snapshot s;
  s.bounds.assign(bounds_.begin(), bounds_.begin() + static_cast<ptrdiff_t>(n_bounds_));
  for (size_t i = 0; i <= n_bounds_; ++i) {
    s.counts.push_back(counts_[i].get());
    s.count += s.counts.back();
  }
  // Read after the buckets: with a concurrent writer the sum may include an
  // observation the buckets do not yet show, never the other way round.
  s.sum = sum_.get();
  return s;
}

void session_info::set_routes(std::vector<std::string> routes) {
  std::sort(routes.begin(), routes.end());
  std::lock_guard lock{routes_mutex_};
  routes_ = std::move(routes);
}

std::vector<std::string> session_info::routes() const {
  std::lock_guard lock{routes_mutex_};
  return routes_;
}

session_registry::session_registry()
  : message_bytes(size_bounds()), relay_latency_ns(latency_bounds()) {}

void session_registry::add(session_info_ptr info) {
  std::lock_guard lock{mutex_};
  auto id = info->session;
  sessions_[id] = std::move(info);
}

void session_registry::remove(uint64_t session) {
  std::lock_guard lock{mutex_};
  sessions_.erase(session);
}

std::vector<session_info_ptr> session_registry::list() const {
  std::lock_guard lock{mutex_};
  std::vector<session_info_ptr> out;
  out.reserve(sessions_.size());
  for (auto& [id, info] : sessions_)
    out.push_back(info);
  return out;
}

size_t session_registry::size() const {
  std::lock_guard lock{mutex_};
  return sessions_.size();
}

} // namespace convoke::server
