#!/usr/bin/env bash
# Runs every convoke-bench scenario against convoke-server and Debian's
# nats-server, RUNS times each (default 3), and prints the medians side by
# side with the ratio as a Markdown table (bench/README.md shows a result).
#
#   bench/compare.sh                    # everything, ~5 minutes
#   RUNS=1 SECS=2 bench/compare.sh      # quick look
#   SCENARIOS="fanout latency" bench/compare.sh
#
# Needs: a build (./scripts/test or ninja -C build) and nats-server
# (apt-get install nats-server).
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH=${BENCH:-build/bin/convoke-bench}
RUNS=${RUNS:-3}
SECS=${SECS:-5}
SCENARIOS=${SCENARIOS:-"fanout latency direct connections"}
[ -x "$BENCH" ] || { echo "build first: $BENCH is missing" >&2; exit 1; }
command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ] ||
  { echo "nats-server is missing: apt-get install nats-server" >&2; exit 1; }

# median PROTO KEY ARGS...: runs the bench RUNS times, prints the median of KEY.
median() {
  local proto=$1 key=$2
  shift 2
  for _ in $(seq "$RUNS"); do
    "$BENCH" "$@" --protocol "$proto" --json | grep '^{' |
      grep -o "\"$key\":[-0-9.eE+]*" | cut -d: -f2
  done | sort -g | sed -n "$(((RUNS + 1) / 2))p"
}

# row LABEL KEY BETTER(higher|lower) ARGS...
row() {
  local label=$1 key=$2 better=$3
  shift 3
  local c n
  c=$(median convoke "$key" "$@")
  n=$(median nats "$key" "$@")
  awk -v l="$label" -v c="$c" -v n="$n" -v b="$better" 'BEGIN {
    if (c == n) { printf "| %s | %.4g | %.4g | equal |\n", l, c, n; exit }
    r = (b == "higher") ? (n > 0 ? c / n : 0) : (c > 0 ? n / c : 0);
    printf "| %s | %.4g | %.4g | %.2fx %s |\n", l, c, n, r, (r >= 1 ? "(Convoke ahead)" : "(NATS ahead)")
  }'
}

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r); nats-server $(nats-server --version 2>&1 | awk '{print $NF}'); runs=$RUNS, ${SECS}s each; medians"
echo
echo "| scenario | Convoke | NATS | ratio |"
echo "|---|---|---|---|"
for s in $SCENARIOS; do
  case $s in
  fanout)
    for n in 1 10 100; do
      row "fanout N=$n, deliveries/s" deliveries_per_s higher fanout -n "$n" --seconds "$SECS"
      row "fanout N=$n, server CPU s per M deliveries" server_cpu_s_per_million lower fanout -n "$n" --seconds "$SECS"
    done ;;
  latency)
    for q in p50_us p99_us p999_us; do
      row "latency 10k/s N=10, $q" "$q" lower latency -n 10 --rate 10000 --seconds "$SECS"
    done
    row "latency 10k/s N=10, lost (must be 0)" lost lower latency -n 10 --rate 10000 --seconds "$SECS"
    row "latency 10k/s N=10, reordered (must be 0)" reordered lower latency -n 10 --rate 10000 --seconds "$SECS" ;;
  direct)
    row "direct 10 pairs, messages/s" messages_per_s higher direct --pairs 10 --seconds "$SECS" ;;
  connections)
    for k in 1000 10000; do
      row "$k idle agents, server KiB per connection" rss_per_connection_kib lower connections --connections "$k"
      row "$k idle agents, seconds to connect" connect_seconds lower connections --connections "$k"
    done ;;
  esac
done
