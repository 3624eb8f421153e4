//! `ideaflow classify` gives seed 000's categories, sentence for sentence, as
//! the seed's algorithm computes them with sentence-transformers
//! (tests/fixtures/make_classify_reference.py).

#[path = "common/mod.rs"]
mod common;

use common::*;

#[test]
fn classify_matches_the_seed_algorithm() {
    let refs = read_jsonl(&repo_root().join("tests/fixtures/classify_reference.jsonl"));
    let dir = tempfile::tempdir().unwrap();
    let (input, out) = (dir.path().join("in.jsonl"), dir.path().join("out.jsonl"));
    let lines: Vec<String> = refs
        .iter()
        .map(|r| serde_json::json!({"id": r["id"], "text": r["text"]}).to_string())
        .collect();
    std::fs::write(&input, lines.join("\n")).unwrap();
    ok(ideaflow()
        .args(["classify", "--input"])
        .arg(&input)
        .arg("--out")
        .arg(&out));
    let got = read_jsonl(&out);
    assert_eq!(got.len(), refs.len());
    let mut sentences = 0;
    for (r, g) in refs.iter().zip(&got) {
        assert_eq!(r["id"], g["id"]);
        let want = r["routed_content"].as_object().unwrap();
        let have = g["routed_content"].as_object().unwrap();
        assert_eq!(
            want.keys().collect::<Vec<_>>(),
            have.keys().collect::<Vec<_>>(),
            "{}: categories (in order of first appearance)",
            r["id"]
        );
        for (category, items) in want {
            let theirs = have[category].as_array().unwrap();
            assert_eq!(
                items.as_array().unwrap().len(),
                theirs.len(),
                "{} {category}",
                r["id"]
            );
            for (w, h) in items.as_array().unwrap().iter().zip(theirs) {
                assert_eq!(w["text"], h["text"], "{} {category}", r["id"]);
                let (a, b) = (
                    w["confidence"].as_f64().unwrap(),
                    h["confidence"].as_f64().unwrap(),
                );
                assert!((a - b).abs() < 1e-4, "{}: {a} vs {b}", w["text"]);
                sentences += 1;
            }
        }
        let total = g["analytics"]["total_sentences"].as_u64().unwrap_or(0);
        let expected: usize = want.values().map(|v| v.as_array().unwrap().len()).sum();
        assert_eq!(total as usize, expected);
        if expected == 0 {
            assert_eq!(g["analytics"]["error"], "No content to analyze");
        }
    }
    assert!(
        sentences >= 20,
        "the fixture should exercise many sentences, got {sentences}"
    );
}

#[test]
fn explain_lists_every_anchor() {
    let out = ok(ideaflow().args([
        "explain",
        "--json",
        "Research shows that 73% of consumers prefer brands that feel genuine",
    ]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sims = v["similarities"].as_object().unwrap();
    assert_eq!(
        sims.keys().collect::<Vec<_>>(),
        ["Hunch", "Wisdom", "Nudge", "Spell"]
    );
    let best = sims
        .values()
        .map(|s| s.as_f64().unwrap())
        .fold(f64::MIN, f64::max);
    assert!((v["confidence"].as_f64().unwrap() - best).abs() < 1e-9);
    assert_eq!(v["fell_back"].as_bool().unwrap(), best < 0.3);
}

/// Lines that are not `{"id","text"}` objects get an error line in the seed's
/// shape, in place: the output stays one line per input line, in order, and
/// the good lines around them are classified as they are alone.
#[test]
fn classify_answers_every_line_and_bad_ones_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let good = [
        r#"{"id":"a","text":"Wisdom comes from experience and reflection over many years."}"#,
        r#"{"id":"b","text":"Try this new trick today! It is a small nudge to act."}"#,
    ];
    let mixed = [
        good[0],
        "not json",
        r#"{"id":"n","text":null}"#,
        "",
        "[1,2]",
        r#"{"id":"m"}"#,
        good[1],
    ];
    let run = |name: &str, lines: &[&str]| {
        let (input, out) = (
            dir.path().join(name),
            dir.path().join(format!("{name}.out")),
        );
        std::fs::write(&input, lines.join("\n") + "\n").unwrap();
        ok(ideaflow()
            .args(["classify", "--input"])
            .arg(&input)
            .arg("--out")
            .arg(&out));
        read_jsonl(&out)
    };
    let alone = run("good.jsonl", &good);
    let got = run("mixed.jsonl", &mixed);
    assert_eq!(got.len(), 6, "one line per non-blank input line: {got:?}");
    assert_eq!(got[0], alone[0]);
    assert_eq!(got[5], alone[1]);
    let ids: Vec<&serde_json::Value> = got.iter().map(|g| &g["id"]).collect();
    assert_eq!(
        ids,
        [
            &serde_json::json!("a"),
            &serde_json::Value::Null,
            &serde_json::json!("n"),
            &serde_json::Value::Null,
            &serde_json::json!("m"),
            &serde_json::json!("b"),
        ]
    );
    for (g, line) in got[1..5].iter().zip([2, 3, 5, 6]) {
        let error = g["analytics"]["error"].as_str().unwrap();
        assert!(error.starts_with(&format!("line {line}: ")), "{error}");
        assert_eq!(g["routed_content"], serde_json::json!({}));
    }
}

/// The calibrated mode against the seed's on the held-out labeled sentences
/// (every 4th line of config/labeled/anchor_examples.jsonl, never used to
/// build or calibrate the classes): the seed routes nearly everything to
/// Hunch, the calibrated classes get most right, in every class. The
/// saved classes are current (else the start would say it trained them).
#[test]
fn calibrated_classes_beat_the_seed_on_held_out_sentences() {
    let o = ok(ideaflow().env("IDEAFLOW_LOG", "warn").args([
        "classify",
        "--evaluate",
        "config/labeled/anchor_examples.jsonl",
        "--held-out",
        "--json",
    ]));
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(
        !log.contains("not used"),
        "the saved classes are stale: run `ideaflow classify --train` and commit config/labeled/*.json\n{log}"
    );
    let report: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(report["sentences"], 100, "{report}");
    let accuracy = |mode: &str| report[mode]["accuracy"].as_f64().unwrap();
    assert!(accuracy("seed") < 0.4, "{report}");
    // 0.93 measured; a few sentences' margin for another CPU's rounding.
    assert!(accuracy("calibrated") >= 0.88, "{report}");
    for class in report["calibrated"]["per_class"].as_array().unwrap() {
        let recall = class["recall"].as_f64().unwrap();
        assert!(recall >= 0.8, "{class}");
    }
    // The same sentences as tables, both modes.
    let o = ok(ideaflow().args([
        "classify",
        "--evaluate",
        "config/labeled/anchor_examples.jsonl",
        "--held-out",
    ]));
    let text = String::from_utf8_lossy(&o.stdout);
    for part in [
        "== seed ==",
        "== calibrated ==",
        "confusion (rows: true, columns: predicted)",
        "precision",
    ] {
        assert!(text.contains(part), "{part}: {text}");
    }
}

#[test]
fn calibrated_mode_keeps_the_seed_shape_and_explains_margins() {
    let dir = tempfile::tempdir().unwrap();
    let (input, out) = (dir.path().join("in.jsonl"), dir.path().join("out.jsonl"));
    std::fs::write(
        &input,
        r#"{"id": 1, "text": "Three years of survey data show that shoppers return to stores with free parking. We should test free parking on weekends."}"#,
    )
    .unwrap();
    ok(ideaflow()
        .args(["classify", "--mode", "calibrated", "--input"])
        .arg(&input)
        .arg("--out")
        .arg(&out));
    let got = read_jsonl(&out);
    assert_eq!(got[0]["analytics"]["total_sentences"], 2, "{}", got[0]);
    let routed = got[0]["routed_content"].as_object().unwrap();
    assert!(
        routed.contains_key("Wisdom") && routed.contains_key("Nudge"),
        "{routed:?}"
    );
    let o = ok(ideaflow().args([
        "explain",
        "--mode",
        "calibrated",
        "--json",
        "We should test free parking on weekends",
    ]));
    let e: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(e["category"], "Nudge", "{e}");
    assert!(e["margin"].as_f64().unwrap() > 0.0, "{e}");
    let p = |c: &str| e["classes"][c]["probability"].as_f64().unwrap();
    let total: f64 = ["Hunch", "Wisdom", "Nudge", "Spell"]
        .iter()
        .map(|c| p(c))
        .sum();
    assert!((total - 1.0).abs() < 1e-9, "{e}");
    assert!(p("Nudge") > 0.5, "{e}");
    assert!(e["classes"]["Wisdom"]["similarity"].is_number(), "{e}");
}

/// The niche categories the same way: the nearest description against
/// descriptions plus labeled trend posts, on the held-out posts.
#[test]
fn calibrated_categories_beat_the_nearest_description_on_held_out_posts() {
    let o = ok(ideaflow().env("IDEAFLOW_LOG", "warn").args([
        "classify",
        "--evaluate",
        "config/labeled/category_examples.jsonl",
        "--held-out",
        "--categories",
        "--json",
    ]));
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(
        !log.contains("not used"),
        "the saved categories are stale: run `ideaflow classify --train` and commit config/labeled/*.json\n{log}"
    );
    let report: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(report["sentences"], 400, "{report}");
    let accuracy = |mode: &str| report[mode]["accuracy"].as_f64().unwrap();
    // 0.897 measured.
    assert!(accuracy("calibrated") >= 0.85, "{report}");
    assert!(accuracy("calibrated") > accuracy("seed"), "{report}");
    assert_eq!(
        report["calibrated"]["labels"].as_array().unwrap().len(),
        8,
        "every configured category: {report}"
    );
}

/// The pipeline classifies ideas the configured way (`classify.mode`): the
/// seed's anchors route nearly every idea to Hunch, the calibrated classes
/// spread them over the four; categories move too. Both replays are
/// deterministic, and the calibrated one is the default.
#[test]
fn the_pipeline_classifies_ideas_with_the_configured_mode() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    generate_stream(&input, 300, 31, 1, false);
    let seed_config = dir.path().join("seed.toml");
    std::fs::write(
        &seed_config,
        format!(
            "extends = {:?}\n[classify]\nmode = \"seed\"\n",
            repo_root().join("config/ideaflow.toml")
        ),
    )
    .unwrap();
    let (seed, calibrated) = (dir.path().join("seed"), dir.path().join("calibrated"));
    replay(&input, &seed, &["--config", seed_config.to_str().unwrap()]);
    replay(&input, &calibrated, &[]);
    let ideas = |dir: &std::path::Path| read_jsonl(&dir.join("ideas.jsonl"));
    let share = |ideas: &[serde_json::Value], class: &str| {
        ideas.iter().filter(|i| i["anchor_class"] == class).count() as f64 / ideas.len() as f64
    };
    let (s, c) = (ideas(&seed), ideas(&calibrated));
    assert_eq!(s.len(), c.len(), "the same ideas either way");
    assert!(share(&s, "Hunch") > 0.9, "seed: {}", share(&s, "Hunch"));
    assert!(
        share(&c, "Hunch") < 0.6,
        "calibrated: {}",
        share(&c, "Hunch")
    );
    let classes: std::collections::BTreeSet<&str> = c
        .iter()
        .filter_map(|i| i["anchor_class"].as_str())
        .collect();
    assert!(classes.len() >= 3, "{classes:?}");
    let moved = s
        .iter()
        .zip(&c)
        .filter(|(a, b)| a["category"] != b["category"])
        .count();
    assert!(moved > 0, "no idea changed category");
    // Deterministic: the same replay again, byte for byte.
    let again = dir.path().join("again");
    replay(&input, &again, &[]);
    assert_eq!(out_files(&calibrated), out_files(&again));
}

/// A new category needs its description and examples, no code: with the
/// saved categories no longer matching, a start trains them again (and says
/// so), `classify --train` saves them, and the next start uses the saved
/// ones, which classify exactly as the ones trained at start.
#[test]
fn a_new_category_is_trained_at_start_and_saved_by_train() {
    let dir = tempfile::tempdir().unwrap();
    let examples = dir.path().join("categories.jsonl");
    let mut lines =
        std::fs::read_to_string(repo_root().join("config/labeled/category_examples.jsonl"))
            .unwrap();
    for (i, text) in [
        "New electric hatchback charges to eighty percent in twenty minutes",
        "Vintage roadster restoration: the engine bay before and after",
        "Drift car on a mountain pass at night with headlights glowing",
        "Sticker of a tiny pickup truck hauling a giant pumpkin of horsepower",
        "Motorbike helmet with cat ears for the weekend ride",
        "Traffic jam on the ring road again, every commuter feels this",
        "Pit crew changes four tyres in under three seconds",
        "My first car was a rusty hatchback and I miss it daily",
    ]
    .iter()
    .enumerate()
    {
        lines.push_str(&serde_json::json!({"text": text, "category": "cars", "n": i}).to_string());
        lines.push('\n');
    }
    std::fs::write(&examples, lines).unwrap();
    let saved = dir.path().join("categories.json");
    let config = dir.path().join("cars.toml");
    std::fs::write(
        &config,
        format!(
            "extends = {:?}\n[classifier]\ncategory_examples = {:?}\ncategory_weights_file = {:?}\nweights_file = {:?}\n[categories]\ncars = \"Cars, motorbikes and driving: engines, electric cars, racing, road trips.\"\n",
            repo_root().join("config/ideaflow.toml"),
            examples,
            saved,
            dir.path().join("anchors.json"),
        ),
    )
    .unwrap();
    let post = dir.path().join("post.jsonl");
    std::fs::write(
        &post,
        "{\"text\": \"Electric SUV with a long battery range, ready for a road trip\", \"category\": \"cars\"}\n{\"text\": \"Kitten asleep in a teacup\", \"category\": \"animals\"}\n",
    )
    .unwrap();
    let evaluate = || {
        ideaflow()
            .env("IDEAFLOW_LOG", "info")
            .args(["classify", "--json", "--config"])
            .arg(&config)
            .arg("--evaluate")
            .arg(&post)
            .output()
            .unwrap()
    };
    let trained_at_start = evaluate();
    let log = String::from_utf8_lossy(&trained_at_start.stderr);
    assert!(trained_at_start.status.success(), "{log}");
    assert!(
        log.contains("not used") && log.contains("trained the calibrated categories"),
        "{log}"
    );
    let report: serde_json::Value = serde_json::from_slice(&trained_at_start.stdout).unwrap();
    assert_eq!(report["calibrated"]["accuracy"], 1.0, "{report}");
    let o = ok(ideaflow()
        .args(["classify", "--train", "--config"])
        .arg(&config));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("categories.json"),
        "{o:?}"
    );
    let from_saved = evaluate();
    let log = String::from_utf8_lossy(&from_saved.stderr);
    assert!(
        !log.contains("not used") && !log.contains("trained the"),
        "{log}"
    );
    assert_eq!(from_saved.stdout, trained_at_start.stdout);
}

/// Both calibrated models on sets written blind to the examples
/// (tests/fixtures/blind/, by other authors): the issue's goals with a
/// margin for another CPU's rounding (measured: anchors 0.958 and 0.992,
/// every class ≥ 0.93; categories 0.969, every category ≥ 0.917).
#[test]
fn calibrated_models_hold_on_sets_written_blind_to_the_examples() {
    for file in [
        "tests/fixtures/blind/anchor_sentences.jsonl",
        "tests/fixtures/blind/anchor_sentences_2.jsonl",
        "tests/fixtures/blind/category_posts.jsonl",
    ] {
        assert_blind_set_holds(file, 0.9, 0.8);
    }
}

/// The categories on the two harder blind sets, where about a third of the
/// posts mention another category in passing. The issue's goal (0.95,
/// every category 0.85) is not met on them; these floors only keep what
/// was measured (set 2: 0.8875, every category ≥ 0.80; set 3: 0.8375,
/// sports 0.65) from sliding back.
#[test]
fn calibrated_categories_keep_their_accuracy_on_the_harder_blind_posts() {
    assert_blind_set_holds("tests/fixtures/blind/category_posts_2.jsonl", 0.85, 0.7);
    assert_blind_set_holds("tests/fixtures/blind/category_posts_3.jsonl", 0.8, 0.6);
}

/// `classify --evaluate FILE`: the calibrated mode at `floor` accuracy or
/// more, above the seed mode, and every class at `recall` or more.
fn assert_blind_set_holds(file: &str, floor: f64, recall: f64) {
    let o = ok(ideaflow().args(["classify", "--evaluate", file, "--json"]));
    let report: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().last().unwrap()).unwrap();
    let calibrated = &report["calibrated"];
    assert!(
        calibrated["accuracy"].as_f64().unwrap() >= floor,
        "{file}: {report}"
    );
    assert!(
        calibrated["accuracy"].as_f64().unwrap() > report["seed"]["accuracy"].as_f64().unwrap(),
        "{file}: {report}"
    );
    for class in calibrated["per_class"].as_array().unwrap() {
        assert!(
            class["recall"].as_f64().unwrap() >= recall,
            "{file}: {class}"
        );
    }
}

/// The issue's own check: the blind trend posts as signals through `replay`,
/// each idea's category in `--out` against its label (the same decisions as
/// `classify --evaluate`: 0.969 measured).
#[test]
fn replayed_ideas_get_the_categories_of_the_blind_posts() {
    let dir = tempfile::tempdir().unwrap();
    let posts = read_jsonl(&repo_root().join("tests/fixtures/blind/category_posts.jsonl"));
    let signals: Vec<String> = posts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            serde_json::json!({
                "id": format!("blind-{i}"), "source": "reddit",
                "captured_at": format!("2026-01-01T00:{:02}:{:02}Z", i / 60, i % 60),
                "content": p["text"],
                "engagement": {"views": 10, "likes": 1, "comments": 0, "shares": 0},
            })
            .to_string()
        })
        .collect();
    let input = dir.path().join("posts.jsonl");
    std::fs::write(&input, signals.join("\n") + "\n").unwrap();
    let out = dir.path().join("out");
    replay(&input, &out, &[]);
    let label: std::collections::BTreeMap<&str, &str> = posts
        .iter()
        .map(|p| (p["text"].as_str().unwrap(), p["category"].as_str().unwrap()))
        .collect();
    let ideas = read_jsonl(&out.join("ideas.jsonl"));
    assert_eq!(ideas.len(), posts.len(), "one idea per post");
    let right = ideas
        .iter()
        .filter(|i| {
            Some(&i["category"].as_str().unwrap_or_default())
                == label.get(i["content"].as_str().unwrap())
        })
        .count();
    assert!(
        right as f64 >= 0.9 * ideas.len() as f64,
        "{right} of {} ideas in their post's category",
        ideas.len()
    );
}
