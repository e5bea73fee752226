#include "credentials.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <sodium.h>
#include <toml++/toml.h>

#include "convoke/common/secure_random.hpp"
#include "convoke/common/text.hpp"
#include "convoke/proto/rules.hpp"
#include "convoke/proto/subject.hpp"
#include "convoke/server/error.hpp"

namespace convoke::server {

namespace {

bool any_matches(const std::vector<std::string>& patterns, std::string_view subject) noexcept {
  for (auto& p : patterns)
    if (proto::pattern_matches(p, subject))
      return true;
  return false;
}

bool allows_everything(const std::vector<std::string>& patterns) noexcept {
  for (auto& p : patterns)
    if (p == ">")
      return true;
  return false;
}

constexpr unsigned long long hash_opslimit = 2;
constexpr size_t hash_memlimit = 19u << 20;

/// Checks a pattern used in a right: tokens separated by '.', each a valid
/// route (or agent name) part, "*", or ">" as the last token.
expected<> check_right_pattern(std::string_view p, bool names) {
  auto limit = names ? proto::max_name_length : proto::max_route_length;
  if (p.empty() || p.size() > limit)
    return fail(errc::invalid_value,
                fmt::format("'{}' must be 1 to {} characters long", proto::printable(p), limit));
  size_t start = 0;
  for (;;) {
    auto dot = p.find('.', start);
    auto last = dot == std::string_view::npos;
    auto tok = p.substr(start, last ? std::string_view::npos : dot - start);
    if (tok.empty())
      return fail(errc::invalid_value, fmt::format("'{}' has an empty token", proto::printable(p)));
    if (tok == ">" && !last)
      return fail(errc::invalid_value,
                  fmt::format("'{}': '>' may only be the last token", proto::printable(p)));
    if (tok != "*" && tok != ">")
      if (auto ok = names ? proto::check_agent_name(tok) : proto::check_route(tok); !ok)
        return fail(errc::invalid_value,
                    fmt::format("'{}' is not a valid {} pattern", proto::printable(p),
                                names ? "agent name" : "route"));
    if (last)
      return {};
    start = dot + 1;
  }
}

} // namespace

std::string_view to_string(observe_level level) noexcept {
  switch (level) {
  case observe_level::metadata:
    return "metadata";
  case observe_level::payload:
    return "payload";
  default:
    return "none";
  }
}

rights rights::all() {
  rights r;
  r.publish = {">"};
  r.subscribe = {">"};
  r.send = {">"};
  r.receive = true;
  r.observe = observe_level::payload;
  r.admin = true;
  return r;
}

bool rights::may_publish(std::string_view route) const noexcept {
  return route.empty() ? allows_everything(publish) : any_matches(publish, route);
}

bool rights::may_subscribe(std::string_view pattern) const noexcept {
  for (auto& p : subscribe)
    if (proto::pattern_covers(p, pattern))
      return true;
  return false;
}

bool rights::may_send(std::string_view name) const noexcept {
  return any_matches(send, name);
}

bool rights::subscribes_everywhere() const noexcept {
  return allows_everything(subscribe);
}

bool rights::sends_everywhere() const noexcept {
  return allows_everything(send);
}

bool identity::may_use_name(std::string_view agent_name) const noexcept {
  return any_matches(names, agent_name);
}

std::shared_ptr<const identity> credential_store::find(std::string_view name) const {
  auto i = identities_.find(name);
  return i == identities_.end() ? nullptr : i->second;
}

tl::expected<std::shared_ptr<const credential_store>, std::vector<error>>
credential_store::load(const std::string& path) {
  std::ifstream in{path, std::ios::binary};
  if (!in)
    return tl::unexpected(std::vector<error>{
      {make_error_code(errc::bad_config_file),
       fmt::format("{}: cannot read the credentials file: {}", path, std::strerror(errno))}});
  std::stringstream buf;
  buf << in.rdbuf();
  return parse(buf.str(), path);
}

tl::expected<std::shared_ptr<const credential_store>, std::vector<error>>
credential_store::parse(std::string_view text, const std::string& origin) {
  std::vector<error> errs;
  auto problem = [&](errc code, uint32_t line, std::string what) {
    errs.push_back({make_error_code(code), fmt::format("{}:{}: {}", origin, line, what)});
  };
  toml::table root;
  try {
    root = toml::parse(text, origin);
  } catch (const toml::parse_error& ex) {
    auto& src = ex.source();
    errs.push_back(
      {make_error_code(errc::bad_config_file),
       fmt::format("{}:{}:{}: {}", origin, src.begin.line, src.begin.column, ex.description())});
    return tl::unexpected(std::move(errs));
  }
  auto store = std::make_shared<credential_store>();
  for (auto& [key, node] : root) {
    auto line = node.source().begin.line;
    auto ids = node.as_table();
    if (std::string_view{key} != "identity" || ids == nullptr) {
      problem(errc::unknown_key, line,
              fmt::format("unknown key '{}': the file holds [identity.NAME] tables",
                          proto::printable(std::string_view{key})));
      continue;
    }
    for (auto& [name_key, id_node] : *ids) {
      std::string name{std::string_view{name_key}};
      auto id_line = id_node.source().begin.line;
      auto tbl = id_node.as_table();
      if (tbl == nullptr) {
        problem(errc::bad_config_file, id_line,
                fmt::format("identity.{} must be a table", proto::printable(name)));
        continue;
      }
      if (auto ok = proto::check_agent_name(name); !ok) {
        problem(errc::invalid_value, id_line, fmt::format("identity name: {}", ok.error().text));
        continue;
      }
      auto id = std::make_shared<identity>();
      id->name = name;
      bool names_given = false;
      auto string_list = [&](const toml::node& v, std::string_view k, uint32_t l,
                             bool names) -> std::vector<std::string> {
        std::vector<std::string> out;
        auto arr = v.as_array();
        if (arr == nullptr) {
          problem(errc::invalid_value, l,
                  fmt::format("identity.{}.{} must be a list of strings", name, k));
          return out;
        }
        for (auto& el : *arr) {
          auto s = el.as_string();
          if (s == nullptr) {
            problem(errc::invalid_value, el.source().begin.line,
                    fmt::format("identity.{}.{} must be a list of strings", name, k));
            continue;
          }
          if (auto ok = check_right_pattern(s->get(), names); !ok) {
            problem(errc::invalid_value, el.source().begin.line,
                    fmt::format("identity.{}.{}: {}", name, k, ok.error().text));
            continue;
          }
          out.push_back(s->get());
        }
        return out;
      };
      for (auto& [field_key, v] : *tbl) {
        std::string_view field{field_key};
        auto l = v.source().begin.line;
        if (field == "token-hash") {
          auto s = v.as_string();
          if (s == nullptr || s->get().rfind("$argon2id$", 0) != 0
              || s->get().size() >= crypto_pwhash_STRBYTES) {
            problem(errc::invalid_value, l,
                    fmt::format("identity.{}.token-hash must be an argon2id hash "
                                "(\"$argon2id$...\", written by 'convoke-server credentials "
                                "add'); never put the token itself in this file",
                                name));
            continue;
          }
          id->token_hash = s->get();
        } else if (field == "names") {
          id->names = string_list(v, field, l, true);
          names_given = true;
          if (id->names.empty() && v.as_array() != nullptr && v.as_array()->empty())
            problem(errc::invalid_value, l,
                    fmt::format("identity.{}.names is empty: it could connect under no name "
                                "(leave 'names' out for the identity's own name)",
                                name));
        } else if (field == "publish") {
          id->rights.publish = string_list(v, field, l, false);
        } else if (field == "subscribe") {
          id->rights.subscribe = string_list(v, field, l, false);
        } else if (field == "send") {
          id->rights.send = string_list(v, field, l, true);
        } else if (field == "receive" || field == "admin") {
          auto b = v.as_boolean();
          if (b == nullptr) {
            problem(errc::invalid_value, l,
                    fmt::format("identity.{}.{} must be true or false", name, field));
            continue;
          }
          (field == "receive" ? id->rights.receive : id->rights.admin) = b->get();
        } else if (field == "observe") {
          auto s = v.as_string();
          if (s != nullptr && s->get() == "none")
            id->rights.observe = observe_level::none;
          else if (s != nullptr && s->get() == "metadata")
            id->rights.observe = observe_level::metadata;
          else if (s != nullptr && s->get() == "payload")
            id->rights.observe = observe_level::payload;
          else
            problem(errc::invalid_value, l,
                    fmt::format("identity.{}.observe must be \"none\", \"metadata\" or "
                                "\"payload\"",
                                name));
        } else if (field == "messages-per-second" || field == "bytes-per-second") {
          auto i = v.as_integer();
          if (i == nullptr || i->get() < 0) {
            problem(errc::invalid_value, l,
                    fmt::format("identity.{}.{} must be a whole number >= 0 (0 = the "
                                "server-wide default)",
                                name, field));
            continue;
          }
          (field == "messages-per-second" ? id->limits.messages_per_second
                                          : id->limits.bytes_per_second)
            = static_cast<uint64_t>(i->get());
        } else {
          problem(errc::unknown_key, l,
                  fmt::format("unknown key '{}' in identity.{}", proto::printable(field), name));
        }
      }
      if (id->token_hash.empty())
        problem(errc::invalid_value, id_line, fmt::format("identity.{} has no token-hash", name));
      if (!names_given)
        id->names = {name};
      store->identities_.emplace(name, std::move(id));
    }
  }
  if (!errs.empty())
    return tl::unexpected(std::move(errs));
  return std::shared_ptr<const credential_store>{std::move(store)};
}

std::string generate_token() {
  return crypto::random_hex(32);
}

expected<std::string> hash_token(std::string_view token) {
  char out[crypto_pwhash_STRBYTES];
  if (sodium_init() < 0
      || crypto_pwhash_str(out, token.data(), token.size(), hash_opslimit, hash_memlimit) != 0)
    return fail(errc::invalid_value, "argon2id hashing failed (out of memory?)");
  return std::string{out};
}

bool verify_token(const std::string& hash, std::string_view token) noexcept {
  if (token.size() < min_token_length || token.size() > max_token_length)
    return false;
  return crypto_pwhash_str_verify(hash.c_str(), token.data(), token.size()) == 0;
}

namespace {

std::string toml_list(const std::vector<std::string>& xs) {
  std::string out = "[";
  for (size_t i = 0; i < xs.size(); ++i)
    out += fmt::format("{}{}", i == 0 ? "" : ", ", json_string(xs[i]));
  return out + "]";
}

} // namespace

namespace {

/// An identity name as a TOML key: bare if it can be, else quoted (agent
/// names may hold '.', ':' and '@', which a bare key cannot: "a.b" would be
/// a table "b" inside identity "a").
std::string toml_key(std::string_view name) {
  bool bare = !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'
           || c == '-';
  });
  return bare ? std::string{name} : json_string(name);
}

} // namespace

std::string format_identity(const identity& id) {
  auto& r = id.rights;
  return fmt::format("[identity.{}]\n"
                     "token-hash = {}\n"
                     "names = {}\n"
                     "publish = {}\n"
                     "subscribe = {}\n"
                     "send = {}\n"
                     "receive = {}\n"
                     "observe = \"{}\"\n"
                     "admin = {}\n"
                     "messages-per-second = {}\n"
                     "bytes-per-second = {}\n",
                     toml_key(id.name), json_string(id.token_hash), toml_list(id.names),
                     toml_list(r.publish), toml_list(r.subscribe), toml_list(r.send),
                     r.receive ? "true" : "false", to_string(r.observe), r.admin ? "true" : "false",
                     id.limits.messages_per_second, id.limits.bytes_per_second);
}

namespace {

constexpr int exit_ok = 0;
constexpr int exit_usage = 2;
constexpr int exit_data = 65;       // EX_DATAERR: the file is malformed
constexpr int exit_cant_write = 73; // EX_CANTCREAT
constexpr int exit_config = 78;     // EX_CONFIG

const char* file_header = "# Convoke credentials: one [identity.NAME] table per identity.\n"
                          "# Managed with 'convoke-server credentials add|remove|list FILE'.\n"
                          "# Holds token hashes only (argon2id); docs/security.md explains "
                          "every key.\n";

/// The file's text, or "" if it does not exist; nullopt (and a message) if
/// it cannot be read or does not parse.
std::optional<std::string> read_existing(const std::string& path, std::ostream& err, int& code) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec))
    return std::string{};
  std::ifstream in{path, std::ios::binary};
  if (!in) {
    err << "convoke-server: cannot read " << path << ": " << std::strerror(errno) << "\n";
    code = exit_config;
    return std::nullopt;
  }
  std::stringstream buf;
  buf << in.rdbuf();
  auto text = buf.str();
  if (auto st = credential_store::parse(text, path); !st) {
    err << "convoke-server: " << path << " is not a valid credentials file:\n";
    for (auto& e : st.error())
      err << "  " << e.message() << "\n";
    code = exit_data;
    return std::nullopt;
  }
  return text;
}

/// Writes `text` to `path` atomically (temporary file, fsync, rename), mode
/// 0600: the file holds hashes, which still deserve no readers.
bool write_atomically(const std::string& path, const std::string& text, std::ostream& err) {
  auto tmp = path + ".tmp." + std::to_string(::getpid());
  auto fail_with = [&](const char* what) {
    err << "convoke-server: cannot " << what << " " << tmp << ": " << std::strerror(errno) << "\n";
    ::unlink(tmp.c_str());
    return false;
  };
  auto f = std::fopen(tmp.c_str(), "wx");
  if (f == nullptr)
    return fail_with("create");
  ::fchmod(::fileno(f), S_IRUSR | S_IWUSR);
  bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size() && std::fflush(f) == 0
            && ::fsync(::fileno(f)) == 0;
  std::fclose(f);
  if (!ok)
    return fail_with("write");
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    return fail_with("rename");
  return true;
}

/// Removes the table [identity.NAME] (its header line up to the next
/// table header) from `text`. False if there is none.
bool remove_table(std::string& text, const std::string& name) {
  auto header = "[identity." + toml_key(name) + "]";
  std::string out;
  bool removed = false;
  bool skipping = false;
  std::istringstream in{text};
  std::string line;
  while (std::getline(in, line)) {
    auto first = line.find_first_not_of(" \t");
    auto trimmed = first == std::string::npos ? std::string{} : line.substr(first);
    if (!trimmed.empty() && trimmed[0] == '[') {
      auto end = trimmed.find(']');
      skipping = end != std::string::npos && trimmed.substr(0, end + 1) == header;
      removed = removed || skipping;
    }
    if (!skipping)
      out += line + "\n";
  }
  text = std::move(out);
  return removed;
}

} // namespace

int credentials_command(int argc, const char* const* argv, std::ostream& out, std::ostream& err) {
  CLI::App app{"convoke-server credentials: manage a credentials file (auth.credentials).\n"
               "Tokens are printed once and never stored: the file keeps argon2id hashes.",
               "convoke-server credentials"};
  app.require_subcommand(1);
  std::string path;
  std::string name;
  auto add = app.add_subcommand("add", "Add an identity with a fresh random token (printed "
                                       "once on standard output)");
  // Least privilege: an identity gets the rights given here and no others
  // (--all for everything but observe and admin).
  identity id;
  bool all = false;
  bool replace = false;
  std::string observe = "none";
  add->add_option("file", path, "Credentials file (created if missing, mode 0600)")->required();
  add->add_option("name", name, "Identity name")->required();
  add->add_option("--names", id.names, "Agent names (patterns) it may use [default: its own name]")
    ->delimiter(',');
  auto publish_opt
    = add
        ->add_option("--publish", id.rights.publish,
                     "Routes (patterns) it may broadcast on, comma-separated [default: none]")
        ->delimiter(',');
  auto subscribe_opt = add
                         ->add_option("--subscribe", id.rights.subscribe,
                                      "Routes (patterns) it may subscribe to [default: none]")
                         ->delimiter(',');
  auto send_opt
    = add
        ->add_option("--send", id.rights.send,
                     "Agents (patterns) it may message directly [default: none; replies to "
                     "requests it received are always allowed]")
        ->delimiter(',');
  add->add_flag("--receive", id.rights.receive, "It may receive direct messages [default: no]");
  add->add_flag("--all", all,
                "Publish, subscribe, send and receive everything (not observe, not admin); "
                "--publish and the others then narrow one right");
  add->add_option("--observe", observe, "Traces it may observe: none, metadata, payload")
    ->check(CLI::IsMember({"none", "metadata", "payload"}))
    ->capture_default_str();
  add->add_flag("--admin", id.rights.admin, "It may use the admin HTTP endpoints");
  add->add_option("--messages-per-second", id.limits.messages_per_second,
                  "Its rate limit (0 = the server-wide default)");
  add->add_option("--bytes-per-second", id.limits.bytes_per_second,
                  "Its byte rate limit (0 = the server-wide default)");
  add->add_flag("--replace", replace, "Replace an existing identity (and its token)");
  auto remove = app.add_subcommand("remove", "Remove an identity");
  remove->add_option("file", path, "Credentials file")->required();
  remove->add_option("name", name, "Identity name")->required();
  auto list = app.add_subcommand("list", "List identities and their rights (no secrets)");
  list->add_option("file", path, "Credentials file")->required();
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    out << app.help();
    return exit_ok;
  } catch (const CLI::ParseError& e) {
    err << "convoke-server credentials: " << e.what() << "\n";
    return exit_usage;
  }
  // `--publish ''` (an empty value) means "none".
  for (auto* xs : {&id.names, &id.rights.publish, &id.rights.subscribe, &id.rights.send})
    std::erase(*xs, std::string{});
  int code = exit_ok;
  auto text = read_existing(path, err, code);
  if (!text)
    return code;
  if (list->parsed()) {
    auto st = credential_store::parse(*text, path);
    for (auto& [n, i] : (*st)->all()) {
      auto& r = i->rights;
      out << fmt::format("{}: names={} publish={} subscribe={} send={} receive={} observe={} "
                         "admin={} messages-per-second={} bytes-per-second={}\n",
                         n, toml_list(i->names), toml_list(r.publish), toml_list(r.subscribe),
                         toml_list(r.send), r.receive, to_string(r.observe), r.admin,
                         i->limits.messages_per_second, i->limits.bytes_per_second);
    }
    return exit_ok;
  }
  if (auto ok = proto::check_agent_name(name); !ok) {
    err << "convoke-server credentials: identity name: " << ok.error().text << "\n";
    return exit_usage;
  }
  bool existed = remove_table(*text, name);
  if (remove->parsed()) {
    if (!existed) {
      err << "convoke-server credentials: no identity '" << name << "' in " << path << "\n";
      return exit_usage;
    }
    if (!write_atomically(path, *text, err))
      return exit_cant_write;
    err << "removed identity '" << name << "' from " << path << "\n";
    return exit_ok;
  }
  if (existed && !replace) {
    err << "convoke-server credentials: identity '" << name << "' already exists in " << path
        << " (use --replace to give it a new token)\n";
    return exit_usage;
  }
  id.name = name;
  if (id.names.empty())
    id.names = {name};
  if (all) {
    std::pair<CLI::Option*, std::vector<std::string>*> rights_given[]
      = {{publish_opt, &id.rights.publish},
         {subscribe_opt, &id.rights.subscribe},
         {send_opt, &id.rights.send}};
    for (auto [opt, xs] : rights_given)
      if (opt->count() == 0)
        *xs = {">"};
    id.rights.receive = true;
  }
  id.rights.observe = observe == "payload"    ? observe_level::payload
                      : observe == "metadata" ? observe_level::metadata
                                              : observe_level::none;
  auto token = generate_token();
  auto hash = hash_token(token);
  if (!hash) {
    err << "convoke-server credentials: " << hash.error().text << "\n";
    return exit_cant_write;
  }
  id.token_hash = *hash;
  if (text->empty())
    *text = file_header;
  if (!text->empty() && text->back() != '\n')
    *text += "\n";
  *text += "\n" + format_identity(id);
  // What is written must load: the rights given on the command line are
  // checked by the same parser as the server's.
  if (auto st = credential_store::parse(*text, path); !st) {
    err << "convoke-server credentials: not written:\n";
    for (auto& e : st.error())
      err << "  " << e.message() << "\n";
    return exit_usage;
  }
  if (!write_atomically(path, *text, err))
    return exit_cant_write;
  auto& r = id.rights;
  err << (existed ? "replaced" : "added") << " identity '" << name << "' in " << path
      << fmt::format(": names={} publish={} subscribe={} send={} receive={} observe={} admin={}",
                     toml_list(id.names), toml_list(r.publish), toml_list(r.subscribe),
                     toml_list(r.send), r.receive, to_string(r.observe), r.admin)
      << "; its token follows (shown once; the file keeps only its hash)\n";
  out << token << "\n";
  return exit_ok;
}

} // namespace convoke::server
