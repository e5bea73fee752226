#include "trace.hpp"

#include <fmt/format.h>
#include <spdlog/details/log_msg.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/rotating_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>

#include <utility>

#include "convoke/common/text.hpp"
#include "convoke/server/error.hpp"

namespace convoke::server {

namespace {

constexpr size_t bulk_size = 4096;

const char* kind_name(trace_event::kind k) {
  switch (k) {
  case trace_event::kind::relay:
    return "relay";
  case trace_event::kind::undeliverable:
    return "undeliverable";
  case trace_event::kind::dropped:
    return "dropped";
  case trace_event::kind::rejected:
    return "rejected";
  }
  return "event";
}

int64_t ingress_micros(const trace_event& ev) {
  return ev.sent_ns > 0 ? (ev.relayed_ns - ev.sent_ns) / 1000 : 0;
}

} // namespace

std::string format_trace_text(const trace_event& ev) {
  std::string out;
  out.reserve(160);
  append_timestamp(out, ev.relayed_ns);
  out.push_back(' ');
  out += kind_name(ev.what);
  auto it = std::back_inserter(out);
  if (ev.what == trace_event::kind::dropped) {
    fmt::format_to(it, " m={}..{} to={} count={} reason={}", ev.message_id, ev.last_message_id,
                   logfmt_value(ev.recipient), ev.count, ev.reason);
    return out;
  }
  if (ev.what == trace_event::kind::undeliverable && ev.count > 1) {
    // A rate-limited summary of many undeliverable messages.
    fmt::format_to(it, " m={}..{} {} -> {} count={} reason={} (summary of rate-limited records)",
                   ev.message_id, ev.last_message_id, logfmt_value(ev.sender),
                   logfmt_value(ev.recipient), ev.count, ev.reason);
    return out;
  }
  fmt::format_to(it, " m={} {} -> {}", ev.message_id, logfmt_value(ev.sender),
                 ev.recipient.empty() ? std::string{"*"} : logfmt_value(ev.recipient));
  if (!ev.route.empty())
    fmt::format_to(it, " route={}", logfmt_value(ev.route));
  if (ev.what == trace_event::kind::relay && ev.recipient.empty()) {
    fmt::format_to(it, " fanout={}", ev.count);
    if (!ev.recipients.empty())
      fmt::format_to(it, " to={}{}", ev.recipients, ev.count > 8 ? ",..." : "");
  }
  if (ev.what == trace_event::kind::undeliverable || ev.what == trace_event::kind::rejected)
    fmt::format_to(it, " reason={}", ev.reason);
  fmt::format_to(it, " bytes={}", ev.payload_bytes);
  if (ev.sent_ns > 0)
    fmt::format_to(it, " ingress_us={}", ingress_micros(ev));
  if (!ev.trace_id.empty())
    fmt::format_to(it, " trace={}", to_hex(ev.trace_id));
  if (!ev.payload.empty() || ev.payload_truncated) {
    out += " payload=";
    append_json_string(out, ev.payload);
    if (ev.payload_truncated)
      out += "...";
  }
  return out;
}

std::string format_trace_json(const trace_event& ev) {
  std::string out;
  out.reserve(256);
  out += "{\"ts\":\"";
  append_timestamp(out, ev.relayed_ns);
  fmt::format_to(std::back_inserter(out), "\",\"event\":\"{}\",\"message_id\":{}",
                 kind_name(ev.what), ev.message_id);
  auto field = [&out](std::string_view key, std::string_view value) {
    out += ",\"";
    out += key;
    out += "\":";
    append_json_string(out, value);
  };
  auto number = [&out](std::string_view key, int64_t value) {
    fmt::format_to(std::back_inserter(out), ",\"{}\":{}", key, value);
  };
  if (ev.what == trace_event::kind::dropped) {
    number("last_message_id", static_cast<int64_t>(ev.last_message_id));
    field("to", ev.recipient);
    number("count", ev.count);
    field("reason", ev.reason);
    out.push_back('}');
    return out;
  }
  field("from", ev.sender);
  field("to", ev.recipient.empty() ? std::string_view{"*"} : std::string_view{ev.recipient});
  if (ev.what == trace_event::kind::undeliverable && ev.count > 1) {
    // A rate-limited summary: `count` messages, ids `message_id`..`last_message_id`;
    // `to` is one of their recipients.
    number("last_message_id", static_cast<int64_t>(ev.last_message_id));
    number("count", ev.count);
    field("reason", ev.reason);
    out += ",\"summary\":true}";
    return out;
  }
  if (!ev.route.empty())
    field("route", ev.route);
  if (ev.what == trace_event::kind::relay && ev.recipient.empty()) {
    number("fanout", ev.count);
    out += ",\"recipients\":[";
    std::string_view rest = ev.recipients;
    bool first = true;
    while (!rest.empty()) {
      auto comma = rest.find(',');
      if (!first)
        out.push_back(',');
      append_json_string(out, rest.substr(0, comma));
      first = false;
      rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
    }
    out += "]";
  }
  if (ev.what == trace_event::kind::undeliverable || ev.what == trace_event::kind::rejected)
    field("reason", ev.reason);
  number("bytes", ev.payload_bytes);
  number("sent_unix_nanos", ev.sent_ns);
  number("relayed_unix_nanos", ev.relayed_ns);
  if (!ev.trace_id.empty())
    field("trace_id", to_hex(ev.trace_id));
  if (!ev.payload.empty() || ev.payload_truncated) {
    field("payload", ev.payload);
    out += ",\"payload_truncated\":";
    out += ev.payload_truncated ? "true" : "false";
  }
  out.push_back('}');
  return out;
}

namespace {

/// The destination's sink, or why it cannot be opened.
expected<spdlog::sink_ptr> make_sink(const trace_writer::options& opts) {
  spdlog::sink_ptr sink;
  if (opts.file == "-") {
    sink = std::make_shared<spdlog::sinks::stdout_sink_st>();
  } else {
    try {
      sink = std::make_shared<spdlog::sinks::rotating_file_sink_st>(opts.file, opts.max_file_bytes,
                                                                    opts.max_files);
    } catch (const spdlog::spdlog_ex& ex) {
      return fail(errc::unwritable_file,
                  fmt::format("cannot open trace file '{}': {}", opts.file, ex.what()));
    }
  }
  sink->set_formatter(std::make_unique<spdlog::pattern_formatter>("%v"));
  return sink;
}

} // namespace

expected<std::unique_ptr<trace_writer>> trace_writer::open(const options& opts) {
  auto sink = make_sink(opts);
  if (!sink)
    return tl::unexpected{std::move(sink.error())};
  return std::unique_ptr<trace_writer>{new trace_writer(opts, std::move(*sink))};
}

trace_writer::trace_writer(options opts, spdlog::sink_ptr sink)
  : opts_(std::move(opts)), sink_(std::move(sink)) {
  queue_.reserve(1024);
  thread_ = std::thread{[this] { run(); }};
}

trace_writer::~trace_writer() {
  stop();
}

void trace_writer::push(trace_event&& ev) {
  auto bytes = sizeof(trace_event) + ev.sender.size() + ev.recipient.size() + ev.route.size()
               + ev.recipients.size() + ev.trace_id.size() + ev.payload.size() + ev.reason.size();
  bool wake = false;
  {
    std::lock_guard guard{mtx_};
    if (queue_.size() >= opts_.queue || queued_bytes_ + bytes > opts_.queue_bytes || stopping_) {
      dropped_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    queue_.push_back(std::move(ev));
    queued_bytes_ += bytes;
    wake = queue_.size() == bulk_size;
  }
  // The writer wakes at least every 25 ms on its own; notify only for bulk,
  // so that a busy relay does not pay a futex wake per message.
  if (wake)
    cv_.notify_one();
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
  // Two passes: the one running now may have taken its batch before the
  // records this caller cares about were queued.
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

void trace_writer::reopen_now() {
  auto log = logging::get("trace");
  if (opts_.file == "-") {
    log->info("trace goes to standard output; nothing to reopen");
    return;
  }
  if (sink_) {
    try {
      sink_->flush();
    } catch (const std::exception& ex) {
      log->warn("cannot flush the old trace file file={} error={}", logfmt_value(opts_.file),
                logfmt_value(ex.what()));
    }
  }
  auto sink = make_sink(opts_);
  if (!sink) {
    log->error("cannot reopen the trace file, still writing to the old one file={} error={}",
               logfmt_value(opts_.file), logfmt_value(sink.error().text));
    return;
  }
  sink_ = std::move(*sink); // the old file is closed here
  reopened_.fetch_add(1, std::memory_order_relaxed);
  log->info("trace file reopened file={}", logfmt_value(opts_.file));
}

void trace_writer::write_batch(const std::vector<trace_event>& batch) {
  // The file can fail under us (directory removed, disk full, descriptor
  // limit at rotation): the records are then dropped and counted, it is
  // logged (at most every 10 s), and the file is opened again, at most once
  // a second. The relay never notices.
  auto now = std::chrono::steady_clock::now();
  if (!sink_) {
    if (now - failed_at_ < std::chrono::seconds{1}) {
      dropped_.fetch_add(batch.size(), std::memory_order_relaxed);
      return;
    }
    auto sink = make_sink(opts_);
    if (!sink) {
      fail(sink.error().text, batch.size(), now);
      return;
    }
    sink_ = std::move(*sink);
    logging::get("trace")->info("trace file open again file={}", logfmt_value(opts_.file));
  }
  size_t done = 0;
  try {
    for (auto& ev : batch) {
      auto line
        = opts_.fmt == logging::format::json ? format_trace_json(ev) : format_trace_text(ev);
      spdlog::details::log_msg msg{"trace", spdlog::level::info,
                                   spdlog::string_view_t{line.data(), line.size()}};
      sink_->log(msg);
      ++done;
    }
    sink_->flush();
    written_.fetch_add(done, std::memory_order_relaxed);
  } catch (const std::exception& ex) {
    written_.fetch_add(done, std::memory_order_relaxed);
    sink_.reset();
    fail(ex.what(), batch.size() - done, now);
  }
}

void trace_writer::fail(const std::string& why, size_t lost,
                        std::chrono::steady_clock::time_point now) {
  dropped_.fetch_add(lost, std::memory_order_relaxed);
  failed_at_ = now;
  if (logged_at_ == std::chrono::steady_clock::time_point{}
      || now - logged_at_ >= std::chrono::seconds{10}) {
    logged_at_ = now;
    logging::get("trace")->error("cannot write trace records file={} error={} dropped_so_far={}",
                                 logfmt_value(opts_.file), logfmt_value(why), dropped());
  }
}

void trace_writer::set_observer(observer_fn fn) {
  std::lock_guard guard{observer_mtx_};
  observer_ = std::move(fn);
}

void trace_writer::run() {
  std::vector<trace_event> batch;
  batch.reserve(1024);
  for (;;) {
    bool last = false;
    bool reopen = false;
    {
      std::unique_lock guard{mtx_};
      // Mark the previous pass done (its records are written).
      ++passes_;
      passed_.notify_all();
      auto seen = flush_requested_;
      cv_.wait_for(guard, std::chrono::milliseconds{25}, [&] {
        return stopping_ || queue_.size() >= bulk_size || flush_requested_ != seen
               || reopen_requested_;
      });
      batch.swap(queue_);
      queued_bytes_ = 0;
      last = stopping_;
      reopen = std::exchange(reopen_requested_, false);
    }
    // The records queued before a reopen request go to the old file.
    if (!batch.empty()) {
      write_batch(batch);
      std::lock_guard guard{observer_mtx_};
      if (observer_)
        observer_(batch);
    }
    batch.clear();
    if (reopen)
      reopen_now();
    if (last)
      return;
  }
}

} // namespace convoke::server
