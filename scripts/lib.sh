# Shared by scripts/demo and scripts/test: install missing Debian packages,
# then configure and build into ./build. Idempotent; quiet when there is
# nothing to do; full logs in build/*.log.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${CONVOKE_BUILD_DIR:-$ROOT/build}

# Everything the build, the tests and the benchmarks need (Debian bookworm).
PACKAGES=(
  g++ cmake ninja-build pkg-config
  libcaf-dev libprotobuf-dev protobuf-compiler
  libspdlog-dev libfmt-dev libcli11-dev libtomlplusplus-dev nlohmann-json3-dev
  libgtest-dev libgmock-dev libbenchmark-dev libsodium-dev libexpected-dev
  libssl-dev openssl libcpp-httplib-dev libsystemd-dev
)
# What only the tests need on top (scripts/test, scripts/sanitize,
# scripts/fuzz call use_test_packages before install_missing): clang-14 and
# its libFuzzer/sanitizer runtimes for fuzz/, and python3-protobuf, a second
# protobuf implementation that decodes relayed frames in an interop test,
# prometheus for promtool, which checks the /metrics exposition, and
# chromium, which renders the web view (/trace) headless in an e2e test,
# lintian and logrotate, which check the Debian packages (tests/deploy/deb_test.sh),
# python3-yaml and python3-kubernetes (its API models check field names), which
# read the Kubernetes manifests (tests/deploy/manifests_test.py).
TEST_PACKAGES=(clang-14 libclang-rt-14-dev python3-protobuf prometheus chromium lintian logrotate
  python3-yaml python3-kubernetes)
use_test_packages() { PACKAGES+=("${TEST_PACKAGES[@]}"); }

say() { printf 'convoke: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

install_missing() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "installing ${missing[*]} needs root (run as root or install sudo)"
    sudo=(sudo)
  fi
  say "installing ${missing[*]} (apt-get)"
  mkdir -p "$BUILD"
  {
    "${sudo[@]}" apt-get update -q &&
      DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
  } >"$BUILD/apt.log" 2>&1 || { tail -n 30 "$BUILD/apt.log" >&2; die "apt-get failed (log: $BUILD/apt.log)"; }
}

build() {
  mkdir -p "$BUILD"
  if [ ! -f "$BUILD/build.ninja" ]; then
    say "configuring and building (the first build takes a few minutes; log: $BUILD/build.log)"
    cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$BUILD/build.log" 2>&1 ||
      { tail -n 40 "$BUILD/build.log" >&2; die "cmake failed (log: $BUILD/build.log)"; }
  fi
  # Ninja prints one line per compiled file; keep it in the log.
  ninja -C "$BUILD" >>"$BUILD/build.log" 2>&1 ||
    { grep -E "error|FAILED" -A3 "$BUILD/build.log" | tail -n 40 >&2; die "build failed (log: $BUILD/build.log)"; }
}

bootstrap() {
  install_missing
  build
}
