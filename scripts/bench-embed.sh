#!/usr/bin/env bash
# Embedding throughput, ideaflow (candle) vs sentence-transformers, same run,
# same texts, same thread count. Not part of the test suite.
#   scripts/bench-embed.sh [--threads 2] [--texts 512] [--batches 1,32,128] [--min-secs 3]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/setup.sh
# shellcheck disable=SC1091
source state/env
VENV="$ROOT/state/bench-venv"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import sentence_transformers" 2>/dev/null; then
  echo "[bench] installing sentence-transformers into $VENV (large: torch)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet sentence-transformers \
    || { echo "[bench] ERROR: pip install sentence-transformers failed; check PyPI access and disk space." >&2; exit 1; }
fi
cargo bench --bench embed_throughput -- --python "$VENV/bin/python" "$@"
