#!/usr/bin/env bash
# Installs what a fresh Debian/Ubuntu machine lacks to build and test quiverdb. Idempotent: it
# installs only what is missing, so it is cheap to run before every build (README, .ci/run).
#
# What is present is decided by *package name* (dpkg-query), never by globbing for library files: a
# machine image once shipped libclang-cpp.so.14 (the C++ interface library), a glob for libclang*.so*
# took it for libclang, libclang-dev was never installed and the README's first command failed there.
#
# `scripts/install-deps.sh --check` installs nothing and exits 1 naming every promised package that
# is not installed; .ci/run calls it after the install so that a machine which had the packages by
# accident cannot hide a missing install step.
set -euo pipefail

# The packages this script promises, and why each is needed:
#   build-essential  a C/C++ toolchain for crates with C parts (rocksdb's bindings, zstd, ...)
#   pkg-config       how -sys crates find system libraries
#   librocksdb-dev   the catalog links the distribution's RocksDB (.cargo/config.toml sets
#                    ROCKSDB_LIB_DIR); the bundled C++ build takes 30-60 minutes on 2 cores
#   libclang-dev     bindgen (librocksdb-sys's build script) loads libclang.so to generate bindings
#   ca-certificates  cargo fetches crates over TLS (a minimal Debian lacks the CA bundle)
PROMISED=(build-essential pkg-config librocksdb-dev libclang-dev ca-certificates)

installed() {
  [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

missing() {
  local out=()
  for p in "${PROMISED[@]}"; do installed "$p" || out+=("$p"); done
  echo "${out[@]:-}"
}

if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "install-deps: this script needs a Debian/Ubuntu system (dpkg); install by hand: ${PROMISED[*]}" >&2
  exit 1
fi

if [ "${1:-}" = "--check" ]; then
  m=$(missing)
  if [ -n "$m" ]; then
    echo "install-deps --check: not installed: $m" >&2
    exit 1
  fi
  # bindgen loads exactly libclang.so or libclang-N.so (never libclang-cpp.so): make sure the
  # package brought one, by exact file name.
  if [ -z "$(find /usr/lib -maxdepth 4 \( -name 'libclang.so' -o -regex '.*/libclang-[0-9]+\.so\(\.[0-9.]+\)?' \) -print -quit 2>/dev/null)" ]; then
    echo "install-deps --check: libclang-dev is installed but no libclang.so for bindgen was found" >&2
    exit 1
  fi
  echo "install-deps --check: ok (${PROMISED[*]})"
  exit 0
fi

read -r -a need_apt <<<"$(missing)"
if ((${#need_apt[@]})); then
  echo "install-deps: installing ${need_apt[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps: Rust is missing; install it with rustup (https://rustup.rs), then rerun." >&2
  exit 1
fi
echo "install-deps: ok ($(cargo --version))"
# The Python package, built into .venv (maturin, numpy and pytest from PyPI).
bash "$(dirname "$0")/python-env.sh"
