//! Every subcommand documents itself; the config validates; the demo stream runs.

#[path = "common/mod.rs"]
mod common;

use common::*;

#[test]
fn help_is_complete() {
    let top = ok(ideaflow().arg("--help"));
    let top = String::from_utf8_lossy(&top.stdout).to_string();
    for sub in [
        "run",
        "replay",
        "embed",
        "normalize",
        "gen",
        "classify",
        "explain",
        "validate",
        "migrate",
        "verify",
        "checkpoint",
    ] {
        assert!(top.contains(sub), "--help does not list {sub}");
        let help = ok(ideaflow().args([sub, "--help"]));
        let help = String::from_utf8_lossy(&help.stdout).to_string();
        assert!(help.contains("Usage: ideaflow"), "{sub} --help: {help}");
        assert!(help.lines().count() > 5, "{sub} --help is thin: {help}");
    }
}

#[test]
fn bundled_config_validates() {
    let out = ok(ideaflow().args(["validate", "--config", "config/ideaflow.toml"]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid"));
}

#[test]
fn a_config_typo_is_refused_with_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[pipeline]\nworkerz = 3\n").unwrap();
    let out = ideaflow()
        .args(["validate", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("workerz"));
}

#[test]
fn the_sample_stream_runs_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let (out, dead) = (dir.path().join("out.jsonl"), dir.path().join("dead.jsonl"));
    ok(ideaflow()
        .args([
            "run",
            "--config",
            "config/ideaflow.toml",
            "--exit-at-end",
            "--listen",
            "",
        ])
        .args(["--namespace", &format!("t_cli_{}", std::process::id())])
        .arg("--out")
        .arg(&out)
        .arg("--dead-letter")
        .arg(&dead));
    assert_eq!(read_jsonl(&out).len(), 400);
    assert_eq!(read_jsonl(&dead).len(), 7);
}
