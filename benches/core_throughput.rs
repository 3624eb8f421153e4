//! The dataflow core's throughput: replay → dedupe → classify → centroids →
//! score → a null sink, with embeddings precomputed (synthetic, base64), at 1
//! and 2 workers and at 2 processes × 1 worker on loopback (timely's cluster
//! mode); signals/s, CPU seconds, peak RSS and the changes handed to the sink
//! of each run (each in its own processes). The baseline, measured in the same
//! run, is reading and validating the same file with no dataflow at all: the
//! ceiling the source sets. Rounds alternate the layouts.
//!
//!     cargo bench --bench core_throughput                        # 1M signals, 14 and 30 days, 2 rounds
//!     cargo bench --bench core_throughput -- --signals 100000 --days 1 --rounds 1 --layouts 1w,2w
//!     cargo bench --bench core_throughput -- --days 14 --layouts 1w,2w --tick-batch 1,24
//!
//! `--tick-batch` runs every layout with each `pipeline.tick_batch` given
//! (1: the reference mode, every epoch emits its own score rows), in turn.
//!
//! The default spans are the generator's (14 days) and 30 days: with the
//! 7-day window about half the ideas are live at a time on the first. A 1-day
//! stream keeps every idea (and every near-duplicate's vector) live to the
//! end, so its memory grows with the whole stream instead (README,
//! Performance). In the 2-process layout the CPU time and RSS are the
//! leader's (process 0, which owns the idea state) plus the follower's.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use chrono::{Duration, TimeZone, Utc};
use ideaflow::cluster::Cluster;
use ideaflow::core_setup::CoreSetup;
use ideaflow::dataflow::{run_dataflow, Lead};
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
/// model; the changes its null sink was handed). With `cluster`, this is one
/// of its processes; a follower prints `0 seconds rss cpu-seconds 0`.
fn child(input: &Path, workers: usize, cluster: Option<Cluster>) -> Result<()> {
    let mut config = config("config/ideaflow.toml")?;
    config.pipeline.workers = workers;
    if let Ok(n) = std::env::var("IDEAFLOW_BENCH_TICK_BATCH") {
        config.pipeline.tick_batch = n.parse()?;
    }
    let (model, mut embedder) = ModelSource::open(&config.model)?;
    let core = Arc::new(CoreSetup::build(&config, &mut embedder)?);
    drop(embedder);
    let changes = Arc::new(AtomicU64::new(0));
    let lead = match cluster.as_ref().is_none_or(Cluster::leads) {
        true => Some(Lead {
            source: ideaflow::dataflow::Inputs::files(
                ReplaySource::new(vec![input.to_owned()], Duration::hours(1), Speed::Max)?,
                Duration::hours(1),
            ),
            dead: DeadLetterSink::open(Path::new("/dev/null"), false)?,
            consumer: Box::new(NullSink(changes.clone())),
            signals_out: None,
            continuity: Default::default(),
        }),
        false => None,
    };
    let started = Instant::now();
    let cpu_before = cpu_secs();
    let summary = run_dataflow(&config, cluster.as_ref(), lead, model, core, false)?;
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu_before;
    println!(
        "{} {secs} {} {cpu} {}",
        summary.map_or(0, |s| s.signals_out),
        peak_rss_mib(),
        changes.load(Ordering::Relaxed)
    );
    Ok(())
}

/// A layout of the run: workers per process and processes, and the
/// `pipeline.tick_batch` it runs with (`None`: the config's).
#[derive(Clone, Copy)]
struct Layout {
    workers: usize,
    processes: usize,
    tick_batch: Option<usize>,
}

impl Layout {
    fn parse(s: &str) -> Result<Layout> {
        let (n, unit) = s.split_at(s.len().saturating_sub(1));
        let n: usize = n.parse()?;
        match unit {
            "w" => Ok(Layout {
                workers: n,
                processes: 1,
                tick_batch: None,
            }),
            "p" => Ok(Layout {
                workers: 1,
                processes: n,
                tick_batch: None,
            }),
            _ => anyhow::bail!("layout {s:?}: use Nw (N workers) or Np (N processes x 1 worker)"),
        }
    }

    fn name(self) -> String {
        let layout = match self.processes {
            1 => format!("{} worker(s)", self.workers),
            p => format!("{p} processes x {}", self.workers),
        };
        match self.tick_batch {
            Some(n) => format!("{layout}, tick_batch {n}"),
            None => layout,
        }
    }
}

/// Runs `layout` on `input` in child processes; the sums of their figures.
fn measure(input: &Path, layout: Layout, port: u16) -> Result<[f64; 5]> {
    let hostfile = std::env::temp_dir().join(format!("ideaflow-bench-hosts-{port}"));
    if layout.processes > 1 {
        let hosts: String = (0..layout.processes)
            .map(|i| format!("127.0.0.1:{}\n", port + i as u16))
            .collect();
        std::fs::write(&hostfile, hosts)?;
    }
    let children: Vec<_> = (0..layout.processes)
        .map(|process| {
            let mut cmd = Command::new(std::env::current_exe()?);
            if let Some(n) = layout.tick_batch {
                cmd.env("IDEAFLOW_BENCH_TICK_BATCH", n.to_string());
            }
            cmd.env(
                "IDEAFLOW_BENCH_CHILD",
                format!(
                    "{}:{process}:{}:{}:{}",
                    layout.workers,
                    layout.processes,
                    hostfile.display(),
                    input.display()
                ),
            )
            .env("IDEAFLOW_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(anyhow::Error::from)
        })
        .collect::<Result<_>>()?;
    let mut sum = [0.0; 5];
    for child in children {
        let out = child.wait_with_output()?;
        anyhow::ensure!(
            out.status.success(),
            "bench run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        // The figures are the last line (timely prints its connection
        // progress to standard output before).
        let f: Vec<f64> = text
            .lines()
            .last()
            .unwrap_or_default()
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0.0))
            .collect();
        anyhow::ensure!(f.len() >= 5, "bench run printed {text:?}");
        sum[0] += f[0];
        sum[1] = sum[1].max(f[1]);
        sum[2] += f[2];
        sum[3] += f[3];
        sum[4] += f[4];
    }
    Ok(sum)
}

/// The input file of `signals` over `days`, generated once.
fn input_file(signals: u64, days: i64) -> Result<std::path::PathBuf> {
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
    Ok(input)
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
        let parts: Vec<&str> = spec.splitn(5, ':').collect();
        anyhow::ensure!(parts.len() == 5, "workers:process:processes:hostfile:path");
        let (workers, process, processes) =
            (parts[0].parse()?, parts[1].parse()?, parts[2].parse()?);
        let cluster = match processes {
            1 => None,
            n => Some(Cluster {
                process,
                addresses: std::fs::read_to_string(parts[3])?
                    .lines()
                    .take(n)
                    .map(str::to_owned)
                    .collect(),
            }),
        };
        ideaflow::logging::init();
        return child(Path::new(parts[4]), workers, cluster);
    }
    let signals: u64 = arg("--signals", "1000000").parse()?;
    let default_days = format!("{},30", GenOptions::default().span.num_days());
    let days: Vec<i64> = arg("--days", &default_days)
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let layouts: Vec<Layout> = arg("--layouts", "1w,2w,2p")
        .split(',')
        .map(Layout::parse)
        .collect::<Result<_>>()?;
    let tick_batches: Vec<Option<usize>> = match arg("--tick-batch", "") {
        list if list.is_empty() => vec![None],
        list => list
            .split(',')
            .map(|n| n.parse().map(Some))
            .collect::<Result<_, _>>()?,
    };
    let layouts: Vec<Layout> = layouts
        .iter()
        .flat_map(|l| {
            tick_batches
                .iter()
                .map(|&tick_batch| Layout { tick_batch, ..*l })
        })
        .collect();
    let rounds: usize = arg("--rounds", "2").parse()?;
    let mut port = 47_000 + (std::process::id() % 1000) as u16 * 8;
    for days in days {
        let input = input_file(signals, days)?;
        println!("core throughput: {signals} signals over {days} day(s), embeddings precomputed");
        let mut best = vec![0f64; layouts.len()];
        for round in 1..=rounds {
            let (n, secs) = baseline(&input)?;
            let base_rate = n as f64 / secs;
            println!("round {round}: baseline (read + validate only, no dataflow): {base_rate:>10.0} signals/s");
            for (i, layout) in layouts.iter().enumerate() {
                port += 4;
                let f = measure(&input, *layout, port)?;
                let rate = f[0] / f[1];
                best[i] = best[i].max(rate);
                println!(
                    "  core, {:<22} {rate:>10.0} signals/s ({:.2}x baseline), peak RSS {:.0} MiB, \
                     CPU {:.0} s ({:.2} cores busy), {:.0} changes ({:.0} per signal)",
                    layout.name() + ":",
                    rate / base_rate,
                    f[2],
                    f[3],
                    f[3] / f[1],
                    f[4],
                    f[4] / f[0]
                );
            }
        }
        let rate_of = |w: usize, p: usize| {
            layouts
                .iter()
                .position(|l| l.workers == w && l.processes == p && l.tick_batch == tick_batches[0])
                .map(|i| best[i])
        };
        if let (Some(one), Some(two)) = (rate_of(1, 1), rate_of(2, 1)) {
            println!("best of {rounds}: 2 workers / 1 worker = {:.2}x", two / one);
        }
    }
    Ok(())
}
