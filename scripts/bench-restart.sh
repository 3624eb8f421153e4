#!/usr/bin/env bash
# Restart time with checkpoints against a rebuild from the inputs, same run
# (the checkpoints issue's benchmark; figures in README, Performance).
#
# A history of SIGNALS pre-embedded signals over DAYS days (generated once
# and kept in state/bench-restart/) is run to its end with checkpoints,
# which leaves one of the whole state; then a tenth more records are
# appended to the same file and `run` starts again, resuming from it. Timed:
#   - ready: from the start until /health/ready answers 200;
#   - caught up: until the run has read the file again as far as the
#     checkpoint had (it skips what the checkpoint holds) and new records
#     flow (the log line "caught up with the checkpoint");
#   - the rebuild: `run` of the same grown file without checkpoints, from
#     start to end, and of the history alone (what a restart without
#     checkpoints would redo before any new record);
#   - the checkpoint's size on disk and the longest pause a checkpoint
#     caused the dataflow (from the first run's log).
#
#   scripts/bench-restart.sh                    # 1,000,000 signals, 14 days
#   SIGNALS=200000 DAYS=7 scripts/bench-restart.sh
#   GROWN_REBUILD=0 scripts/bench-restart.sh    # skip the grown file's rebuild
#                                               # (informational; ~as long as
#                                               # the history's at 1M)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/setup.sh >/dev/null
# shellcheck disable=SC1091
source state/env
cargo build --release -p ideaflow
B="$ROOT/target/release/ideaflow"
SIGNALS="${SIGNALS:-1000000}"
DAYS="${DAYS:-14}"
dir="state/bench-restart"
mkdir -p "$dir"
all="$dir/signals-$SIGNALS-$DAYS.jsonl"
if [ ! -s "$all" ]; then
  extra=$((SIGNALS / 10))
  echo "[bench-restart] generating $((SIGNALS + extra)) signals over $DAYS days (once)"
  "$B" gen --signals $((SIGNALS + extra)) --seed 11 --days "$DAYS" \
    --synthetic-embeddings --base64-embeddings --out "$all.tmp"
  mv "$all.tmp" "$all"
fi
lines=$(wc -l < "$all")
history_lines=$((lines * 10 / 11))
port=18191
ckpt="$dir/checkpoints"
config="$dir/bench.toml"
cat > "$config" <<TOML
extends = "$ROOT/config/ideaflow.toml"
[pipeline]
idle_source_secs = 2
checkpoint_dir = "$ROOT/$ckpt"
checkpoints_kept = 1
TOML
plain="$dir/plain.toml"
printf 'extends = "%s/config/ideaflow.toml"\n[pipeline]\nidle_source_secs = 2\n' "$ROOT" > "$plain"
grown="$dir/input.jsonl"
run() { # config namespace log [extra...]
  local c=$1 ns=$2 log=$3; shift 3
  "$B" run --config "$c" -i "$ROOT/$grown" --namespace "$ns" --listen "127.0.0.1:$port" \
    --out "$dir/$ns.out.jsonl" --dead-letter "$dir/$ns.dead.jsonl" --exit-at-end "$@" > "$log" 2>&1
}
# A finished measurement's outputs go at once: at 1M signals each run's
# output file is ~3.6 GB and its namespace a few GB of Postgres.
drop() { # namespace
  rm -f "$dir/$1.out.jsonl" "$dir/$1.dead.jsonl"
  "$IDEAFLOW_PG_BIN/psql" "$IDEAFLOW_POSTGRES_URL" -qAtc "DROP SCHEMA IF EXISTS $1 CASCADE" >/dev/null 2>&1 || true
  redis-cli -u "$IDEAFLOW_REDIS_URL" --scan --pattern "$1:*" \
    | xargs -r -n 500 redis-cli -u "$IDEAFLOW_REDIS_URL" unlink >/dev/null || true
}
for ns in bench_rebuild_history bench_restart bench_rebuild; do drop "$ns"; done
now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.2f}')"; }

echo "[bench-restart] history: $history_lines lines; then $((lines - history_lines)) more"
rm -rf "$ckpt"
head -n "$history_lines" "$all" > "$grown"
t0=$(now); run "$plain" bench_rebuild_history "$dir/rebuild-history.log"; t1=$(now)
rebuild_history=$(secs "$t0" "$t1")
drop bench_rebuild_history
t0=$(now); run "$config" bench_restart "$dir/first.log"; t1=$(now)
first=$(secs "$t0" "$t1")
size=$(du -b "$ckpt"/*.ckpt | tail -1 | cut -f1)
pause=$(grep -o 'longest_pause_ms=[0-9]*' "$dir/first.log" | tail -1 | cut -d= -f2)
tail -n +"$((history_lines + 1))" "$all" >> "$grown"
t0=$(now)
run "$config" bench_restart "$dir/second.log" &
pid=$!
ready=""
caught=""
while kill -0 "$pid" 2>/dev/null; do
  if [ -z "$ready" ] && curl -sf "http://127.0.0.1:$port/health/ready" >/dev/null 2>&1; then
    ready=$(secs "$t0" "$(now)")
  fi
  if [ -z "$caught" ] && grep -q "caught up with the checkpoint" "$dir/second.log"; then
    caught=$(secs "$t0" "$(now)")
  fi
  sleep 0.05
done
wait "$pid"
t1=$(now)
second=$(secs "$t0" "$t1")
grep -q "resuming from a checkpoint" "$dir/second.log" || { echo "[bench-restart] the restart did not resume: see $dir/second.log" >&2; exit 1; }
drop bench_restart
rebuild="skipped (GROWN_REBUILD=0)"
if [ "${GROWN_REBUILD:-1}" != 0 ]; then
  t0=$(now); run "$plain" bench_rebuild "$dir/rebuild.log"; t1=$(now)
  rebuild=$(secs "$t0" "$t1")
  drop bench_rebuild
fi
echo
echo "| what | seconds |"
echo "| --- | --- |"
echo "| first run, history ($history_lines lines) with checkpoints | $first |"
echo "| rebuild of the history alone, no checkpoints | $rebuild_history |"
echo "| restart on the grown file: ready (/health/ready 200) | ${ready:-n/a} |"
echo "| restart: caught up with the checkpoint, new records flowing | ${caught:-n/a} |"
echo "| restart: to the end of the grown file | $second |"
echo "| rebuild of the grown file, no checkpoints | $rebuild |"
echo
echo "checkpoint size: $size bytes; longest dataflow pause while taking one: ${pause:-n/a} ms"
python3 - "$rebuild_history" "${caught:-0}" <<'PY'
import sys
rebuild, caught = float(sys.argv[1]), float(sys.argv[2])
if caught > 0:
    print(f"caught up {rebuild / caught:.1f}x faster than rebuilding the history")
PY
