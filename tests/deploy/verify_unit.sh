#!/usr/bin/env bash
# Checks the shipped systemd unit with systemd-analyze, pointing it at the
# built binary (the unit names /usr/local/bin/convoke-server).
set -euo pipefail
unit_src=$1
bin=$2
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
sed "s|/usr/local/bin/convoke-server|$bin|g" "$unit_src" >"$dir/convoke-server.service"
out=$(systemd-analyze verify "$dir/convoke-server.service" 2>&1 || true)
# Only complaints about this unit count (not about the host's other units).
problems=$(grep "convoke-server.service" <<<"$out" || true)
if [ -n "$problems" ]; then
  echo "$problems"
  exit 1
fi
echo "unit OK"
