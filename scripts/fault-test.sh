#!/usr/bin/env bash
# The long fault test of checkpoints (not in the default test run, which
# runs the same tests with 3 interruptions each): `ideaflow run` on a file,
# a Redis stream and a Kafka topic, killed with SIGKILL (and, on a file,
# stopped with SIGTERM) at KILLS random moments, a third of them right after
# a checkpoint was taken (during the sinks' commit or the checkpoint's
# write), restarted each time and run to its end; Postgres rows, Redis
# keys, the output file and the dead letters must be identical to an
# uninterrupted run's. Also: the sinks' Redis, then their Postgres, stopped
# for OUTAGE_SECS mid-run (readiness false, then true; writes retried; then
# kill -9 and a restart: identical again); a corrupt newest checkpoint falls
# back to the one before, truncated ones to a rebuild.
#
#   scripts/fault-test.sh            # 20 interruptions per test, 30 s outages (~8 min)
#   KILLS=5 OUTAGE_SECS=10 scripts/fault-test.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/setup.sh
# shellcheck disable=SC1091
source state/env
IDEAFLOW_FAULT_KILLS="${KILLS:-20}" IDEAFLOW_FAULT_OUTAGE_SECS="${OUTAGE_SECS:-30}" cargo test -p ideaflow --test checkpoints -- --test-threads 1 "$@"
