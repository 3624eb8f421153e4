//! The dataflow core's throughput: replay → dedupe → classify → centroids →
//! score → a null sink, with embeddings precomputed (synthetic, base64), at 1
//! and 2 workers; signals/s and peak RSS of each run (each in its own process).
//! The baseline, measured in the same run, is reading and validating the same
//! file with no dataflow at all: the ceiling the source sets.
//!
//!     cargo bench --bench core_throughput                                   # 1M signals over 14 days
//!     cargo bench --bench core_throughput -- --signals 100000 --days 1
//!
//! The default span is the generator's (`ideaflow gen`, 14 days): with the
//! 7-day window about half the ideas are live at a time. A 1-day stream keeps
//! every idea (and every near-duplicate's vector) live to the end, so its
//! memory grows with the whole stream instead (README, Performance).

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use chrono::{Duration, TimeZone, Utc};
use ideaflow::core_setup::CoreSetup;
use ideaflow::dataflow::run_views_pipeline;
use ideaflow::model_files::ModelSource;
use ideaflow_sinks::DeadLetterSink;
use ideaflow_sources::generator::{GenOptions, Generator};
use ideaflow_sources::replay::{ReplaySource, Replayed, Speed};

#[path = "common/mod.rs"]
mod common;
use common::{arg, config, repo, NullSink};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// CPU time this process has used so far (user + system), in seconds: with
/// the wall time, how busy the run kept the cores. `/proc` counts it in
/// USER_HZ ticks, 100 a second on Linux.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    // utime and stime are the line's fields 14 and 15: 11 and 12 (from 0) after the name.
    let ticks = |i: usize| fields.get(i).and_then(|t| t.parse::<f64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(user), Some(system)) => (user + system) / 100.0,
        _ => 0.0,
    }
}

/// One measured run, in this (child) process: prints `signals seconds rss
/// cpu-seconds changes` (the CPU time of the run alone, not of loading the
/// model; the changes its null sink was handed).
fn child(input: &Path, workers: usize) -> Result<()> {
    let mut config = config("config/ideaflow.toml")?;
    config.pipeline.workers = workers;
    let (model, mut embedder) = ModelSource::open(&config.model)?;
    let core = Arc::new(CoreSetup::build(&config, &mut embedder)?);
    drop(embedder);
    let source = ReplaySource::new(vec![input.to_owned()], Duration::hours(1), Speed::Max)?;
    let dead = DeadLetterSink::open(Path::new("/dev/null"), false)?;
    let changes = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let cpu_before = cpu_secs();
    let summary = run_views_pipeline(
        &config,
        ideaflow::dataflow::Inputs::files(source, Duration::hours(1)),
        model,
        dead,
        core,
        Box::new(NullSink(changes.clone())),
        None,
    )?;
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu_before;
    println!(
        "{} {secs} {} {cpu} {}",
        summary.signals_out,
        peak_rss_mib(),
        changes.load(Ordering::Relaxed)
    );
    Ok(())
}

fn baseline(input: &Path) -> Result<(u64, f64)> {
    let mut source = ReplaySource::new(vec![input.to_owned()], Duration::hours(1), Speed::Max)?;
    let started = Instant::now();
    let mut n = 0;
    while let Some(item) = source.next_item()? {
        if let Replayed::Event(_) = item {
            n += 1;
        }
    }
    Ok((n, started.elapsed().as_secs_f64()))
}

fn main() -> Result<()> {
    if let Ok(spec) = std::env::var("IDEAFLOW_BENCH_CHILD") {
        let (workers, input) = spec.split_once(':').expect("workers:path");
        ideaflow::logging::init();
        return child(Path::new(input), workers.parse()?);
    }
    let signals: u64 = arg("--signals", "1000000").parse()?;
    let default_days = GenOptions::default().span.num_days().to_string();
    let days: i64 = arg("--days", &default_days).parse()?;
    let dir = repo().join("target/bench-data");
    std::fs::create_dir_all(&dir)?;
    let input = dir.join(format!("core-{signals}-{days}d.jsonl"));
    if !input.exists() {
        eprintln!(
            "generating {signals} signals over {days} day(s) -> {}",
            input.display()
        );
        let generator = Generator::new(GenOptions {
            signals,
            seed: 42,
            synthetic_embeddings: true,
            base64_embeddings: true,
            start: Utc.with_ymd_and_hms(2024, 10, 1, 0, 0, 0).unwrap(),
            span: Duration::days(days),
            ..GenOptions::default()
        });
        let tmp = input.with_extension("tmp");
        let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        for line in generator {
            use std::io::Write;
            writeln!(out, "{line}")?;
        }
        drop(out);
        std::fs::rename(&tmp, &input)?;
    }
    let (n, secs) = baseline(&input)?;
    let base_rate = n as f64 / secs;
    println!("core throughput: {signals} signals over {days} day(s), embeddings precomputed");
    println!("baseline (read + validate only, no dataflow): {base_rate:>10.0} signals/s");
    for workers in [1usize, 2] {
        let out = Command::new(std::env::current_exe()?)
            .env(
                "IDEAFLOW_BENCH_CHILD",
                format!("{workers}:{}", input.display()),
            )
            .env("IDEAFLOW_LOG", "warn")
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "bench run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let f: Vec<f64> = text
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0.0))
            .collect();
        anyhow::ensure!(f.len() >= 5, "bench run printed {text:?}");
        let rate = f[0] / f[1];
        println!(
            "core, {workers} worker(s): {rate:>10.0} signals/s ({:.2}x baseline), peak RSS {:.0} MiB, \
             CPU {:.0} s ({:.2} cores busy), {:.0} changes ({:.0} per signal)",
            rate / base_rate,
            f[2],
            f[3],
            f[3] / f[1],
            f[4],
            f[4] / f[0]
        );
    }
    Ok(())
}
