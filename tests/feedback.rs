//! The feedback loop end to end on generated marketplace feedback whose truth
//! is known (the generator's variant B converts twice as well as A): replays
//! are identical whatever the worker count, windows equal a hand count, the
//! better variant wins once the sample suffices and takes the budget, and
//! feedback for unknown ideas or beyond the allowed lateness is dead-lettered.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

const FEEDBACK_VIEWS: [&str; 4] = [
    "windows.jsonl",
    "ab_results.jsonl",
    "allocations.jsonl",
    "weights_history.jsonl",
];

fn generate(dir: &Path) -> PathBuf {
    let input = dir.join("in.jsonl");
    generate_stream(&input, 400, 5, 4, true);
    input
}

fn replay(input: &Path, out: &Path, workers: &str) {
    ok(ideaflow()
        .args(["replay", "-w", workers, "--input"])
        .arg(input)
        .arg("--out")
        .arg(out));
}

#[test]
fn feedback_views_are_identical_across_replays_and_worker_counts() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(dir.path());
    let outs: Vec<PathBuf> = [("a", "1"), ("b", "1"), ("c", "4")]
        .iter()
        .map(|(name, w)| {
            let out = dir.path().join(name);
            replay(&input, &out, w);
            out
        })
        .collect();
    for view in FEEDBACK_VIEWS {
        let first = std::fs::read(outs[0].join(view)).unwrap();
        assert!(!first.is_empty(), "{view} is empty");
        for other in &outs[1..] {
            assert!(
                first == std::fs::read(other.join(view)).unwrap(),
                "{view} differs between {} and {}",
                outs[0].display(),
                other.display()
            );
        }
    }
    // The weights moved, and the scores used them: ideas differ from a replay
    // with learning off.
    let weights = read_jsonl(&outs[0].join("weights_history.jsonl"));
    assert!(weights.len() >= 2, "{weights:?}");
    assert_eq!(weights[0]["origin"], "configured");
    assert!(weights[1..].iter().all(|w| w["origin"] == "learned"));
    let frozen = dir.path().join("frozen.toml");
    let config = std::fs::read_to_string(repo_root().join("config/ideaflow.toml")).unwrap();
    std::fs::write(
        &frozen,
        config
            .replace(
                "[feedback.learning]\n",
                "[feedback.learning]\nenabled = false\n",
            )
            .replace("\nenabled = true\n", "\n"),
    )
    .unwrap();
    let fixed = dir.path().join("fixed");
    ok(ideaflow()
        .arg("replay")
        .arg("--config")
        .arg(&frozen)
        .arg("--input")
        .arg(&input)
        .arg("--out")
        .arg(&fixed));
    assert_eq!(read_jsonl(&fixed.join("weights_history.jsonl")).len(), 1);
    assert_ne!(
        std::fs::read(fixed.join("ideas.jsonl")).unwrap(),
        std::fs::read(outs[0].join("ideas.jsonl")).unwrap(),
        "learned weights must change the scores"
    );
}

/// The event time the source orders a line by: a bare signal's capture time,
/// an envelope's timestamp (a signal envelope's is its data's capture time).
fn event_time(line: &str) -> i64 {
    let v: Value = serde_json::from_str(line).unwrap();
    let at = match v["eventType"].as_str() {
        Some("signal.ingested") => &v["data"]["captured_at"],
        Some(_) => &v["timestamp"],
        None => &v["captured_at"],
    };
    chrono::DateTime::parse_from_rfc3339(at.as_str().unwrap())
        .unwrap()
        .timestamp()
}

#[test]
fn every_view_is_the_same_when_the_stream_is_shuffled_within_the_lateness() {
    use rand::{Rng, SeedableRng};
    let dir = tempfile::tempdir().unwrap();
    let input = generate(dir.path());
    // Each event moves to its time plus up to 50 minutes: most lines change
    // place, and none arrives more than the allowed hour behind the latest
    // event time seen before it. Signals and feedback are interleaved anew.
    let text = std::fs::read_to_string(&input).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut keyed: Vec<(i64, usize, &str)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (event_time(l) + rng.random_range(0..3000), i, l))
        .collect();
    keyed.sort();
    let moved = keyed.iter().enumerate().filter(|(j, k)| k.1 != *j).count();
    assert!(moved * 2 > keyed.len(), "only {moved} lines moved");
    let shuffled = dir.path().join("shuffled.jsonl");
    let lines: Vec<&str> = keyed.iter().map(|k| k.2).collect();
    std::fs::write(&shuffled, lines.join("\n") + "\n").unwrap();

    let (ordered, reordered) = (dir.path().join("ordered"), dir.path().join("reordered"));
    replay(&input, &ordered, "1");
    replay(&shuffled, &reordered, "2");
    let mut views: Vec<_> = std::fs::read_dir(&ordered)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    views.sort();
    assert!(views.len() >= 10, "{views:?}");
    for view in views {
        let a = std::fs::read(ordered.join(&view)).unwrap();
        let b = std::fs::read(reordered.join(&view)).unwrap();
        assert!(a == b, "{view:?} differs once the stream is shuffled");
    }
    assert!(
        read_jsonl(&reordered.join("dead_letters.jsonl")).is_empty(),
        "nothing is late within the lateness"
    );
}

#[test]
fn windows_equal_a_hand_count_and_the_better_variant_wins() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(dir.path());
    let out = dir.path().join("out");
    replay(&input, &out, "2");
    // A listing made from a near-duplicate's text counts toward the idea that
    // text merged into: the signals view says which.
    let merged_into: BTreeMap<String, String> = read_jsonl(&out.join("signals.jsonl"))
        .iter()
        .map(|s| {
            let own = ideaflow_operators::idea::idea_id(s["content_hash"].as_str().unwrap());
            (own.to_string(), s["idea_id"].as_str().unwrap().to_owned())
        })
        .collect();
    // Hand count: impressions and clicks per idea, variant and hour.
    let mut hand: BTreeMap<(String, String, String), (u64, u64)> = BTreeMap::new();
    for line in std::fs::read_to_string(&input).unwrap().lines() {
        let e: Value = serde_json::from_str(line).unwrap();
        if e["eventType"] != "feedback.received" {
            continue;
        }
        let t = chrono::DateTime::parse_from_rfc3339(e["timestamp"].as_str().unwrap()).unwrap();
        let hour = chrono::DateTime::from_timestamp(t.timestamp() / 3600 * 3600, 0).unwrap();
        let d = &e["data"];
        let named = d["ideaId"].as_str().unwrap();
        let c = hand
            .entry((
                merged_into
                    .get(named)
                    .map_or(named, String::as_str)
                    .to_owned(),
                d["variant"].as_str().unwrap().to_owned(),
                hour.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            ))
            .or_default();
        c.0 += d["impressions"].as_u64().unwrap();
        c.1 += d["clicks"].as_u64().unwrap();
    }
    let ideas: std::collections::BTreeSet<String> = read_jsonl(&out.join("ideas.jsonl"))
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect();
    let windows = read_jsonl(&out.join("windows.jsonl"));
    let mut compared = 0;
    for w in windows.iter().filter(|w| w["kind"] == "hour") {
        let key = (
            w["idea_id"].as_str().unwrap().to_owned(),
            w["variant"].as_str().unwrap().to_owned(),
            w["window_start"].as_str().unwrap().to_owned(),
        );
        if !ideas.contains(&key.0) {
            continue;
        }
        let (imp, clicks) = hand
            .get(&key)
            .copied()
            .unwrap_or_else(|| panic!("{key:?} not in the input"));
        assert_eq!(w["impressions"].as_u64().unwrap(), imp, "{key:?}");
        assert_eq!(w["clicks"].as_u64().unwrap(), clicks, "{key:?}");
        let ctr = w["ctr"].as_f64().unwrap();
        assert!((ctr - clicks as f64 / imp as f64).abs() < 1e-12);
        compared += 1;
    }
    // Hours that closed before the stream ended are all there.
    assert!(
        compared * 10 >= hand.len() * 8,
        "{compared} of {} hours",
        hand.len()
    );

    // A/B: no winner before the sample suffices; once it does, B (2x CTR).
    let results = read_jsonl(&out.join("ab_results.jsonl"));
    assert!(!results.is_empty());
    let (mut sufficient, mut b_wins) = (0, 0);
    for r in &results {
        if r["sample_sufficient"] == false {
            assert!(
                r["winner"].is_null(),
                "a winner before the sample suffices: {r}"
            );
        } else {
            sufficient += 1;
            if r["winner"] == "B" {
                b_wins += 1;
            }
            assert_ne!(r["winner"], "A", "the worse variant won: {r}");
        }
    }
    assert!(
        sufficient > 0 && b_wins * 10 >= sufficient * 8,
        "B won {b_wins} of {sufficient}"
    );
    // Thompson sampling gives B most of each idea's last budget.
    let mut last: BTreeMap<String, (String, f64)> = BTreeMap::new();
    for a in read_jsonl(&out.join("allocations.jsonl")) {
        if a["variant"] == "B" {
            let day = a["day_start"].as_str().unwrap().to_owned();
            let e = last
                .entry(a["idea_id"].as_str().unwrap().to_owned())
                .or_insert((day.clone(), 0.0));
            if day >= e.0 {
                *e = (day, a["share"].as_f64().unwrap());
            }
        }
    }
    let mean_b: f64 = last.values().map(|(_, s)| s).sum::<f64>() / last.len() as f64;
    assert!(mean_b > 0.8, "B's mean share of the last budget: {mean_b}");
}

#[test]
fn unknown_ideas_and_too_late_feedback_are_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(dir.path());
    let text = std::fs::read_to_string(&input).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let feedback = |ts: &str, idea: &str| {
        format!(
            r#"{{"eventType":"feedback.received","timestamp":"{ts}","source":"test","version":"1.0","data":{{"ideaId":"{idea}","marketplace":"etsy","variant":"A","impressions":10,"clicks":1,"favorites":0,"addToCart":0,"sales":0}}}}"#
        )
    };
    let mid = lines.len() / 2;
    let mid_time = serde_json::from_str::<Value>(lines[mid]).unwrap()["timestamp"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| "2024-10-02T12:00:00Z".into());
    let ghost = "00000000-0000-5000-8000-00000000dead";
    let mut with_bad: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    with_bad.insert(mid, feedback(&mid_time, ghost));
    // Days behind everything before it: beyond pipeline.allowed_lateness_secs.
    with_bad.push(feedback("2024-09-01T00:00:00Z", ghost));
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, with_bad.join("\n") + "\n").unwrap();
    let out = dir.path().join("out");
    replay(&bad, &out, "2");
    let dead = read_jsonl(&out.join("dead_letters.jsonl"));
    let reasons: Vec<&str> = dead.iter().map(|d| d["reason"].as_str().unwrap()).collect();
    assert_eq!(
        reasons.iter().filter(|r| **r == "unknown_idea").count(),
        1,
        "{reasons:?}"
    );
    assert_eq!(
        reasons.iter().filter(|r| **r == "late").count(),
        1,
        "{reasons:?}"
    );
    let unknown = dead.iter().find(|d| d["reason"] == "unknown_idea").unwrap();
    assert!(unknown["raw"].as_str().unwrap().contains(ghost));
    assert!(unknown["message"]
        .as_str()
        .unwrap()
        .contains("unknown_idea_wait_secs"));
    let counts = read_jsonl(&out.join("dead_letter_counts.jsonl"));
    assert!(
        counts
            .iter()
            .any(|c| c["reason"] == "unknown_idea" && c["count"] == 1),
        "{counts:?}"
    );
    // The good records around them are unaffected.
    let clean = dir.path().join("clean");
    replay(&input, &clean, "2");
    for view in FEEDBACK_VIEWS {
        assert_eq!(
            std::fs::read(out.join(view)).unwrap(),
            std::fs::read(clean.join(view)).unwrap(),
            "{view}"
        );
    }
}

#[test]
fn classification_corrections_move_the_anchor_for_every_live_idea() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    generate_stream(&input, 300, 8, 1, false);
    let text = std::fs::read_to_string(&input).unwrap();
    let correction = |ts: &str, sentence: &str, correct: &str| {
        serde_json::json!({"eventType": "classification.corrected", "timestamp": ts,
            "source": "test", "version": "1.0",
            "data": {"sentence": sentence, "predicted": "Hunch", "correct": correct, "rating": 5}})
        .to_string()
    };
    // After the first third of the stream, users say animal posts are Wisdom.
    let mut lines: Vec<String> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        lines.push(line.to_owned());
        if i == 100 {
            let ts = serde_json::from_str::<Value>(line).unwrap()["captured_at"]
                .as_str()
                .unwrap()
                .to_owned();
            for s in [
                "Corgi wearing a tiny hat at work",
                "Raccoon wearing a tiny hat this week",
                "Cat in a cozy sweater again",
                "Capybara as a barista",
            ] {
                lines.push(correction(&ts, s, "Wisdom"));
            }
            lines.push(correction(&ts, "x y z", "NoSuchAnchor"));
        }
    }
    let with = dir.path().join("with.jsonl");
    std::fs::write(&with, lines.join("\n") + "\n").unwrap();
    let (before, after) = (dir.path().join("before"), dir.path().join("after"));
    replay(&input, &before, "1");
    replay(&with, &after, "2");
    let history = read_jsonl(&after.join("anchors_history.jsonl"));
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0]["anchor"], "Wisdom");
    assert_eq!(history[0]["corrections"], 4);
    assert!(history[0]["shift"].as_f64().unwrap() > 0.1);
    let classes = |dir: &Path| -> BTreeMap<String, String> {
        read_jsonl(&dir.join("ideas.jsonl"))
            .iter()
            .map(|i| {
                (
                    i["id"].as_str().unwrap().to_owned(),
                    i["anchor_class"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    };
    let (b, a) = (classes(&before), classes(&after));
    let moved: Vec<&String> = a
        .iter()
        .filter(|(id, c)| b.get(*id) != Some(c))
        .map(|(id, _)| id)
        .collect();
    assert!(
        !moved.is_empty(),
        "no idea was classified with the moved anchor"
    );
    // Only Wisdom's prototype moved, so only Wisdom's score changed: every
    // idea that changed class went to Wisdom, or left it (the prototype
    // moved away from it), and most went to it.
    assert!(
        moved
            .iter()
            .all(|id| a[*id] == "Wisdom" || b[*id] == "Wisdom"),
        "{:?}",
        moved
            .iter()
            .map(|id| (&b[*id], &a[*id]))
            .collect::<Vec<_>>()
    );
    let to_wisdom = moved.iter().filter(|id| a[**id] == "Wisdom").count();
    assert!(
        to_wisdom * 2 > moved.len(),
        "{to_wisdom} of {}",
        moved.len()
    );
    // Ideas created before the corrections are classified again at the
    // next tick: some of them moved too.
    let first_seen: BTreeMap<String, String> = read_jsonl(&after.join("ideas.jsonl"))
        .iter()
        .map(|i| {
            (
                i["id"].as_str().unwrap().to_owned(),
                i["first_seen"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let corrected_at = history[0]["effective_from"].as_str().unwrap();
    assert!(
        moved
            .iter()
            .any(|id| first_seen[*id].as_str() < corrected_at),
        "no idea older than the corrections was classified again"
    );
    let dead = read_jsonl(&after.join("dead_letters.jsonl"));
    assert!(dead
        .iter()
        .any(|d| d["reason"] == "invalid_value"
            && d["raw"].as_str().unwrap().contains("NoSuchAnchor")));
}

/// `ideaflow gen --corrections` writes `classification.corrected` events the
/// pipeline takes whole: each is counted in the anchors' history, none is
/// dead-lettered, and the moved anchors classify live ideas, old ones at the
/// next tick and new ones as they come, differently from a replay without
/// the corrections.
#[test]
fn generated_corrections_move_the_anchors() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    ok(ideaflow()
        .args(["gen", "--signals", "600", "--seed", "5", "--days", "2"])
        .arg("--corrections")
        .arg("--out")
        .arg(&input));
    let text = std::fs::read_to_string(&input).unwrap();
    let (corrections, rest): (Vec<&str>, Vec<&str>) = text
        .lines()
        .partition(|l| l.contains("\"classification.corrected\""));
    assert!(corrections.len() >= 10, "{} corrections", corrections.len());
    let without = dir.path().join("without.jsonl");
    std::fs::write(&without, rest.join("\n") + "\n").unwrap();
    let (with_out, without_out) = (dir.path().join("with"), dir.path().join("without"));
    replay(&input, &with_out, "2");
    replay(&without, &without_out, "1");
    assert!(read_jsonl(&with_out.join("dead_letters.jsonl")).is_empty());
    // The window (30 days) keeps every correction: each anchor's last row
    // counts all of its own, and together they count every event.
    let history = read_jsonl(&with_out.join("anchors_history.jsonl"));
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    for row in &history {
        last.insert(
            row["anchor"].as_str().unwrap().to_owned(),
            row["corrections"].as_u64().unwrap(),
        );
    }
    assert!(last.len() >= 2, "{last:?}");
    assert!(last
        .keys()
        .all(|a| ["Wisdom", "Nudge", "Spell"].contains(&a.as_str())));
    assert_eq!(last.values().sum::<u64>(), corrections.len() as u64);
    let ideas = |dir: &Path| -> BTreeMap<String, (String, String)> {
        read_jsonl(&dir.join("ideas.jsonl"))
            .iter()
            .map(|i| {
                (
                    i["id"].as_str().unwrap().to_owned(),
                    (
                        i["anchor_class"].as_str().unwrap_or_default().to_owned(),
                        i["first_seen"].as_str().unwrap().to_owned(),
                    ),
                )
            })
            .collect()
    };
    let (with, without) = (ideas(&with_out), ideas(&without_out));
    assert_eq!(with.len(), without.len());
    let first_correction = history
        .iter()
        .map(|r| r["effective_from"].as_str().unwrap())
        .min()
        .unwrap();
    let moved: Vec<&(String, String)> = with
        .iter()
        .filter(|(id, (class, _))| without[*id].0 != *class)
        .map(|(_, idea)| idea)
        .collect();
    assert!(moved.len() > 10, "only {} ideas changed class", moved.len());
    // Ideas seen before any correction changed class too: live ideas are
    // classified again at the tick after the anchors move.
    let before = moved
        .iter()
        .filter(|(_, first_seen)| first_seen.as_str() < first_correction)
        .count();
    assert!(
        before > 0,
        "no idea older than the first correction changed class"
    );
}
