#!/usr/bin/env bash
# Installs what a fresh Debian/Ubuntu machine lacks to build and test quiverdb. Idempotent: it
# installs only what is missing, so it is cheap to run before every build (README, .ci/run).
set -euo pipefail

need_apt=()
# A C toolchain for crates with C parts (and, with the catalog, the RocksDB bindings).
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
# The catalog links to the distribution's RocksDB (.cargo/config.toml sets ROCKSDB_LIB_DIR); the
# bindings are generated with libclang. Compiling RocksDB from source instead takes 30-60 minutes.
[ -e /usr/lib/x86_64-linux-gnu/librocksdb.so ] || need_apt+=(librocksdb-dev)
ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || ls /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1 \
  || need_apt+=(libclang-dev)

if ((${#need_apt[@]})); then
  echo "install-deps: installing ${need_apt[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps: Rust is missing; install it with rustup (https://rustup.rs), then rerun." >&2
  exit 1
fi
echo "install-deps: ok ($(cargo --version))"
