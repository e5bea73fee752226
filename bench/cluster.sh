#!/usr/bin/env bash
# Cluster benchmarks (results: bench/README.md, "Cluster"; design:
# docs/cluster.md). Two parts, each a table; every configuration runs RUNS
# times (default 3), interleaved (one run of each, then the next round), a
# fresh set of servers per run, shipped defaults with tracing off (the admin
# listener on a free port: two nodes cannot share 7421).
#
# PART=cross: a message crossing from one node to another, Convoke against
# Debian's nats-server, in the same run:
#   c1  one convoke-server
#   c2  two convoke-server nodes (cluster.name, cluster.peers: a full mesh)
#   n1  one nats-server
#   n2  two nats-server nodes (--cluster/--routes/--cluster_name)
# Every server process (both nodes of a cluster) is pinned to CPU SERVER_CPU
# (0) and the generator to BENCH_CPU (1): the server side gets one core
# whether it is one node or two, as in bench/compare.sh, so the two-node
# columns show what crossing a node link costs (server CPU per delivery:
# both nodes' CPU summed), not extra cores. Placement: the publisher on node
# 0 and every receiver on node 1 ("cross"), or the receivers alternating
# between node 0 and node 1 ("mixed"); direct: each sender on node 0 and its
# receiver on node 1. On one server the placement is moot.
#
# PART=scale: every core of one machine (issue 13, item 4), Convoke only:
#   s1  one convoke-server on CPU 0
#   s2  two convoke-server nodes on CPU 0 and CPU 1, sharing the client port
#       (listen.reuse-port) and joined as a cluster; connections placed
#   s2k the same, connections placed by the kernel (SO_REUSEPORT hashing)
#   s2i (direct only) the same two nodes not joined: no cross-node work,
#       the most two relay threads can give here
# The generator may run on every CPU (taskset -c 0-(nproc-1)): on a 2-core
# machine it cannot have a core of its own next to two nodes, so it gets the
# same CPUs in both configurations. Workloads: broadcast fan-out (receivers
# alternating between the nodes), direct pairs with sender and receiver on
# the same node (placed: each connection is retried until Welcome names the
# wanted node), and direct pairs placed by the kernel (SO_REUSEPORT hashing,
# about half of the pairs cross nodes).
#
#   bench/cluster.sh                          # both parts, ~5 min
#   RUNS=3 SECS=3 PART=cross bench/cluster.sh
#   CONVOKE_ONLY=1 PART=cross bench/cluster.sh  # without the NATS columns
#
# Needs: a build (ninja -C build convoke-server convoke-bench), nats-server
# (apt-get install nats-server), curl, 2 or more CPUs.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/table.sh
source bench/table.sh
BENCH=${BENCH:-build/bin/convoke-bench}
SERVER=${SERVER:-build/bin/convoke-server}
NATS=${NATS:-$(command -v nats-server || echo /usr/sbin/nats-server)}
RUNS=${RUNS:-3}
SECS=${SECS:-3}
PART=${PART:-"cross scale"}
SERVER_CPU=${SERVER_CPU:-0}
BENCH_CPU=${BENCH_CPU:-1}
CONVOKE_ONLY=${CONVOKE_ONLY:-0}
{ [ -x "$BENCH" ] && [ -x "$SERVER" ]; } || { echo "build first: $BENCH, $SERVER" >&2; exit 1; }
[ "$CONVOKE_ONLY" = 1 ] || [ -x "$NATS" ] ||
  { echo "nats-server is missing: apt-get install nats-server" >&2; exit 1; }
command -v curl >/dev/null || { echo "needs curl (waits for the mesh on /varz)" >&2; exit 1; }
[ "$(nproc)" -ge 2 ] || { echo "needs 2 CPUs" >&2; exit 1; }
ALL_CPUS=0-$(($(nproc) - 1))
TMP=$(mktemp -d)
PIDS=()
stop_servers() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
}
trap 'stop_servers; rm -rf "$TMP"' EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_for TEST...: polls the command every 20 ms for up to 10 s.
wait_for() {
  local _
  for _ in $(seq 500); do
    "$@" 2>/dev/null && return 0
    sleep 0.02
  done
  echo "timed out waiting for: $*" >&2
  return 1
}
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# mesh_formed ADMIN_PORT_FILE PEERS: the node's /varz lists PEERS peers.
mesh_formed() {
  [ -s "$1" ] &&
    [ "$(curl -sf "http://127.0.0.1:$(cat "$1")/varz" | grep -o '"cluster_addr"' | wc -l)" = "$2" ]
}

# convoke_nodes CPUS REUSE: starts one convoke-server per entry of CPUS
# (the CPU it is pinned to); more than one form a cluster (every node lists
# every other as a seed); REUSE=1: they share one client port
# (listen.reuse-port). Sets SERVERS (host:port,...), SERVER_PIDS, NODES.
convoke_nodes() {
  local cpus reuse=$2 n k
  read -r -a cpus <<<"$1"
  n=${#cpus[@]}
  local ports=() cports=() shared
  shared=$(free_port)
  for k in $(seq 0 $((n - 1))); do
    if [ "$reuse" = 1 ]; then ports+=("$shared"); else ports+=("$(free_port)"); fi
    cports+=("$(free_port)")
  done
  SERVERS="" SERVER_PIDS="" NODES=""
  for k in $(seq 0 $((n - 1))); do
    local args=(--server.name "n$k" --listen.port "${ports[$k]}" --trace.enabled false
      --log.level warn --limits.max-connections-per-address 0
      --admin.port 0 --admin.port-file "$TMP/admin$k")
    [ "$reuse" = 1 ] && args+=(--listen.reuse-port true)
    if [ "$n" -gt 1 ] && [ "${CLUSTER:-1}" = 1 ]; then
      local peers="" j
      for j in $(seq 0 $((n - 1))); do
        [ "$j" = "$k" ] || peers+="${peers:+,}127.0.0.1:${cports[$j]}"
      done
      args+=(--cluster.name bench --cluster.node "n$k"
        --cluster.listen "127.0.0.1:${cports[$k]}" --cluster.peers "$peers")
    fi
    rm -f "$TMP/admin$k"
    taskset -c "${cpus[$k]}" "$SERVER" "${args[@]}" >"$TMP/node$k.log" 2>&1 &
    PIDS+=($!)
    SERVERS+="${SERVERS:+,}127.0.0.1:${ports[$k]}"
    SERVER_PIDS+="${SERVER_PIDS:+,}$!"
    NODES+="${NODES:+,}n$k"
  done
  for k in $(seq 0 $((n - 1))); do
    wait_for listening "${ports[$k]}" || { cat "$TMP/node$k.log" >&2; return 1; }
    [ "$n" -gt 1 ] && [ "${CLUSTER:-1}" = 1 ] && { wait_for mesh_formed "$TMP/admin$k" $((n - 1)) ||
      { cat "$TMP/node$k.log" >&2; return 1; }; }
  done
  return 0
}

# nats_nodes CPUS: one nats-server per entry; more than one form a cluster
# (each node's --routes lists every other).
nats_nodes() {
  local cpus n k ports=() cports=()
  read -r -a cpus <<<"$1"
  n=${#cpus[@]}
  for k in $(seq 0 $((n - 1))); do
    ports+=("$(free_port)")
    cports+=("$(free_port)")
  done
  SERVERS="" SERVER_PIDS=""
  for k in $(seq 0 $((n - 1))); do
    local args=(-a 127.0.0.1 -p "${ports[$k]}")
    if [ "$n" -gt 1 ]; then
      local routes="" j
      for j in $(seq 0 $((n - 1))); do
        [ "$j" = "$k" ] || routes+="${routes:+,}nats://127.0.0.1:${cports[$j]}"
      done
      args+=(--cluster "nats://127.0.0.1:${cports[$k]}" --routes "$routes" --cluster_name bench)
    fi
    taskset -c "${cpus[$k]}" "$NATS" "${args[@]}" >"$TMP/nats$k.log" 2>&1 &
    PIDS+=($!)
    SERVERS+="${SERVERS:+,}127.0.0.1:${ports[$k]}"
    SERVER_PIDS+="${SERVER_PIDS:+,}$!"
  done
  # The routes connect within about a second (NATS retries every second);
  # the generator's warm-up probes wait until interest has propagated.
  for k in $(seq 0 $((n - 1))); do
    wait_for listening "${ports[$k]}" || { cat "$TMP/nats$k.log" >&2; return 1; }
  done
}

# run CONFIG SCENARIO-ARGS...: starts CONFIG's servers, runs one
# measurement, stops them; prints the generator's JSON line.
run() {
  local config=$1
  shift
  local gen=(taskset -c "$BENCH_CPU") proto=() place=()
  case $config in
  c1) convoke_nodes "$SERVER_CPU" 0 ;;
  c2) convoke_nodes "$SERVER_CPU $SERVER_CPU" 0 ;;
  n1) nats_nodes "$SERVER_CPU"; proto=(--protocol nats) ;;
  n2) nats_nodes "$SERVER_CPU $SERVER_CPU"; proto=(--protocol nats) ;;
  s1) convoke_nodes "0" 1; gen=(taskset -c "$ALL_CPUS") ;;
  s2) convoke_nodes "0 1" 1; gen=(taskset -c "$ALL_CPUS") ;;
  s2k) convoke_nodes "0 1" 1; gen=(taskset -c "$ALL_CPUS") ;;
  s2i) CLUSTER=0 convoke_nodes "0 1" 1; gen=(taskset -c "$ALL_CPUS") ;;
  esac
  # Scale part: place connections by node name, except s2k (the kernel's
  # SO_REUSEPORT hashing decides).
  if [ "$config" = s2 ] || [ "$config" = s2i ]; then place=(--node-names "$NODES"); fi
  "${gen[@]}" "$BENCH" "$@" "${proto[@]}" "${place[@]}" --server "$SERVERS" \
    --server-pid "$SERVER_PIDS" --seconds "$SECS" --json 2>"$TMP/bench.err" |
    grep '^{' || { sed 's/^/  bench: /' "$TMP/bench.err" >&2; echo '{}'; }
  stop_servers
}

machine="$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"
for part in $PART; do
  case $part in
  cross)
    if [ "$CONVOKE_ONLY" = 1 ]; then
      CONFIGS=(c1 c2)
      RATIOS=("1 0")
      header="| scenario | Convoke, 1 node | Convoke, 2 nodes | 2 nodes / 1 node |"
      sep="|---|---|---|---|"
    else
      CONFIGS=(c1 c2 n1 n2)
      RATIOS=("1 3" "1 0" "3 2")
      header="| scenario | Convoke, 1 node | Convoke, 2 nodes | NATS, 1 node | NATS, 2 nodes | 2 nodes: Convoke / NATS | Convoke: 2 nodes / 1 | NATS: 2 nodes / 1 |"
      sep="|---|---|---|---|---|---|---|---|"
    fi
    echo "machine: $machine; nats-server $("$NATS" --version 2>&1 | awk '{print $NF}'); every server process (both nodes) on CPU $SERVER_CPU, generator on CPU $BENCH_CPU; $RUNS runs of ${SECS}s per cell, interleaved; median [min–max]; ratios > 1 favour the first"
    echo
    echo "$header"
    echo "$sep"
    measure fanout -n 10 --pub-node 0 --sub-nodes 1
    row "fanout N=10 cross (publisher on node 0, receivers on node 1), deliveries/s" deliveries_per_s higher
    row "fanout N=10 cross, server CPU s per M deliveries" server_cpu_s_per_million lower
    row "fanout N=10 cross, generator CPU s" bench_cpu_s lower
    row "fanout N=10 cross, lost (worst run)" lost worst
    row "fanout N=10 cross, reordered (worst run)" reordered worst
    measure fanout -n 10 --pub-node 0 --sub-nodes 0,1
    row "fanout N=10 mixed (receivers on both nodes), deliveries/s" deliveries_per_s higher
    row "fanout N=10 mixed, server CPU s per M deliveries" server_cpu_s_per_million lower
    row "fanout N=10 mixed, lost (worst run)" lost worst
    row "fanout N=10 mixed, reordered (worst run)" reordered worst
    measure latency -n 10 --rate 10000 --pub-node 0 --sub-nodes 1
    for q in p50_us p99_us p999_us; do
      row "latency 10k/s N=10 cross, $q" "$q" lower
    done
    row "latency 10k/s N=10 cross, server CPU s per M deliveries" server_cpu_s_per_million lower
    row "latency 10k/s N=10 cross, lost (worst run)" lost worst
    row "latency 10k/s N=10 cross, reordered (worst run)" reordered worst
    measure direct --pairs 10 --cross
    row "direct 10 pairs cross (sender node 0, receiver node 1), messages/s" messages_per_s higher
    row "direct 10 pairs cross, server CPU s per M messages" server_cpu_s_per_million lower
    row "direct 10 pairs cross, lost (worst run)" lost worst
    echo ;;
  scale)
    echo "machine: $machine; 1 node on CPU 0, or 2 nodes on CPU 0 and CPU 1 sharing one client port (listen.reuse-port); generator on CPUs $ALL_CPUS; $RUNS runs of ${SECS}s per cell, interleaved; median [min–max]"
    echo
    CONFIGS=(s1 s2 s2k)
    RATIOS=("1 0" "2 0")
    echo "| broadcast | 1 node | 2 nodes (cluster), receivers alternating | 2 nodes (cluster), placed by the kernel | alternating / 1 node | kernel / 1 node |"
    echo "|---|---|---|---|---|---|"
    measure fanout -n 10 --pub-node 0 --sub-nodes 0,1
    row "fanout N=10, deliveries/s" deliveries_per_s higher
    row "fanout N=10, server CPU s per M deliveries" server_cpu_s_per_million lower
    row "fanout N=10, generator CPU s" bench_cpu_s lower
    row "fanout N=10, lost (worst run)" lost worst
    row "fanout N=10, reordered (worst run)" reordered worst
    measure fanout -n 100 --pub-node 0 --sub-nodes 0,1
    row "fanout N=100, deliveries/s" deliveries_per_s higher
    row "fanout N=100, server CPU s per M deliveries" server_cpu_s_per_million lower
    row "fanout N=100, generator CPU s" bench_cpu_s lower
    row "fanout N=100, lost (worst run)" lost worst
    row "fanout N=100, reordered (worst run)" reordered worst
    echo
    # s2i: the same two nodes not joined (no cluster): what two relay
    # threads give on this machine with no cross-node work at all.
    CONFIGS=(s1 s2 s2k s2i)
    RATIOS=("1 0" "2 0" "3 0")
    echo "| direct messages | 1 node | 2 nodes (cluster), pairs node-local | 2 nodes (cluster), placed by the kernel | 2 nodes not joined, pairs node-local | node-local / 1 node | kernel / 1 node | not joined / 1 node |"
    echo "|---|---|---|---|---|---|---|---|"
    measure direct --pairs 10
    row "direct 10 pairs, messages/s" messages_per_s higher
    row "direct 10 pairs, server CPU s per M messages" server_cpu_s_per_million lower
    row "direct 10 pairs, generator CPU s" bench_cpu_s lower
    row "direct 10 pairs, lost (worst run)" lost worst
    echo ;;
  esac
done
