#!/usr/bin/env bash
# Side-by-side benchmark protocol (results: bench/README.md).
#
# Every scenario runs RUNS times (default 5) for each configuration,
# interleaved (one run of each, then the next round), so that drift of the
# machine hits all of them alike:
#   off    convoke-server, tracing off
#   on     convoke-server with its shipped defaults: tracing on, here to a
#          size-rotated file (as the systemd unit does)
#   before BASELINE_BIN, an older convoke-server (optional; tracing off;
#          BASELINE_PROTOCOL=1 for a version 1 server)
#   nats   Debian's nats-server
# With TLS=1 the configurations are instead: Convoke (tracing off) and NATS in
# plaintext, then both with TLS (a fresh EC P-256 CA and server certificate
# for localhost, made with the openssl CLI; TLS 1.3 on both):
#   off nats tls nats-tls
# The server runs pinned to CPU SERVER_CPU (0) and the generator to BENCH_CPU
# (1): they never share a core. Each cell shows the median and, in brackets,
# the lowest and highest of the runs; loss and reorder rows show the worst run.
#
#   bench/compare.sh                                   # ~15 minutes
#   RUNS=3 SECS=2 SCENARIOS=fanout bench/compare.sh    # quick look
#   SCENARIOS=routes bench/compare.sh                  # 10 x 1000 subscriptions
#   BASELINE_BIN=/path/to/old/convoke-server BASELINE_PROTOCOL=1 bench/compare.sh
#   TLS=1 SCENARIOS=fanout bench/compare.sh              # TLS against NATS with TLS
#   SCRAPE=1 SCENARIOS="fanout direct" bench/compare.sh  # with /metrics + /connz scraped
#   OBSERVE=1 SCENARIOS=fanout bench/compare.sh          # with a live observer
# With SCRAPE=1 a configuration is added:
#   scraped  convoke-server, tracing off, its admin endpoints /metrics and
#            /connz read every SCRAPE_MS (100) ms by the generator
# With OBSERVE=1 a configuration is added:
#   observed the shipped defaults (tracing on) plus one agent observing every
#            trace event through the live tap (convoke-bench --observe)
# With tracing on, the trace files of each run are kept until it ends (more
# rotated files than the shipped 5, the only difference) and the records the
# writer lost are counted from their `gap` events ("trace records lost").
#
# Needs: a build (./scripts/test or ninja -C build) and nats-server
# (apt-get install nats-server).
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH=${BENCH:-build/bin/convoke-bench}
RUNS=${RUNS:-5}
SECS=${SECS:-5}
SERVER_CPU=${SERVER_CPU:-0}
BENCH_CPU=${BENCH_CPU:-1}
SCENARIOS=${SCENARIOS:-"fanout latency direct connections"}
BASELINE_BIN=${BASELINE_BIN:-}
BASELINE_PROTOCOL=${BASELINE_PROTOCOL:-2}
TLS=${TLS:-0}
SCRAPE=${SCRAPE:-0}
SCRAPE_MS=${SCRAPE_MS:-100}
OBSERVE=${OBSERVE:-0}
source bench/table.sh
[ -x "$BENCH" ] || { echo "build first: $BENCH is missing" >&2; exit 1; }
command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ] ||
  { echo "nats-server is missing: apt-get install nats-server" >&2; exit 1; }
[ "$(nproc)" -ge 2 ] || { echo "needs 2 CPUs to pin server and generator apart" >&2; exit 1; }
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

CONFIGS=(off on)
[ "$SCRAPE" = 1 ] && CONFIGS+=(scraped)
[ "$OBSERVE" = 1 ] && CONFIGS+=(observed)
[ -n "$BASELINE_BIN" ] && CONFIGS+=(before)
CONFIGS+=(nats)
# Ratio columns: pairs of CONFIGS indexes, Convoke's then NATS's.
RATIOS=("0 $((${#CONFIGS[@]} - 1))" "1 $((${#CONFIGS[@]} - 1))")
[ "$SCRAPE" = 1 ] && RATIOS+=("2 0") # scraped / off
[ "$OBSERVE" = 1 ] && RATIOS+=("$((${#CONFIGS[@]} - 1 - $([ -n "$BASELINE_BIN" ] && echo 2 || echo 1))) 1") # observed / on
[ "$OBSERVE" = 1 ] && RATIOS+=("1 0") # on / off
if [ "$TLS" = 1 ]; then
  command -v openssl >/dev/null || { echo "TLS=1 needs the openssl CLI" >&2; exit 1; }
  CONFIGS=(off nats tls nats-tls)
  RATIOS=("0 1" "2 3")
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=bench-ca -keyout "$TMP/ca.key" -out "$TMP/ca.crt" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
    -keyout "$TMP/server.key" -out "$TMP/server.csr" 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$TMP/ext"
  openssl x509 -req -in "$TMP/server.csr" -CA "$TMP/ca.crt" -CAkey "$TMP/ca.key" \
    -CAcreateserial -days 2 -extfile "$TMP/ext" -out "$TMP/server.crt" 2>/dev/null
fi

# run CONFIG ARGS...: one bench run, prints its JSON line.
run() {
  local config=$1
  shift
  local args=(--json --server-cpu "$SERVER_CPU" --bench-cpu "$BENCH_CPU")
  case $config in
  off) ;;
  on | observed)
    rm -f "$TMP"/trace*
    args+=(--server-arg=--trace.enabled --server-arg=true
      "--server-arg=--trace.file" "--server-arg=$TMP/trace.log"
      "--server-arg=--trace.max-files" "--server-arg=1000")
    [ "$config" = observed ] && args+=(--observe) ;;
  scraped) args+=(--scrape-ms "$SCRAPE_MS") ;;
  before) args+=(--server-bin "$BASELINE_BIN" --convoke-protocol "$BASELINE_PROTOCOL") ;;
  nats) args+=(--protocol nats) ;;
  tls) args+=(--tls-ca "$TMP/ca.crt" "--server-arg=--tls.cert" "--server-arg=$TMP/server.crt"
    "--server-arg=--tls.key" "--server-arg=$TMP/server.key") ;;
  nats-tls) args+=(--protocol nats --tls-ca "$TMP/ca.crt" --server-arg=--tls
    --server-arg=--tlscert "--server-arg=$TMP/server.crt"
    --server-arg=--tlskey "--server-arg=$TMP/server.key") ;;
  esac
  "$BENCH" "$@" "${args[@]}" | grep '^{' || echo '{}'
  if [ "$config" = on ] || [ "$config" = observed ]; then
    # Records the trace writer lost: the sum of its gap events.
    printf '{"trace_lost":%s}\n' "$(cat "$TMP"/trace*.log 2>/dev/null |
      grep -o ' gap lost=[0-9]*' | cut -d= -f2 | awk '{ s += $1 } END { print s + 0 }')"
    rm -f "$TMP"/trace*
  fi
}

header="| scenario | Convoke, tracing off | Convoke, shipped defaults (tracing on) |"
sep="|---|---|---|"
[ "$SCRAPE" = 1 ] && { header+=" Convoke, tracing off, scraped every ${SCRAPE_MS} ms |"; sep+="---|"; }
[ "$OBSERVE" = 1 ] && { header+=" Convoke, tracing on, one observer of everything |"; sep+="---|"; }
[ -n "$BASELINE_BIN" ] && { header+=" Convoke before |"; sep+="---|"; }
header+=" NATS | off / NATS | on / NATS |"
sep+="---|---|---|"
[ "$SCRAPE" = 1 ] && { header+=" scraped / off |"; sep+="---|"; }
[ "$OBSERVE" = 1 ] && { header+=" observed / on | on / off |"; sep+="---|---|"; }
if [ "$TLS" = 1 ]; then
  header="| scenario | Convoke | NATS | Convoke, TLS | NATS, TLS | Convoke / NATS | TLS: Convoke / NATS |"
  sep="|---|---|---|---|---|---|---|"
fi
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r); nats-server $(nats-server --version 2>&1 | awk '{print $NF}'); server on CPU $SERVER_CPU, generator on CPU $BENCH_CPU; $RUNS runs of ${SECS}s per cell, interleaved; median [min–max]; ratios > 1 favour Convoke"
echo
echo "$header"
echo "$sep"
for s in $SCENARIOS; do
  case $s in
  fanout)
    for n in 1 10 100; do
      measure fanout -n "$n" --seconds "$SECS"
      row "fanout N=$n, deliveries/s" deliveries_per_s higher
      row "fanout N=$n, server CPU s per M deliveries" server_cpu_s_per_million lower
      row "fanout N=$n, lost (worst run)" lost worst
      row "fanout N=$n, reordered (worst run)" reordered worst
      row "fanout N=$n, trace records lost (worst run)" trace_lost worst
      [ "$OBSERVE" = 1 ] && row "fanout N=$n, observer: events missed (worst run)" missed worst
    done ;;
  routes)
    # 10 receivers x 1000 distinct subscriptions (10,000 in all), one of
    # which matches the published route; against plain fan-out to 10.
    measure fanout -n 10 --seconds "$SECS"
    row "fanout N=10, no subscriptions, deliveries/s" deliveries_per_s higher
    row "fanout N=10, no subscriptions, server CPU s per M deliveries" server_cpu_s_per_million lower
    measure fanout -n 10 --subscriptions 1000 --seconds "$SECS"
    row "fanout N=10 x 1000 exact routes, deliveries/s" deliveries_per_s higher
    row "fanout N=10 x 1000 exact routes, server CPU s per M deliveries" server_cpu_s_per_million lower
    row "fanout N=10 x 1000 exact routes, lost (worst run)" lost worst
    measure fanout -n 10 --subscriptions 1000 --patterns --seconds "$SECS"
    row "fanout N=10 x 1000 patterns, deliveries/s" deliveries_per_s higher
    row "fanout N=10 x 1000 patterns, server CPU s per M deliveries" server_cpu_s_per_million lower
    row "fanout N=10 x 1000 patterns, lost (worst run)" lost worst ;;
  latency)
    measure latency -n 10 --rate 10000 --seconds "$SECS"
    for q in p50_us p99_us p999_us; do
      row "latency 10k/s N=10, $q" "$q" lower
    done
    row "latency 10k/s N=10, lost (worst run)" lost worst
    row "latency 10k/s N=10, reordered (worst run)" reordered worst ;;
  direct)
    measure direct --pairs 10 --seconds "$SECS"
    row "direct 10 pairs, messages/s" messages_per_s higher
    row "direct 10 pairs, lost (worst run)" lost worst
    row "direct 10 pairs, trace records lost (worst run)" trace_lost worst ;;
  connections)
    measure connections --connections 10000
    row "10000 idle agents, server KiB per connection" rss_per_connection_kib lower
    row "10000 idle agents, seconds to connect" connect_seconds lower ;;
  esac
done
