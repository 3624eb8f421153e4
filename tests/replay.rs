//! The replay source end to end: gzip and plain files in order, worker counts
//! and speeds that do not change results, the run command's outputs.

#[path = "common/mod.rs"]
mod common;

use std::io::Write;
use std::process::Command;

use common::*;

fn run_to(
    dir: &std::path::Path,
    name: &str,
    inputs: &[&std::path::Path],
    extra: &[&str],
) -> Vec<u8> {
    let out = dir.join(format!("{name}.jsonl"));
    let mut cmd = ideaflow_run();
    cmd.arg("--out")
        .arg(&out)
        .arg("--dead-letter")
        .arg(dir.join(format!("{name}.dead.jsonl")));
    cmd.arg("--input").args(inputs).args(extra);
    ok(&mut cmd);
    std::fs::read(out).unwrap()
}

#[test]
fn worker_count_gzip_and_speed_do_not_change_output() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("s.jsonl");
    ok(ideaflow()
        .args([
            "gen",
            "--signals",
            "240",
            "--seed",
            "5",
            "--days",
            "1",
            "--out",
        ])
        .arg(&plain));
    let one = run_to(dir.path(), "w1", &[&plain], &["-w", "1"]);
    let three = run_to(dir.path(), "w3", &[&plain], &["-w", "3"]);
    assert_eq!(one, three, "1 and 3 workers give byte-identical output");

    // The same lines split over a gzip file and a plain file.
    let text = std::fs::read_to_string(&plain).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let (head, tail) = lines.split_at(lines.len() / 2);
    let gz = dir.path().join("head.jsonl.gz");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::default(),
    );
    enc.write_all((head.join("\n") + "\n").as_bytes()).unwrap();
    enc.finish().unwrap();
    let rest = dir.path().join("tail.jsonl");
    std::fs::write(&rest, tail.join("\n")).unwrap();
    let split = run_to(dir.path(), "split", &[&gz, &rest], &["-w", "2"]);
    assert_eq!(one, split, "gzip + plain files replay as one stream");

    let out: Vec<serde_json::Value> = one
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(out.len(), 240);
    assert!(out
        .iter()
        .all(|s| s["embedding"].as_array().unwrap().len() == 384));
}

#[test]
fn real_time_speed_paces_the_replay() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("s.jsonl");
    let sig = |id: u32, t: &str| {
        format!(
            r#"{{"id":"{id}","source":"webhook","captured_at":"{t}","content":"c {id}","embedding":[{}]}}"#,
            vec!["0.05"; 384].join(",")
        )
    };
    // 60 s of event time at 60x takes about a second.
    std::fs::write(
        &input,
        [
            sig(1, "2024-10-01T10:00:00Z"),
            sig(2, "2024-10-01T10:01:00Z"),
        ]
        .join("\n"),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let fast = run_to(dir.path(), "paced", &[&input], &["--speed", "60"]);
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(900),
        "the replay was not paced"
    );
    let max = run_to(dir.path(), "max", &[&input], &["--speed", "max"]);
    assert_eq!(fast, max);
}

#[test]
fn bad_speed_and_missing_input_fail_clearly() {
    let out = ideaflow_run()
        .args(["--speed", "warp", "--input", "config/sample/signals.jsonl"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("speed"));
    let out = ideaflow_run()
        .args(["--input", "/nonexistent/file.jsonl"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/file.jsonl"), "{stderr}");
    // The cause once, not once per error that wraps it.
    assert_eq!(stderr.matches("No such file").count(), 1, "{stderr}");
}

fn replay_to(
    dir: &std::path::Path,
    name: &str,
    input: &std::path::Path,
    extra: &[&str],
) -> (Vec<u8>, Vec<u8>) {
    let out = dir.join(name);
    replay(input, &out, extra);
    // Every view, concatenated in a fixed order: all must agree.
    let mut views = Vec::new();
    for f in VIEWS {
        views.extend(format!("== {f}\n").into_bytes());
        views.extend(std::fs::read(out.join(f)).unwrap());
    }
    (
        views,
        std::fs::read(out.join("dead_letter_counts.jsonl")).unwrap(),
    )
}

const VIEWS: [&str; 6] = [
    "ideas.jsonl",
    "signals.jsonl",
    "centroids.jsonl",
    "topic_counts.jsonl",
    "distinct_counts.jsonl",
    "dead_letter_counts.jsonl",
];

fn read_view(dir: &std::path::Path, name: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join(name))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn replay_out_is_identical_across_runs_workers_and_arrival_order() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("s.jsonl");
    ok(ideaflow()
        .args([
            "gen",
            "--signals",
            "400",
            "--seed",
            "21",
            "--days",
            "2",
            "--out",
        ])
        .arg(&input));
    let (a, dead_a) = replay_to(dir.path(), "a", &input, &["-w", "1"]);
    let (b, _) = replay_to(dir.path(), "b", &input, &["-w", "1"]);
    let (c, _) = replay_to(dir.path(), "c", &input, &["-w", "4"]);
    assert!(
        dead_a.is_empty(),
        "nothing in a generated stream is refused"
    );
    assert_eq!(a, b, "the same replay twice");
    assert_eq!(a, c, "1 and 4 workers");

    // Swap neighbours whose event times are within 15 minutes: a different
    // arrival order that stays within the allowed lateness (1 h).
    let text = std::fs::read_to_string(&input).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    let time = |l: &str| {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        chrono::DateTime::parse_from_rfc3339(v["captured_at"].as_str().unwrap())
            .unwrap()
            .timestamp()
    };
    let mut swapped = 0;
    for pair in lines.chunks_mut(2) {
        if pair.len() == 2 && (time(pair[0]) - time(pair[1])).abs() < 15 * 60 {
            pair.swap(0, 1);
            swapped += 1;
        }
    }
    assert!(swapped > 50, "only {swapped} swaps");
    let shuffled = dir.path().join("shuffled.jsonl");
    std::fs::write(&shuffled, lines.join("\n")).unwrap();
    let (d, dead_d) = replay_to(dir.path(), "d", &shuffled, &["-w", "2"]);
    assert!(
        dead_d.is_empty(),
        "reordering within the lateness makes nothing late: {}",
        String::from_utf8_lossy(&dead_d)
    );
    assert_eq!(a, d, "arrival order within the allowed lateness");

    // Exact duplicates (after normalization) are one idea with all their signals.
    let ideas = read_view(&dir.path().join("a"), "ideas.jsonl");
    let signals: i64 = ideas
        .iter()
        .map(|i| i["signal_count"].as_i64().unwrap())
        .sum();
    assert_eq!(signals, 400);
    assert!(
        ideas.len() < 360,
        "about 15% exact and near duplicates should merge: {} ideas",
        ideas.len()
    );
    let ids: Vec<&str> = ideas.iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "sorted by id");
    assert!(ideas
        .iter()
        .all(|i| i["category"].is_string() && i["anchor_class"].is_string()));
    // Every view is sorted by its key and every idea carries a score in [0, 1].
    for i in &ideas {
        let score = i["score"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&score), "{i}");
    }
    let signals = read_view(&dir.path().join("a"), "signals.jsonl");
    assert_eq!(signals.len(), 400);
    let keys: Vec<(String, String)> = signals
        .iter()
        .map(|s| (s["source"].to_string(), s["id"].to_string()))
        .collect();
    assert!(
        keys.windows(2).all(|w| w[0] < w[1]),
        "signals sorted by (source, id)"
    );
}

/// Over 80 days ideas are archived and, 30 days on, forgotten; content that
/// comes back after that starts over. Worker counts still agree.
#[test]
fn a_long_stream_that_archives_and_forgets_ideas_is_identical_across_workers() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("s.jsonl");
    ok(ideaflow()
        .args(["gen", "--signals", "3000", "--seed", "4", "--days", "80"])
        .args(["--synthetic-embeddings", "--feedback", "--out"])
        .arg(&input));
    let (one, dead) = replay_to(dir.path(), "w1", &input, &["-w", "1"]);
    let (four, _) = replay_to(dir.path(), "w4", &input, &["-w", "4"]);
    assert!(
        !String::from_utf8_lossy(&dead).contains("late"),
        "nothing generated is late"
    );
    assert_eq!(one, four, "1 and 4 workers");
    let ideas = read_view(&dir.path().join("w1"), "ideas.jsonl");
    let archived = ideas.iter().filter(|i| i["status"] == "archived").count();
    assert!(
        archived > 500,
        "ideas are archived over 80 days: {archived}"
    );

    // Never forgetting, the ideas whose content came back after the horizon
    // keep their first sighting; forgotten, they start over later.
    let config = std::fs::read_to_string(repo_root().join("config/ideaflow.toml")).unwrap();
    let never = config.replace("forget_archived_secs = 2592000", "forget_archived_secs = 0");
    assert_ne!(config, never, "the config sets the horizon");
    let never_path = dir.path().join("never.toml");
    std::fs::write(&never_path, never).unwrap();
    let never_path = never_path.to_str().unwrap();
    replay_to(
        dir.path(),
        "never",
        &input,
        &["-w", "2", "--config", never_path],
    );
    let kept = read_view(&dir.path().join("never"), "ideas.jsonl");
    assert_eq!(kept.len(), ideas.len(), "the same ideas, by id");
    let restarted: Vec<_> = ideas
        .iter()
        .zip(&kept)
        .filter(|(i, k)| i["first_seen"] != k["first_seen"])
        .collect();
    assert!(
        !restarted.is_empty(),
        "some content came back after the horizon"
    );
    for (i, k) in restarted {
        assert_eq!(i["id"], k["id"]);
        assert!(
            i["first_seen"].as_str() > k["first_seen"].as_str(),
            "a forgotten idea starts over later: {i} / {k}"
        );
        assert!(i["signal_count"].as_i64() < k["signal_count"].as_i64());
    }

    // The feedback operator forgets them too (the state tells it): a
    // listing naming an idea archived early and never back, on day 62, is
    // dead-lettered as naming an unknown idea; never forgetting, it is
    // published.
    let early = ideas
        .iter()
        .zip(&kept)
        .find(|(i, k)| {
            i["status"] == "archived"
                && i["first_seen"] == k["first_seen"]
                && i["last_seen"].as_str().unwrap() < "2024-10-15"
        })
        .map(|(i, _)| i["id"].as_str().unwrap().to_owned())
        .expect("an idea archived early that never came back");
    let listed_at = "2024-12-02T00:00:00Z";
    let listing = format!(
        r#"{{"eventType":"listing.published","eventId":"late-listing","timestamp":"{listed_at}","source":"test","version":"1.0","data":{{"ideaId":"{early}","marketplace":"etsy","listingId":"l-1","variant":"A","publishedAt":"{listed_at}"}}}}"#
    );
    let stream = std::fs::read_to_string(&input).unwrap();
    let mut lines: Vec<&str> = stream.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.contains(r#""captured_at":"2024-12-02"#))
        .expect("signals on day 62");
    lines.insert(at, &listing);
    let relisted = dir.path().join("relisted.jsonl");
    std::fs::write(&relisted, lines.join("\n") + "\n").unwrap();
    replay_to(dir.path(), "relisted", &relisted, &["-w", "2"]);
    replay_to(
        dir.path(),
        "relisted-never",
        &relisted,
        &["-w", "2", "--config", never_path],
    );
    let names_it = |out: &str, view: &str| {
        read_view(&dir.path().join(out), view)
            .into_iter()
            .filter(|r| r.to_string().contains(&early))
            .collect::<Vec<_>>()
    };
    let dead = names_it("relisted", "dead_letters.jsonl");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["reason"], "unknown_idea");
    assert!(names_it("relisted", "publish_latencies.jsonl").is_empty());
    assert!(names_it("relisted-never", "dead_letters.jsonl").is_empty());
    let published = names_it("relisted-never", "publish_latencies.jsonl");
    assert_eq!(published.len(), 1);
    assert_eq!(published[0]["published_at"], listed_at);
}

#[test]
fn a_source_held_back_by_back_pressure_gives_the_same_views() {
    // Enough signals for several hand-overs (every 1024 lines), and an
    // in-flight bound far below that: the source waits for the dataflow to
    // catch up with the watermark at every hand-over.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("s.jsonl");
    ok(ideaflow()
        .args(["gen", "--signals", "3000", "--seed", "8", "--days", "3"])
        .arg("--synthetic-embeddings")
        .arg("--out")
        .arg(&input));
    let config = std::fs::read_to_string(repo_root().join("config/ideaflow.toml"))
        .unwrap()
        .replace("max_in_flight = 50000", "max_in_flight = 7");
    assert!(config.contains("max_in_flight = 7"));
    let tight = dir.path().join("tight.toml");
    std::fs::write(&tight, config).unwrap();
    let tight = tight.to_str().unwrap();
    let (free, _) = replay_to(dir.path(), "free", &input, &["-w", "2"]);
    let (held, _) = replay_to(dir.path(), "held", &input, &["-w", "2", "--config", tight]);
    assert_eq!(free, held, "a source waiting on back-pressure");
}

/// A hostfile for two processes on this machine.
fn two_hosts(dir: &std::path::Path) -> std::path::PathBuf {
    let hosts = dir.join("hosts");
    std::fs::write(
        &hosts,
        format!("127.0.0.1:{}\n127.0.0.1:{}\n", free_port(), free_port()),
    )
    .unwrap();
    hosts
}

/// Starts process 1 of a two-process cluster running `args`; process 0 is
/// run by the caller.
fn follower(args: &[&str], hosts: &std::path::Path, cmd: Command) -> Server {
    let mut cmd = cmd;
    cmd.args(args)
        .args(["--processes", "2", "--process", "1", "--hostfile"])
        .arg(hosts)
        .stdout(std::process::Stdio::piped());
    Server(cmd.spawn().expect("process 1 starts"))
}

/// Waits for process 1 to end; what it printed.
fn finished(mut follower: Server) -> String {
    use std::io::Read;
    let mut text = String::new();
    let mut stdout = follower.0.stdout.take().expect("stdout piped");
    stdout.read_to_string(&mut text).unwrap();
    let status = follower.0.wait().expect("process 1 ends");
    assert!(
        status.success(),
        "process 1 failed (its log is above): {text}"
    );
    text
}

/// Timely's cluster mode: process 1 embeds (the real model) and prepares
/// every signal, process 0 reads, dedupes, scores and writes. The outputs
/// are those of one process, file for file, for `replay` and for `run`.
#[test]
fn two_processes_give_what_one_gives() {
    let dir = tempfile::tempdir().unwrap();
    let sample = "config/sample/signals.jsonl";
    let out = |name: &str| dir.path().join(name).to_string_lossy().into_owned();

    ok(ideaflow().args(["replay", "-i", sample, "-o", &out("alone")]));
    let hosts = two_hosts(dir.path());
    let replay = ["replay", "-i", sample, "-o", &out("cluster")];
    let second = follower(&replay, &hosts, ideaflow());
    ok(ideaflow()
        .args(replay)
        .args(["--processes", "2", "--process", "0", "--hostfile"])
        .arg(&hosts));
    let said = finished(second);
    assert!(said.contains("process 1 of 2 done"), "{said}");
    let (alone, cluster) = (
        out_files(&dir.path().join("alone")),
        out_files(&dir.path().join("cluster")),
    );
    assert!(
        alone.contains_key("ideas.jsonl") && alone.len() > 5,
        "{:?}",
        alone.keys()
    );
    assert_eq!(
        alone.keys().collect::<Vec<_>>(),
        cluster.keys().collect::<Vec<_>>()
    );
    for (name, bytes) in &alone {
        assert!(
            cluster[name] == *bytes,
            "{name} differs between one process and two"
        );
    }

    // `run`: the embedded signals it writes, and its dead letters.
    let run = |name: &str| {
        vec![
            "--input".to_owned(),
            sample.to_owned(),
            "--out".to_owned(),
            out(&format!("{name}.jsonl")),
            "--dead-letter".to_owned(),
            out(&format!("{name}.dead.jsonl")),
        ]
    };
    ok(ideaflow_run().args(run("run_alone")));
    let hosts = two_hosts(dir.path());
    let args = run("run_cluster");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let second = follower(&args, &hosts, ideaflow_run());
    ok(ideaflow_run()
        .args(&args)
        .args(["--processes", "2", "--process", "0", "--hostfile"])
        .arg(&hosts));
    finished(second);
    for (a, b) in [
        ("run_alone.jsonl", "run_cluster.jsonl"),
        ("run_alone.dead.jsonl", "run_cluster.dead.jsonl"),
    ] {
        let (a, b) = (
            std::fs::read(dir.path().join(a)).unwrap(),
            std::fs::read(dir.path().join(b)).unwrap(),
        );
        assert!(
            !a.is_empty() && a == b,
            "run's outputs differ between one process and two"
        );
    }
}

#[test]
fn a_cluster_without_a_hostfile_is_refused_clearly() {
    let out = ideaflow()
        .args([
            "replay",
            "-i",
            "config/sample/signals.jsonl",
            "-o",
            "/tmp/never",
            "-n",
            "2",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs --hostfile"), "{err}");
}

/// `--input -` is a live stream: epochs commit while standard input is still
/// open, and the result is that of the same lines read from a file.
#[test]
fn standard_input_is_processed_as_it_arrives() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("s.jsonl");
    generate_stream(&input, 300, 9, 1, false);
    let from_file = run_to(dir.path(), "file", &[&input], &[]);

    let out = dir.path().join("live.jsonl");
    let mut live = ideaflow_run();
    live.arg("--input")
        .arg("-")
        .arg("--out")
        .arg(&out)
        .arg("--dead-letter")
        .arg(dir.path().join("live.dead.jsonl"))
        .stdin(std::process::Stdio::piped());
    let mut child = Server(live.spawn().expect("ideaflow run starts"));
    let mut stdin = child.0.stdin.take().expect("stdin piped");
    let text = std::fs::read_to_string(&input).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let (first, rest) = lines.split_at(lines.len() * 2 / 3);
    stdin
        .write_all((first.join("\n") + "\n").as_bytes())
        .unwrap();
    stdin.flush().unwrap();
    // Two thirds of a day in, the first hours' epochs are behind the
    // watermark: they reach the output with the stream still open.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while std::fs::metadata(&out).map_or(0, |m| m.len()) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no epoch committed while standard input stayed open"
        );
        assert!(child.0.try_wait().unwrap().is_none(), "run ended early");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    stdin
        .write_all((rest.join("\n") + "\n").as_bytes())
        .unwrap();
    drop(stdin);
    let status = child.0.wait().unwrap();
    assert!(status.success());
    assert_eq!(std::fs::read(&out).unwrap(), from_file);
}

/// `lines` with some repeated: every 5th line again right after it, every
/// 7th a few lines later (still within the allowed lateness), every 11th twice.
fn with_repeats(lines: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut later: Vec<(usize, String)> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        out.push((*line).to_owned());
        if i % 5 == 0 {
            out.push((*line).to_owned());
        }
        if i % 11 == 0 {
            out.push((*line).to_owned());
            out.push((*line).to_owned());
        }
        if i % 7 == 0 {
            later.push((i + 4, (*line).to_owned()));
        }
        while later.first().is_some_and(|(due, _)| *due <= i) {
            out.push(later.remove(0).1);
        }
    }
    out.extend(later.into_iter().map(|(_, l)| l));
    out
}

#[test]
fn repeated_records_change_nothing_at_one_and_two_workers() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("s.jsonl");
    ok(ideaflow()
        .args(["gen", "--signals", "900", "--seed", "4711", "--days", "2"])
        .args([
            "--feedback",
            "--corrections",
            "--synthetic-embeddings",
            "--out",
        ])
        .arg(&input));
    let text = std::fs::read_to_string(&input).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let repeated = dir.path().join("repeated.jsonl");
    std::fs::write(&repeated, with_repeats(&lines).join("\n") + "\n").unwrap();
    let once = dir.path().join("once");
    replay(&input, &once, &["-w", "1"]);
    let expected = out_files(&once);
    assert!(read_view(&once, "ideas.jsonl").len() > 100);
    for workers in ["1", "2"] {
        let again = dir.path().join(format!("again-{workers}"));
        replay(&repeated, &again, &["-w", workers]);
        let got = out_files(&again);
        for (name, bytes) in &expected {
            assert!(
                got.get(name) == Some(bytes),
                "{name} differs with repeated records at -w {workers}"
            );
        }
    }
}

#[test]
fn a_repoll_replaces_a_signals_engagement() {
    let dir = tempfile::tempdir().unwrap();
    let embedding: Vec<f32> = (0..384).map(|i| if i == 0 { 1.0 } else { 0.0 }).collect();
    let signal = |captured: &str, views: u64| {
        serde_json::json!({
            "id": "p1", "source": "reddit", "captured_at": captured,
            "content": "A cat wearing a tiny hat", "embedding": embedding,
            "engagement": {"views": views}
        })
        .to_string()
    };
    let input = dir.path().join("polls.jsonl");
    std::fs::write(
        &input,
        [
            signal("2024-10-01T00:00:00Z", 100),
            signal("2024-10-01T00:30:00Z", 250),
            // A redelivery of the first poll, and an older poll arriving late.
            signal("2024-10-01T00:00:00Z", 100),
            signal("2024-10-01T00:10:00Z", 900),
        ]
        .join("\n")
            + "\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    replay(&input, &out, &[]);
    let ideas = read_view(&out, "ideas.jsonl");
    assert_eq!(ideas.len(), 1);
    assert_eq!(ideas[0]["signal_count"], 1, "{:?}", ideas[0]);
    assert_eq!(ideas[0]["engagement"]["views"], 250, "{:?}", ideas[0]);
    let signals = read_view(&out, "signals.jsonl");
    assert_eq!(signals.len(), 1);
    assert_eq!(signals[0]["engagement"]["views"], 250);
}

/// The reference mode (`pipeline.tick_batch = 1`: every tick evaluated, and
/// every score row emitted, when it happens) and the default (a replay's
/// epochs in batches whose ticks are evaluated at the batch's end, as no
/// top lists are kept without sinks) give the same `--out`, byte for byte,
/// at 1 and 2 workers, on a stream with feedback: weight learning reads
/// ideas' factors between ticks, and its new weights re-score every idea.
#[test]
fn deferred_ticks_give_what_ticks_evaluated_as_they_happen_give() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    ok(ideaflow()
        .args(["gen", "--signals", "8000", "--seed", "17", "--days", "5"])
        .args(["--feedback", "--synthetic-embeddings", "--out"])
        .arg(&input));
    let reference_config = dir.path().join("reference.toml");
    std::fs::write(
        &reference_config,
        format!(
            "extends = {:?}\n[pipeline]\ntick_batch = 1\n",
            repo_root().join("config/ideaflow.toml")
        ),
    )
    .unwrap();
    let reference = dir.path().join("reference");
    replay(
        &input,
        &reference,
        &["--config", &reference_config.to_string_lossy()],
    );
    let weights = read_view(&reference, "weights_history.jsonl");
    assert!(weights.len() > 1, "feedback moved the weights: {weights:?}");
    let expected = out_files(&reference);
    for workers in ["1", "2"] {
        let out = dir.path().join(format!("batched-{workers}"));
        replay(&input, &out, &["-w", workers]);
        for (name, bytes) in out_files(&out) {
            assert!(
                expected.get(&name) == Some(&bytes),
                "{name} differs at {workers} worker(s)"
            );
        }
    }
}
