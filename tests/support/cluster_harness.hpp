#pragma once

// A cluster of real convoke-server processes on loopback for end-to-end
// tests (docs/cluster.md): each node on ephemeral ports (client, admin and
// cluster, read from port files), short heartbeats, a JSON trace per run.
// Nodes are started, killed (SIGKILL), stopped (SIGSTOP/SIGCONT), drained
// (SIGTERM) and restarted with real signals; the mesh is awaited by polling
// what the nodes say about their peers (/varz `cluster.peers`, else their
// `cluster peer ...` log lines), never by sleeping.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "process.hpp"

namespace convoke::test {

/// Node-to-node timings of a test cluster (flag values, e.g. "200ms").
struct cluster_timing {
  std::string heartbeat = "200ms";
  std::string timeout = "1s";
  std::string retry = "200ms";
  /// `timeout` in milliseconds (for deadlines in tests).
  std::chrono::milliseconds timeout_ms{1000};
};

/// One convoke-server process of a cluster; survives restarts (same node
/// name, same directory, a new trace file and new ports each run).
class cluster_node {
public:
  cluster_node(std::string cluster_name, std::string node_name, cluster_timing timing,
               std::vector<std::string> extra = {});
  ~cluster_node();

  cluster_node(const cluster_node&) = delete;
  cluster_node& operator=(const cluster_node&) = delete;

  /// Starts the process (again, after a kill) with `seeds` as
  /// --cluster.peers ("127.0.0.1:port" cluster addresses) and
  /// `cluster_listen` as --cluster.listen, and waits for its port files.
  /// Throws std::runtime_error if it does not come up.
  void start(const std::vector<std::string>& seeds, std::vector<std::string> more_flags = {},
             const std::string& cluster_listen = "127.0.0.1:0");

  const std::string& name() const noexcept {
    return name_;
  }
  /// The client (agent) port, the admin port and the cluster (BASP) port
  /// of the current run.
  uint16_t port() const noexcept {
    return port_;
  }
  uint16_t admin_port() const noexcept {
    return admin_port_;
  }
  uint16_t cluster_port() const noexcept {
    return cluster_port_;
  }
  std::string address() const {
    return "127.0.0.1:" + std::to_string(port_);
  }
  std::string cluster_address() const {
    return "127.0.0.1:" + std::to_string(cluster_port_);
  }
  /// How many times the process was started.
  int runs() const noexcept {
    return run_;
  }

  process& proc() {
    return *proc_;
  }
  /// Running and not SIGSTOPped.
  bool live();
  bool stopped() const noexcept {
    return stopped_;
  }

  /// SIGKILL, and waits for the exit.
  void kill9();
  /// SIGSTOP / SIGCONT.
  void freeze();
  void thaw();
  /// SIGTERM; returns the exit code (nullopt if it did not exit in `timeout`).
  std::optional<int> terminate(std::chrono::milliseconds timeout = std::chrono::seconds{10});

  /// GET `path` on the admin listener: the body, or "" without an answer.
  std::string admin_get(const std::string& path, int* status = nullptr) const;
  /// /varz parsed (a null json if there is no answer or it is not JSON).
  nlohmann::json varz() const;

  /// The nodes this node says are up: /varz `cluster.peers` (state "up")
  /// when it reports them, else its log lines "cluster peer up node=X" /
  /// "cluster peer lost node=X" (the last one for each node wins).
  std::set<std::string> peers_up() const;
  /// Where peers_up() got its answer: "varz" or "log".
  std::string peers_source() const;

  /// Everything the current run logged (stderr, then stdout).
  std::string log() const;

  /// The JSON trace events of run `run` (0: the current one).
  std::vector<nlohmann::json> trace(int run = 0) const;
  std::string trace_path(int run = 0) const;

private:
  std::string file(const std::string& base) const;

  temp_dir dir_;
  std::string cluster_;
  std::string name_;
  cluster_timing timing_;
  std::vector<std::string> extra_;
  std::unique_ptr<process> proc_;
  int run_ = 0;
  bool stopped_ = false;
  uint16_t port_ = 0;
  uint16_t admin_port_ = 0;
  uint16_t cluster_port_ = 0;
};

/// N nodes of one cluster (a fresh cluster name per instance). The first
/// node has no seed; each next node has only the previous one as seed, so
/// the full mesh must be learnt through the handshake (docs/cluster.md:
/// "one live seed is enough").
class test_cluster {
public:
  explicit test_cluster(std::vector<std::string> names = {"nodeA", "nodeB", "nodeC"},
                        cluster_timing timing = {}, std::vector<std::string> extra = {});

  cluster_node& operator[](size_t i) {
    return *nodes_.at(i);
  }
  cluster_node& node(const std::string& name);
  size_t size() const noexcept {
    return nodes_.size();
  }
  const std::string& name() const noexcept {
    return name_;
  }
  const cluster_timing& timing() const noexcept {
    return timing_;
  }

  /// Restarts a node that was killed, with the other live nodes as seeds.
  void restart(cluster_node& n);

  /// Adds a node and starts it with these seeds.
  cluster_node& add(const std::string& name, const std::vector<std::string>& seeds,
                    const std::string& cluster_listen = "127.0.0.1:0");

  /// Waits until each live node reports exactly the other live nodes as up.
  /// On timeout, `why` (if given) says what each node reported.
  bool wait_mesh(std::chrono::milliseconds timeout = std::chrono::seconds{10},
                 std::string* why = nullptr);

  /// Waits until `n` reports exactly `expected` as its peers up.
  bool wait_peers(cluster_node& n, const std::set<std::string>& expected,
                  std::chrono::milliseconds timeout = std::chrono::seconds{10});

  /// What every node reports (for failure messages).
  std::string describe();

private:
  std::string name_;
  cluster_timing timing_;
  std::vector<std::string> extra_;
  std::vector<std::unique_ptr<cluster_node>> nodes_;
};

/// `pred` for `eventually`, evaluated at most every `every` (polling a
/// process over HTTP or a protocol round trip need not run every 2 ms).
std::function<bool()> paced(std::function<bool()> pred,
                            std::chrono::milliseconds every = std::chrono::milliseconds{20});

} // namespace convoke::test
