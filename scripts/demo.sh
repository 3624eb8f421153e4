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
# Where the API will listen: --listen ADDR if given, else the config's.
LISTEN="$(sed -n 's/^listen *= *"\(.*\)"/\1/p' config/ideaflow.toml | head -n 1)"
prev=""
for a in "$@"; do
  case "$a" in --listen=*) LISTEN="${a#--listen=}" ;; esac
  [ "$prev" = "--listen" ] && LISTEN="$a"
  prev="$a"
done
echo "[demo]   dashboard: http://$LISTEN/   API: http://$LISTEN/api/v1/openapi.json"
echo "[demo]   views: psql \"$IDEAFLOW_POSTGRES_URL\" -c 'SELECT title, score FROM ideaflow.ideas ORDER BY score DESC LIMIT 5'"
echo "[demo]   (pass --exit-at-end to stop when the input is done; Ctrl-C stops serving)"
exec "$BIN" run --config config/ideaflow.toml "$@"
