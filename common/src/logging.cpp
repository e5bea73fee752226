#include "convoke/common/logging.hpp"

#include <cerrno>
#include <cstdlib>
#include <mutex>
#include <utility>
#include <vector>

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/rotating_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "convoke/common/text.hpp"

namespace convoke::logging {

namespace {

constexpr const char* text_pattern = "%Y-%m-%dT%H:%M:%S.%fZ %^%-5l%$ %-8n %v";

/// A rotating log file that can be opened again by its path (SIGUSR1, after
/// logrotate renamed it): the records go to a file of the original name
/// from the next one on, and the old file is flushed and closed. Wraps
/// spdlog's rotating sink (single-threaded: this sink's mutex guards it)
/// and replaces it on reopen.
class reopenable_file_sink final : public spdlog::sinks::sink {
public:
  reopenable_file_sink(std::string path, uint64_t max_bytes, uint32_t max_files)
    : path_(std::move(path)), max_bytes_(max_bytes), max_files_(max_files),
      formatter_(std::make_unique<spdlog::pattern_formatter>()), file_(open_file()) {}

  void log(const spdlog::details::log_msg& msg) override {
    std::lock_guard guard{mtx_};
    file_->log(msg);
  }

  void flush() override {
    std::lock_guard guard{mtx_};
    file_->flush();
  }

  void set_pattern(const std::string& pattern) override {
    set_formatter(std::make_unique<spdlog::pattern_formatter>(pattern));
  }

  void set_formatter(std::unique_ptr<spdlog::formatter> f) override {
    std::lock_guard guard{mtx_};
    file_->set_formatter(f->clone());
    formatter_ = std::move(f);
  }

  /// Opens the path again; on an error the current file stays in use.
  /// Throws spdlog_ex (errno set) like the constructor.
  void reopen() {
    auto next = open_file(); // outside the lock: logging goes on meanwhile
    std::shared_ptr<spdlog::sinks::rotating_file_sink_st> old;
    {
      std::lock_guard guard{mtx_};
      next->set_formatter(formatter_->clone());
      old = std::exchange(file_, std::move(next));
      old->flush();
    }
    // `old` closes its file here, after its last record.
  }

  const std::string& path() const noexcept {
    return path_;
  }

private:
  std::shared_ptr<spdlog::sinks::rotating_file_sink_st> open_file() const {
    return std::make_shared<spdlog::sinks::rotating_file_sink_st>(path_, max_bytes_, max_files_);
  }

  std::string path_;
  uint64_t max_bytes_;
  uint32_t max_files_;
  std::mutex mtx_;
  std::unique_ptr<spdlog::formatter> formatter_;
  std::shared_ptr<spdlog::sinks::rotating_file_sink_st> file_;
};

/// The error of a failed open of the log file.
error open_error(const std::string& path, const spdlog::spdlog_ex& ex, int err) {
  auto code = err != 0 ? std::error_code{err, std::system_category()}
                       : std::make_error_code(std::errc::io_error);
  return {code, "cannot open log file '" + path + "': " + ex.what()};
}

struct shared_state {
  std::mutex mtx;
  spdlog::sink_ptr sink;
  /// The sink when logging to a file (null: standard error).
  std::shared_ptr<reopenable_file_sink> file;
  format fmt = format::text;
  spdlog::level::level_enum level = spdlog::level::info;

  shared_state() {
    // Defaults for programs that never call configure() (SDK users, tools).
    if (auto v = std::getenv("CONVOKE_LOG_LEVEL"))
      if (auto lvl = parse_level(v))
        level = *lvl;
    if (auto v = std::getenv("CONVOKE_LOG_FORMAT"))
      if (auto f = parse_format(v))
        fmt = *f;
  }
};

shared_state& state() {
  static shared_state instance;
  return instance;
}

std::unique_ptr<spdlog::formatter> make_formatter(format f) {
  if (f == format::json)
    return make_json_formatter();
  return std::make_unique<spdlog::pattern_formatter>(text_pattern, spdlog::pattern_time_type::utc);
}

spdlog::sink_ptr default_sink() {
  return std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
}

bool key_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'
         || c == '.' || c == '-';
}

// Finds the end of a logfmt value starting at `i`.
size_t value_end(std::string_view s, size_t i) {
  if (i < s.size() && s[i] == '"') {
    for (size_t k = i + 1; k < s.size(); ++k) {
      if (s[k] == '\\')
        ++k;
      else if (s[k] == '"')
        return k + 1;
    }
    return s.size();
  }
  auto sp = s.find(' ', i);
  return sp == std::string_view::npos ? s.size() : sp;
}

// Position of the first " key=" field in `s`, or npos.
size_t first_field(std::string_view s) {
  size_t start = 0;
  while (start < s.size()) {
    auto eq = s.find('=', start);
    if (eq == std::string_view::npos)
      return std::string_view::npos;
    auto sp = s.rfind(' ', eq);
    auto key_begin = sp == std::string_view::npos ? 0 : sp + 1;
    bool ok = key_begin < eq;
    for (auto k = key_begin; ok && k < eq; ++k)
      ok = key_char(s[k]);
    if (ok)
      return key_begin;
    start = eq + 1;
  }
  return std::string_view::npos;
}

bool is_integer(std::string_view v) {
  if (v.empty() || v.size() > 18)
    return false;
  size_t i = v[0] == '-' ? 1 : 0;
  if (i == v.size() || (v[i] == '0' && v.size() > i + 1))
    return false;
  for (; i < v.size(); ++i)
    if (v[i] < '0' || v[i] > '9')
      return false;
  return true;
}

class json_formatter final : public spdlog::formatter {
public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    std::string line;
    line.reserve(128 + msg.payload.size());
    line += "{\"ts\":\"";
    auto ns
      = std::chrono::duration_cast<std::chrono::nanoseconds>(msg.time.time_since_epoch()).count();
    append_timestamp(line, ns);
    line += "\",\"level\":";
    auto lv = spdlog::level::to_string_view(msg.level);
    append_json_string(line, std::string_view{lv.data(), lv.size()});
    line += ",\"logger\":";
    append_json_string(line, std::string_view{msg.logger_name.data(), msg.logger_name.size()});
    line.push_back(',');
    append_logfmt_as_json(line, std::string_view{msg.payload.data(), msg.payload.size()});
    line += "}\n";
    dest.append(line.data(), line.data() + line.size());
  }

  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<json_formatter>();
  }
};

} // namespace

void append_logfmt_as_json(std::string& out, std::string_view s) {
  auto pos = first_field(s);
  auto text = s.substr(0, pos == std::string_view::npos ? s.size() : pos);
  while (!text.empty() && text.back() == ' ')
    text.remove_suffix(1);
  out += "\"msg\":";
  append_json_string(out, text);
  while (pos != std::string_view::npos && pos < s.size()) {
    auto eq = s.find('=', pos);
    auto key = s.substr(pos, eq - pos);
    auto vend = value_end(s, eq + 1);
    auto value = s.substr(eq + 1, vend - eq - 1);
    out.push_back(',');
    append_json_string(out, key);
    out.push_back(':');
    if (!value.empty() && value.front() == '"' && value.size() >= 2 && value.back() == '"')
      out.append(value); // already a JSON string (written by logfmt_value)
    else if (is_integer(value))
      out.append(value);
    else
      append_json_string(out, value);
    pos = vend;
    while (pos < s.size() && s[pos] == ' ')
      ++pos;
    if (pos >= s.size())
      break;
    // Text after a field that is not itself a field is kept in "rest".
    auto next = first_field(s.substr(pos));
    if (next != 0) {
      out += ",\"rest\":";
      append_json_string(out, s.substr(pos));
      break;
    }
  }
}

std::optional<format> parse_format(std::string_view text) {
  if (text == "text")
    return format::text;
  if (text == "json")
    return format::json;
  return std::nullopt;
}

std::string_view to_string(format f) {
  return f == format::json ? "json" : "text";
}

std::optional<spdlog::level::level_enum> parse_level(std::string_view text) {
  using namespace spdlog::level;
  static constexpr std::pair<std::string_view, level_enum> table[] = {
    {"trace", trace},  {"debug", debug}, {"info", info},         {"warn", warn},
    {"warning", warn}, {"error", err},   {"critical", critical}, {"off", off},
  };
  for (auto& [name, lvl] : table)
    if (name == text)
      return lvl;
  return std::nullopt;
}

std::unique_ptr<spdlog::formatter> make_json_formatter() {
  return std::make_unique<json_formatter>();
}

expected<> configure(const options& opts) {
  auto lvl = parse_level(opts.level);
  if (!lvl)
    return fail(std::errc::invalid_argument, "unknown log level '" + opts.level + "'");
  spdlog::sink_ptr sink;
  std::shared_ptr<reopenable_file_sink> file;
  if (opts.file.empty()) {
    sink = default_sink();
  } else {
    errno = 0;
    try {
      file = std::make_shared<reopenable_file_sink>(opts.file, opts.max_file_bytes, opts.max_files);
      sink = file;
    } catch (const spdlog::spdlog_ex& ex) {
      // spdlog puts the errno of its failed fopen() into the text only;
      // errno still holds it (the unwinding in between does no I/O).
      return tl::unexpected{open_error(opts.file, ex, errno)};
    }
  }
  sink->set_formatter(make_formatter(opts.fmt));
  auto& st = state();
  std::lock_guard guard{st.mtx};
  st.sink = sink;
  st.file = file;
  st.fmt = opts.fmt;
  st.level = *lvl;
  spdlog::apply_all([&](const std::shared_ptr<spdlog::logger>& lg) {
    lg->sinks().clear();
    lg->sinks().push_back(sink);
    lg->set_level(*lvl);
  });
  return {};
}

expected<> set_level(std::string_view level) {
  auto lvl = parse_level(level);
  if (!lvl)
    return fail(std::errc::invalid_argument, "unknown log level '" + std::string{level} + "'");
  auto& st = state();
  std::lock_guard guard{st.mtx};
  st.level = *lvl;
  // A logger's level is an atomic: other threads keep logging meanwhile.
  spdlog::apply_all([&](const std::shared_ptr<spdlog::logger>& lg) { lg->set_level(*lvl); });
  return {};
}

void set_format(format f) {
  auto& st = state();
  std::lock_guard guard{st.mtx};
  st.fmt = f;
  if (st.sink)
    st.sink->set_formatter(make_formatter(f)); // under the sink's own lock
}

expected<bool> reopen() {
  std::shared_ptr<reopenable_file_sink> file;
  {
    auto& st = state();
    std::lock_guard guard{st.mtx};
    file = st.file;
  }
  if (!file)
    return false;
  errno = 0;
  try {
    file->reopen();
  } catch (const spdlog::spdlog_ex& ex) {
    return tl::unexpected{open_error(file->path(), ex, errno)};
  }
  return true;
}

std::shared_ptr<spdlog::logger> get(const std::string& name) {
  if (auto lg = spdlog::get(name))
    return lg;
  auto& st = state();
  std::lock_guard guard{st.mtx};
  if (auto lg = spdlog::get(name)) // lost a race
    return lg;
  if (!st.sink) {
    st.sink = default_sink();
    st.sink->set_formatter(make_formatter(st.fmt));
  }
  auto lg = std::make_shared<spdlog::logger>(name, st.sink);
  lg->set_level(st.level);
  lg->flush_on(spdlog::level::warn);
  spdlog::register_logger(lg);
  return lg;
}

} // namespace convoke::logging
