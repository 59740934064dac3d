#!/usr/bin/env bash
# The README's test command: every Rust test of the workspace, then the Python package's tests
# (built into .venv by python-env.sh). Exits non-zero if either fails.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace
bash scripts/python-env.sh
.venv/bin/python -m pytest python/tests -q
