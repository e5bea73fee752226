#include "cluster_harness.hpp"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>

#include <httplib.h>

#include "wait.hpp"

namespace convoke::test {

using namespace std::chrono_literals;

namespace {

/// The port in a port file (written atomically by the server), 0 if none yet.
uint16_t port_in(const std::string& path) {
  auto text = read_file(path);
  try {
    auto n = text.empty() ? 0 : std::stoul(text);
    return n < 65536 ? static_cast<uint16_t>(n) : 0;
  } catch (const std::exception&) {
    return 0;
  }
}

std::string join(const std::vector<std::string>& xs, const char* sep) {
  std::string out;
  for (auto& x : xs) {
    if (!out.empty())
      out += sep;
    out += x;
  }
  return out;
}

/// The value of `key=` in `line` (up to the next space), or "".
std::string field(const std::string& line, const std::string& key) {
  auto at = line.find(" " + key + "=");
  if (at == std::string::npos)
    return {};
  at += key.size() + 2;
  auto end = line.find_first_of(" \n", at);
  auto v = line.substr(at, end == std::string::npos ? std::string::npos : end - at);
  if (v.size() >= 2 && v.front() == '"' && v.back() == '"')
    v = v.substr(1, v.size() - 2);
  return v;
}

/// Peers up according to the log lines "cluster peer <state> node=X".
std::set<std::string> peers_from_log(const std::string& log) {
  std::map<std::string, bool> up;
  std::istringstream in{log};
  for (std::string line; std::getline(in, line);) {
    auto at = line.find("cluster peer ");
    if (at == std::string::npos)
      continue;
    auto node = field(line, "node");
    if (node.empty())
      continue;
    auto rest = line.substr(at + 13);
    up[node] = rest.rfind("up", 0) == 0 || rest.rfind("joined", 0) == 0;
  }
  std::set<std::string> out;
  for (auto& [n, is_up] : up)
    if (is_up)
      out.insert(n);
  return out;
}

std::string unique_cluster_name() {
  static std::atomic<int> counter{0};
  return "ctest-" + std::to_string(::getpid()) + "-" + std::to_string(++counter);
}

} // namespace

std::function<bool()> paced(std::function<bool()> pred, std::chrono::milliseconds every) {
  auto last = std::make_shared<std::chrono::steady_clock::time_point>();
  return [pred = std::move(pred), every, last] {
    auto now = std::chrono::steady_clock::now();
    if (now - *last < every)
      return false;
    *last = now;
    return pred();
  };
}

// -- cluster_node -------------------------------------------------------------

cluster_node::cluster_node(std::string cluster_name, std::string node_name, cluster_timing timing,
                           std::vector<std::string> extra)
  : cluster_(std::move(cluster_name)), name_(std::move(node_name)), timing_(std::move(timing)),
    extra_(std::move(extra)) {}

cluster_node::~cluster_node() {
  // A SIGSTOPped node must not outlive the test: continue it, so that the
  // process' destructor (SIGKILL, wait) finds it as any other.
  if (proc_ && stopped_)
    proc_->signal(SIGCONT);
}

std::string cluster_node::file(const std::string& base) const {
  return dir_.file(base + "-" + std::to_string(run_));
}

void cluster_node::start(const std::vector<std::string>& seeds, std::vector<std::string> more_flags,
                         const std::string& cluster_listen) {
  if (proc_ && proc_->running())
    throw std::logic_error("cluster_node::start: " + name_ + " is still running");
  ++run_;
  stopped_ = false;
  port_ = admin_port_ = cluster_port_ = 0;
  std::vector<std::string> argv{binary("convoke-server"),
                                "--listen.port",
                                "0",
                                "--listen.port-file",
                                file("port"),
                                "--admin.port",
                                "0",
                                "--admin.port-file",
                                file("admin-port"),
                                "--trace.file",
                                trace_path(),
                                "--trace.format",
                                "json",
                                "--cluster.name",
                                cluster_,
                                "--cluster.node",
                                name_,
                                "--cluster.listen",
                                cluster_listen,
                                "--cluster.port-file",
                                file("cluster-port"),
                                "--cluster.heartbeat",
                                timing_.heartbeat,
                                "--cluster.timeout",
                                timing_.timeout,
                                "--cluster.retry",
                                timing_.retry};
  if (!seeds.empty()) {
    argv.push_back("--cluster.peers");
    argv.push_back(join(seeds, ","));
  }
  argv.insert(argv.end(), extra_.begin(), extra_.end());
  argv.insert(argv.end(), more_flags.begin(), more_flags.end());
  proc_ = std::make_unique<process>(argv);
  bool up = eventually(
    [&] {
      if (!proc_->running())
        return true; // exited: reported below
      port_ = port_in(file("port"));
      cluster_port_ = port_in(file("cluster-port"));
      admin_port_ = port_in(file("admin-port"));
      return port_ != 0 && cluster_port_ != 0 && admin_port_ != 0;
    },
    15s);
  if (!up || !proc_->running())
    throw std::runtime_error("node " + name_ + " did not start (ports " + std::to_string(port_)
                             + "/" + std::to_string(cluster_port_) + "/"
                             + std::to_string(admin_port_) + "): " + proc_->err());
}

bool cluster_node::live() {
  return proc_ && !stopped_ && proc_->running();
}

void cluster_node::kill9() {
  proc_->signal(SIGKILL);
  if (stopped_)
    proc_->signal(SIGCONT);
  if (!proc_->wait(10s))
    throw std::runtime_error("node " + name_ + " survived SIGKILL");
  stopped_ = false;
}

void cluster_node::freeze() {
  proc_->signal(SIGSTOP);
  stopped_ = true;
}

void cluster_node::thaw() {
  proc_->signal(SIGCONT);
  stopped_ = false;
}

std::optional<int> cluster_node::terminate(std::chrono::milliseconds timeout) {
  if (stopped_)
    thaw();
  proc_->signal(SIGTERM);
  return proc_->wait(timeout);
}

std::string cluster_node::admin_get(const std::string& path, int* status) const {
  if (admin_port_ == 0)
    return {};
  httplib::Client c{"127.0.0.1", admin_port_};
  c.set_connection_timeout(1);
  c.set_read_timeout(2);
  auto r = c.Get(path);
  if (!r)
    return {};
  if (status)
    *status = r->status;
  return r->body;
}

nlohmann::json cluster_node::varz() const {
  auto body = admin_get("/varz");
  auto j = nlohmann::json::parse(body, nullptr, false);
  return j.is_discarded() ? nlohmann::json{} : j;
}

std::string cluster_node::peers_source() const {
  auto v = varz();
  return v.is_object() && v.contains("cluster") && v["cluster"].is_object()
             && v["cluster"].contains("peers")
           ? "varz"
           : "log";
}

std::set<std::string> cluster_node::peers_up() const {
  auto v = varz();
  if (v.is_object() && v.contains("cluster") && v["cluster"].is_object()
      && v["cluster"].contains("peers") && v["cluster"]["peers"].is_array()) {
    std::set<std::string> out;
    for (auto& p : v["cluster"]["peers"])
      if (p.is_object() && p.value("state", "") == "up" && p.contains("node"))
        out.insert(p["node"].get<std::string>());
    return out;
  }
  return peers_from_log(log());
}

std::string cluster_node::log() const {
  return proc_ ? proc_->err() + proc_->out() : std::string{};
}

std::string cluster_node::trace_path(int run) const {
  return dir_.file("trace-" + std::to_string(run == 0 ? run_ : run) + ".jsonl");
}

std::vector<nlohmann::json> cluster_node::trace(int run) const {
  std::vector<nlohmann::json> out;
  std::ifstream in{trace_path(run)};
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded()) // the last line of a killed node may be cut
      out.push_back(std::move(j));
  }
  return out;
}

// -- test_cluster -------------------------------------------------------------

test_cluster::test_cluster(std::vector<std::string> names, cluster_timing timing,
                           std::vector<std::string> extra)
  : name_(unique_cluster_name()), timing_(std::move(timing)), extra_(std::move(extra)) {
  for (auto& n : names) {
    nodes_.push_back(std::make_unique<cluster_node>(name_, n, timing_, extra_));
    std::vector<std::string> seeds;
    if (nodes_.size() > 1)
      seeds.push_back(nodes_[nodes_.size() - 2]->cluster_address());
    nodes_.back()->start(seeds);
  }
}

cluster_node& test_cluster::node(const std::string& name) {
  for (auto& n : nodes_)
    if (n->name() == name)
      return *n;
  throw std::out_of_range("no node " + name);
}

cluster_node& test_cluster::add(const std::string& name, const std::vector<std::string>& seeds,
                                const std::string& cluster_listen) {
  nodes_.push_back(std::make_unique<cluster_node>(name_, name, timing_, extra_));
  nodes_.back()->start(seeds, {}, cluster_listen);
  return *nodes_.back();
}

void test_cluster::restart(cluster_node& n) {
  std::vector<std::string> seeds;
  for (auto& other : nodes_)
    if (other.get() != &n && other->live())
      seeds.push_back(other->cluster_address());
  n.start(seeds);
}

bool test_cluster::wait_peers(cluster_node& n, const std::set<std::string>& expected,
                              std::chrono::milliseconds timeout) {
  return eventually(paced([&] { return n.peers_up() == expected; }), timeout);
}

bool test_cluster::wait_mesh(std::chrono::milliseconds timeout, std::string* why) {
  auto formed = [&] {
    std::set<std::string> live;
    for (auto& n : nodes_)
      if (n->live())
        live.insert(n->name());
    for (auto& n : nodes_) {
      if (!n->live())
        continue;
      auto expected = live;
      expected.erase(n->name());
      if (n->peers_up() != expected)
        return false;
    }
    return true;
  };
  auto ok = eventually(paced(formed), timeout);
  if (!ok && why)
    *why = describe();
  return ok;
}

std::string test_cluster::describe() {
  std::string out;
  for (auto& n : nodes_) {
    if (!n->live()) { // a stopped node would not answer /varz
      out += n->name() + (n->stopped() ? " (stopped)\n" : " (not running)\n");
      continue;
    }
    out += n->name() + " peers up (" + n->peers_source() + "): {";
    for (auto& p : n->peers_up())
      out += " " + p;
    out += " }\n";
    if (auto v = n->varz(); v.is_object() && v.contains("cluster"))
      out += "  /varz cluster: " + v["cluster"].dump() + "\n";
    auto log = n->log();
    out += "  log tail: " + log.substr(log.size() > 1500 ? log.size() - 1500 : 0) + "\n";
  }
  return out;
}

} // namespace convoke::test
