#!/usr/bin/env bash
# Builds the Python package (python/, PyO3 + maturin) into the repository's virtual environment
# .venv, installing maturin, numpy and pytest from PyPI into it when missing. Idempotent; called by
# install-deps.sh and test.sh. Nothing is installed outside .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
venv="$root/.venv"

if [ ! -x "$venv/bin/python" ]; then
  if ! python3 -m venv "$venv" 2>/dev/null; then
    # Debian's python3 splits venv/ensurepip into python3-venv.
    echo "python-env: installing python3 and python3-venv"
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3 python3-venv
    rm -rf "$venv"
    python3 -m venv "$venv"
  fi
fi
if ! "$venv/bin/python" -c "import maturin, numpy, pytest" 2>/dev/null; then
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "maturin>=1.5,<2" "numpy>=1.21" "pytest>=7"
fi
# Build from the repository root so .cargo/config.toml (the system RocksDB) applies, sharing the
# workspace's target directory with the Rust build.
VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH" CARGO_TARGET_DIR="$root/target" \
  "$venv/bin/maturin" develop --release --quiet --manifest-path python/Cargo.toml
"$venv/bin/python" -c "import quiverdb; print('python-env: quiverdb', quiverdb.__version__, 'importable from .venv')"
