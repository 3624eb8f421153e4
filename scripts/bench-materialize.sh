#!/usr/bin/env bash
# Materialized replay throughput: `replay --materialize` (Postgres/pgvector and
# Redis) against the same replay with no sinks (the baseline), same stream,
# same run, alternating rounds. Not part of the test suite.
#   scripts/bench-materialize.sh [--signals 20000] [--days 3] [--rounds 2] [--workers 1]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
signals=20000 days=3 rounds=2 workers=1
while [ $# -gt 0 ]; do
  case "$1" in
    --signals) signals="$2"; shift 2 ;;
    --days) days="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --workers) workers="$2"; shift 2 ;;
    *) echo "[bench] unknown option $1; see the usage at the top of $0" >&2; exit 2 ;;
  esac
done
scripts/setup.sh
# shellcheck disable=SC1091
source state/env
cargo build --release --quiet -p ideaflow
bin="$ROOT/target/release/ideaflow"
work="$ROOT/target/bench-materialize"
mkdir -p "$work"
stream="$work/signals-$signals-$days.jsonl"
[ -s "$stream" ] || "$bin" gen --signals "$signals" --days "$days" --seed 7 \
  --synthetic-embeddings --base64-embeddings --out "$stream"
# The same configuration with the HNSW index kept live during the load.
sed 's/^build_index_after_load = true/build_index_after_load = false/' \
  config/ideaflow.toml > "$work/index-live.toml"
grep -q '^build_index_after_load = false' "$work/index-live.toml" \
  || { echo "[bench] ERROR: config/ideaflow.toml has no build_index_after_load = true line to flip" >&2; exit 1; }

# Seconds for one replay: $1 = label, rest = extra flags.
replay() {
  local started ended
  rm -rf "$work/out"
  started=$(date +%s.%N)
  "$bin" replay --input "$stream" --out "$work/out" -w "$workers" "$@" > "$work/last.log" 2>&1 \
    || { echo "[bench] ERROR: replay $* failed; see $work/last.log" >&2; exit 1; }
  ended=$(date +%s.%N)
  echo "$ended - $started" | bc
}

declare -A total=()
for ((r = 1; r <= rounds; r++)); do
  total[plain]=$(echo "${total[plain]:-0} + $(replay --config config/ideaflow.toml)" | bc)
  total[after]=$(echo "${total[after]:-0} + $(replay --config config/ideaflow.toml --materialize --namespace bench_mat)" | bc)
  total[live]=$(echo "${total[live]:-0} + $(replay --config "$work/index-live.toml" --materialize --namespace bench_mat)" | bc)
done
"$bin" verify --config config/ideaflow.toml --namespace bench_mat --out "$work/out" | tail -1

rate() { printf '%.0f' "$(echo "$signals * $rounds / ${total[$1]}" | bc -l)"; }
ratio() { printf '%.2f' "$(echo "${total[plain]} / ${total[$1]}" | bc -l)"; }
echo
echo "$signals signals over $days days, $workers worker(s), $rounds alternating rounds:"
echo "| replay | signals/s | vs no sinks |"
echo "| --- | ---: | ---: |"
echo "| no sinks (baseline) | $(rate plain) | 1.00x |"
echo "| --materialize, HNSW index built after the load | $(rate after) | $(ratio after)x |"
echo "| --materialize, HNSW index live during the load | $(rate live) | $(ratio live)x |"
