//! Materialized views against real Postgres (pgvector) and Redis, which
//! scripts/setup.sh starts: a replay's rows and keys equal its `--out`, and
//! the API serves them with the error envelope for bad requests.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
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
    ok(ideaflow()
        .args([
            "gen",
            "--signals",
            "300",
            "--seed",
            "3",
            "--days",
            "2",
            "--out",
        ])
        .arg(&input));
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
    let verified = ok(ideaflow()
        .args(["verify", "--namespace", &ns, "--out"])
        .arg(&out));
    let text = String::from_utf8_lossy(&verified.stdout);
    assert!(text.contains("verify: OK"), "{text}");
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
    ok(ideaflow()
        .args([
            "gen",
            "--signals",
            "100",
            "--seed",
            "4",
            "--days",
            "1",
            "--out",
        ])
        .arg(&other));
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
    assert!(String::from_utf8_lossy(&failed.stderr).contains("disagreement"));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A minimal HTTP/1.1 GET: (status, body).
fn get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status = raw[9..12].parse().unwrap();
    let body = raw.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    // Chunked bodies: keep the JSON between the first '{' and the last '}'.
    let body = match (body.find('{'), body.rfind('}')) {
        (Some(a), Some(b)) => body[a..=b].to_owned(),
        _ => body.to_owned(),
    };
    (status, body)
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_api_serves_the_views_and_refuses_bad_requests() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let ns = namespace("api");
    let child = ideaflow()
        .args([
            "run",
            "--namespace",
            &ns,
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .arg("--out")
        .arg(dir.path().join("signals.jsonl"))
        .arg("--dead-letter")
        .arg(dir.path().join("dead.jsonl"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut server = Server(child);
    // Wait until the sample stream is processed and the API is up.
    let mut lines = BufReader::new(server.0.stdout.take().unwrap()).lines();
    let started = Instant::now();
    loop {
        let line = lines.next().expect("run prints its progress").unwrap();
        if line.contains("serving the API") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "run did not finish"
        );
    }
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
        ("/api/v1/ideas/00000000-0000-0000-0000-000000000000", 404),
        ("/api/v1/search?q=", 422),
        ("/api/v1/centroids?kind=planet", 422),
        ("/nowhere", 404),
    ] {
        let (status, body) = get(port, path);
        assert_eq!(status, code, "{path}: {body}");
        let e: serde_json::Value = serde_json::from_str(&body).unwrap();
        for k in ["error_code", "message", "timestamp", "details"] {
            assert!(e.get(k).is_some(), "{path}: no {k} in {body}");
        }
    }
    let long = "a".repeat(3000);
    let (status, _) = get(port, &format!("/api/v1/search?q={long}"));
    assert_eq!(status, 413);
    let (status, body) = get(port, "/api/v1/openapi.json");
    assert_eq!(status, 200);
    assert!(body.contains("/api/v1/search"));
    let (status, body) = get(port, "/metrics");
    assert_eq!(status, 200);
    assert!(body.contains("ideaflow_epochs_committed_total"), "{body}");
    let (status, body) = get(port, "/");
    assert_eq!(status, 200);
    assert!(body.contains("EventSource"));
}
