# shellcheck shell=bash disable=SC2153 # CONFIGS, RATIOS, RUNS and TMP are the caller's
# Shared by bench/compare.sh and bench/cluster.sh (sourced): one table row
# from the JSON lines of the last measurement. Uses the caller's CONFIGS
# (configuration names; the runs of config C are the lines of $TMP/C.json)
# and RATIOS (pairs of CONFIGS indexes "a b": a column a / b, oriented so
# that > 1 favours a).

# row LABEL KEY BETTER(higher|lower|worst): one table row from the last
# measure: median [min-max] of KEY per configuration (worst: the worst run).
row() {
  local label=$1 key=$2 better=$3
  local c cells=() meds=()
  for c in "${CONFIGS[@]}"; do
    read -r med lo hi <<<"$(grep -o "\"$key\":[-0-9.eE+]*" "$TMP/$c.json" | cut -d: -f2 | sort -g |
      awk -v w="$better" '
      { v[NR] = $1 }
      END {
        if (NR == 0) { print "nan nan nan"; exit }
        if (w == "worst") { print v[NR], v[1], v[NR]; exit }
        print v[int((NR + 1) / 2)], v[1], v[NR] }')"
    meds+=("$med")
    if [ "$better" = worst ]; then
      cells+=("$med")
    else
      cells+=("$(awk -v m="$med" -v l="$lo" -v h="$hi" 'function f(x) {
          return x >= 1e5 ? sprintf("%.2f M", x / 1e6) : sprintf("%.3g", x) }
        BEGIN { printf "%s [%s–%s]", f(m), f(l), f(h) }')")
    fi
  done
  local ratios="" pair
  if [ "$better" != worst ]; then
    for pair in "${RATIOS[@]}"; do
      read -r ci ni <<<"$pair"
      ratios+=$(awk -v c="${meds[$ci]}" -v n="${meds[$ni]}" -v b="$better" 'BEGIN {
        r = (b == "higher") ? (n > 0 ? c / n : 0) : (c > 0 ? n / c : 0);
        printf " %.2fx |", r }')
    done
  else
    ratios=""
    for _ in "${RATIOS[@]}"; do ratios+=" |"; done
  fi
  local line="| $label |"
  for cell in "${cells[@]}"; do line+=" $cell |"; done
  echo "$line$ratios"
}

# measure ARGS...: RUNS rounds, each running every configuration once in
# turn (interleaved), with the caller's `run CONFIG ARGS...`; each run's
# JSON lines go to $TMP/CONFIG.json for row().
measure() {
  local c
  for c in "${CONFIGS[@]}"; do : >"$TMP/$c.json"; done
  for _ in $(seq "$RUNS"); do
    for c in "${CONFIGS[@]}"; do
      run "$c" "$@" >>"$TMP/$c.json"
    done
  done
}
