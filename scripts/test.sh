#!/usr/bin/env bash
# The README's test command: every Rust test of the workspace, a compile check of the fuzz targets,
# then the Python package's tests (built into .venv by python-env.sh). Exits non-zero if any fails.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace
# The fuzz targets are a separate crate (cargo fuzz builds them); they must at least compile, or a
# change to a decoder's API leaves them broken unnoticed (the npy target once was).
cargo check --manifest-path fuzz/Cargo.toml --bins
bash scripts/python-env.sh
.venv/bin/python -m pytest python/tests -q
