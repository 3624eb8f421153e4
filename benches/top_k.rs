//! What the top-K lists cost on a tick: every live idea's score row moved
//! in its category's ranked set (the reference, `TopK::apply_row_by_row`)
//! against `TopK::apply`, which rebuilds the touched sets when an epoch
//! changes a good part of them. Both run on the same epochs, alternating
//! which goes first, and must report the same moves.
//!
//!     cargo bench --bench top_k                       # 277,000 ideas, 8 ticks
//!     cargo bench --bench top_k -- --ideas 50000 --ticks 4 --k 10
//!
//! The ideas' scores drift from tick to tick as freshness decays (with a
//! little noise), as a tick's rows do; a quarter of a million live ideas is
//! the 1M 14-day stream's.

mod common;

use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Result};
use chrono::Utc;
use common::arg;
use ideaflow_operators::idea::IdeaId;
use ideaflow_operators::score::Factors;
use ideaflow_operators::top_k::TopK;
use ideaflow_operators::views::{Change, ScoreRow, ViewRow};

const CATEGORIES: [&str; 8] = [
    "animals",
    "food",
    "gaming",
    "holidays",
    "humor",
    "nature",
    "nostalgia",
    "sports",
];

/// A tick's score rows: idea `i`'s base score decayed to `tick`, plus noise.
fn tick_rows(
    ids: &[IdeaId],
    base: &[f64],
    tick: u32,
    noise: &mut impl FnMut() -> f64,
) -> Vec<Change> {
    let names: Vec<Arc<str>> = CATEGORIES.iter().map(|c| Arc::from(*c)).collect();
    let decay = (-f64::from(tick) / 24.0).exp();
    ids.iter()
        .zip(base)
        .enumerate()
        .map(|(i, (id, b))| {
            let s = b * decay + 0.01 * noise();
            Change::upsert(ViewRow::Score(ScoreRow {
                idea_id: *id,
                category: Some(names[i % names.len()].clone()),
                factors: Factors {
                    freshness: decay,
                    engagement: *b,
                    novelty: s,
                    community_fit: s,
                    seasonality: 0.0,
                },
                score: s,
                scored_at: Utc::now(),
            }))
        })
        .collect()
}

fn main() -> Result<()> {
    let ideas: usize = arg("--ideas", "277000").parse()?;
    let ticks: u32 = arg("--ticks", "8").parse()?;
    let k: usize = arg("--k", "10").parse()?;
    let mut x: u64 = 0x1dea_5eed;
    let mut noise = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 11) as f64 / (1u64 << 53) as f64
    };
    let ids: Vec<IdeaId> = (0..ideas)
        .map(|i| IdeaId::of_content_hash(&format!("{i:032x}")))
        .collect();
    let base: Vec<f64> = (0..ideas).map(|_| noise()).collect();
    println!(
        "top-K lists: {ideas} ideas in {} categories, K = {k}, {ticks} ticks",
        CATEGORIES.len()
    );
    let mut reference = TopK::new(k);
    let mut rebuilt = TopK::new(k);
    let (mut total_reference, mut total_rebuilt) = (0.0, 0.0);
    for tick in 0..ticks {
        let rows = tick_rows(&ids, &base, tick, &mut noise);
        let time = |top: &mut TopK, row_by_row: bool| {
            let started = Instant::now();
            let moves = if row_by_row {
                top.apply_row_by_row(&rows)
            } else {
                top.apply(&rows)
            };
            (started.elapsed().as_secs_f64(), moves)
        };
        let ((a, expected), (b, got)) = if tick % 2 == 0 {
            let r = time(&mut reference, true);
            (r, time(&mut rebuilt, false))
        } else {
            let b = time(&mut rebuilt, false);
            (time(&mut reference, true), b)
        };
        if got != expected {
            bail!("tick {tick}: the rebuilt lists moved differently from the reference");
        }
        // The first tick fills empty lists; later ones move them.
        if tick > 0 {
            total_reference += a;
            total_rebuilt += b;
        }
        println!(
            "tick {tick}: row by row {:.1} ms, apply {:.1} ms ({:.2}x), {} categories moved",
            a * 1e3,
            b * 1e3,
            a / b,
            got.len()
        );
    }
    if ticks > 1 {
        println!(
            "ticks 1..{ticks}: row by row {:.0} ms, apply {:.0} ms: {:.2}x",
            total_reference * 1e3,
            total_rebuilt * 1e3,
            total_reference / total_rebuilt
        );
    }
    Ok(())
}
