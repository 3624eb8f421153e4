//! Live sources, measured: how fast `run`'s path consumes a Kafka topic and
//! a Redis stream against the same records from a file (null sinks, same
//! run, alternating), and the latency from a record's append to the bus to
//! its epoch's commit in Postgres and Redis at steady paced rates whose event
//! times are the wall clock, with the live profile (config/live.toml).
//!
//!     source state/env
//!     cargo bench --bench live_sources                       # 100,000 signals, then latency
//!     cargo bench --bench live_sources -- --signals 20000 --latency-secs 0
//!
//! Needs Redis, Postgres and the Kafka broker that scripts/setup.sh starts.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use chrono::{TimeZone, Utc};
use ideaflow::core_setup::CoreSetup;
use ideaflow::dataflow::{run_views_pipeline, Inputs, LiveSettings};
use ideaflow::model_files::ModelSource;
use ideaflow::source_status::SourceStatus;
use ideaflow_sinks::DeadLetterSink;
use ideaflow_sources::bus::in_flight::InFlight;
use ideaflow_sources::generator::{GenOptions, Generator};
use ideaflow_sources::input::InputSpec;
use ideaflow_sources::replay::{ReplaySource, Speed};

#[path = "common/mod.rs"]
mod common;
use common::{arg, config, repo, NullSink};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long a bus must read empty before the run counts it idle and ends;
/// taken off the measured time (it is end detection, not work).
const IDLE: Duration = Duration::from_secs(1);

fn env(name: &str) -> Result<String> {
    std::env::var(name).with_context(|| {
        format!("{name} is unset: `source state/env` first (scripts/setup.sh writes it)")
    })
}

/// One measured consumption in this (child) process: prints `signals seconds`.
fn child(input: &str) -> Result<()> {
    let config = config("config/ideaflow.toml")?;
    let (model, mut embedder) = ModelSource::open(&config.model)?;
    let core = Arc::new(CoreSetup::build(&config, &mut embedder)?);
    drop(embedder);
    let lateness = chrono::Duration::hours(1);
    let spec = InputSpec::parse(input)?;
    let inputs = match &spec {
        InputSpec::File(p) => Inputs::files(
            ReplaySource::new(vec![p.clone()], lateness, Speed::Max)?,
            lateness,
        ),
        bus => Inputs {
            files: None,
            buses: vec![ideaflow_sources::bus::open(bus).expect("a bus")?],
            live: LiveSettings {
                idle_after: IDLE,
                exit_when_idle: true,
                shutdown_timeout: Duration::from_secs(30),
                stop: Arc::default(),
                allowed_lateness: lateness,
                max_future: None,
                status: SourceStatus::new(InFlight::default()),
            },
        },
    };
    let dead = DeadLetterSink::open(Path::new("/dev/null"), false)?;
    let changes = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let summary = run_views_pipeline(
        &config,
        inputs,
        model,
        dead,
        core,
        Box::new(NullSink(changes)),
        None,
    )?;
    let mut secs = started.elapsed().as_secs_f64();
    if spec.is_bus() {
        secs -= IDLE.as_secs_f64();
    }
    println!("{} {secs}", summary.signals_out);
    Ok(())
}

fn measure(input: &str) -> Result<(f64, f64)> {
    let out = Command::new(std::env::current_exe()?)
        .env("IDEAFLOW_BENCH_CHILD", input)
        .env("IDEAFLOW_LOG", "warn")
        .output()?;
    ensure!(
        out.status.success(),
        "bench run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let f: Vec<f64> = text
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    ensure!(f.len() >= 2, "bench run printed {text:?}");
    Ok((f[0], f[1]))
}

fn produce(to: &str, lines: &[Vec<u8>]) -> Result<f64> {
    let spec = InputSpec::parse(to)?;
    let mut bus = ideaflow_sources::bus::open_append(&spec).expect("a bus")?;
    let started = Instant::now();
    for chunk in lines.chunks(1000) {
        bus.append(chunk)?;
    }
    Ok(lines.len() as f64 / started.elapsed().as_secs_f64())
}

fn throughput(signals: u64) -> Result<()> {
    let dir = repo().join("target/bench-data");
    std::fs::create_dir_all(&dir)?;
    let file = dir.join(format!("live-{signals}.jsonl"));
    let generator = Generator::new(GenOptions {
        signals,
        seed: 7,
        synthetic_embeddings: true,
        base64_embeddings: true,
        start: Utc.with_ymd_and_hms(2024, 10, 1, 0, 0, 0).unwrap(),
        span: chrono::Duration::days(2),
        ..GenOptions::default()
    });
    let lines: Vec<Vec<u8>> = generator.map(String::into_bytes).collect();
    let mut text = Vec::new();
    for l in &lines {
        text.extend_from_slice(l);
        text.push(b'\n');
    }
    std::fs::write(&file, text)?;
    let tag = format!("{}_{}", std::process::id(), signals);
    let kafka = format!("kafka://{}/bench_{tag}", env("IDEAFLOW_KAFKA_BOOTSTRAP")?);
    let redis_url = env("IDEAFLOW_REDIS_URL")?;
    let redis = format!(
        "{}0?stream=bench_{tag}",
        redis_url.trim_end_matches('/').to_owned() + "/"
    );
    let kafka_in = produce(&kafka, &lines)?;
    let redis_in = produce(&redis, &lines)?;
    println!(
        "live sources: {} records ({signals} signals, pre-embedded, base64), null sinks, 1 worker",
        lines.len()
    );
    println!("produced: Kafka {kafka_in:.0}/s, Redis stream {redis_in:.0}/s");
    let mut rates: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for round in 0..2 {
        for (name, input) in [
            ("file", file.to_string_lossy().into_owned()),
            ("kafka", kafka.clone()),
            ("redis", redis.clone()),
        ] {
            let (n, secs) = measure(&input)?;
            let rate = n / secs;
            println!(
                "  round {} {name:<6} {n:>8.0} signals in {secs:>6.2}s = {rate:>8.0} signals/s",
                round + 1
            );
            rates.entry(name).or_default().push(rate);
        }
    }
    let best = |k: &str| rates[k].iter().cloned().fold(0.0, f64::max);
    let file_rate = best("file");
    for bus in ["kafka", "redis"] {
        println!(
            "{bus}: {:.0} signals/s = {:.2}x the file's {file_rate:.0}/s (best of 2; goal >= 0.8x)",
            best(bus),
            best(bus) / file_rate
        );
    }
    Ok(())
}

/// Generated signals (with their duplicates and near-duplicates, as a real
/// stream has them) to stamp and send in turn.
fn templates(n: u64) -> Result<Vec<serde_json::Value>> {
    Generator::new(GenOptions {
        signals: n,
        seed: 11,
        synthetic_embeddings: true,
        base64_embeddings: true,
        ..GenOptions::default()
    })
    .filter_map(|line| serde_json::from_str::<serde_json::Value>(&line).ok())
    .filter(|v| v.get("content").is_some())
    .map(Ok)
    .collect()
}

/// The `i`th template stamped now, as a line: pre-embedded, or raw text
/// (without its vector: the model embeds it).
fn stamped(templates: &[serde_json::Value], i: u64, raw: bool) -> Vec<u8> {
    let mut v = templates[i as usize % templates.len()].clone();
    let now = Utc::now().to_rfc3339();
    v["id"] = serde_json::json!(format!("lat-{}-{i}", std::process::id()));
    v["captured_at"] = serde_json::json!(now);
    v["published_at"] = serde_json::json!(now);
    if raw {
        v.as_object_mut().expect("object").remove("embedding");
    }
    v.to_string().into_bytes()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Appends at `rate`/s for `secs` to a fresh Redis stream read by `ideaflow
/// run --config config/live.toml`; the latency of each record is from its
/// append to the announcement (`{ns}:epochs`, sent once Postgres and Redis
/// committed) of the first epoch that holds it.
fn latency(label: &str, rate: f64, secs: u64, raw: bool) -> Result<()> {
    let live = config("config/live.toml")?;
    let (lateness, epoch) = (
        live.pipeline.allowed_lateness_secs,
        live.pipeline.epoch_secs,
    );
    let tag = format!(
        "bench_lat_{}_{}",
        std::process::id(),
        if raw { "raw" } else { "vec" }
    );
    let redis_url = env("IDEAFLOW_REDIS_URL")?;
    let stream = format!("{}/0?stream={tag}", redis_url.trim_end_matches('/'));
    let client = redis::Client::open(redis_url.as_str())?;
    // Announcements: (epoch end, when).
    let announced: Arc<Mutex<Vec<(i64, Instant)>>> = Arc::default();
    {
        let announced = announced.clone();
        let mut conn = client.get_connection()?;
        let channel = format!("{tag}:epochs");
        std::thread::spawn(move || {
            let mut pubsub = conn.as_pubsub();
            if pubsub.subscribe(&channel).is_err() {
                return;
            }
            while let Ok(msg) = pubsub.get_message() {
                let payload: String = msg.get_payload().unwrap_or_default();
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&payload) {
                    if let Some(e) = v["epoch"].as_i64() {
                        announced
                            .lock()
                            .expect("not poisoned")
                            .push((e, Instant::now()));
                    }
                }
            }
        });
    }
    let mut run = Command::new(env!("CARGO_BIN_EXE_ideaflow"))
        .current_dir(repo())
        .args([
            "run",
            "--config",
            "config/live.toml",
            "--input",
            &stream,
            "--namespace",
            &tag,
            "--listen",
            "",
        ])
        .args(["--out", "/dev/null", "--dead-letter", "/dev/null"])
        .env("IDEAFLOW_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_secs(8)); // model and sinks up
    let templates = templates((rate * secs as f64) as u64 + 1)?;
    let mut bus =
        ideaflow_sources::bus::open_append(&InputSpec::parse(&stream)?).expect("a bus")?;
    let started = Instant::now();
    let mut appended: Vec<(i64, Instant)> = Vec::new();
    let mut i = 0u64;
    while started.elapsed() < Duration::from_secs(secs) {
        let due = (started.elapsed().as_secs_f64() * rate) as u64;
        let batch: Vec<Vec<u8>> = (i..due).map(|k| stamped(&templates, k, raw)).collect();
        if !batch.is_empty() {
            let at = Utc::now().timestamp();
            bus.append(&batch)?;
            let when = Instant::now();
            appended.extend(std::iter::repeat_n((at, when), batch.len()));
            i = due;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Until the last records' epochs commit: the lateness, an epoch, and slack.
    std::thread::sleep(Duration::from_secs(lateness + epoch + 15));
    let _ = Command::new("kill")
        .args(["-TERM", &run.id().to_string()])
        .status();
    let _ = run.wait();
    let announced = announced.lock().expect("not poisoned").clone();
    let mut lat: Vec<f64> = appended
        .iter()
        .filter_map(|(event, when)| {
            let end = event.div_euclid(epoch as i64) * epoch as i64 + epoch as i64;
            announced
                .iter()
                .find(|(e, _)| *e >= end)
                .map(|(_, at)| at.duration_since(*when).as_secs_f64())
        })
        .collect();
    lat.sort_by(|a, b| a.total_cmp(b));
    // The vectors the run left to index, and what is left behind.
    let unindexed = drop_namespace(&tag, &client)?;
    println!(
        "latency {label}: {unindexed} ideas' vectors were not indexed yet at the stop (the next start indexes them)"
    );
    println!(
        "latency {label}: {} of {} records committed; append -> commit p50 {:.1}s, p99 {:.1}s (goal p99 <= lateness {lateness}s + epoch {epoch}s + 2s = {}s)",
        lat.len(),
        appended.len(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lateness + epoch + 2
    );
    Ok(())
}

/// Drops the run's schema, stream and keys; returns how many of its ideas'
/// vectors were not indexed yet.
fn drop_namespace(tag: &str, client: &redis::Client) -> Result<i64> {
    let url = env("IDEAFLOW_POSTGRES_URL")?;
    let unindexed = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let pool = ideaflow_sinks::postgres::connect(&url, tag).await?;
            let (n,): (i64,) = sqlx::query_as(
                "SELECT count(*) FROM idea_rows r \
                 WHERE NOT EXISTS (SELECT 1 FROM idea_vectors v WHERE v.idea_id = r.id)",
            )
            .fetch_one(&pool)
            .await?;
            sqlx::query(&format!("DROP SCHEMA {tag} CASCADE"))
                .execute(&pool)
                .await?;
            anyhow::Ok(n)
        })?;
    let mut conn = client.get_connection()?;
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{tag}*")).query(&mut conn)?;
    if !keys.is_empty() {
        redis::cmd("DEL").arg(keys).query::<()>(&mut conn)?;
    }
    Ok(unindexed)
}

fn embedder_rate() -> Result<f64> {
    let config = config("config/ideaflow.toml")?;
    let (_, mut embedder) = ModelSource::open(&config.model)?;
    let texts: Vec<String> = (0..256)
        .map(|i| format!("A cat wearing a tiny hat number {i} goes viral on the internet"))
        .collect();
    embedder.embed(&texts[..32])?;
    let started = Instant::now();
    embedder.embed(&texts)?;
    Ok(texts.len() as f64 / started.elapsed().as_secs_f64())
}

fn main() -> Result<()> {
    if let Ok(input) = std::env::var("IDEAFLOW_BENCH_CHILD") {
        ideaflow::logging::init();
        return child(&input);
    }
    let signals: u64 = arg("--signals", "100000").parse()?;
    let latency_secs: u64 = arg("--latency-secs", "60").parse()?;
    if signals > 0 {
        throughput(signals)?;
    }
    if latency_secs > 0 {
        latency("pre-embedded 1000/s", 1000.0, latency_secs, false)?;
        let half = embedder_rate()? / 2.0;
        latency(
            &format!("raw text {half:.0}/s (half the embedder's rate)"),
            half,
            latency_secs,
            true,
        )?;
    }
    Ok(())
}
