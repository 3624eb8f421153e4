//! The HTTP API against its own OpenAPI document, with real third-party
//! tools: schemathesis (every check, both ways: what the document allows the
//! server must answer as documented, what it forbids the server must refuse)
//! against `ideaflow run` on the sample stream, and `promtool check metrics`
//! on what `/metrics` serves. scripts/test.sh installs both
//! (`scripts/setup.sh --with-test-tools`). Reports go to
//! target/api-contract/.

mod common;

use std::process::{Command, Stdio};

use common::*;

fn tool(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is unset: run scripts/test.sh (it installs schemathesis and promtool)")
    })
}

/// `ideaflow run` on the sample stream serving the API on `port`, once the
/// stream is processed.
fn serve(dir: &std::path::Path, port: u16) -> Server {
    let child = ideaflow()
        .args([
            "run",
            "--namespace",
            &format!("t_contract_{}", std::process::id()),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .arg("--out")
        .arg(dir.join("signals.jsonl"))
        .arg("--dead-letter")
        .arg(dir.join("dead.jsonl"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut server = Server(child);
    let lines = until_serving(&mut server);
    // Keep reading its output so that it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    server
}

/// `/metrics` as served (HTTP/1.0: the body whole, not chunked).
fn metrics_text(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.contains(" 200 "), "{head}");
    body.to_owned()
}

#[test]
fn the_api_keeps_its_documented_contract() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _server = serve(dir.path(), port);
    let reports = repo_root().join("target/api-contract");
    std::fs::create_dir_all(&reports).unwrap();

    // Metrics: promtool's lint (names, units, help, types).
    let metrics = metrics_text(port);
    let metrics_file = reports.join("metrics.txt");
    std::fs::write(&metrics_file, &metrics).unwrap();
    let checked = Command::new(tool("IDEAFLOW_PROMTOOL"))
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&metrics_file).unwrap())
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    // Schemathesis, every check, bounded in time; the endless event stream
    // is left to the SSE tests (each case would wait for its timeout). One
    // worker: with two, CPython 3.11.7's `ast.parse` (hypothesis describes
    // its filters with it) races between threads and fails a phase with
    // "AST constructor recursion depth mismatch".
    let run = Command::new(tool("IDEAFLOW_SCHEMATHESIS"))
        .args([
            "run",
            &format!("http://127.0.0.1:{port}/api/v1/openapi.json"),
        ])
        .args(["--checks", "all", "--exclude-path", "/api/v1/stream"])
        .args(["--max-examples", "40", "--max-time", "180", "--seed", "1"])
        .args(["--request-timeout", "20", "--workers", "1"])
        .args(["--report", "junit,ndjson", "--report-dir"])
        .arg(&reports)
        .env("SCHEMATHESIS_HOOKS", "")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&run.stdout);
    std::fs::write(reports.join("schemathesis.txt"), out.as_bytes()).unwrap();
    assert!(
        run.status.success(),
        "schemathesis found problems (report in target/api-contract/):\n{out}{}",
        String::from_utf8_lossy(&run.stderr)
    );
}
