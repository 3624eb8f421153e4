//! Parsing and validating input lines, one thread: lines/s and MB/s of
//! `parse_line` (the common form read without a JSON tree) against the tree
//! walk it replaced (`parse_line_by_tree`, the reference that still judges
//! every other line), and against merely checking the bytes are UTF-8 (the
//! floor any parser pays), measured in the same run, rounds alternating.
//!
//!     cargo bench --bench parse_throughput                      # 200,000 lines
//!     cargo bench --bench parse_throughput -- --lines 50000 --rounds 3
//!     cargo bench --bench parse_throughput -- --profile 20   # only parse_line, for perf
//!
//! The lines are the core bench's: generated signals with their synthetic
//! vectors in base64 (~2.4 KB a line).

use std::hint::black_box;
use std::time::Instant;

use anyhow::{ensure, Result};
use chrono::{Duration, TimeZone, Utc};
use ideaflow_operators::validate::{parse_line, parse_line_by_tree};
use ideaflow_sources::generator::{GenOptions, Generator};

#[path = "common/mod.rs"]
mod common;
use common::arg;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Seconds one pass over `lines` takes, and how many were accepted.
fn pass(lines: &[String], f: impl Fn(&[u8]) -> bool) -> (f64, usize) {
    let started = Instant::now();
    let ok = lines.iter().filter(|l| f(black_box(l.as_bytes()))).count();
    (started.elapsed().as_secs_f64(), ok)
}

fn main() -> Result<()> {
    let n: u64 = arg("--lines", "200000").parse()?;
    let rounds: usize = arg("--rounds", "5").parse()?;
    let lines: Vec<String> = Generator::new(GenOptions {
        signals: n,
        seed: 42,
        synthetic_embeddings: true,
        base64_embeddings: true,
        start: Utc.with_ymd_and_hms(2024, 10, 1, 0, 0, 0).unwrap(),
        span: Duration::days(14),
        ..GenOptions::default()
    })
    .map(|l| l.to_string())
    .collect();
    // A loop of the fast path alone, for a profiler to sample.
    let profile: usize = arg("--profile", "0").parse()?;
    if profile > 0 {
        let started = Instant::now();
        for _ in 0..profile {
            pass(&lines, |l| parse_line(l).is_ok());
        }
        let rate = (profile * lines.len()) as f64 / started.elapsed().as_secs_f64();
        println!("parse_line: {rate:.0} lines/s");
        return Ok(());
    }
    let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
    println!(
        "parse throughput: {} lines, {:.0} bytes a line, one thread, best of {rounds} rounds",
        lines.len(),
        bytes as f64 / lines.len() as f64
    );
    let mut best = [f64::MAX; 3];
    for _ in 0..rounds {
        let (floor, all) = pass(&lines, |l| std::str::from_utf8(l).is_ok());
        let (tree, tree_ok) = pass(&lines, |l| parse_line_by_tree(l).is_ok());
        let (fast, fast_ok) = pass(&lines, |l| parse_line(l).is_ok());
        ensure!(
            tree_ok == all && fast_ok == all,
            "every generated line must be accepted: {tree_ok} / {fast_ok} of {all}"
        );
        for (b, t) in best.iter_mut().zip([floor, tree, fast]) {
            *b = b.min(t);
        }
    }
    let report = |name: &str, secs: f64| {
        println!(
            "{name:<34} {:>10.0} lines/s {:>7.0} MB/s  ({:.2}x the tree walk)",
            lines.len() as f64 / secs,
            bytes as f64 / secs / 1e6,
            best[1] / secs
        );
    };
    report("UTF-8 check only (floor)", best[0]);
    report("parse_line_by_tree (reference)", best[1]);
    report("parse_line", best[2]);
    Ok(())
}
