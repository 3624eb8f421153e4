//! Materialized views against real Postgres (pgvector) and Redis, which
//! scripts/setup.sh starts: a replay's rows and keys equal its `--out`, and
//! the API serves them with the error envelope for bad requests.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

/// A namespace of its own per test process and test, so tests never collide.
fn namespace(test: &str) -> String {
    format!("t_{test}_{}", std::process::id())
}

#[test]
fn a_materialized_replay_agrees_with_its_out_dir() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    generate_stream(&input, 300, 3, 2, true);
    let ns = namespace("verify");
    let out = dir.path().join("out");
    ok(ideaflow()
        .args([
            "replay",
            "--materialize",
            "--namespace",
            &ns,
            "-w",
            "2",
            "--input",
        ])
        .arg(&input)
        .arg("--out")
        .arg(&out));
    // The bulk load dropped the HNSW index and built it again at the end.
    let hnsw = format!(
        "pg_indexes WHERE schemaname = '{ns}' AND indexname = 'idea_vectors_embedding' \
         AND indexdef LIKE '%USING hnsw (embedding vector_cosine_ops)%'"
    );
    assert_eq!(
        psql_count("pg_catalog", &hnsw),
        1,
        "no HNSW index after the replay"
    );
    let verified = ok(ideaflow()
        .args(["verify", "--namespace", &ns, "--out"])
        .arg(&out));
    let text = String::from_utf8_lossy(&verified.stdout);
    assert!(text.contains("verify: OK"), "{text}");
    vectors_a_run_left_unindexed_are_indexed_at_the_next_start(&ns, &out);
    // The feedback views: as many rows in Postgres as lines in --out, and
    // the idea.scored events in the Redis stream.
    for (table, file) in [
        ("feedback_windows", "windows.jsonl"),
        ("ab_results", "ab_results.jsonl"),
        ("allocations", "allocations.jsonl"),
        ("weights_history", "weights_history.jsonl"),
        ("publish_latencies", "publish_latencies.jsonl"),
    ] {
        let lines = read_jsonl(&out.join(file)).len();
        assert!(lines > 0, "{file} is empty");
        assert_eq!(psql_count(&ns, table), lines, "{table}");
    }
    let winners = psql_count(&ns, "ab_results WHERE winner = 'B'");
    let expected = read_jsonl(&out.join("ab_results.jsonl"))
        .iter()
        .filter(|r| r["winner"] == "B")
        .count();
    assert_eq!(winners, expected);
    let events = std::process::Command::new("redis-cli")
        .args(["-u", &std::env::var("IDEAFLOW_REDIS_URL").unwrap()])
        .args(["XLEN", &format!("{ns}:events")])
        .output()
        .unwrap();
    let xlen: usize = String::from_utf8_lossy(&events.stdout)
        .trim()
        .parse()
        .unwrap();
    assert!(xlen > 0, "no idea.scored events in {ns}:events");
    // With no argument, verify finds what the replay recorded.
    let recorded = ok(ideaflow().args(["verify", "--namespace", &ns]));
    assert!(String::from_utf8_lossy(&recorded.stdout).contains("verify: OK"));
    // Without --out, verify replays the inputs in memory: the same answer.
    let again = ok(ideaflow()
        .args(["verify", "--namespace", &ns, "--input"])
        .arg(&input));
    assert!(String::from_utf8_lossy(&again.stdout).contains("verify: OK"));
    // A different replay in the same namespace no longer matches the first --out.
    let other = dir.path().join("other.jsonl");
    generate_stream(&other, 100, 4, 1, false);
    ok(ideaflow()
        .args(["replay", "--materialize", "--namespace", &ns, "--input"])
        .arg(&other)
        .arg("--out")
        .arg(dir.path().join("out2")));
    let failed = ideaflow()
        .args(["verify", "--namespace", &ns, "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(!failed.status.success(), "verify must catch a mismatch");
    let said = String::from_utf8_lossy(&failed.stderr);
    assert!(said.contains("disagreement"), "{said}");
    // ... and says which replay the views hold, and what to do.
    assert!(
        said.contains(&dir.path().join("out2").display().to_string()),
        "{said}"
    );
    assert!(said.contains("--materialize"), "{said}");
}

#[test]
fn run_refuses_a_taken_api_address_before_reading_input() {
    // Someone else holds the address: run must say so and fail, not process
    // the stream and then serve nothing with a success status.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = ideaflow()
        .args(["run", "--exit-at-end", "--namespace", &namespace("taken")])
        .args(["--listen", &addr])
        .arg("--out")
        .arg(dir.path().join("signals.jsonl"))
        .arg("--dead-letter")
        .arg(dir.path().join("dead.jsonl"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "run succeeded: {stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")) && stderr.contains("free address"),
        "{stderr}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("events in"),
        "the stream was processed first"
    );
}

#[test]
fn the_api_serves_the_views_and_refuses_bad_requests() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let ns = namespace("api");
    let config = dir.path().join("api.toml");
    std::fs::write(
        &config,
        format!(
            "extends = {:?}\n[api]\nheader_read_timeout_secs = 2\ncors_origins = [\"https://dash.example.com\"]\n",
            repo_root().join("config/ideaflow.toml")
        ),
    )
    .unwrap();
    let child = ideaflow()
        .arg("run")
        .arg("--config")
        .arg(&config)
        .args(["--namespace", &ns, "--listen", &format!("127.0.0.1:{port}")])
        .arg("--out")
        .arg(dir.path().join("signals.jsonl"))
        .arg("--dead-letter")
        .arg(dir.path().join("dead.jsonl"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut server = Server(child);
    // Wait until the sample stream is processed and the API is up.
    let _lines = until_serving(&mut server);
    let (status, body) = get(port, "/health/ready");
    assert_eq!(status, 200, "{body}");
    let (status, body) = get(port, "/api/v1/ideas/top?category=animals&limit=5");
    assert_eq!(status, 200, "{body}");
    let top: serde_json::Value = serde_json::from_str(&body).unwrap();
    let ideas = top["ideas"].as_array().unwrap();
    assert!(!ideas.is_empty() && ideas.len() <= 5);
    let scores: Vec<f64> = ideas.iter().map(|i| i["score"].as_f64().unwrap()).collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "best first: {scores:?}"
    );
    // The explanation: contributions are weight × value and sum to the score.
    let id = ideas[0]["id"].as_str().unwrap();
    let (status, body) = get(port, &format!("/api/v1/ideas/{id}"));
    assert_eq!(status, 200);
    let idea: serde_json::Value = serde_json::from_str(&body).unwrap();
    let sum: f64 = idea["factors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["contribution"].as_f64().unwrap())
        .sum();
    assert!((sum - idea["score"].as_f64().unwrap()).abs() < 1e-9);
    let (status, body) = get(port, "/api/v1/search?q=cat%20wearing%20a%20hat&limit=3");
    assert_eq!(status, 200, "{body}");
    let found: serde_json::Value = serde_json::from_str(&body).unwrap();
    let first = &found["results"][0];
    assert!(first["similarity"].as_f64().unwrap() > 0.5, "{first}");
    let (status, body) = get(port, "/api/v1/topics/hot?limit=3");
    assert_eq!(status, 200);
    assert!(body.contains("halloween"), "{body}");
    for (path, code) in [
        ("/api/v1/ideas/top?category=nope", 404),
        ("/api/v1/ideas/top?limit=0", 422),
        ("/api/v1/ideas/top?limit=abc", 422),
        ("/api/v1/ideas/not-a-uuid", 422),
        // Not UTF-8 once decoded: axum's own rejection would be plain text.
        ("/api/v1/ideas/%FF%FE", 422),
        ("/api/v1/ideas/00000000-0000-0000-0000-000000000000", 404),
        ("/api/v1/search?q=", 422),
        ("/api/v1/centroids?kind=planet", 422),
        ("/api/v1/centroids?embedding=maybe", 422),
        ("/nowhere", 404),
    ] {
        let (status, body) = get(port, path);
        assert_eq!(status, code, "{path}: {body}");
        let e: serde_json::Value = serde_json::from_str(&body).unwrap();
        for k in ["error_code", "message", "timestamp", "details"] {
            assert!(e.get(k).is_some(), "{path}: no {k} in {body}");
        }
    }
    // A known route with a method it does not serve.
    let (status, body) = request(port, "POST", "/api/v1/ideas/top");
    assert_eq!(status, 405, "{body}");
    let e: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(e["error_code"], "method_not_allowed", "{body}");
    // Too long for the API's limit, then for hyper's own (65,534 bytes of
    // URI, refused before routing), then not HTTP at all: all enveloped.
    for (request, code, error_code) in [
        (
            format!(
                "GET /api/v1/search?q={} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                "a".repeat(3000)
            ),
            422,
            "query_too_long",
        ),
        (
            format!(
                "GET /api/v1/search?q={} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                "a".repeat(70_000)
            ),
            413,
            "request_too_large",
        ),
        ("NOT HTTP\r\n\r\n".to_owned(), 400, "bad_request"),
    ] {
        let (status, body) = raw_request(port, request.as_bytes());
        assert_eq!(status, code, "{body}");
        let e: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(e["error_code"], error_code, "{body}");
    }
    let (status, body) = get(port, "/api/v1/openapi.json");
    assert_eq!(status, 200);
    assert!(body.contains("/api/v1/search"));
    let (status, body) = get(port, "/metrics");
    assert_eq!(status, 200);
    assert!(body.contains("ideaflow_epochs_committed_total"), "{body}");
    // The writer's batching: epochs folded per write, changes waiting.
    assert!(body.contains("ideaflow_epochs_per_write_count"), "{body}");
    assert!(body.contains("ideaflow_sink_pending_changes"), "{body}");
    // The sample's marketplace feedback: listings timed, A/B tests, weights.
    assert!(
        body.contains("signal_to_publish_seconds_bucket{le="),
        "{body}"
    );
    let (status, body) = get(port, "/api/v1/ab?limit=5");
    assert_eq!(status, 200, "{body}");
    let ab: serde_json::Value = serde_json::from_str(&body).unwrap();
    let results = ab["results"].as_array().unwrap();
    assert!(!results.is_empty() && results.len() <= 5, "{body}");
    assert!(results.iter().all(|r| r["winner"] != "A"), "{body}");
    let (status, body) = get(port, "/api/v1/weights");
    assert_eq!(status, 200, "{body}");
    let w: serde_json::Value = serde_json::from_str(&body).unwrap();
    let history = w["history"].as_array().unwrap();
    assert!(history.len() >= 2, "{body}");
    assert_eq!(w["current"], *history.last().unwrap());
    let sum: f64 = [
        "freshness",
        "engagement",
        "novelty",
        "community_fit",
        "seasonality",
    ]
    .iter()
    .map(|k| w["current"][k].as_f64().unwrap())
    .sum();
    assert!((sum - 1.0).abs() < 1e-9);
    let (status, body) = get(port, "/api/v1/anchors");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("history"), "{body}");
    for path in [
        "/api/v1/ab?idea_id=nope",
        "/api/v1/ab?idea_id=",
        "/api/v1/search?q=%20%20",
        "/api/v1/search?q=%EF%BB%BF",
    ] {
        assert_eq!(get(port, path).0, 422, "{path}");
    }
    // No webhook token configured: the endpoint is off, and says so.
    let (status, body) = request(port, "POST", "/api/v1/signals");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("webhook_off"), "{body}");
    let (status, body) = get(port, "/");
    assert_eq!(status, 200);
    assert!(body.contains("EventSource"));
    the_server_answers_every_client_and_drops_stuck_ones(port);
    browsers_from_allowed_origins_may_call(port);
    metrics_count_every_answer_with_its_status(port);
}

/// Everything the server writes on one connection after sending `bytes`,
/// half-closing after them when `half_close`, until the server closes it.
fn exchange(port: u16, bytes: &[u8], half_close: bool) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(bytes).unwrap();
    if half_close {
        s.shutdown(std::net::Shutdown::Write).unwrap();
    }
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    String::from_utf8_lossy(&raw).into_owned()
}

fn the_server_answers_every_client_and_drops_stuck_ones(port: u16) {
    // A client that half-closes after sending (`nc -N`), ten times.
    for _ in 0..10 {
        let answer = exchange(
            port,
            b"GET /api/v1/topics/hot?limit=1 HTTP/1.0\r\n\r\n",
            true,
        );
        assert!(
            answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"),
            "{answer}"
        );
    }
    // Three pipelined requests, half-closed after: three answers.
    let one = "GET /api/v1/topics/hot?limit=1 HTTP/1.1\r\nHost: x\r\n\r\n";
    let answer = exchange(port, one.repeat(3).as_bytes(), true);
    assert_eq!(answer.matches("HTTP/1.1 200 OK").count(), 3, "{answer}");
    // Headers that never end, and an idle keep-alive connection: closed
    // after api.header_read_timeout_secs (2 s here), not held open.
    for bytes in [
        &b"GET /health/live HTTP/1.1\r\nHost: x\r\n"[..],
        b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        let started = Instant::now();
        let answer = exchange(port, bytes, false);
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(1500) && waited < Duration::from_secs(10),
            "closed after {waited:?}: {answer}"
        );
    }
}

fn browsers_from_allowed_origins_may_call(port: u16) {
    let preflight = |origin: &str| {
        exchange(
            port,
            format!(
                "OPTIONS /api/v1/ideas/top HTTP/1.1\r\nHost: x\r\nOrigin: {origin}\r\n\
                 Access-Control-Request-Method: GET\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
            false,
        )
        .to_ascii_lowercase()
    };
    let allowed = preflight("https://dash.example.com");
    assert!(allowed.starts_with("http/1.1 200"), "{allowed}");
    assert!(
        allowed.contains("access-control-allow-origin: https://dash.example.com"),
        "{allowed}"
    );
    assert!(
        allowed.contains("access-control-allow-methods"),
        "{allowed}"
    );
    let refused = preflight("https://elsewhere.example.com");
    assert!(
        !refused.contains("access-control-allow-origin"),
        "{refused}"
    );
    let answer = exchange(
        port,
        b"GET /api/v1/topics/hot?limit=1 HTTP/1.1\r\nHost: x\r\nOrigin: https://dash.example.com\r\nConnection: close\r\n\r\n",
        false,
    )
    .to_ascii_lowercase();
    assert!(
        answer.contains("access-control-allow-origin: https://dash.example.com"),
        "{answer}"
    );
}

fn metrics_count_every_answer_with_its_status(port: u16) {
    let unknown = "/api/v1/ideas/00000000-0000-0000-0000-000000000000";
    assert_eq!(get(port, unknown).0, 404);
    assert_eq!(get(port, "/no/such/route").0, 404);
    assert_eq!(get(port, "/api/v1/ideas/top?limit=0").0, 422);
    let (_, text) = get(port, "/metrics");
    let count = |labels: &str| -> f64 {
        let line = format!("ideaflow_http_requests_total{{{labels}}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(line.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {line}in {text}"))
    };
    assert!(count("route=\"/api/v1/ideas/{id}\",status=\"404\"") >= 1.0);
    assert!(count("route=\"unmatched\",status=\"404\"") >= 1.0);
    assert!(count("route=\"/api/v1/ideas/top\",status=\"422\"") >= 1.0);
    assert!(count("route=\"unparsed\",status=\"400\"") >= 1.0);
    assert!(!text.contains("/no/such/route"), "never the raw path");
    assert!(
        text.contains("ideaflow_http_request_duration_seconds_bucket{route=\"/api/v1/ideas/top\"")
    );
    assert!(!text.contains("_hours"), "base units only");
}

/// As after a kill -9 between an epoch's commit and its vectors' indexing:
/// vectors missing from the index's table, and one whose idea is gone.
/// `verify` says so; a sink's start repairs both.
fn vectors_a_run_left_unindexed_are_indexed_at_the_next_start(ns: &str, out: &std::path::Path) {
    psql_exec(&format!(
        "DELETE FROM {ns}.idea_vectors WHERE idea_id IN \
           (SELECT idea_id FROM {ns}.idea_vectors ORDER BY idea_id LIMIT 5); \
         INSERT INTO {ns}.idea_vectors SELECT gen_random_uuid(), embedding \
           FROM {ns}.idea_rows LIMIT 1"
    ));
    let o = ideaflow()
        .args(["verify", "--namespace", ns, "--out"])
        .arg(out)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "verify passed with vectors missing");
    assert!(
        said.contains("6 ideas' vectors are missing from idea_vectors"),
        "{said}"
    );
    let url = std::env::var("IDEAFLOW_TEST_POSTGRES_URL").expect("run scripts/test.sh");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let pool = ideaflow_sinks::postgres::connect(&url, ns).await.unwrap();
            let mut sink = ideaflow_sinks::postgres::PostgresSink::new(pool, "views").unwrap();
            sink.finish_indexing().unwrap();
        });
    let verified = ok(ideaflow()
        .args(["verify", "--namespace", ns, "--out"])
        .arg(out));
    let text = String::from_utf8_lossy(&verified.stdout);
    assert!(text.contains("verify: OK"), "{text}");
}

fn psql_exec(sql: &str) {
    psql(sql);
}

/// `SELECT count(*) FROM {ns}.{table_and_condition}` in the test database.
fn psql_count(ns: &str, table_and_condition: &str) -> usize {
    let psql =
        std::path::Path::new(&std::env::var_os("IDEAFLOW_PG_BIN").expect("run scripts/test.sh"))
            .join("psql");
    let url = std::env::var("IDEAFLOW_TEST_POSTGRES_URL").expect("run scripts/test.sh");
    let out = std::process::Command::new(psql)
        .args([url.as_str(), "-XAtq", "-c"])
        .arg(format!("SELECT count(*) FROM {ns}.{table_and_condition}"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)))
}

/// One reading of the materialized views, taken in a single statement (one
/// snapshot): the committed epoch and what the tables hold.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Reading {
    epoch: i64,
    ideas: i64,
    scores: i64,
    signals: i64,
    orphan_signals: i64,
    dead_letters: i64,
}

fn read_views(psql: &std::path::Path, url: &str, ns: &str) -> Option<Reading> {
    let sql = format!(
        "SELECT (SELECT epoch FROM {ns}.pipeline_progress WHERE sink = 'views'), \
         (SELECT count(*) FROM {ns}.ideas), (SELECT count(*) FROM {ns}.idea_scores), \
         (SELECT count(*) FROM {ns}.signals), \
         (SELECT count(*) FROM {ns}.signals s WHERE NOT EXISTS \
            (SELECT 1 FROM {ns}.ideas i WHERE i.id = s.idea_id)), \
         (SELECT count(*) FROM {ns}.dead_letters)"
    );
    let out = std::process::Command::new(psql)
        .args([url, "-XAtq", "-F", ",", "-c", &sql])
        .output()
        .ok()?;
    // Before the replay creates the schema and its first epoch, nothing to read.
    let text = String::from_utf8(out.stdout).ok()?;
    let v: Vec<i64> = text
        .trim()
        .split(',')
        .map(|x| x.parse())
        .collect::<Result<_, _>>()
        .ok()?;
    (v.len() == 6).then(|| Reading {
        epoch: v[0],
        ideas: v[1],
        scores: v[2],
        signals: v[3],
        orphan_signals: v[4],
        dead_letters: v[5],
    })
}

#[test]
fn a_reader_polling_postgres_never_sees_a_partial_epoch() {
    let (Some(bin), Some(url)) = (
        std::env::var_os("IDEAFLOW_PG_BIN"),
        std::env::var("IDEAFLOW_TEST_POSTGRES_URL").ok(),
    ) else {
        panic!("IDEAFLOW_PG_BIN and IDEAFLOW_TEST_POSTGRES_URL are unset: run scripts/test.sh");
    };
    let psql = std::path::Path::new(&bin).join("psql");
    let dir = tempfile::tempdir().unwrap();
    let generated = dir.path().join("gen.jsonl");
    generate_stream(&generated, 400, 11, 3, false);
    // Malformed records in the middle of the stream: they reach Postgres with
    // the epoch that follows them.
    let text = std::fs::read_to_string(&generated).unwrap();
    let mut input = String::new();
    for (i, line) in text.lines().enumerate() {
        input.push_str(line);
        input.push('\n');
        if i % 97 == 50 {
            input.push_str("{\"not\": \"an event\"\n");
        }
    }
    let input_path = dir.path().join("in.jsonl");
    std::fs::write(&input_path, input).unwrap();
    let ns = namespace("poll");
    let out = dir.path().join("out");
    // Paced (3 days in about 13 s), so that the writer commits many batches
    // while the reader polls: at full speed a writer that falls behind at
    // the start can take the whole stream in one or two batches.
    let mut replay = ideaflow()
        .args(["replay", "--materialize", "--namespace", &ns])
        .args(["--speed", "20000", "--input"])
        .arg(&input_path)
        .arg("--out")
        .arg(&out)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut readings: Vec<Reading> = Vec::new();
    let status = loop {
        if let Some(r) = read_views(&psql, &url, &ns) {
            if readings.last() != Some(&r) {
                readings.push(r);
            }
        }
        if let Some(status) = replay.try_wait().unwrap() {
            break status;
        }
    };
    assert!(status.success(), "the replay failed");
    let last = read_views(&psql, &url, &ns).expect("the views are readable");
    readings.push(last.clone());
    assert!(
        readings.len() >= 5,
        "the reader saw too few epochs to show anything: {readings:?}"
    );
    eprintln!(
        "{} distinct readings, first {:?}, last {:?}",
        readings.len(),
        readings[0],
        last
    );
    let mut by_epoch: std::collections::BTreeMap<i64, &Reading> = Default::default();
    for (i, r) in readings.iter().enumerate() {
        // Every idea is scored in the epoch that creates it, and every signal's
        // idea is in the same snapshot.
        assert_eq!(r.ideas, r.scores, "ideas without scores: {r:?}");
        assert_eq!(r.orphan_signals, 0, "signals without their idea: {r:?}");
        if i > 0 {
            let p = &readings[i - 1];
            assert!(r.epoch >= p.epoch, "progress went back: {p:?} then {r:?}");
            assert!(r.signals >= p.signals && r.dead_letters >= p.dead_letters);
        }
        // Nothing changes between two commits: one epoch, one state (the
        // last reading may include dead letters refused after the last epoch).
        if i + 1 < readings.len() {
            if let Some(seen) = by_epoch.insert(r.epoch, r) {
                assert_eq!(seen, r, "two different states under epoch {}", r.epoch);
            }
        }
    }
    let ideas = read_jsonl(&out.join("ideas.jsonl"));
    let dead = read_jsonl(&out.join("dead_letters.jsonl"));
    assert_eq!(last.ideas as usize, ideas.len());
    assert_eq!(last.dead_letters as usize, dead.len());
    assert!(dead.len() >= 4, "the malformed records are dead letters");
}

/// A start empties the views' namespace, but a bus stream that shares its
/// prefix (the live config reads `ideaflow:signals` and writes `ideaflow:*`)
/// keeps every record: only the sink's own keys and `{ns}:events` go.
#[test]
fn emptying_the_namespace_keeps_bus_streams_in_it() {
    let url = std::env::var("IDEAFLOW_REDIS_URL").expect("run scripts/test.sh");
    let ns = namespace("keep_bus");
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let bus = format!("{ns}:signals");
    let _: () = redis::cmd("DEL").arg(&bus).query(&mut conn).unwrap();
    for i in 0..3 {
        let _: String = redis::cmd("XADD")
            .arg(&bus)
            .arg("*")
            .arg("data")
            .arg(i)
            .query(&mut conn)
            .unwrap();
    }
    let _: String = redis::cmd("XADD")
        .arg(format!("{ns}:events"))
        .arg("*")
        .arg("e")
        .arg(1)
        .query(&mut conn)
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg(format!("{ns}:idea:x"))
        .arg("f")
        .arg(1)
        .query(&mut conn)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(format!("{ns}:weights"))
        .arg(1)
        .query(&mut conn)
        .unwrap();
    let mut sink = ideaflow_sinks::redis_sink::RedisSink::connect(&url, &ns, 10).unwrap();
    sink.clear().unwrap();
    let len: usize = redis::cmd("XLEN").arg(&bus).query(&mut conn).unwrap();
    assert_eq!(len, 3, "the bus stream lost records");
    for gone in ["events", "idea:x", "weights"] {
        let exists: bool = redis::cmd("EXISTS")
            .arg(format!("{ns}:{gone}"))
            .query(&mut conn)
            .unwrap();
        assert!(!exists, "{ns}:{gone} survived the clear");
    }
    let _: () = redis::cmd("DEL").arg(&bus).query(&mut conn).unwrap();
}

#[test]
fn a_streamed_redis_transaction_reports_errors_and_stays_in_step() {
    use ideaflow_sinks::redis_transaction::StreamedTransaction;
    use redis::Commands;
    let url = std::env::var("IDEAFLOW_REDIS_URL").expect("run scripts/test.sh");
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let ns = namespace("tx");
    let key = |i: usize| format!("{ns}:h:{i}");
    // More commands than one chunk: all of them run, at EXEC.
    let mut tx = StreamedTransaction::begin(&mut conn).unwrap();
    for i in 0..3000 {
        tx.add(redis::cmd("HSET").arg(key(i)).arg("f").arg(i))
            .unwrap();
    }
    tx.commit().unwrap();
    let last: usize = conn.hget(key(2999), "f").unwrap();
    assert_eq!(last, 2999);
    // A command the server refuses to queue aborts the whole transaction.
    let mut tx = StreamedTransaction::begin(&mut conn).unwrap();
    tx.add(redis::cmd("HSET").arg(key(1)).arg("f").arg("changed"))
        .unwrap();
    tx.add(redis::cmd("HSET").arg(key(2))).unwrap();
    for i in 0..2000 {
        tx.add(redis::cmd("HSET").arg(key(i)).arg("g").arg(i))
            .unwrap();
    }
    // (The refusal itself is reported: it says what was wrong.)
    let err = tx.commit().unwrap_err();
    assert!(
        err.to_string().contains("wrong number of arguments"),
        "{err}"
    );
    let kept: String = conn.hget(key(1), "f").unwrap();
    assert_eq!(kept, "1", "nothing of an aborted transaction runs");
    // A command failing inside EXEC is reported too.
    let _: () = conn.set(format!("{ns}:s"), "a string").unwrap();
    let mut tx = StreamedTransaction::begin(&mut conn).unwrap();
    tx.add(redis::cmd("HSET").arg(format!("{ns}:s")).arg("f").arg(1))
        .unwrap();
    tx.add(redis::cmd("HSET").arg(key(3)).arg("f").arg("after"))
        .unwrap();
    let err = tx.commit().unwrap_err();
    assert!(err.to_string().contains("WRONGTYPE"), "{err}");
    // Every reply was read: the connection answers the next command.
    let pong: String = redis::cmd("PING").query(&mut conn).unwrap();
    assert_eq!(pong, "PONG");
    let mut doomed: Vec<String> = (0..3000).map(key).collect();
    doomed.push(format!("{ns}:s"));
    let _: () = conn.del(doomed).unwrap();
}

/// A reader holding `idea_rows` while it waits for `signals` deadlocks with
/// the TRUNCATE a replay starts with (which locks `signals` first).
/// PostgreSQL aborts the TRUNCATE, the one that waited first; it is tried
/// again once the reader is done, and the views end up empty.
#[test]
fn emptying_the_views_survives_a_deadlock_with_a_reader() {
    use ideaflow_sinks::postgres;
    use sqlx::Executor;
    let url = std::env::var("IDEAFLOW_TEST_POSTGRES_URL")
        .expect("IDEAFLOW_TEST_POSTGRES_URL is unset: run scripts/test.sh");
    let ns = namespace("deadlock");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let pool = postgres::connect(&url, &ns).await.unwrap();
        postgres::migrate(&pool).await.unwrap();
        pool.execute("INSERT INTO dead_letters (raw, reason, message) VALUES ('{}', 'late', 'x')")
            .await
            .unwrap();
        let mut reader = pool.begin().await.unwrap();
        reader
            .execute("SELECT count(*) FROM idea_rows")
            .await
            .unwrap();
        let writer = tokio::spawn({
            let pool = pool.clone();
            async move { postgres::truncate(&pool).await }
        });
        // The TRUNCATE now holds `signals` and waits for `idea_rows`.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let reading = tokio::spawn(async move {
            let r = reader.execute("SELECT count(*) FROM signals").await;
            reader.commit().await.unwrap();
            r
        });
        let (written, read) = (writer.await.unwrap(), reading.await.unwrap());
        assert!(read.is_ok(), "the reader was the one aborted: {read:?}");
        written.expect("the TRUNCATE is tried again after the deadlock");
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(left, 0, "the views were emptied");
        pool.execute(format!("DROP SCHEMA {ns} CASCADE").as_str())
            .await
            .unwrap();
    });
}

/// Redis going away in the middle of a replay does not stop it: the failed
/// writes are tried again until the server is back, and Postgres, Redis and
/// the final state then agree exactly (`verify`).
#[test]
fn a_replay_rides_out_a_redis_restart() {
    replay_through_a_redis_restart(true);
}

/// The same with a Redis that comes back empty (no persistence): the writer
/// notices that its progress marker is gone and writes every view again.
#[test]
fn a_replay_refills_a_redis_that_came_back_empty() {
    let log = replay_through_a_redis_restart(false);
    assert!(log.contains("Redis came back without the views"), "{log}");
}

/// A materialized replay of a generated day at 7,200x (about 12 s of writes
/// to interrupt) into namespace `ns`, with `servers` overriding the
/// environment's server URLs (`IDEAFLOW_REDIS_URL`, `IDEAFLOW_POSTGRES_URL`).
struct PacedReplay {
    _dir: tempfile::TempDir,
    out: std::path::PathBuf,
    ns: String,
    servers: Vec<(&'static str, String)>,
    child: std::process::Child,
}

impl PacedReplay {
    fn start(ns: &str, seed: u64, servers: Vec<(&'static str, String)>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.jsonl");
        generate_stream(&input, 300, seed, 1, false);
        let out = dir.path().join("out");
        let child = ideaflow()
            .envs(servers.iter().cloned())
            .args([
                "replay",
                "--materialize",
                "--namespace",
                ns,
                "--speed",
                "7200",
            ])
            .arg("--input")
            .arg(&input)
            .arg("--out")
            .arg(&out)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        PacedReplay {
            _dir: dir,
            out,
            ns: ns.to_owned(),
            servers,
            child,
        }
    }

    /// Waits for the replay, checks that it succeeded although a write
    /// failed, and that `verify` finds the sinks equal to its final state.
    /// Returns its log.
    fn finish_and_verify(self) -> String {
        let finished = self.child.wait_with_output().unwrap();
        let log = String::from_utf8_lossy(&finished.stderr).into_owned();
        assert!(finished.status.success(), "the replay failed: {log}");
        assert!(
            log.contains("a sink write failed; trying again"),
            "no write was interrupted: {log}"
        );
        ok(ideaflow()
            .envs(self.servers.iter().cloned())
            .args(["verify", "--namespace", &self.ns, "--out"])
            .arg(&self.out));
        log
    }
}

/// A replay whose Redis restarts (keeping its data or not) in the middle;
/// checked with `verify`. Returns the replay's log.
fn replay_through_a_redis_restart(keep: bool) -> String {
    let mut redis = OwnRedis::start();
    let ns = namespace(if keep { "outage" } else { "refill" });
    let replay = PacedReplay::start(&ns, 17, vec![("IDEAFLOW_REDIS_URL", redis.url())]);
    // Once Redis holds committed epochs, so that there is something to lose.
    redis.wait_for(&format!("{ns}:progress"));
    redis.restart(Duration::from_secs(2), keep);
    replay.finish_and_verify()
}

/// The replay's Postgres connection cut by the server in the middle of a
/// write (as a restart or a failover does): the write is tried again on a new
/// connection, and the views still agree exactly (`verify`).
#[test]
fn a_replay_rides_out_a_lost_postgres_connection() {
    use sqlx::Connection;
    let url = std::env::var("IDEAFLOW_TEST_POSTGRES_URL")
        .expect("IDEAFLOW_TEST_POSTGRES_URL is unset: run scripts/test.sh");
    let ns = namespace("pgcut");
    let replay = PacedReplay::start(&ns, 19, Vec::new());
    // Cut this replay's connections (they carry its namespace) while one of
    // them is inside a statement or a transaction: twice.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let cuts = runtime.block_on(async {
        let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
        let started = Instant::now();
        // Once the writer is under way (its first batch committed): a cut
        // while the replay connects and empties the views is not retried.
        let progress = format!("SELECT count(*) FROM {ns}.pipeline_progress");
        while sqlx::query_scalar::<_, i64>(&progress)
            .fetch_one(&mut admin)
            .await
            .map_or(true, |n| n == 0)
        {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no batch committed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (mut cuts, cutting) = (0, Instant::now());
        while cuts < 2 && cutting.elapsed() < Duration::from_secs(30) {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE application_name = $1 AND state IN ('active', 'idle in transaction')",
            )
            .bind(format!("ideaflow:{ns}"))
            .fetch_one(&mut admin)
            .await
            .unwrap();
            if n > 0 {
                cuts += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        cuts
    });
    assert_eq!(cuts, 2, "no write to cut");
    replay.finish_and_verify();
}

/// `ideaflow run` started before its Redis (a stack booting together) waits
/// for it instead of stopping, then materializes the stream.
#[test]
fn run_waits_for_a_redis_that_starts_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (out, dead) = (dir.path().join("out.jsonl"), dir.path().join("dead.jsonl"));
    let mut run = ideaflow_run()
        .env("IDEAFLOW_REDIS_URL", format!("redis://127.0.0.1:{port}/"))
        .args(["--input", "config/sample/signals.jsonl", "--out"])
        .arg(&out)
        .arg("--dead-letter")
        .arg(&dead)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Redis starts once run has said it is waiting for it.
    let mut log = BufReader::new(run.stderr.take().unwrap()).lines();
    let waiting = log
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.contains("Postgres or Redis is not reachable yet; trying again"));
    assert!(waiting, "run stopped without waiting for Redis");
    let _redis = OwnRedis {
        port,
        server: OwnRedis::spawn(port, dir.path()),
        dir,
    };
    let rest: Vec<String> = log.map_while(Result::ok).collect();
    assert!(run.wait().unwrap().success(), "run failed: {rest:?}");
    let keys = std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string(), "dbsize"])
        .output()
        .unwrap();
    let n: u64 = String::from_utf8_lossy(&keys.stdout)
        .trim()
        .parse()
        .unwrap();
    assert!(n > 200, "only {n} keys in Redis");
}

/// Postgres shut down in the middle of a replay and started again a few
/// seconds later (a restart, as ops do one): the writes that failed meanwhile
/// are tried again until it is back, nothing is lost, and Postgres, Redis and
/// the final state agree exactly (`verify`).
#[test]
fn a_replay_rides_out_a_postgres_restart() {
    let pg = OwnPostgres::start();
    let ns = namespace("pgrestart");
    let replay = PacedReplay::start(&ns, 23, vec![("IDEAFLOW_POSTGRES_URL", pg.url())]);
    pg.wait_for_progress(&ns);
    pg.server_down();
    // Longer than the pool waits for a connection (5 s), so writes fail.
    std::thread::sleep(Duration::from_secs(8));
    pg.server_up();
    replay.finish_and_verify();
}
