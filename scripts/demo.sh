#!/usr/bin/env bash
# Quick start, command 1: installs/starts what ideaflow needs, builds it, and
# runs the pipeline on the bundled sample stream (materialized into Postgres
# and Redis), then serves the HTTP API and the dashboard until Ctrl-C.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

command -v cargo >/dev/null 2>&1 || {
  echo "[demo] ERROR: cargo is not installed: install a Rust toolchain (rustup or Debian's cargo), then re-run." >&2
  exit 1
}
scripts/setup.sh
# shellcheck disable=SC1091
source state/env

echo "[demo] building ideaflow (first build takes several minutes)"
cargo build --quiet --bin ideaflow
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/ideaflow"

"$BIN" validate --config config/ideaflow.toml
echo "[demo] running the pipeline on the sample stream; then serving the API and dashboard"
echo "[demo]   dashboard: http://127.0.0.1:8088/   API: http://127.0.0.1:8088/api/v1/openapi.json"
echo "[demo]   views: psql \"$IDEAFLOW_POSTGRES_URL\" -c 'SELECT title, score FROM ideaflow.ideas ORDER BY score DESC LIMIT 5'"
echo "[demo]   (pass --exit-at-end to stop when the input is done; Ctrl-C stops serving)"
exec "$BIN" run --config config/ideaflow.toml "$@"
