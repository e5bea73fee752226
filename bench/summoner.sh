#!/usr/bin/env bash
# Summoner fan-out (issue 12; results: bench/README.md, "Summoner fan-out").
#
# One Summoner sender and N Summoner receivers (convoke-summoner-bench),
# typed-envelope lines as the SDK writes them, closed loop, every received
# line checked (losses and reorderings counted). For each N (10 and 100),
# RUNS rounds, interleaved, each with a fresh server:
#   off     convoke-server's Summoner listener, tracing off
#   on      convoke-server with its shipped defaults (tracing on, text records
#           to a size-rotated file)
#   python  summoner-core's Python server (only if SUMMONER_CORE points at a
#           checkout of Summoner-Network/summoner-core; stdlib only), its
#           logging at WARNING (it logs every line at INFO by default)
# The server runs pinned to CPU SERVER_CPU (0), the generator to BENCH_CPU (1).
# Each cell: median [min–max] of the runs; lost/reordered: the worst run.
#
#   bench/summoner.sh                                    # RUNS=3 SECS=5
#   SUMMONER_CORE=/tmp/summoner-core RUNS=3 bench/summoner.sh
#   NS="10" RUNS=1 SECS=2 bench/summoner.sh              # quick look
#   CONFIGS=off bench/summoner.sh                        # only some configurations
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH=${BENCH:-build/bin/convoke-summoner-bench}
SERVER=${SERVER:-build/bin/convoke-server}
RUNS=${RUNS:-3}
SECS=${SECS:-5}
NS=${NS:-"10 100"}
SERVER_CPU=${SERVER_CPU:-0}
BENCH_CPU=${BENCH_CPU:-1}
SUMMONER_CORE=${SUMMONER_CORE:-}
[ -x "$BENCH" ] || { echo "build first: $BENCH is missing" >&2; exit 1; }
[ -x "$SERVER" ] || { echo "build first: $SERVER is missing" >&2; exit 1; }
[ "$(nproc)" -ge 2 ] || { echo "needs 2 CPUs to pin server and generator apart" >&2; exit 1; }
CONFIGS=${CONFIGS:-"off on"}
if [ -n "$SUMMONER_CORE" ] && [[ " $CONFIGS " != *" python "* ]]; then
  [ -f "$SUMMONER_CORE/summoner/server/server.py" ] ||
    { echo "SUMMONER_CORE=$SUMMONER_CORE is not a summoner-core checkout" >&2; exit 1; }
  CONFIGS="$CONFIGS python"
fi
TMP=$(mktemp -d)
SERVER_PID=
cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Starts the server of configuration $1; sets SERVER_PID and SPORT.
start_server() {
  local cfg=$1
  rm -rf "$TMP/run" && mkdir -p "$TMP/run"
  case $cfg in
    off | on)
      local trace=(--trace.enabled false)
      [ "$cfg" = on ] && trace=(--trace.enabled true --trace.file "$TMP/run/trace.log")
      taskset -c "$SERVER_CPU" "$SERVER" --listen.port 0 --listen.port-file "$TMP/run/port" \
        --admin.enabled false --log.level warn "${trace[@]}" \
        --summoner.listen 127.0.0.1:0 --summoner.port-file "$TMP/run/sport" \
        >"$TMP/run/server.log" 2>&1 &
      SERVER_PID=$!
      for _ in $(seq 500); do [ -s "$TMP/run/sport" ] && break; sleep 0.01; done
      [ -s "$TMP/run/sport" ] || { echo "server did not start:" >&2; cat "$TMP/run/server.log" >&2; exit 1; }
      SPORT=$(cat "$TMP/run/sport")
      ;;
    python)
      SPORT=$(free_port)
      (cd "$SUMMONER_CORE" && exec taskset -c "$SERVER_CPU" python3 -c "
import sys; sys.path.insert(0, '.')
from summoner.server import SummonerServer
SummonerServer('bench').run(host='127.0.0.1', port=$SPORT,
  config_dict={'logger': {'enable_console_log': False, 'log_level': 'WARNING'}})") \
        >"$TMP/run/server.log" 2>&1 &
      SERVER_PID=$!
      for _ in $(seq 500); do
        python3 -c "import socket; socket.create_connection(('127.0.0.1', $SPORT)).close()" \
          2>/dev/null && break
        sleep 0.02
      done
      ;;
  esac
}

stop_server() {
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
}

for n in $NS; do
  for run in $(seq "$RUNS"); do
    for cfg in $CONFIGS; do
      start_server "$cfg"
      taskset -c "$BENCH_CPU" "$BENCH" --server "127.0.0.1:$SPORT" -n "$n" --secs "$SECS" \
        --server-pid "$SERVER_PID" --label "$cfg" --json | tee -a "$TMP/results.txt" |
        grep -v '^{' || true
      stop_server
    done
  done
done

echo
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r); server on CPU $SERVER_CPU, generator on CPU $BENCH_CPU; $RUNS runs of ${SECS}s per cell, interleaved; median [min–max]"
grep '^{' "$TMP/results.txt" | python3 -c '
import json, sys, statistics
rows = [json.loads(l) for l in sys.stdin]
cfgs = []
for r in rows:
    if r["label"] not in cfgs:
        cfgs.append(r["label"])
names = {"off": "Convoke, tracing off", "on": "Convoke, shipped defaults (tracing on)",
         "python": "summoner-core Python server"}
def fmt(x):
    return f"{x/1e6:.3f} M" if x >= 1e5 else f"{x/1e3:.1f} k"
print("| N | " + " | ".join(names.get(c, c) for c in cfgs) + " |")
print("|---|" + "---|" * len(cfgs))
for n in sorted({r["n"] for r in rows}):
    cells, cpu, loss = [], [], []
    for c in cfgs:
        rs = [r for r in rows if r["n"] == n and r["label"] == c]
        v = [r["lines_per_s"] for r in rs]
        cells.append(f"{fmt(statistics.median(v))} [{fmt(min(v))}–{fmt(max(v))}]")
        per_m = [r["server_cpu_s"] / (r["lines"] / 1e6) for r in rs if r["server_cpu_s"] >= 0]
        cpu.append(f"{statistics.median(per_m):.3g}" if per_m else "?")
        lost = max(r["lost"] for r in rs)
        reordered = max(r["reordered"] for r in rs)
        cut = " (disconnected)" if any(r["disconnected"] for r in rs) else ""
        loss.append(f"{lost} / {reordered}{cut}")
    print(f"| {n}, lines received/s | " + " | ".join(cells) + " |")
    print(f"| {n}, server CPU s per M lines | " + " | ".join(cpu) + " |")
    print(f"| {n}, lost / reordered (worst run) | " + " | ".join(loss) + " |")
'
