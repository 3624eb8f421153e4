//! Re-scoring ideas in place: each idea's factors evaluated at a watermark,
//! compared with its last score, and a score row emitted when it changed.
//!
//! A tick re-scores every live idea, and the state has one owner; so the
//! ideas are split into disjoint runs of slots, each re-scored (evaluated,
//! written back, its rows built) on its own thread. The runs' rows are
//! concatenated in slot order, so the changelog is the same for any thread
//! count.

use std::sync::Mutex;

use chrono::{DateTime, Utc};

use super::{KnownCohesion, LiveIdea};
use crate::centroid::CentroidWindow;
use crate::engagement_stats::EngagementStats;
use crate::score::{self, Factors, ScoringParams, Weights};
use crate::topic_counts::TopicCounts;
use crate::views::{Change, ScoreRow, ViewKey, ViewRow};

/// Everything an idea's score reads besides the idea, borrowed apart from
/// the ideas so that they can be written while it is read.
pub(super) struct ScoringInputs<'a> {
    pub scoring: &'a ScoringParams,
    pub weights: &'a Weights,
    pub categories: &'a CentroidWindow,
    pub communities: &'a CentroidWindow,
    pub topics: &'a TopicCounts,
    /// Refreshed for the sources of the ideas re-scored (`cached` reads them).
    pub rates: &'a EngagementStats,
    /// Ideas first seen after this are in the centroids' window (`None`: no
    /// tick yet, every idea is).
    pub window_start: Option<i64>,
    pub watermark: i64,
    pub scored_at: DateTime<Utc>,
}

/// Whether an idea first seen at `first_seen` is in the centroids' window
/// starting after `window_start` (`None`: no tick yet, every idea is).
pub(super) fn in_window(window_start: Option<i64>, first_seen: i64) -> bool {
    window_start.is_none_or(|s| first_seen > s)
}

/// An idea's score as evaluated, before it is compared with the last one.
struct Evaluation {
    factors: Factors,
    score: f64,
    /// The category top list's generation the cohesion was computed against.
    generation: u64,
    cohesion: f64,
}

impl ScoringInputs<'_> {
    fn evaluate(&self, idea: &LiveIdea) -> Evaluation {
        let row = &idea.row;
        let p = self.scoring;
        let hours = (self.watermark - idea.peak) as f64 / 3600.0;
        let freshness = score::freshness(hours, p);
        let stats = self.rates.cached(row.source);
        let engagement = score::engagement(row.engagement_rate, stats.median, stats.mad, p);
        let in_window = in_window(self.window_start, idea.first_seen);
        let (to_category, to_community) = crate::centroid::cosines_with_norm(
            &row.embedding,
            idea.norm2,
            idea.category_centroid
                .and_then(|c| self.categories.sum(c))
                .map(|sum| (sum, in_window)),
            idea.community_centroid
                .and_then(|c| self.communities.sum(c))
                .map(|sum| (sum, false)),
        );
        let novelty = score::novelty(to_category);
        let (generation, top) = row
            .category
            .as_deref()
            .map_or((0, &[][..]), |c| self.topics.top_set_with_generation(c));
        let cohesion = idea
            .cohesion
            .at(generation)
            .unwrap_or_else(|| score::hashtag_cohesion_sorted(&row.topics, top));
        let factors = Factors {
            freshness,
            engagement,
            novelty,
            community_fit: score::community_fit(to_community, cohesion),
            seasonality: idea.seasonality,
        };
        Evaluation {
            score: factors.score(self.weights),
            factors,
            generation,
            cohesion,
        }
    }

    /// Re-scores the ideas in `slots` (ascending) of `ideas`, whose first
    /// element is slot `base`; appends the rows of the scores that changed.
    fn rescore_run(
        &self,
        ideas: &mut [Option<Box<LiveIdea>>],
        base: usize,
        slots: &[u32],
        out: &mut Vec<Change>,
    ) {
        for (i, &slot) in slots.iter().enumerate() {
            prefetch_ahead(ideas, base, slots, i);
            let Some(idea) = ideas[slot as usize - base].as_deref_mut() else {
                continue;
            };
            let e = self.evaluate(idea);
            idea.cohesion = KnownCohesion {
                generation: e.generation,
                value: e.cohesion,
            };
            if idea.score == Some((e.factors, e.score)) {
                continue;
            }
            idea.score = Some((e.factors, e.score));
            out.push(Change {
                key: ViewKey::Score(idea.row.id),
                row: Some(ViewRow::Score(ScoreRow {
                    idea_id: idea.row.id,
                    category: idea.row.category.clone(),
                    score: e.score,
                    factors: e.factors,
                    scored_at: self.scored_at,
                })),
            });
        }
    }

    /// [`ScoringInputs::rescore_run`] of `slots` (ascending, distinct), split
    /// over up to `threads` threads, each re-scoring its own run of the ideas.
    pub fn rescore(
        &self,
        ideas: &mut [Option<Box<LiveIdea>>],
        slots: &[u32],
        threads: usize,
        out: &mut Vec<Change>,
    ) {
        debug_assert!(slots.windows(2).all(|w| w[0] < w[1]), "slots ascending");
        if threads <= 1 || slots.len() < 2 {
            return self.rescore_run(ideas, 0, slots, out);
        }
        // Disjoint runs: each part of the slots takes the ideas after the
        // previous part's last slot, through its own last.
        type Run<'i, 's> = (&'i mut [Option<Box<LiveIdea>>], usize, &'s [u32]);
        let mut runs: Vec<Mutex<Option<Run>>> = Vec::with_capacity(threads);
        let mut rest = ideas;
        let mut base = 0;
        for part in slots.chunks(slots.len().div_ceil(threads)) {
            let end = part[part.len() - 1] as usize + 1;
            let (run, tail) = std::mem::take(&mut rest).split_at_mut(end - base);
            runs.push(Mutex::new(Some((run, base, part))));
            rest = tail;
            base = end;
        }
        std::thread::scope(|scope| {
            let others: Vec<_> = runs[1..]
                .iter()
                .map(|run| {
                    std::thread::Builder::new()
                        .name("ideaflow-scoring".into())
                        .spawn_scoped(scope, move || {
                            let mut rows = Vec::new();
                            if let Some((ideas, base, slots)) = take(run) {
                                rows.reserve(slots.len());
                                self.rescore_run(ideas, base, slots, &mut rows);
                            }
                            rows
                        })
                        .ok()
                })
                .collect();
            if let Some((ideas, base, slots)) = take(&runs[0]) {
                self.rescore_run(ideas, base, slots, out);
            }
            for (run, handle) in runs[1..].iter().zip(others) {
                if let Some(handle) = handle {
                    match handle.join() {
                        Ok(mut rows) => out.append(&mut rows),
                        Err(panic) => std::panic::resume_unwind(panic),
                    }
                }
                // A run whose thread could not be started (the OS refused
                // one) is re-scored here instead: slower, same rows.
                if let Some((ideas, base, slots)) = take(run) {
                    self.rescore_run(ideas, base, slots, out);
                }
            }
        });
    }
}

/// Ideas ahead of the one being re-scored whose memory is asked for: each
/// step of the chain (the idea's box, then its vector's header, then the
/// vector) is fetched a few ideas before the next needs it, so the
/// sweep waits on about one miss at a time instead of four in a row.
const AHEAD_BOX: usize = 12;
const AHEAD_HEADERS: usize = 6;
const AHEAD_VECTOR: usize = 3;

fn prefetch_ahead(ideas: &[Option<Box<LiveIdea>>], base: usize, slots: &[u32], i: usize) {
    let idea = |k: usize| {
        slots
            .get(i + k)
            .and_then(|s| ideas[*s as usize - base].as_deref())
    };
    // The box by its address alone: reading through it is the miss to hide.
    if let Some(ahead) = slots.get(i + AHEAD_BOX) {
        if let Some(b) = &ideas[*ahead as usize - base] {
            crate::prefetch::lines(&**b as *const LiveIdea, std::mem::size_of::<LiveIdea>());
        }
    }
    if let Some(ahead) = idea(AHEAD_HEADERS) {
        crate::prefetch::line(ahead.row.embedding.header());
    }
    if let Some(ahead) = idea(AHEAD_VECTOR) {
        let v = ahead.row.embedding.as_slice();
        crate::prefetch::lines(v.as_ptr(), std::mem::size_of_val(v));
    }
}

/// Takes the run out of its cell: whoever takes it re-scores it.
fn take<T>(cell: &Mutex<Option<T>>) -> Option<T> {
    cell.lock().unwrap_or_else(|p| p.into_inner()).take()
}
