#!/usr/bin/env bash
# The Debian packages (cmake/ConvokePackaging.cmake), built from a build tree
# with CPack and checked:
#   1. lintian finds no error and no warning (two tags suppressed, below);
#   2. convoke-server's contents: the unit in /lib/systemd/system naming
#      /usr/bin/convoke-server and /etc/convoke/convoke-server.toml, that file
#      and the logrotate snippet as conffiles, a postinst that creates the
#      convoke system user, shlibs for libconvoke;
#   3. the server starts from the packaged files and answers: the packaged
#      configuration, the packaged `convoke server check` against its admin
#      listener, and a message from one packaged `convoke` to another.
# Step 3 runs the programs either from the packages unpacked into a
# directory (default: nothing on the machine changes; the ctest test), or,
# with --install, from a real `dpkg -i` (root; scripts/deb-check, CI), then
# purges the packages and checks that nothing is left.
# Usage: deb_test.sh [--install] BUILD_DIR
set -euo pipefail
install=0
if [ "${1:-}" = --install ]; then
  install=1
  shift
fi
build=$(cd "$1" && pwd)
work="$build/tests/deb"
rm -rf "$work"
mkdir -p "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do
    kill -TERM "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  exit 1
}
step() { echo "--- $*"; }
wait_for_file() { # file pid what
  for _ in $(seq 1 200); do
    [ -s "$1" ] && return 0
    kill -0 "$2" 2>/dev/null || fail "$3 exited: $(tail -n 20 "$work/server.log" 2>/dev/null)"
    sleep 0.05
  done
  fail "$3: $1 did not appear within 10 s"
}

step "cpack (DEB)"
(cd "$work" && cpack --config "$build/CPackConfig.cmake" -B "$work/out") >"$work/cpack.log" 2>&1 ||
  { tail -n 30 "$work/cpack.log"; fail "cpack"; }
server_deb=$(ls "$work"/out/convoke-server_*.deb)
lib_deb=$(ls "$work"/out/libconvoke[0-9]*.deb)
dev_deb=$(ls "$work"/out/libconvoke-dev_*.deb)
version=$(dpkg-deb -f "$server_deb" Version)
echo "packages: $(cd "$work/out" && ls ./*.deb | tr '\n' ' ')"

step "lintian"
if command -v lintian >/dev/null; then
  # Suppressed, with reasons:
  # - initial-upload-closes-no-bugs: these packages are not uploaded to the
  #   Debian archive, so there is no ITP bug to close;
  # - maintainer-script-empty: libconvoke's postinst/postrm only exist so
  #   that CPack does not write ldconfig calls; the triggers file runs
  #   ldconfig (lintian would warn about the calls instead).
  lintian --fail-on error,warning \
    --suppress-tags initial-upload-closes-no-bugs,maintainer-script-empty \
    "$server_deb" "$lib_deb" "$dev_deb" >"$work/lintian.log" 2>&1 ||
    { cat "$work/lintian.log"; fail "lintian"; }
  grep -E "^(E|W):" "$work/lintian.log" && fail "lintian reported the above"
  echo "lintian: no errors, no warnings"
else
  [ $install = 1 ] && fail "lintian is not installed (scripts/lib.sh TEST_PACKAGES)"
  echo "lintian is not installed; skipped (scripts/deb-check installs it)"
fi

step "contents"
dpkg-deb -c "$server_deb" | awk '{print $6}' >"$work/server.files"
for f in ./usr/bin/convoke-server ./usr/bin/convoke ./lib/systemd/system/convoke-server.service \
  ./etc/convoke/convoke-server.toml ./etc/logrotate.d/convoke-server \
  ./usr/share/doc/convoke-server/copyright ./usr/share/man/man1/convoke-server.1.gz; do
  grep -qx -- "$f" "$work/server.files" || fail "convoke-server lacks $f"
done
dpkg-deb -e "$server_deb" "$work/server.control"
diff <(sort "$work/server.control/conffiles") \
  <(printf '/etc/convoke/convoke-server.toml\n/etc/logrotate.d/convoke-server\n') ||
  fail "conffiles"
grep -q "adduser --system" "$work/server.control/postinst" || fail "postinst creates no user"
dpkg-deb -f "$server_deb" Depends | grep -q "libcaf-io0.17" || fail "no shlibs dependencies"
# The cluster link's TLS (cluster.tls-*) runs in CAF's openssl module.
dpkg-deb -f "$server_deb" Depends | grep -q "libcaf-openssl0.17" || fail "no dependency on libcaf-openssl0.17"
dpkg-deb -e "$lib_deb" "$work/lib.control"
grep -q "^libconvoke " "$work/lib.control/shlibs" || fail "libconvoke has no shlibs file"
dpkg-deb --fsys-tarfile "$server_deb" | tar -xO ./lib/systemd/system/convoke-server.service \
  >"$work/unit"
grep -qF "ExecStart=/usr/bin/convoke-server --config /etc/convoke/convoke-server.toml" "$work/unit" ||
  fail "the unit does not run /usr/bin/convoke-server with /etc/convoke/convoke-server.toml"

if [ $install = 1 ]; then
  [ "$(id -u)" = 0 ] || fail "--install needs root"
  for p in convoke-server "$(dpkg-deb -f "$lib_deb" Package)"; do
    if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
      fail "$p is already installed; not touching it"
    fi
  done
  step "dpkg -i"
  getent passwd convoke >/dev/null && fail "a convoke user exists before installing"
  dpkg -i "$lib_deb" "$server_deb" >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; fail "dpkg -i"; }
  purge() {
    dpkg --purge convoke-server "$(dpkg-deb -f "$lib_deb" Package)" >>"$work/dpkg.log" 2>&1
  }
  trap 'cleanup; purge || true' EXIT
  getent passwd convoke >/dev/null || fail "postinst created no convoke user"
  dpkg-query -W -f='${Conffiles}\n' convoke-server | grep -q /etc/convoke/convoke-server.toml ||
    fail "/etc/convoke/convoke-server.toml is not a conffile"
  root=""
  # setpriv execs the server (runuser would stay its parent and take the signals).
  run_as=(setpriv --reuid convoke --regid convoke --init-groups --)
  if command -v logrotate >/dev/null; then
    logrotate -d /etc/logrotate.d/convoke-server >"$work/logrotate.log" 2>&1 ||
      { cat "$work/logrotate.log"; fail "logrotate rejects /etc/logrotate.d/convoke-server"; }
  fi
  if [ -d /run/systemd/system ]; then
    # postinst started the unit on the default ports; ours runs beside it
    # on free ports.
    systemctl is-active --quiet convoke-server || fail "systemd did not start convoke-server"
  fi
else
  step "unpack"
  root="$work/root"
  dpkg-deb -x "$server_deb" "$root"
  dpkg-deb -x "$lib_deb" "$root"
  run_as=()
fi

step "start the packaged server with the packaged configuration"
logs="$work/var-log"
mkdir -p "$logs"
[ $install = 1 ] && chown convoke: "$logs" "$work"
# The unit's command line, on free ports (127.0.0.1, as the packaged file),
# the trace file in our directory.
"${run_as[@]}" "$root/usr/bin/convoke-server" --config "$root/etc/convoke/convoke-server.toml" \
  --check-config >"$work/check.log" 2>&1 || { cat "$work/check.log"; fail "--check-config"; }
"${run_as[@]}" "$root/usr/bin/convoke-server" --config "$root/etc/convoke/convoke-server.toml" \
  --trace.file "$logs/trace.log" --listen.port 0 --listen.port-file "$work/port" \
  --admin.port 0 --admin.port-file "$work/admin-port" >"$work/server.log" 2>&1 &
server_pid=$!
pids+=("$server_pid")
wait_for_file "$work/port" "$server_pid" "convoke-server"
wait_for_file "$work/admin-port" "$server_pid" "convoke-server"
port=$(cat "$work/port")
admin=$(cat "$work/admin-port")
"$root/usr/bin/convoke-server" --version | grep -qF "convoke-server ${version%-*} " ||
  fail "--version is not the package's version ${version%-*}"

step "convoke server check, and a message between two packaged clients"
out=$("$root/usr/bin/convoke" server check --admin "http://127.0.0.1:$admin") ||
  fail "convoke server check: $out"
grep -q "^OK: convoke ${version%-*} ready" <<<"$out" || fail "server check: $out"
echo "$out"
"$root/usr/bin/convoke" listen -s "127.0.0.1:$port" -n deb-listener -c 1 >"$work/listen.out" 2>&1 &
listen_pid=$!
pids+=("$listen_pid")
# The listener is registered once the server lists it.
for _ in $(seq 1 200); do
  "$root/usr/bin/convoke" agents --admin "http://127.0.0.1:$admin" 2>/dev/null |
    grep -q deb-listener && break
  sleep 0.05
done
"$root/usr/bin/convoke" send -s "127.0.0.1:$port" -n deb-sender -t deb-listener \
  "hello from the package" >"$work/send.out" 2>&1 || { cat "$work/send.out"; fail "convoke send"; }
wait "$listen_pid" || { cat "$work/listen.out"; fail "convoke listen"; }
grep -q "hello from the package" "$work/listen.out" || { cat "$work/listen.out"; fail "no message"; }
grep -q "relay" "$logs/trace.log" || fail "no trace record in $logs/trace.log"

step "SIGTERM drains and exits 0"
kill -TERM "$server_pid"
wait "$server_pid" || fail "exit status $? after SIGTERM"
pids=()

if [ $install = 1 ]; then
  step "dpkg --purge"
  purge || { cat "$work/dpkg.log"; fail "dpkg --purge"; }
  trap cleanup EXIT
  for f in /usr/bin/convoke-server /lib/systemd/system/convoke-server.service /etc/convoke \
    /etc/logrotate.d/convoke-server /var/log/convoke; do
    [ -e "$f" ] && fail "$f is left after purge"
  done
  getent passwd convoke >/dev/null && fail "the convoke user is left after purge"
fi
echo "Debian packages OK ($version)"
