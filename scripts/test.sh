#!/usr/bin/env bash
# Quick start, command 2: installs/starts what the tests need (Redis,
# PostgreSQL+pgvector, the model, Chromium for the dashboard test, schemathesis and
# promtool for the API contract test) and runs the whole test suite.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

command -v cargo >/dev/null 2>&1 || {
  echo "[test] ERROR: cargo is not installed: install a Rust toolchain, then re-run." >&2
  exit 1
}
scripts/setup.sh --with-test-tools
# shellcheck disable=SC1091
source state/env

# A CI run builds once from scratch: incremental caches would only add ~2 GB
# of disk to it.
if [ -n "${CI:-}" ] && [ -z "${CARGO_INCREMENTAL:-}" ]; then
  export CARGO_INCREMENTAL=0
fi

# Runs every test binary, then sums the per-binary results into one closing
# line (cargo's own last line is the doc-tests' "0 passed").
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
passed=$(grep -Eo 'test result: [A-Za-z]+\. [0-9]+ passed' "$log" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed;' "$log" | awk '{s+=$1} END {print s+0}')
echo "tests: $passed passed, $failed failed"
exit "$status"
