//! Near-duplicate precision and recall with the real model at several
//! thresholds: the README's tuning table. Not a speed benchmark; it lives
//! here because it needs the model and a few minutes.
//!
//!     cargo bench --bench dedupe_quality                     # 3,000 signals over 7 days
//!     cargo bench --bench dedupe_quality -- --binary OTHER   # another build's `ideaflow`
//!
//! The stream is `ideaflow gen --with-embeddings` (the real model's vectors,
//! computed once and cached under `target/bench-data/`), replayed at each
//! threshold. Truth is the generator's `metadata.truth`: recall = its
//! near-duplicates merged into an idea whose first signal has the same truth
//! idea (subject and twist); precision = near merges into such an idea;
//! ideas = distinct ideas at the end.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};
use serde_json::Value;

#[path = "common/mod.rs"]
mod common;
use common::{arg, repo};

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn read_jsonl(path: &Path) -> Result<Vec<Value>> {
    std::fs::read_to_string(path)
        .with_context(|| format!("reading {}", path.display()))?
        .lines()
        .map(|l| Ok(serde_json::from_str(l)?))
        .collect()
}

/// (recall, precision, ideas) of one replay's `signals.jsonl`.
fn measure(truth: &HashMap<String, Value>, signals: &[Value]) -> (f64, f64, usize) {
    let idea_of = |s: &Value| s["idea_id"].as_str().unwrap_or_default().to_owned();
    let truth_idea = |s: &Value| truth[s["id"].as_str().unwrap_or_default()]["idea"].clone();
    let first: HashMap<String, Value> = signals
        .iter()
        .filter(|s| s["dedupe"] == "new")
        .map(|s| (idea_of(s), truth_idea(s)))
        .collect();
    let right_idea = |s: &Value| first.get(&idea_of(s)) == Some(&truth_idea(s));
    let near: Vec<&Value> = signals
        .iter()
        .filter(|s| truth[s["id"].as_str().unwrap_or_default()]["dup"]["kind"] == "near")
        .collect();
    let found = near
        .iter()
        .filter(|s| s["dedupe"] != "new" && right_idea(s))
        .count();
    let merged: Vec<&Value> = signals.iter().filter(|s| s["dedupe"] == "near").collect();
    let right = merged.iter().filter(|s| right_idea(s)).count();
    (
        found as f64 / near.len().max(1) as f64,
        right as f64 / merged.len().max(1) as f64,
        first.len(),
    )
}

fn main() -> Result<()> {
    let signals = arg("--signals", "3000");
    let days = arg("--days", "7");
    let binary = PathBuf::from(arg("--binary", env!("CARGO_BIN_EXE_ideaflow")));
    let repo = repo();
    let dir = repo.join("target/bench-data");
    std::fs::create_dir_all(&dir)?;
    let input = dir.join(format!("dedupe-{signals}-{days}d.jsonl"));
    if !input.exists() {
        eprintln!(
            "generating {signals} signals with the model's vectors -> {}",
            input.display()
        );
        let tmp = input.with_extension("tmp.jsonl");
        run(Command::new(&binary)
            .current_dir(&repo)
            .args([
                "gen",
                "--with-embeddings",
                "--signals",
                &signals,
                "--days",
                &days,
            ])
            .arg("--out")
            .arg(&tmp))?;
        std::fs::rename(&tmp, &input)?;
    }
    let truth: HashMap<String, Value> = read_jsonl(&input)?
        .into_iter()
        .filter(|l| l.get("content").is_some())
        .map(|l| {
            (
                l["id"].as_str().unwrap_or_default().to_owned(),
                l["metadata"]["truth"].clone(),
            )
        })
        .collect();
    let config = std::fs::read_to_string(repo.join("config/ideaflow.toml"))?;
    ensure!(
        config.contains("near_threshold = 0.88"),
        "config/ideaflow.toml's near_threshold moved"
    );
    println!(
        "near-duplicates: {signals} signals over {days} days, real model, {}",
        binary.display()
    );
    println!("| threshold | recall | precision | ideas |\n| --- | --- | --- | --- |");
    for threshold in ["0.80", "0.85", "0.88", "0.90", "0.92"] {
        let scratch = tempfile::tempdir()?;
        let path = scratch.path().join("ideaflow.toml");
        std::fs::write(
            &path,
            config.replace(
                "near_threshold = 0.88",
                &format!("near_threshold = {threshold}"),
            ),
        )?;
        let out = scratch.path().join("out");
        run(Command::new(&binary)
            .current_dir(&repo)
            .env("IDEAFLOW_LOG", "warn")
            .args(["replay", "-w", "2", "--config"])
            .arg(&path)
            .arg("--input")
            .arg(&input)
            .arg("--out")
            .arg(&out))?;
        let (recall, precision, ideas) = measure(&truth, &read_jsonl(&out.join("signals.jsonl"))?);
        let mark = if threshold == "0.88" {
            " (default)"
        } else {
            ""
        };
        println!("| {threshold}{mark} | {recall:.4} | {precision:.4} | {ideas} |");
    }
    Ok(())
}
