#!/usr/bin/env bash
# Quick start, command 1: installs/starts what ideaflow needs, builds it, and
# replays the bundled sample stream through the pipeline end to end.
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
BIN="$ROOT/target/debug/ideaflow"

"$BIN" validate --config config/ideaflow.toml
"$BIN" run --config config/ideaflow.toml "$@"
echo "[demo] first embedded signal:"
head -n 1 out/run/signals.jsonl | cut -c1-300
echo "[demo] dead letters (reason: message):"
python3 -c 'import json,sys
for l in open("out/run/dead_letter.jsonl"):
    d=json.loads(l); print(f"  line {d[\"position\"][\"line\"]}: {d[\"reason\"]}: {d[\"message\"]}")' 2>/dev/null || cat out/run/dead_letter.jsonl
