//! The dashboard end to end, in Debian's headless Chromium driven by
//! playwright-core (tests/e2e/dashboard.mjs; `scripts/setup.sh --with-browser`
//! installs both): live data appears and changes while `ideaflow run` is
//! still processing, the search box answers, and after the input ends the page
//! shows exactly the top ideas the API serves, with its epoch, legend,
//! charts, headings and readable heatmap. Screenshots (1400×1000) are saved
//! to target/e2e/dashboard.png (live) and dashboard-final.png.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn browser(mode: &str, url: &str, screenshot: Option<&std::path::Path>) -> serde_json::Value {
    let e2e = repo_root().join("tests/e2e");
    assert!(
        e2e.join("node_modules/playwright-core").exists(),
        "playwright-core is not installed: run scripts/setup.sh --with-browser (scripts/test.sh does)"
    );
    let mut cmd = Command::new("node");
    cmd.current_dir(&e2e)
        .arg("dashboard.mjs")
        .arg(mode)
        .arg(url);
    if let Some(s) = screenshot {
        cmd.arg(s);
    }
    let out = cmd.output().expect("node runs");
    assert!(
        out.status.success(),
        "the browser check `{mode}` failed: {}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().expect("the script prints its findings");
    serde_json::from_str(last).expect("JSON findings")
}

#[test]
fn the_dashboard_shows_live_data_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    generate_stream(&input, 300, 21, 1, true);
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/");
    // A day of signals and about three of marketplace feedback, in about
    // 30 s of wall time: epochs commit while the browser watches.
    let child = ideaflow()
        .args([
            "run",
            "--speed",
            "8640",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .args(["--namespace", &format!("t_dash_{}", std::process::id())])
        .arg("--input")
        .arg(&input)
        .arg("--out")
        .arg(dir.path().join("signals.jsonl"))
        .arg("--dead-letter")
        .arg(dir.path().join("dead.jsonl"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut server = Server(child);
    let started = Instant::now();
    while get_status(port).is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the API never came up"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let shots = repo_root().join("target/e2e");
    std::fs::create_dir_all(&shots).unwrap();
    let shot = shots.join("dashboard.png");
    let live = browser("live", &url, Some(&shot));
    assert!(live["signals"].as_u64().unwrap() > 0, "{live}");
    assert!(live["top_rows"].as_u64().unwrap() > 0, "{live}");
    assert!(live["results"].as_u64().unwrap() > 0, "{live}");
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 10_000,
        "a real screenshot"
    );

    // Wait for the end of the input, then compare the page with the API.
    let mut lines = BufReader::new(server.0.stdout.take().unwrap()).lines();
    loop {
        let line = lines.next().expect("run prints its progress").unwrap();
        if line.contains("serving the API") {
            break;
        }
    }
    eprintln!("run finished after {:?}", started.elapsed());
    let page = browser("final", &url, Some(&shots.join("dashboard-final.png")));
    let (status, body) = get(port, "/api/v1/ab?limit=10");
    assert_eq!(status, 200, "{body}");
    let api: serde_json::Value = serde_json::from_str(&body).unwrap();
    let api_ab: Vec<String> = api["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["title"].as_str().unwrap_or_default().to_owned())
        .collect();
    let page_ab: Vec<String> = page["ab"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["title"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(page_ab, api_ab, "A/B results");
    let (_, body) = get(port, "/api/v1/weights");
    let weights: serde_json::Value = serde_json::from_str(&body).unwrap();
    let history = weights["history"].as_array().unwrap().len();
    assert_eq!(page["weights"].as_u64().unwrap() as usize, history.min(6));
    let shown = page["top"].as_object().unwrap();
    assert!(!shown.is_empty());
    for (category, ideas) in shown {
        let (status, body) = get(
            port,
            &format!("/api/v1/ideas/top?category={category}&limit=5"),
        );
        assert_eq!(status, 200, "{body}");
        let api: serde_json::Value = serde_json::from_str(&body).unwrap();
        let api_titles: Vec<&str> = api["ideas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["title"].as_str().unwrap())
            .collect();
        let page_titles: Vec<&str> = ideas
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["title"].as_str().unwrap())
            .collect();
        assert_eq!(page_titles, api_titles, "top ideas of {category}");
    }
}

/// The readiness probe's status, once the API listens.
fn get_status(port: u16) -> Option<u16> {
    std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    Some(get(port, "/health/live").0)
}
