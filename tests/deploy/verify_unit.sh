#!/usr/bin/env bash
# Checks the generated systemd unit: it must name the paths `cmake --install`
# uses (the program in BINDIR, the configuration in SYSCONFDIR/convoke) and
# pass systemd-analyze verify, run against the built binary.
# Usage: verify_unit.sh UNIT BINDIR BUILT_BINARY SYSCONFDIR
set -euo pipefail
unit_src=$1
bindir=$2
bin=$3
sysconfdir=$4
config="$sysconfdir/convoke/convoke-server.toml"
for want in "ExecStart=$bindir/convoke-server --config $config" \
  "ExecStartPre=$bindir/convoke-server --config $config --check-config" \
  "Type=notify" "ExecReload=/bin/kill -HUP \$MAINPID" "WatchdogSec="; do
  if ! grep -qF -- "$want" "$unit_src"; then
    echo "the unit lacks: $want"
    exit 1
  fi
done
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
sed "s|$bindir/convoke-server|$bin|g" "$unit_src" >"$dir/convoke-server.service"
out=$(systemd-analyze verify "$dir/convoke-server.service" 2>&1 || true)
# Only complaints about this unit count (not about the host's other units).
problems=$(grep "convoke-server.service" <<<"$out" || true)
if [ -n "$problems" ]; then
  echo "$problems"
  exit 1
fi
echo "unit OK"
