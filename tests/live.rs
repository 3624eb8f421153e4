//! Live operation against real servers: records produced into a Redis
//! stream and a Kafka topic (by `ideaflow produce`, a real client), read by
//! `ideaflow run` with redeliveries, stops (SIGTERM, kill -9) and restarts;
//! the materialized views must equal a replay of the same records. Also the
//! webhook endpoint. Redis and the Kafka broker are started by
//! scripts/setup.sh (scripts/test.sh runs it).

#[path = "common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A name of its own per test process and test, for streams, topics and namespaces.
fn unique(test: &str) -> String {
    format!("t_live_{}_{}", std::process::id(), test)
}

fn redis_port() -> u16 {
    let url =
        std::env::var("IDEAFLOW_REDIS_URL").expect("IDEAFLOW_REDIS_URL unset: run scripts/test.sh");
    url.trim_end_matches('/')
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port in IDEAFLOW_REDIS_URL")
}

fn kafka() -> String {
    std::env::var("IDEAFLOW_KAFKA_BOOTSTRAP").expect(
        "IDEAFLOW_KAFKA_BOOTSTRAP unset: run scripts/test.sh (scripts/setup.sh starts the broker)",
    )
}

fn stream_url(stream: &str) -> String {
    format!("redis://127.0.0.1:{}/0?stream={stream}", redis_port())
}

/// A config for live tests: the repository's, with quick idleness.
fn live_config(dir: &Path) -> PathBuf {
    let path = dir.join("live-test.toml");
    std::fs::write(
        &path,
        format!(
            "extends = {:?}\n[pipeline]\nidle_source_secs = 2\nshutdown_timeout_secs = 20\n",
            repo_root().join("config/ideaflow.toml")
        ),
    )
    .unwrap();
    path
}

fn redis() -> redis::Connection {
    redis::Client::open(format!("redis://127.0.0.1:{}/", redis_port()))
        .unwrap()
        .get_connection()
        .unwrap()
}

fn produce(to: &str, input: &Path) {
    ok(ideaflow().args(["produce", to, "--input"]).arg(input));
}

/// `ideaflow run` on `input` into namespace `ns`, not yet started.
fn run_cmd(config: &Path, input: &str, ns: &str, dir: &Path) -> Command {
    run_listening(config, input, ns, dir, "")
}

/// [`run_cmd`] serving the API on `listen`.
fn run_listening(config: &Path, input: &str, ns: &str, dir: &Path, listen: &str) -> Command {
    let mut cmd = ideaflow();
    cmd.arg("run")
        .arg("--config")
        .arg(config)
        .args(["--input", input, "--namespace", ns, "--listen", listen])
        .arg("--out")
        .arg(dir.join(format!("{ns}.signals.jsonl")))
        .arg("--dead-letter")
        .arg(dir.join(format!("{ns}.dead.jsonl")));
    cmd
}

fn verify(config: &Path, ns: &str, out: &Path) {
    let o = ok(ideaflow()
        .arg("verify")
        .arg("--config")
        .arg(config)
        .args(["--namespace", ns, "--out"])
        .arg(out));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("OK"), "{text}");
}

/// A generated stream with feedback and synthetic vectors (no model time),
/// and every seventh line delivered twice.
fn stream_with_repeats(dir: &Path, signals: u32, seed: u64) -> (PathBuf, PathBuf) {
    let input = dir.join("s.jsonl");
    ok(ideaflow()
        .args([
            "gen",
            "--signals",
            &signals.to_string(),
            "--seed",
            &seed.to_string(),
        ])
        .args([
            "--days",
            "2",
            "--feedback",
            "--synthetic-embeddings",
            "--out",
        ])
        .arg(&input));
    let text = std::fs::read_to_string(&input).unwrap();
    let mut repeated = String::new();
    for (i, line) in text.lines().enumerate() {
        repeated.push_str(line);
        repeated.push('\n');
        if i % 7 == 0 {
            repeated.push_str(line);
            repeated.push('\n');
        }
    }
    let with = dir.join("repeated.jsonl");
    std::fs::write(&with, repeated).unwrap();
    (input, with)
}

fn pending(stream: &str) -> i64 {
    let reply: redis::Value = redis::cmd("XPENDING")
        .arg(stream)
        .arg("ideaflow")
        .query(&mut redis())
        .unwrap();
    match reply {
        redis::Value::Array(v) => match &v[0] {
            redis::Value::Int(n) => *n,
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_redis_stream_with_redeliveries_gives_what_a_replay_gives() {
    let dir = tempfile::tempdir().unwrap();
    let config = live_config(dir.path());
    let (input, repeated) = stream_with_repeats(dir.path(), 600, 61);
    let expected = dir.path().join("expected");
    replay(&input, &expected, &[]);
    let name = unique("stream");
    produce(&stream_url(&name), &repeated);
    ok(run_cmd(&config, &stream_url(&name), &name, dir.path()).arg("--exit-at-end"));
    verify(&config, &name, &expected);
    assert_eq!(pending(&name), 0, "every committed entry is acknowledged");
    let positions: String = redis::cmd("GET")
        .arg(format!("{name}:positions"))
        .query(&mut redis())
        .unwrap();
    assert!(positions.contains(&name), "{positions}");
    // A second run reads the stream again from its beginning (no
    // checkpoints yet) and still takes every redelivery once.
    ok(run_cmd(&config, &stream_url(&name), &name, dir.path()).arg("--exit-at-end"));
    verify(&config, &name, &expected);
}

#[test]
fn a_kafka_topic_with_redeliveries_gives_what_a_replay_gives() {
    let dir = tempfile::tempdir().unwrap();
    let config = live_config(dir.path());
    let (input, repeated) = stream_with_repeats(dir.path(), 500, 62);
    let expected = dir.path().join("expected");
    replay(&input, &expected, &[]);
    let name = unique("topic");
    let url = format!("kafka://{}/{name}", kafka());
    produce(&url, &repeated);
    let o = ok(run_cmd(&config, &url, &name, dir.path()).arg("--exit-at-end"));
    assert!(String::from_utf8_lossy(&o.stdout).contains("ideas in Postgres"));
    verify(&config, &name, &expected);
    // The group's offsets on the broker moved past every record, after commit.
    let records = std::fs::read_to_string(&repeated).unwrap().lines().count() as i64;
    let mut group =
        ideaflow_sources::bus::kafka_group::GroupOffsets::new(vec![kafka()], "ideaflow".into());
    let committed = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(group.fetch(&name, &[0]))
        .unwrap();
    assert_eq!(committed.get(&0), Some(&records), "{committed:?}");
}

/// Fluvio: no cluster can be installed on our machines, so this runs only
/// when `IDEAFLOW_TEST_FLUVIO` names one (`HOST:PORT` of its SC).
#[test]
fn a_fluvio_topic_with_redeliveries_gives_what_a_replay_gives() {
    let Ok(endpoint) = std::env::var("IDEAFLOW_TEST_FLUVIO") else {
        eprintln!(
            "skipped: IDEAFLOW_TEST_FLUVIO names no Fluvio endpoint (no Fluvio cluster can be installed here; \
             set it to HOST:PORT of a cluster's SC to run this test)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = live_config(dir.path());
    let (input, repeated) = stream_with_repeats(dir.path(), 300, 64);
    let expected = dir.path().join("expected");
    replay(&input, &expected, &[]);
    let name = unique("fluvio").replace('_', "-");
    let url = format!("fluvio://{endpoint}/{name}");
    produce(&url, &repeated);
    ok(run_cmd(&config, &url, &name.replace('-', "_"), dir.path()).arg("--exit-at-end"));
    verify(&config, &name.replace('-', "_"), &expected);
}

#[test]
fn bad_bus_records_are_dead_lettered_with_their_position() {
    let dir = tempfile::tempdir().unwrap();
    let config = live_config(dir.path());
    let name = unique("bad");
    let good = serde_json::json!({
        "id": "g1", "source": "reddit", "captured_at": "2024-10-01T00:00:00Z",
        "content": "A cat wearing a tiny hat",
        "embedding": (0..384).map(|i| if i == 0 { 1.0 } else { 0.0 }).collect::<Vec<f32>>()
    })
    .to_string();
    let mut r = redis();
    let _: String = redis::cmd("XADD")
        .arg(&name)
        .arg("*")
        .arg("data")
        .arg("not json")
        .query(&mut r)
        .unwrap();
    let _: String = redis::cmd("XADD")
        .arg(&name)
        .arg("*")
        .arg("other")
        .arg("x")
        .query(&mut r)
        .unwrap();
    let _: String = redis::cmd("XADD")
        .arg(&name)
        .arg("*")
        .arg("data")
        .arg(&good)
        .query(&mut r)
        .unwrap();
    ok(run_cmd(&config, &stream_url(&name), &name, dir.path()).arg("--exit-at-end"));
    let dead = read_jsonl(&dir.path().join(format!("{name}.dead.jsonl")));
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert_eq!(dead[0]["reason"], "malformed_json");
    assert_eq!(dead[1]["reason"], "missing_field");
    for d in &dead {
        assert!(
            d["position"]["file"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{name}/")),
            "{d}"
        );
    }
    let signals = read_jsonl(&dir.path().join(format!("{name}.signals.jsonl")));
    assert_eq!(
        signals.len(),
        1,
        "the good record around them is unaffected"
    );
    assert_eq!(pending(&name), 0, "bad records are acknowledged too");
}

#[test]
fn pending_entries_trimmed_away_are_skipped_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let config = live_config(dir.path());
    let name = unique("trimmed");
    let signal = |id: &str, axis: usize| {
        serde_json::json!({
            "id": id, "source": "reddit", "captured_at": "2024-10-01T00:00:00Z",
            "content": format!("Idea number {id}"),
            "embedding": (0..384).map(|i| if i == axis { 1.0 } else { 0.0 }).collect::<Vec<f32>>()
        })
        .to_string()
    };
    let mut r = redis();
    let mut ids = Vec::new();
    for (i, id) in ["a", "b", "c"].iter().enumerate() {
        let entry: String = redis::cmd("XADD")
            .arg(&name)
            .arg("*")
            .arg("data")
            .arg(signal(id, i))
            .query(&mut r)
            .unwrap();
        ids.push(entry);
    }
    // An earlier run took all three and acknowledged none; then the first
    // two were deleted (trimmed) while still pending.
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&name)
        .arg("ideaflow")
        .arg("0")
        .query(&mut r)
        .unwrap();
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("ideaflow")
        .arg("ideaflow")
        .arg("STREAMS")
        .arg(&name)
        .arg(">")
        .query(&mut r)
        .unwrap();
    let _: i64 = redis::cmd("XDEL")
        .arg(&name)
        .arg(&ids[0])
        .arg(&ids[1])
        .query(&mut r)
        .unwrap();
    assert_eq!(pending(&name), 3);
    ok(run_cmd(&config, &stream_url(&name), &name, dir.path()).arg("--exit-at-end"));
    let signals = read_jsonl(&dir.path().join(format!("{name}.signals.jsonl")));
    assert_eq!(signals.len(), 1, "only the entry still there is read");
    assert_eq!(
        pending(&name),
        0,
        "the vanished entries are acknowledged and skipped"
    );
}

fn wait_for_progress(ns: &str, child: &mut Server) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let p: Option<i64> = redis::cmd("GET")
            .arg(format!("{ns}:progress"))
            .query(&mut redis())
            .unwrap();
        if p.is_some() {
            return;
        }
        assert!(child.0.try_wait().unwrap().is_none(), "run ended early");
        assert!(Instant::now() < deadline, "no epoch committed");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigterm_and_kill_9_lose_and_double_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = live_config(dir.path());
    let (input, repeated) = stream_with_repeats(dir.path(), 1500, 63);
    let expected = dir.path().join("expected");
    replay(&input, &expected, &[]);
    let name = unique("stops");
    produce(&stream_url(&name), &repeated);
    // SIGTERM once an epoch is committed: a clean exit, 0, in time.
    let mut child = Server(
        run_cmd(&config, &stream_url(&name), &name, dir.path())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_progress(&name, &mut child);
    let asked = Instant::now();
    ok(Command::new("kill").args(["-TERM", &child.0.id().to_string()]));
    let status = child.0.wait().unwrap();
    assert!(status.success(), "SIGTERM exits 0: {status:?}");
    assert!(
        asked.elapsed() < Duration::from_secs(25),
        "stopped within the shutdown timeout"
    );
    // kill -9 in the middle of the next run.
    let mut child = Server(
        run_cmd(&config, &stream_url(&name), &name, dir.path())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(1500));
    ok(Command::new("kill").args(["-KILL", &child.0.id().to_string()]));
    let _ = child.0.wait();
    // Run to the end: the views are a replay's, none lost, none doubled.
    ok(run_cmd(&config, &stream_url(&name), &name, dir.path()).arg("--exit-at-end"));
    verify(&config, &name, &expected);
    assert_eq!(pending(&name), 0);
}

#[test]
fn the_webhook_appends_to_the_bus_before_it_answers() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hook.toml");
    std::fs::write(
        &config,
        format!(
            "extends = {:?}\n[pipeline]\nidle_source_secs = 2\n[api]\nwebhook_rate = 0.1\nwebhook_burst = 4\nwebhook_max_body_bytes = 1024\n",
            repo_root().join("config/ideaflow.toml")
        ),
    )
    .unwrap();
    let name = unique("hook");
    let port = free_port();
    let token = "0123456789abcdef-test-token";
    let listen = format!("127.0.0.1:{port}");
    let mut cmd = run_listening(&config, &stream_url(&name), &name, dir.path(), &listen);
    cmd.env("IDEAFLOW_WEBHOOK_TOKENS", token)
        .stdout(Stdio::null());
    let mut server = Server(cmd.spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the API did not come up");
        assert!(server.0.try_wait().unwrap().is_none(), "run ended early");
        std::thread::sleep(Duration::from_millis(100));
    }
    let signal = |id: &str| {
        serde_json::json!({"id": id, "source": "webhook", "captured_at": "2024-10-01T00:00:00Z",
            "content": format!("Webhook idea {id}"),
            "embedding": (0..384).map(|i| if i == 1 { 1.0 } else { 0.0 }).collect::<Vec<f32>>()})
        .to_string()
    };
    let small = |id: &str| {
        serde_json::json!({"id": id, "source": "webhook", "captured_at": "2024-10-01T00:00:00Z",
            "content": format!("Webhook idea {id}")})
        .to_string()
    };
    // No token, a wrong token: 401 in the envelope.
    let (status, head, body) = post(port, None, "application/json", &small("a"));
    assert_eq!(status, 401, "{body}");
    assert!(head.to_ascii_lowercase().contains("www-authenticate"));
    assert!(body.contains("\"error_code\":\"unauthorized\""), "{body}");
    assert_eq!(
        post(
            port,
            Some("wrong-token-wrong-token"),
            "application/json",
            &small("a")
        )
        .0,
        401
    );
    // Malformed JSON: 400. Oversized: 413.
    let (status, _, body) = post(port, Some(token), "application/json", "{nope");
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        post(port, Some(token), "application/json", &signal("big")).0,
        413
    );
    // NDJSON, one good and one bad record: 202 with both accounted for.
    let ndjson = format!("{}\n{{\"id\":\"x\"}}\n", small("n1"));
    let (status, _, body) = post(port, Some(token), "application/x-ndjson", &ndjson);
    assert_eq!(status, 202, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["accepted"], serde_json::json!(["webhook:n1"]));
    assert_eq!(answer["rejected"][0]["index"], 1);
    assert_eq!(answer["rejected"][0]["reason"], "missing_field");
    // The burst is 4 records: two more pass, the next is over the rate.
    let (status, _, body) = post(
        port,
        Some(token),
        "application/json",
        &format!("[{},{}]", small("n2"), small("n3")),
    );
    assert_eq!(status, 202, "{body}");
    let (status, head, _) = post(port, Some(token), "application/json", &small("n4"));
    assert_eq!(status, 429);
    assert!(head.to_ascii_lowercase().contains("retry-after"), "{head}");
    // The contract documents every status the endpoint answered with.
    let (status, doc) = get(port, "/api/v1/openapi.json");
    assert_eq!(status, 200);
    let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
    let responses = &doc["paths"]["/api/v1/signals"]["post"]["responses"];
    for code in ["202", "400", "401", "413", "429", "503"] {
        assert!(
            responses.get(code).is_some(),
            "{code} undocumented: {responses}"
        );
    }
    // Accepted records are in the stream before the answer: kill -9 now loses none.
    ok(Command::new("kill").args(["-KILL", &server.0.id().to_string()]));
    let _ = server.0.wait();
    let len: i64 = redis::cmd("XLEN").arg(&name).query(&mut redis()).unwrap();
    assert_eq!(len, 3);
}

#[test]
fn an_unreachable_bus_is_retried_and_reported_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let config = live_config(dir.path());
    let port = free_port();
    let dead_port = free_port();
    let name = unique("unreachable");
    let url = format!("redis://127.0.0.1:{dead_port}/0?stream={name}");
    // Even with --exit-at-end: a bus never reached is down, not idle.
    let mut cmd = run_listening(
        &config,
        &url,
        &name,
        dir.path(),
        &format!("127.0.0.1:{port}"),
    );
    cmd.arg("--exit-at-end");
    let mut server = Server(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let (status, body) = loop {
        assert!(Instant::now() < deadline, "the API did not come up");
        assert!(
            server.0.try_wait().unwrap().is_none(),
            "run crashed on an unreachable bus"
        );
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break get(port, "/health/ready");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains(&name),
        "the unreachable source is named: {body}"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        server.0.try_wait().unwrap().is_none(),
        "still retrying, not crashed"
    );
    let (_, metrics) = get(port, "/metrics");
    assert!(metrics.contains("ideaflow_source_up"), "{metrics}");
    ok(Command::new("kill").args(["-TERM", &server.0.id().to_string()]));
    assert!(server.0.wait().unwrap().success());
}

/// `ideaflow run` on stream `name` (produced from `input`), serving its API:
/// scrapes `/metrics` every `every` until every one of `input`'s lines is
/// acknowledged (every epoch applied and committed), showing each scrape
/// to `watch`; returns the server and the last scrape.
fn run_until_acked(
    config: &Path,
    input: &Path,
    name: &str,
    dir: &Path,
    every: Duration,
    mut watch: impl FnMut(&str, &str),
) -> (Server, String) {
    let lines = std::fs::read_to_string(input).unwrap().lines().count() as f64;
    produce(&stream_url(name), input);
    let port = free_port();
    let mut server = Server(
        run_listening(
            config,
            &stream_url(name),
            name,
            dir,
            &format!("127.0.0.1:{port}"),
        )
        .stdout(Stdio::null())
        .spawn()
        .unwrap(),
    );
    let labels = format!("{{partition=\"0\",source=\"{}\"}}", stream_url(name));
    let acked = format!("ideaflow_source_records_acked_total{labels}");
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        assert!(
            Instant::now() < deadline,
            "the records were not all acknowledged"
        );
        assert!(server.0.try_wait().unwrap().is_none(), "run stopped");
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            let (_, text) = get(port, "/metrics");
            watch(&text, &labels);
            if metric(&text, &acked) == Some(lines) {
                return (server, text);
            }
        }
        std::thread::sleep(every);
    }
}

#[test]
fn repeats_are_counted_by_the_partition_they_were_read_from() {
    let dir = tempfile::tempdir().unwrap();
    let config = live_config(dir.path());
    let (_, repeated) = stream_with_repeats(dir.path(), 400, 64);
    let name = unique("counted");
    let mut labels = String::new();
    let (mut server, text) = run_until_acked(
        &config,
        &repeated,
        &name,
        dir.path(),
        Duration::from_millis(200),
        |_, l| labels = l.to_owned(),
    );
    let by_partition = metric(
        &text,
        &format!("ideaflow_source_repeats_ignored_total{labels}"),
    )
    .unwrap_or_else(|| panic!("no per-partition repeat count: {text}"));
    let total: f64 = ["signal", "envelope"]
        .iter()
        .filter_map(|k| {
            metric(
                &text,
                &format!("ideaflow_repeats_ignored_total{{kind=\"{k}\"}}"),
            )
        })
        .sum();
    // Every seventh line was delivered twice: each second copy is ignored
    // (envelopes without an eventId excepted), and counted where it was read.
    assert!(by_partition > 0.0, "{text}");
    assert_eq!(by_partition, total, "{text}");
    ok(Command::new("kill").args(["-TERM", &server.0.id().to_string()]));
    assert!(server.0.wait().unwrap().success());
}

#[test]
fn a_webhook_without_a_bus_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let config = live_config(dir.path());
    let port = free_port();
    let name = unique("nobus");
    let input = dir.path().join("empty.jsonl");
    std::fs::write(&input, "").unwrap();
    let listen = format!("127.0.0.1:{port}");
    let mut cmd = run_listening(&config, input.to_str().unwrap(), &name, dir.path(), &listen);
    cmd.env("IDEAFLOW_WEBHOOK_TOKENS", "0123456789abcdef-test-token")
        .stdout(Stdio::null());
    let mut server = Server(cmd.spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline);
        assert!(server.0.try_wait().unwrap().is_none(), "run ended early");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, head, body) = post(
        port,
        Some("0123456789abcdef-test-token"),
        "application/json",
        "{}",
    );
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("no_bus"), "{body}");
    assert!(head.to_ascii_lowercase().contains("retry-after"));
}

/// A live source feeding raw text faster than the model embeds it: the
/// source waits, so the signals queued for the embedder stay within
/// `pipeline.max_in_flight` plus one read batch (1,024) however many the
/// stream holds, the queue and the source's lag are visible in /metrics
/// meanwhile, and every record gets through.
#[test]
fn raw_text_faster_than_the_model_waits_in_a_bounded_queue() {
    const MAX_IN_FLIGHT: f64 = 100.0;
    let dir = tempfile::tempdir().unwrap();
    // The model on one thread, and /metrics read every 10 ms: since the
    // embedder packs its batches it drains a read batch fast enough that
    // scrapes 50 ms apart, beside the suite's other pipelines, once saw
    // the queue empty every time.
    let config = dir.path().join("slow-model.toml");
    std::fs::write(
        &config,
        format!(
            "extends = {:?}\n[pipeline]\nidle_source_secs = 2\nmax_in_flight = {MAX_IN_FLIGHT}\n[model]\nthreads = 1\n",
            live_config(dir.path())
        ),
    )
    .unwrap();
    let input = dir.path().join("raw.jsonl");
    generate_stream(&input, 10_000, 93, 2, false);
    let lines = std::fs::read_to_string(&input).unwrap().lines().count() as f64;
    let name = unique("embed_queue");
    let (mut most_queued, mut most_lag) = (0.0f64, 0.0f64);
    let (mut server, text) = run_until_acked(
        &config,
        &input,
        &name,
        dir.path(),
        Duration::from_millis(10),
        |text, labels| {
            most_queued =
                most_queued.max(metric(text, "ideaflow_embed_queue_signals").unwrap_or(0.0));
            most_lag = most_lag
                .max(metric(text, &format!("ideaflow_source_lag_records{labels}")).unwrap_or(0.0));
        },
    );
    assert_eq!(
        metric(&text, "ideaflow_embed_queue_signals"),
        Some(0.0),
        "{text}"
    );
    eprintln!("most queued for the embedder: {most_queued}; most lag: {most_lag}");
    assert!(most_queued > 0.0, "the embedder's queue never showed");
    assert!(
        most_queued <= MAX_IN_FLIGHT + 1024.0,
        "{most_queued} signals queued for the embedder"
    );
    assert!(
        most_lag > 1024.0,
        "the source's lag never showed: {most_lag}"
    );
    ok(Command::new("kill").args(["-TERM", &server.0.id().to_string()]));
    assert!(server.0.wait().unwrap().success());
    let out = read_jsonl(&dir.path().join(format!("{name}.signals.jsonl")));
    assert!(
        out.len() as f64 > lines * 0.9,
        "{} of {lines} signals out",
        out.len()
    );
}
