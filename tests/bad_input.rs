//! A valid stream with thousands of garbage and mutated lines mixed in: every
//! valid record is processed, every bad line is dead-lettered with a reason
//! and its exact position, and the run exits 0.

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeSet;

use common::*;

/// xorshift64*: deterministic mutations without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Turns a valid signal line into an invalid one, in one of many ways.
fn mutate(line: &str, rng: &mut Rng, kind: usize) -> Vec<u8> {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut w = v.clone();
        f(&mut w);
        w.to_string().into_bytes()
    };
    match kind {
        0 => line.as_bytes()[..1 + rng.below(line.len() - 2)].to_vec(),
        1 => {
            let mut b = line.as_bytes().to_vec();
            let i = rng.below(b.len());
            b[i] = 0xFF;
            b
        }
        2 => with(&|w| w["content"] = serde_json::json!("  \t ")),
        3 => with(&|w| w["engagement"]["views"] = serde_json::json!(-7)),
        4 => with(&|w| w["captured_at"] = serde_json::json!("the day before yesterday")),
        5 => with(&|w| w["source"] = serde_json::json!("friendster")),
        6 => format!(r#"{{"eventType":"idea.teleported","eventId":"x","timestamp":"2024-10-01T00:00:00Z","data":{}}}"#, line).into_bytes(),
        7 => with(&|w| {
            w["embedding"].as_array_mut().unwrap().pop();
        }),
        8 => with(&|w| w["embedding"][5] = serde_json::json!(1e39)),
        9 => line.replacen("\"views\":", "\"views\":1e999,\"x\":", 1).into_bytes(),
        10 => ["[1,2,3]", "\"just a string\"", "42", "null", "true"][rng.below(5)].as_bytes().to_vec(),
        11 => {
            let mut b = b"{\"id\":\"huge\",\"content\":\"".to_vec();
            b.extend(std::iter::repeat_n(b'a', (1 << 20) + 10));
            b.extend_from_slice(b"\"}");
            b
        }
        12 => (0..1 + rng.below(200)).map(|_| (rng.next() % 255) as u8 + 1).filter(|b| *b != b'\n' && *b != b'{').collect(),
        13 => with(&|w| w["content"] = serde_json::json!(12345)),
        14 => with(&|w| w["topics"] = serde_json::json!("cats,dogs")),
        15 => with(&|w| {
            w.as_object_mut().unwrap().remove("id");
        }),
        16 => line.replacen("\"views\":", "\"views\":NaN,\"x\":", 1).into_bytes(),
        17 => with(&|w| w["engagement"]["likes"] = serde_json::json!(2.5)),
        18 => with(&|w| w["embedding"] = serde_json::json!(vec![0.0; 384])),
        19 => with(&|w| w["captured_at"] = serde_json::json!("2999-01-01T00:00:00Z")),
        _ => with(&|w| w["content"] = serde_json::json!("x".repeat(10_001))),
    }
}

/// How many ways [`mutate`] has.
const MUTATIONS: usize = 21;

/// A generated stream (`signals` over 2 days, synthetic embeddings) with
/// about 2.5 bad lines per valid one mixed in, of every kind: the valid
/// lines, the mixed stream's lines, and the (1-based) numbers of its bad ones.
fn mixed_stream(dir: &std::path::Path, signals: u32) -> (Vec<String>, Vec<Vec<u8>>, BTreeSet<u64>) {
    let valid_path = dir.join("valid.jsonl");
    ok(ideaflow()
        .args(["gen", "--signals", &signals.to_string()])
        .args([
            "--seed",
            "11",
            "--days",
            "2",
            "--synthetic-embeddings",
            "--out",
        ])
        .arg(&valid_path));
    let valid: Vec<String> = std::fs::read_to_string(&valid_path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut mixed: Vec<Vec<u8>> = Vec::new();
    let mut bad_lines: BTreeSet<u64> = BTreeSet::new();
    let mut bad_kinds = 0usize;
    for line in &valid {
        for _ in 0..rng.below(5) + (rng.below(2)) {
            let kind = bad_kinds % MUTATIONS;
            bad_kinds += 1;
            let source = &valid[rng.below(valid.len())];
            // Lines over 1 MiB: a few are enough.
            let kind = if kind == 11 && bad_kinds > 40 {
                0
            } else {
                kind
            };
            mixed.push(mutate(source, &mut rng, kind));
            bad_lines.insert(mixed.len() as u64);
        }
        mixed.push(line.as_bytes().to_vec());
    }
    (valid, mixed, bad_lines)
}

#[test]
fn garbage_is_dead_lettered_and_valid_records_all_pass() {
    let dir = tempfile::tempdir().unwrap();
    let (valid, mixed, bad_lines) = mixed_stream(dir.path(), 1200);
    assert!(
        bad_lines.len() >= 2000,
        "only {} bad lines",
        bad_lines.len()
    );
    let input = dir.path().join("mixed.jsonl");
    std::fs::write(&input, mixed.join(&b'\n')).unwrap();
    let (out, dead) = (dir.path().join("out.jsonl"), dir.path().join("dead.jsonl"));
    let run = ok(ideaflow_run()
        .arg("--input")
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .arg("--dead-letter")
        .arg(&dead));
    assert!(String::from_utf8_lossy(&run.stdout).contains("dead-lettered"));

    let got: BTreeSet<String> = read_jsonl(&out)
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    let want: BTreeSet<String> = valid
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(got, want, "every valid record is processed, and only those");

    let dead = read_jsonl(&dead);
    let dead_lines: BTreeSet<u64> = dead
        .iter()
        .map(|d| d["position"]["line"].as_u64().unwrap())
        .collect();
    assert_eq!(dead.len(), bad_lines.len(), "one dead letter per bad line");
    assert_eq!(dead_lines, bad_lines, "dead letters point at the bad lines");
    for d in &dead {
        assert!(!d["reason"].as_str().unwrap().is_empty());
        assert!(
            d["message"].as_str().unwrap().len() > 10,
            "a reason a person can act on: {d}"
        );
        assert_ne!(d["reason"], "late", "nothing in this stream is late: {d}");
    }
    let reasons: BTreeSet<&str> = dead.iter().map(|d| d["reason"].as_str().unwrap()).collect();
    for r in [
        "malformed_json",
        "invalid_utf8",
        "empty_field",
        "negative_count",
        "invalid_value",
        "unknown_event_type",
        "non_finite",
        "not_an_object",
        "line_too_long",
        "wrong_type",
        "future_time",
        "missing_field",
    ] {
        assert!(reasons.contains(r), "no {r} among {reasons:?}");
    }
}

/// A one-line webhook signal at event time `t` (with its embedding, so no model runs).
fn timed_signal(id: &str, t: &str) -> String {
    format!(
        r#"{{"id":"{id}","source":"webhook","captured_at":"{t}","content":"signal {id}","embedding":[{}]}}"#,
        vec!["0.05"; 384].join(",")
    )
}

/// `ideaflow run` over `lines`: the ids it processed, in output order, and its dead letters.
fn run_lines(lines: &[String]) -> (Vec<String>, Vec<serde_json::Value>) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, lines.join("\n")).unwrap();
    let (out, dead) = (dir.path().join("out.jsonl"), dir.path().join("dead.jsonl"));
    ok(ideaflow_run()
        .arg("--input")
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .arg("--dead-letter")
        .arg(&dead));
    let ids = read_jsonl(&out)
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    (ids, read_jsonl(&dead))
}

#[test]
fn events_behind_the_watermark_are_dead_lettered_as_late() {
    let lines = [
        timed_signal("a", "2024-10-01T10:00:00Z"),
        timed_signal("b", "2024-10-01T12:00:00Z"),
        timed_signal("c", "2024-10-01T11:30:00Z"), // 30 min late: admitted (lateness 1 h)
        timed_signal("d", "2024-10-01T10:30:00Z"), // 90 min late: dead-lettered
    ];
    let (ids, dead) = run_lines(&lines);
    assert_eq!(ids, ["a", "c", "b"], "ordered by event time");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["reason"], "late");
    assert_eq!(dead[0]["position"]["line"], 4);
}

/// One record stamped centuries ahead is refused (`future_time`) instead of
/// moving the watermark past every record after it; a byte order mark at the
/// start of the file is not a malformed record.
#[test]
fn a_far_future_event_is_dead_lettered_and_later_ones_are_not_late() {
    let lines = [
        format!("\u{feff}{}", timed_signal("a", "2024-10-01T10:00:00Z")),
        timed_signal("b", "2999-10-01T10:10:00Z"),
        timed_signal("c", "2024-10-01T10:20:00Z"),
        timed_signal("d", "2024-10-01T10:30:00Z"),
    ];
    let (ids, dead) = run_lines(&lines);
    assert_eq!(ids, ["a", "c", "d"]);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["reason"], "future_time");
    assert_eq!(dead[0]["position"]["line"], 2);
    assert!(
        dead[0]["message"]
            .as_str()
            .unwrap()
            .contains("max_future_secs"),
        "{}",
        dead[0]
    );
}

/// `replay --out` of `input` into `dir/name` at `workers`: every file, by name.
fn replay_out(
    dir: &std::path::Path,
    name: &str,
    input: &std::path::Path,
    workers: &str,
) -> std::collections::BTreeMap<String, Vec<u8>> {
    let out = dir.join(name);
    replay(input, &out, &["-w", workers]);
    out_files(&out)
}

/// Bad lines change nothing but the dead letters: every view of the mixed
/// stream is byte for byte what the valid lines alone give, and the dead
/// letters themselves are the same at 1 and 2 workers.
#[test]
fn bad_lines_leave_the_views_as_the_valid_lines_alone_give_them() {
    let dir = tempfile::tempdir().unwrap();
    let (valid, mixed, bad_lines) = mixed_stream(dir.path(), 400);
    assert!(bad_lines.len() >= 600, "only {} bad lines", bad_lines.len());
    let (valid_path, mixed_path) = (dir.path().join("v.jsonl"), dir.path().join("m.jsonl"));
    std::fs::write(&valid_path, valid.join("\n")).unwrap();
    std::fs::write(&mixed_path, mixed.join(&b'\n')).unwrap();
    let alone = replay_out(dir.path(), "alone", &valid_path, "1");
    let one = replay_out(dir.path(), "one", &mixed_path, "1");
    let two = replay_out(dir.path(), "two", &mixed_path, "2");
    for view in [
        "ideas.jsonl",
        "signals.jsonl",
        "centroids.jsonl",
        "topic_counts.jsonl",
        "distinct_counts.jsonl",
    ] {
        assert!(!alone[view].is_empty(), "{view} is empty");
        assert!(alone[view] == one[view], "bad lines changed {view}");
    }
    let dead = String::from_utf8_lossy(&one["dead_letters.jsonl"]);
    assert_eq!(
        dead.lines().count(),
        bad_lines.len(),
        "one dead letter per bad line"
    );
    assert!(
        dead.contains("\"future_time\"") && dead.contains("all zeros"),
        "{dead}"
    );
    assert_eq!(
        one, two,
        "the same views and dead letters at 1 and 2 workers"
    );
}
