//! The dataflow core end to end on the real model: near-duplicate precision
//! and recall against the generator's ground truth, and score factors that
//! obey seed 004's formulas in `replay --out`.

mod common;

use std::collections::HashMap;

use common::*;
use ideaflow_operators::calendar::Calendar;
use ideaflow_operators::score::ScoringParams;
use serde_json::Value;

fn generate_and_replay(
    dir: &std::path::Path,
    signals: &str,
    seed: &str,
    start: &str,
) -> std::path::PathBuf {
    let input = dir.join("in.jsonl");
    ok(ideaflow()
        .args(["gen", "--signals", signals, "--seed", seed, "--days", "3"])
        .args(["--start", start])
        .arg("--out")
        .arg(&input));
    let out = dir.join("out");
    ok(ideaflow()
        .args(["replay", "-w", "2", "--input"])
        .arg(&input)
        .arg("--out")
        .arg(&out));
    out
}

/// Near-duplicates (generator truth) land in an idea of their own truth idea
/// (recall); near merges go to an idea of the same truth idea (precision).
#[test]
fn near_duplicates_are_merged_with_high_precision_and_recall() {
    let dir = tempfile::tempdir().unwrap();
    let out = generate_and_replay(dir.path(), "1500", "5", "2024-10-01T00:00:00Z");
    let truth: HashMap<String, Value> = read_jsonl(&dir.path().join("in.jsonl"))
        .into_iter()
        .filter(|l| l.get("content").is_some())
        .map(|l| {
            (
                l["id"].as_str().unwrap().to_owned(),
                l["metadata"]["truth"].clone(),
            )
        })
        .collect();
    let signals = read_jsonl(&out.join("signals.jsonl"));
    let mut representative: HashMap<&str, &str> = HashMap::new();
    for s in &signals {
        if s["dedupe"] == "new" {
            let t = &truth[s["id"].as_str().unwrap()];
            representative.insert(s["idea_id"].as_str().unwrap(), t["idea"].as_str().unwrap());
        }
    }
    let same_truth_idea = |s: &Value| {
        let t = &truth[s["id"].as_str().unwrap()];
        representative.get(s["idea_id"].as_str().unwrap()) == Some(&t["idea"].as_str().unwrap())
    };
    let near_truth: Vec<&Value> = signals
        .iter()
        .filter(|s| truth[s["id"].as_str().unwrap()]["dup"]["kind"] == "near")
        .collect();
    let found = near_truth
        .iter()
        .filter(|s| s["dedupe"] != "new" && same_truth_idea(s))
        .count();
    let merged: Vec<&Value> = signals.iter().filter(|s| s["dedupe"] == "near").collect();
    let right = merged.iter().filter(|s| same_truth_idea(s)).count();
    let recall = found as f64 / near_truth.len() as f64;
    let precision = right as f64 / merged.len() as f64;
    eprintln!("near-duplicates: recall {recall:.3}, precision {precision:.3}");
    assert!(near_truth.len() > 40 && merged.len() > 40);
    assert!(recall >= 0.9, "recall {recall}");
    assert!(precision >= 0.95, "precision {precision}");
    // Exact duplicates always land with their original.
    let by_id: HashMap<&str, &Value> = signals
        .iter()
        .map(|s| (s["id"].as_str().unwrap(), s))
        .collect();
    for s in &signals {
        let t = &truth[s["id"].as_str().unwrap()]["dup"];
        if t["kind"] == "exact" {
            let original = by_id[t["dup_of"].as_str().unwrap()];
            assert_eq!(s["idea_id"], original["idea_id"], "{s}");
        }
    }
}

#[test]
fn factors_obey_the_formulas() {
    let dir = tempfile::tempdir().unwrap();
    let out = generate_and_replay(dir.path(), "600", "8", "2024-10-24T00:00:00Z");
    let p = ScoringParams::default();
    let w = p.weights.normalized().as_array();
    let calendar =
        Calendar::parse_csv(&std::fs::read(repo_root().join("config/calendar.csv")).unwrap())
            .unwrap();
    let time = |v: &Value| {
        chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap())
            .unwrap()
            .with_timezone(&chrono::Utc)
    };
    let ideas = read_jsonl(&out.join("ideas.jsonl"));
    let mut in_season = 0;
    for i in &ideas {
        let f = &i["factors"];
        let get = |k: &str| f[k].as_f64().unwrap();
        for k in [
            "freshness",
            "engagement",
            "novelty",
            "community_fit",
            "seasonality",
        ] {
            assert!((0.0..=1.0).contains(&get(k)), "{k} of {i}");
        }
        let hours = (time(&i["scored_at"]) - time(&i["peak_at"])).num_seconds() as f64 / 3600.0;
        let fresh = 1.0 / (1.0 + ((hours - 24.0) / 6.0).exp());
        assert!((get("freshness") - fresh).abs() < 1e-9, "{i}");
        let days = calendar.days_to_nearest(time(&i["last_seen"]), i["locale"].as_str());
        let season = match days {
            Some(d) if d <= 7.0 => 1.0,
            Some(d) => (-(d - 7.0) / 7.0).exp(),
            None => 0.0,
        };
        assert!((get("seasonality") - season).abs() < 1e-9, "{i}");
        in_season += usize::from(season == 1.0);
        // Engagement rate: total engagement per minute since the earliest publication.
        let e = &i["engagement"];
        let total: u64 = ["views", "likes", "comments", "shares"]
            .iter()
            .map(|k| e[k].as_u64().unwrap())
            .sum();
        assert!(i["engagement_rate"].as_f64().unwrap() <= total as f64);
        let sum: f64 = [
            "freshness",
            "engagement",
            "novelty",
            "community_fit",
            "seasonality",
        ]
        .iter()
        .zip(w)
        .map(|(k, w)| get(k) * w)
        .sum();
        assert!((i["score"].as_f64().unwrap() - sum).abs() < 1e-12, "{i}");
    }
    assert!(in_season > 0, "late October is within a week of Halloween");
}

#[test]
fn views_hold_centroids_topics_and_distinct_counts() {
    let dir = tempfile::tempdir().unwrap();
    let out = generate_and_replay(dir.path(), "300", "9", "2024-10-01T00:00:00Z");
    let centroids = read_jsonl(&out.join("centroids.jsonl"));
    let ideas = read_jsonl(&out.join("ideas.jsonl"));
    // Each category centroid counts the category's ideas first seen in the window.
    for c in centroids.iter().filter(|c| c["kind"] == "category") {
        let key = c["key"].as_str().unwrap();
        let n = ideas.iter().filter(|i| i["category"] == key).count() as u64;
        assert_eq!(
            c["n"].as_u64().unwrap(),
            n,
            "3 days fit in the 7-day window"
        );
        let e: Vec<f32> = floats(&c["embedding"]);
        assert_eq!(e.len(), 384);
    }
    let topics = read_jsonl(&out.join("topic_counts.jsonl"));
    assert!(!topics.is_empty() && topics.iter().all(|t| t["count"].as_u64().unwrap() > 0));
    let distinct = read_jsonl(&out.join("distinct_counts.jsonl"));
    let signals = read_jsonl(&out.join("signals.jsonl"));
    let estimated: u64 = distinct
        .iter()
        .map(|d| d["signals"].as_u64().unwrap())
        .sum();
    let n = signals.len() as f64;
    assert!(
        (estimated as f64 - n).abs() / n < 0.05,
        "{estimated} vs {n}"
    );
}
