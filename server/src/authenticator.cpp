#include "authenticator.hpp"

#include <algorithm>

#include <sodium.h>

#include "convoke/common/secure_random.hpp"

namespace convoke::server {

authenticator::authenticator(std::shared_ptr<const credential_store> store, size_t max_queued)
  : store_(std::move(store)), max_queued_(max_queued) {
  crypto::random_bytes(key_.data(), key_.size());
  worker_ = std::thread{[this] { run(); }};
}

authenticator::~authenticator() {
  {
    std::lock_guard<std::mutex> guard{mtx_};
    stopping_ = true;
  }
  cv_.notify_all();
  worker_.join();
  // Checks still queued are dropped: their sessions ended with the actor
  // system, which stops before the server's context is destroyed.
}

authenticator::digest authenticator::keyed_digest(std::string_view token) const {
  digest out{};
  crypto_generichash(out.data(), out.size(), reinterpret_cast<const unsigned char*>(token.data()),
                     token.size(), key_.data(), key_.size());
  return out;
}

bool authenticator::submit(std::string name, std::string token, callback done) {
  std::unique_lock<std::mutex> guard{mtx_};
  auto id = store_->find(name);
  if (!id || token.size() < min_token_length || token.size() > max_token_length) {
    guard.unlock();
    done(outcome::refused, nullptr);
    return true;
  }
  if (auto i = verified_.find(id->name); i != verified_.end()) {
    auto d = keyed_digest(token);
    if (sodium_memcmp(d.data(), i->second.data(), d.size()) == 0) {
      guard.unlock();
      done(outcome::accepted, std::move(id));
      return true;
    }
  }
  if (queue_.size() >= max_queued_)
    return false;
  queue_.push_back({std::move(id), std::move(token), std::move(done), generation_});
  guard.unlock();
  cv_.notify_one();
  return true;
}

void authenticator::replace(std::shared_ptr<const credential_store> store) {
  std::lock_guard<std::mutex> guard{mtx_};
  store_ = std::move(store);
  verified_.clear();
  ++generation_;
}

std::shared_ptr<const credential_store> authenticator::store() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return store_;
}

void authenticator::run() {
  std::unique_lock<std::mutex> guard{mtx_};
  for (;;) {
    cv_.wait(guard, [this] { return stopping_ || !queue_.empty(); });
    if (stopping_)
      return;
    auto j = std::move(queue_.front());
    queue_.pop_front();
    guard.unlock();
    bool ok = verify_token(j.id->token_hash, j.token);
    hashed_.fetch_add(1, std::memory_order_relaxed);
    auto d = keyed_digest(j.token);
    sodium_memzero(j.token.data(), j.token.size());
    if (ok) {
      std::lock_guard<std::mutex> remember{mtx_};
      if (j.generation == generation_)
        verified_[j.id->name] = d;
    }
    j.done(ok ? outcome::accepted : outcome::refused, ok ? j.id : nullptr);
    guard.lock();
  }
}

std::chrono::milliseconds login_throttle::blocked_for(const std::string& address,
                                                      clock::time_point now) {
  auto i = entries_.find(address);
  if (i == entries_.end())
    return std::chrono::milliseconds{0};
  auto end = i->second.window_start + window_;
  if (now >= end) {
    entries_.erase(i);
    return std::chrono::milliseconds{0};
  }
  if (i->second.failures < limit_)
    return std::chrono::milliseconds{0};
  return std::chrono::ceil<std::chrono::milliseconds>(end - now);
}

void login_throttle::failed(const std::string& address, clock::time_point now) {
  auto i = entries_.find(address);
  if (i != entries_.end() && now >= i->second.window_start + window_) {
    i->second = entry{now, 0};
  } else if (i == entries_.end()) {
    if (entries_.size() >= max_addresses_) {
      for (auto j = entries_.begin(); j != entries_.end();)
        j = now >= j->second.window_start + window_ ? entries_.erase(j) : std::next(j);
      if (entries_.size() >= max_addresses_)
        entries_.erase(std::min_element(entries_.begin(), entries_.end(), [](auto& a, auto& b) {
          return a.second.window_start < b.second.window_start;
        }));
    }
    i = entries_.emplace(address, entry{now, 0}).first;
  }
  ++i->second.failures;
}

} // namespace convoke::server
