#!/usr/bin/env bash
# The SDK as a user gets it: `cmake --install` into a fresh prefix, then an
# agent (tests/sdk/agent) built out of tree against that prefix only, three
# ways: the CMake package with the shared and with the static library, and
# pkg-config. Each build of the agent runs against the installed
# convoke-server (127.0.0.1, port 0) and must deliver a message.
# Also: every installed header compiles on its own (C++20, which the headers need), none but the
# opt-in caf_interop.hpp includes CAF, none includes generated protobuf
# code, and the shared library has its SONAME.
# Usage: sdk_install_test.sh BUILD_DIR SOURCE_DIR CMAKE CXX
set -euo pipefail
build=$1 src=$2 cmake=$3 cxx=$4
work="$build/tests/sdk-install"
rm -rf "$work"
mkdir -p "$work"
prefix="$work/prefix"
log="$work/log"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  exit 1
}
step() { echo "--- $*"; }

step "install into $prefix"
"$cmake" --install "$build" --prefix "$prefix" >"$log.install" 2>&1 ||
  { cat "$log.install"; fail "cmake --install"; }
libdir=$(dirname "$(find "$prefix" -name libconvoke.so -print -quit)")
[ -n "$libdir" ] && [ "$libdir" != . ] || fail "no libconvoke.so installed"
[ -f "$libdir/libconvoke.a" ] || fail "no libconvoke.a installed"
[ -f "$libdir/pkgconfig/convoke.pc" ] || fail "no convoke.pc installed"

# The unit follows the prefix given now (not the one configured): it runs
# this prefix's program with this prefix's configuration.
unit="$prefix/lib/systemd/system/convoke-server.service"
grep -qF "ExecStart=$prefix/bin/convoke-server --config $prefix/etc/convoke/convoke-server.toml" "$unit" ||
  fail "the installed unit does not name $prefix's program and configuration"
[ -f "$prefix/etc/convoke/convoke-server.toml" ] || fail "no configuration in $prefix/etc/convoke"

step "SONAME and exported symbols"
soname=$(readelf -d "$libdir/libconvoke.so" | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')
[[ $soname =~ ^libconvoke\.so\.[0-9]+(\.[0-9]+)?$ ]] || fail "SONAME '$soname'"
[ -e "$libdir/$soname" ] || fail "$soname is not installed"
if nm -D --defined-only -C "$libdir/libconvoke.so" | grep -E ' (T|W) caf::' | head -n 3 | grep -q .; then
  fail "libconvoke.so exports CAF's symbols"
fi

step "headers: self-contained, CAF-free, no generated protobuf code"
headers=$(cd "$prefix/include" && find convoke -name '*.hpp' | sort)
[ -n "$headers" ] || fail "no headers installed"
for h in convoke/client.hpp convoke/client/blocking_client.hpp convoke/version.hpp; do
  grep -qx "$h" <<<"$headers" || fail "$h is not installed"
done
for h in $headers; do
  if [ "$h" != convoke/client/caf_interop.hpp ] && grep -q '#include [<"]caf/' "$prefix/include/$h"; then
    fail "$h includes CAF"
  fi
  if grep -qE '#include [<"].*\.pb\.h' "$prefix/include/$h"; then
    fail "$h includes generated protobuf code"
  fi
  printf '#include <%s>\n#include <%s>\n' "$h" "$h" >"$work/header.cpp"
  # -nostdinc++ is not used: the standard library and /usr/include (CAF,
  # tl/expected) are where a user's compiler finds them; the source tree is not.
  "$cxx" -std=c++20 -fsyntax-only -Wall -Wextra -I"$prefix/include" "$work/header.cpp" \
    >"$log.header" 2>&1 || { head -n 20 "$log.header"; fail "$h does not compile on its own"; }
done

step "start the installed convoke-server"
"$prefix/bin/convoke-server" --version | grep -q "^convoke-server " || fail "--version"
"$prefix/bin/convoke-server" --listen.port 0 --listen.port-file "$work/port" \
  --admin.enabled false --trace.enabled false >"$log.server" 2>&1 &
server_pid=$!
for _ in $(seq 1 200); do # up to 10 s for the port file
  [ -s "$work/port" ] && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$log.server"; fail "the server exited"; }
  sleep 0.05
done
[ -s "$work/port" ] || { cat "$log.server"; fail "no port file"; }
port=$(cat "$work/port")

run_agent() { # name binary
  local out
  out=$("$2" 127.0.0.1 "$port" 2>&1) || { echo "$out"; fail "$1: the agent failed"; }
  grep -q "^sdk_agent: ok" <<<"$out" || fail "$1: $out"
  echo "$1: $out"
}

for variant in shared static; do
  step "CMake package ($variant)"
  static=OFF
  [ $variant = static ] && static=ON
  "$cmake" -S "$src/tests/sdk/agent" -B "$work/cmake-$variant" -G Ninja \
    -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_PREFIX_PATH="$prefix" \
    -Dconvoke_USE_STATIC_LIBS=$static >"$log.cmake-$variant" 2>&1 ||
    { cat "$log.cmake-$variant"; fail "configuring the agent ($variant)"; }
  "$cmake" --build "$work/cmake-$variant" >>"$log.cmake-$variant" 2>&1 ||
    { tail -n 40 "$log.cmake-$variant"; fail "building the agent ($variant)"; }
  needed=$(readelf -d "$work/cmake-$variant/sdk_agent" | grep -c 'libconvoke\.so' || true)
  if [ $variant = shared ] && [ "$needed" != 1 ]; then fail "the shared build does not use libconvoke.so"; fi
  if [ $variant = static ] && [ "$needed" != 0 ]; then fail "the static build uses libconvoke.so"; fi
  run_agent "cmake-$variant" "$work/cmake-$variant/sdk_agent"
done

step "pkg-config"
export PKG_CONFIG_PATH="$libdir/pkgconfig"
[ "$(pkg-config --modversion convoke)" = "$(sed -n 's/^#define CONVOKE_VERSION_STRING "\(.*\)"/\1/p' \
  "$prefix/include/convoke/version.hpp")" ] || fail "pkg-config --modversion"
# shellcheck disable=SC2046 # word splitting of the flags is intended
"$cxx" -std=c++20 -O1 -o "$work/pc-agent" "$src/tests/sdk/agent/agent.cpp" \
  $(pkg-config --cflags --libs convoke) -Wl,-rpath,"$libdir" >"$log.pc" 2>&1 ||
  { cat "$log.pc"; fail "building the agent with pkg-config"; }
run_agent pkg-config "$work/pc-agent"
echo "SDK install OK"
