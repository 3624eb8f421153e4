#!/usr/bin/env bash
# Quick start, command 2: installs/starts what the tests need (Redis,
# PostgreSQL+pgvector, the model) and runs the whole test suite.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

command -v cargo >/dev/null 2>&1 || {
  echo "[test] ERROR: cargo is not installed: install a Rust toolchain, then re-run." >&2
  exit 1
}
scripts/setup.sh
# shellcheck disable=SC1091
source state/env

cargo test --workspace "$@"
