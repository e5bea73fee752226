#include "trace.hpp"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include "convoke/common/secure_random.hpp"
#include "convoke/common/text.hpp"
#include "convoke/common/units.hpp"
#include "convoke/server/error.hpp"
#include "trace_ring.hpp"

namespace convoke::server {

namespace {

/// Writer instances, so that a thread's cached ring is never taken for
/// another writer's (tests run several servers in one process).
std::atomic<uint64_t> generations{0};

/// Formatted bytes written out at once (fewer system calls under load).
constexpr size_t out_chunk = 256 << 10;
/// Audience definitions kept to repeat after a file rotation.
constexpr size_t max_audiences = 4096;

bool write_all(int fd, std::string_view bytes, std::string& why) {
  while (!bytes.empty()) {
    auto n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0) {
      if (errno == EINTR)
        continue;
      why = std::strerror(errno);
      return false;
    }
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

} // namespace

std::string new_boot_id() {
  return crypto::random_hex(8);
}

std::string rotated_name(const std::string& path, uint32_t index) {
  if (index == 0)
    return path;
  auto slash = path.rfind('/');
  auto dot = path.rfind('.');
  // No extension, a dot file ("/x/.trace") or a dot in a directory name.
  if (dot == std::string::npos || dot == 0 || (slash != std::string::npos && dot <= slash + 1))
    return fmt::format("{}.{}", path, index);
  return fmt::format("{}.{}{}", path.substr(0, dot), index, path.substr(dot));
}

expected<std::unique_ptr<trace_writer>> trace_writer::open(const options& opts) {
  std::unique_ptr<trace_writer> w{new trace_writer(opts)};
  if (w->to_file_ && !w->open_file())
    return convoke::fail(errc::unwritable_file, fmt::format("cannot open trace file '{}': {}",
                                                            opts.file, std::strerror(errno)));
  w->thread_ = std::thread{[p = w.get()] { p->run(); }};
  return w;
}

trace_writer::trace_writer(options opts)
  : opts_(std::move(opts)), to_file_(opts_.to_file),
    generation_(generations.fetch_add(1, std::memory_order_relaxed) + 1) {
  if (opts_.boot.empty())
    opts_.boot = new_boot_id();
  out_.reserve(out_chunk + 4096);
}

trace_writer::~trace_writer() {
  stop();
  if (file_ != nullptr && file_ != stdout)
    std::fclose(file_);
}

uint64_t trace_writer::dropped() const noexcept {
  uint64_t n = write_failed_.load(std::memory_order_relaxed);
  std::lock_guard guard{rings_mtx_};
  for (auto& [id, r] : rings_)
    n += r->lost();
  return n;
}

trace_ring& trace_writer::local_ring() {
  struct cache {
    uint64_t generation = 0;
    trace_ring* ring = nullptr;
  };
  thread_local cache c;
  if (c.generation == generation_)
    return *c.ring;
  std::lock_guard guard{rings_mtx_};
  auto me = std::this_thread::get_id();
  trace_ring* found = nullptr;
  for (auto& [id, r] : rings_)
    if (id == me)
      found = r.get();
  if (found == nullptr) {
    rings_.emplace_back(me, std::make_unique<trace_ring>(opts_.buffer_bytes));
    found = rings_.back().second.get();
    ring_count_.store(rings_.size(), std::memory_order_release);
  }
  c = {generation_, found};
  return *found;
}

bool trace_writer::record(const record_fields& f) noexcept {
  trace_ring* ring;
  try {
    ring = &local_ring(); // allocates once per thread
  } catch (...) {
    write_failed_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  auto n = record_size(f);
  if (n > ring->max_record()) { // a small trace.buffer: shorten it rather than lose it
    record_fields shorter = f;
    n = fit_record(shorter, ring->max_record());
    auto p = ring->reserve(static_cast<uint32_t>(n));
    if (p == nullptr) {
      ring->count_lost();
      return false;
    }
    encode_record(shorter, p);
  } else {
    auto p = ring->reserve(static_cast<uint32_t>(n));
    if (p == nullptr) {
      ring->count_lost();
      return false;
    }
    encode_record(f, p);
  }
  ring->commit();
  // The writer sleeps long only after a second without records; it then
  // also wakes on its own every 200 ms, so a wake-up missed here costs
  // latency, never a record.
  if (sleeping_.load(std::memory_order_relaxed) && sleeping_.exchange(false)) {
    std::lock_guard guard{mtx_};
    cv_.notify_one();
  }
  return true;
}

void trace_writer::set_consumer(trace_consumer* consumer) {
  consumer_.store(consumer, std::memory_order_release);
}

void trace_writer::stop() {
  {
    std::lock_guard guard{mtx_};
    if (stopping_ && !thread_.joinable())
      return;
    stopping_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable())
    thread_.join();
}

bool trace_writer::flush(std::chrono::milliseconds limit) {
  std::unique_lock guard{mtx_};
  if (!thread_.joinable())
    return true;
  // Two passes: the one running now may have drained before the records
  // this caller cares about were written.
  auto target = passes_ + 2;
  ++flush_requested_;
  cv_.notify_one();
  return passed_.wait_for(guard, limit, [&] { return passes_ >= target || stopping_; });
}

void trace_writer::reopen() {
  {
    std::lock_guard guard{mtx_};
    reopen_requested_ = true;
  }
  cv_.notify_one();
}

bool trace_writer::open_file() {
  if (opts_.file == "-") {
    file_ = stdout;
    file_bytes_ = 0;
    return true;
  }
  auto f = std::fopen(opts_.file.c_str(), "ae"); // O_APPEND | O_CLOEXEC
  if (f == nullptr)
    return false;
  struct stat st {};
  file_bytes_ = ::fstat(::fileno(f), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
  file_ = f;
  defined_.clear(); // a new file repeats the audiences it refers to
  return true;
}

void trace_writer::rotate() {
  if (file_ == nullptr || file_ == stdout)
    return;
  std::fclose(file_);
  file_ = nullptr;
  for (uint32_t i = opts_.max_files; i > 0; --i) {
    auto from = rotated_name(opts_.file, i - 1);
    if (::access(from.c_str(), F_OK) == 0)
      ::rename(from.c_str(), rotated_name(opts_.file, i).c_str()); // replaces the oldest
  }
  if (!open_file())
    fail(fmt::format("cannot open the trace file after rotating it: {}", std::strerror(errno)), 0);
}

void trace_writer::reopen_now() {
  auto log = logging::get("trace");
  if (!to_file_ || opts_.file == "-") {
    log->info("trace goes to standard output or nowhere; nothing to reopen");
    return;
  }
  write_out(true); // what came before the request goes to the old file
  auto old = file_;
  file_ = nullptr;
  if (!open_file()) {
    file_ = old;
    log->error("cannot reopen the trace file, still writing to the old one file={} error={}",
               logfmt_value(opts_.file), logfmt_value(std::strerror(errno)));
    return;
  }
  if (old != nullptr)
    std::fclose(old);
  reopened_.fetch_add(1, std::memory_order_relaxed);
  log->info("trace file reopened file={}", logfmt_value(opts_.file));
}

void trace_writer::fail(const std::string& why, uint64_t lost) {
  write_failed_.fetch_add(lost, std::memory_order_relaxed);
  auto now = std::chrono::steady_clock::now();
  failed_at_ = now;
  if (logged_at_ == std::chrono::steady_clock::time_point{}
      || now - logged_at_ >= std::chrono::seconds{10}) {
    logged_at_ = now;
    logging::get("trace")->error("cannot write trace records file={} error={} dropped_so_far={}",
                                 logfmt_value(opts_.file), logfmt_value(why), dropped());
  }
}

void trace_writer::write_out(bool force) {
  if (out_.empty() || (!force && out_.size() < out_chunk))
    return;
  // The file can fail under us (directory removed, disk full, descriptor
  // limit at rotation): the records are then dropped and counted, it is
  // logged (at most every 10 s), and the file is opened again, at most once
  // a second. The relay never notices.
  if (file_ == nullptr) {
    if (std::chrono::steady_clock::now() - failed_at_ < std::chrono::seconds{1} || !open_file()) {
      if (failed_at_ == std::chrono::steady_clock::time_point{}
          || std::chrono::steady_clock::now() - failed_at_ >= std::chrono::seconds{1})
        fail(fmt::format("cannot open it: {}", std::strerror(errno)), out_events_);
      else
        write_failed_.fetch_add(out_events_, std::memory_order_relaxed);
      out_.clear();
      out_events_ = 0;
      return;
    }
    logging::get("trace")->info("trace file open again file={}", logfmt_value(opts_.file));
  }
  std::string why;
  if (write_all(::fileno(file_), out_, why)) {
    file_bytes_ += out_.size();
    written_.fetch_add(out_events_, std::memory_order_relaxed);
  } else {
    if (file_ != stdout)
      std::fclose(file_);
    file_ = nullptr;
    fail(why, out_events_);
  }
  out_.clear();
  out_events_ = 0;
}

void trace_writer::emit(const trace::event& ev) {
  auto before = out_.size();
  if (opts_.fmt == logging::format::json)
    trace::append_json(out_, ev);
  else
    trace::append_text(out_, ev);
  out_.push_back('\n');
  ++out_events_;
  if (file_ != stdout && file_bytes_ + out_.size() > opts_.max_file_bytes
      && file_bytes_ + before > 0) {
    // Rotate before this line: what came before fills the old file.
    std::string line = out_.substr(before);
    out_.resize(before);
    --out_events_;
    write_out(true);
    rotate();
    define_audience(ev); // in the new file first
    out_ += line;
    ++out_events_;
  }
  if (out_.size() >= out_chunk)
    write_out(false);
}

void trace_writer::define_audience(const trace::event& ev) {
  if (ev.what != trace::kind::relay || ev.audience == 0 || defined_.count(ev.audience) != 0)
    return;
  if (auto a = audiences_.find(ev.audience); a != audiences_.end()) {
    defined_.insert(ev.audience);
    emit(a->second);
  }
}

void trace_writer::handle(trace::event& ev) {
  ev.seq = ++seq_;
  if (ev.boot != opts_.boot)
    ev.boot = opts_.boot;
  if (ev.what == trace::kind::audience) {
    if (audiences_.size() >= max_audiences) {
      audiences_.clear();
      defined_.clear();
    }
    audiences_[ev.audience] = ev;
    defined_.insert(ev.audience);
  }
  // Audience definitions go to the tap also while nobody observes, so that
  // a later observer can be given the definition of an audience in use.
  if (auto c = consumer_.load(std::memory_order_acquire);
      c != nullptr
      && (observed_.load(std::memory_order_relaxed) || ev.what == trace::kind::audience))
    c->publish(ev);
  if (to_file_) {
    // Payloads are recorded as far as an observer asked (and may see); the
    // file quotes at most trace.payload-bytes of them.
    if (auto cap = file_payload_bytes_.load(std::memory_order_relaxed); ev.payload.size() > cap) {
      ev.payload.resize(cap);
      ev.payload_truncated = true;
    }
    define_audience(ev); // a new file since the definition: repeat it
    emit(ev);
  }
}

size_t trace_writer::pass() {
  std::vector<trace_ring*> rings;
  {
    std::lock_guard guard{rings_mtx_};
    for (auto& [id, r] : rings_)
      rings.push_back(r.get());
  }
  lost_seen_.resize(rings.size(), 0);
  size_t n = 0;
  for (size_t i = 0; i < rings.size(); ++i) {
    n += rings[i]->drain([&](std::string_view rec) {
      if (decode_record(rec, ev_))
        handle(ev_);
    });
    if (auto lost = rings[i]->lost(); lost > lost_seen_[i]) {
      trace::event gap;
      gap.what = trace::kind::gap;
      gap.ts_ns = unix_nanos();
      gap.count = static_cast<uint32_t>(std::min<uint64_t>(lost - lost_seen_[i], UINT32_MAX));
      gap.reason = std::string{drop_reason::trace_buffer_full};
      lost_seen_[i] = lost;
      handle(gap);
      ++n;
    }
  }
  if (n > 0)
    write_out(true);
  // Also without new events while observed: batches held for a busy
  // observer go out once it is ready.
  if (auto c = consumer_.load(std::memory_order_acquire);
      c != nullptr && (n > 0 || observed_.load(std::memory_order_relaxed)))
    c->end_pass();
  return n;
}

void trace_writer::run() {
  auto active_at = std::chrono::steady_clock::now();
  for (;;) {
    bool stop;
    bool reopen;
    {
      std::lock_guard guard{mtx_};
      stop = stopping_;
      reopen = std::exchange(reopen_requested_, false);
    }
    auto n = pass();
    if (reopen)
      reopen_now();
    if (stop) {
      pass(); // what was recorded while the last pass ran
      write_out(true);
      std::lock_guard guard{mtx_};
      ++passes_;
      passed_.notify_all();
      return;
    }
    auto now = std::chrono::steady_clock::now();
    if (n > 0)
      active_at = now;
    std::unique_lock guard{mtx_};
    ++passes_;
    passed_.notify_all();
    auto seen = flush_requested_;
    auto woken = [&] { return stopping_ || reopen_requested_ || flush_requested_ != seen; };
    if (now - active_at < std::chrono::seconds{1}) {
      // Busy: collect for a millisecond, so that each pass writes a lot at once.
      cv_.wait_for(guard, std::chrono::milliseconds{1}, woken);
    } else {
      sleeping_.store(true);
      cv_.wait_for(guard, std::chrono::milliseconds{200},
                   [&] { return woken() || !sleeping_.load(std::memory_order_relaxed); });
      sleeping_.store(false);
    }
  }
}

} // namespace convoke::server
