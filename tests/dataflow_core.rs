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
    let input = generate(dir, signals, seed, start);
    replay(dir, &input)
}

fn generate(dir: &std::path::Path, signals: &str, seed: &str, start: &str) -> std::path::PathBuf {
    let input = dir.join("in.jsonl");
    ok(ideaflow()
        .args(["gen", "--signals", signals, "--seed", seed, "--days", "3"])
        .args(["--start", start])
        .arg("--out")
        .arg(&input));
    input
}

fn replay(dir: &std::path::Path, input: &std::path::Path) -> std::path::PathBuf {
    let out = dir.join("out");
    ok(ideaflow()
        .args(["replay", "-w", "2", "--input"])
        .arg(input)
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

fn unix(v: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap())
        .unwrap()
        .timestamp()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn cos64(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

/// Engagement, novelty and community fit recomputed from the other views of
/// `replay --out`, independently of the engine: the 7-day median and MAD of
/// the source's signal rates as of the last tick, the category centroid
/// without the idea itself, the community centroid and the share of the
/// idea's topics among its category's 20 most frequent.
#[test]
fn engagement_novelty_and_community_fit_follow_the_formulas() {
    const WEEK: i64 = 7 * 86_400;
    let dir = tempfile::tempdir().unwrap();
    let input = generate(dir.path(), "500", "31", "2024-10-01T00:00:00Z");
    // One more signal two hours after the last: its epoch ticks, so every
    // active idea is re-scored against the final centroids and statistics.
    // No topics: the top topics, like the rate statistics, are those of the
    // tick, and this signal comes after it.
    let text = std::fs::read_to_string(&input).unwrap();
    let mut last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    let end = text
        .lines()
        .map(|l| unix(&serde_json::from_str::<Value>(l).unwrap()["captured_at"]))
        .max()
        .unwrap();
    let tail = chrono::DateTime::from_timestamp(end + 7_200, 0).unwrap();
    last["id"] = "tail".into();
    last["content"] = "A closing note about lighthouses at dusk".into();
    last["captured_at"] = tail.to_rfc3339().into();
    last["published_at"] = Value::Null;
    last["topics"] = Value::Array(Vec::new());
    std::fs::write(&input, format!("{text}{last}\n")).unwrap();
    let out = replay(dir.path(), &input);

    let ideas = read_jsonl(&out.join("ideas.jsonl"));
    let signals = read_jsonl(&out.join("signals.jsonl"));
    let centroids = read_jsonl(&out.join("centroids.jsonl"));
    let topics = read_jsonl(&out.join("topic_counts.jsonl"));
    let watermark = ideas.iter().map(|i| unix(&i["scored_at"])).max().unwrap();
    let tick = watermark.div_euclid(3_600) * 3_600;

    let mut rates: HashMap<&str, Vec<f64>> = HashMap::new();
    for s in &signals {
        let t = unix(&s["captured_at"]);
        if t > tick - WEEK && t <= tick {
            let rates = rates.entry(s["source"].as_str().unwrap()).or_default();
            rates.push(s["engagement_rate"].as_f64().unwrap());
        }
    }
    let stats: HashMap<&str, (f64, f64)> = rates
        .into_iter()
        .map(|(source, r)| {
            let m = median(r.clone());
            (
                source,
                (m, median(r.iter().map(|x| (x - m).abs()).collect())),
            )
        })
        .collect();
    let centroid = |kind: &str, key: &Value| {
        centroids
            .iter()
            .find(|c| c["kind"] == kind && c["key"] == *key)
            .map(|c| {
                let n = c["n"].as_u64().unwrap() as f64;
                let sum: Vec<f64> = floats(&c["embedding"])
                    .iter()
                    .map(|x| f64::from(*x) * n)
                    .collect();
                (sum, n)
            })
    };
    let mut top: HashMap<&str, Vec<(u64, &str)>> = HashMap::new();
    for t in &topics {
        let category = top.entry(t["category"].as_str().unwrap()).or_default();
        category.push((t["count"].as_u64().unwrap(), t["topic"].as_str().unwrap()));
    }
    for category in top.values_mut() {
        category.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
        category.truncate(20);
    }

    let mut checked = 0;
    for i in ideas
        .iter()
        .filter(|i| i["status"] == "active" && unix(&i["scored_at"]) == watermark)
    {
        checked += 1;
        let f = &i["factors"];
        let e: Vec<f64> = floats(&i["embedding"]).into_iter().map(f64::from).collect();

        let (m, mad) = stats[i["source"].as_str().unwrap()];
        let z = (i["engagement_rate"].as_f64().unwrap() - m) / (1.4826 * mad + 1e-9);
        let engagement = 1.0 / (1.0 + (-z).exp());
        let got = f["engagement"].as_f64().unwrap();
        assert!(
            (got - engagement).abs() < 1e-9,
            "engagement {got} vs {engagement}: {i}"
        );

        let mut novelty = 1.0;
        if let Some((mut sum, n)) = centroid("category", &i["category"]) {
            let member = unix(&i["first_seen"]) > tick - WEEK;
            if member {
                sum.iter_mut().zip(&e).for_each(|(s, x)| *s -= x);
            }
            if n - f64::from(u8::from(member)) > 0.0 {
                novelty = (1.0 - cos64(&e, &sum)).clamp(0.0, 1.0);
            }
        }
        let got = f["novelty"].as_f64().unwrap();
        assert!(
            (got - novelty).abs() < 1e-4,
            "novelty {got} vs {novelty}: {i}"
        );

        let fit = centroid("community", &i["community"]).map(|(sum, _)| cos64(&e, &sum).max(0.0));
        let idea_topics: Vec<&str> = i["topics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        let category_top = top
            .get(i["category"].as_str().unwrap_or(""))
            .cloned()
            .unwrap_or_default();
        let cohesion = if idea_topics.is_empty() {
            0.0
        } else {
            let shared = idea_topics
                .iter()
                .filter(|t| category_top.iter().any(|(_, top)| top == *t))
                .count();
            shared as f64 / idea_topics.len() as f64
        };
        let community_fit = (fit.unwrap_or(0.0) + cohesion) / 2.0;
        let got = f["community_fit"].as_f64().unwrap();
        assert!(
            (got - community_fit).abs() < 1e-4,
            "community fit {got} vs {community_fit}: {i}"
        );
    }
    assert!(
        checked > 100,
        "only {checked} ideas scored at the last tick"
    );
}
