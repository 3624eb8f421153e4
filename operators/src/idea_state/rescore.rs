//! Re-scoring ideas in place: each idea's factors evaluated at a watermark,
//! compared with its last score, and its slot noted when it changed (the
//! state makes the score rows, when the batch of epochs ends).
//!
//! A tick re-scores every live idea, and the state has one owner; so the
//! ideas are split into disjoint runs of slots, each re-scored (evaluated,
//! written back) on its own thread. Each run notes its changed slots in its
//! own region of the output, and the regions stay in slot order, so the
//! output is the same for any thread count.

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::{KnownCohesion, LiveIdea};
use crate::centroid::CentroidWindow;
use crate::engagement_stats::EngagementStats;
use crate::score::{self, Factors, ScoringParams, Weights};
use crate::topic_counts::TopicCounts;

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
}

/// Whether an idea first seen at `first_seen` is in the centroids' window
/// starting after `window_start` (`None`: no tick yet, every idea is).
pub(super) fn in_window(window_start: Option<i64>, first_seen: i64) -> bool {
    window_start.is_none_or(|s| first_seen > s)
}

/// An idea's score as evaluated, before it is compared with the last one.
pub(super) struct Evaluation {
    factors: Factors,
    score: f64,
    /// The category top list's generation the cohesion was computed against.
    generation: u64,
    cohesion: f64,
}

/// What a run needs per category, looked up once per run instead of once
/// per idea, by the address of the category's shared name: ideas share one
/// name per category (a handful in all), so a short scan of pointers
/// replaces a hash and a string comparison per idea per tick.
#[derive(Default)]
pub(super) struct CategoryMemo<'a> {
    seen: Vec<(*const u8, u64, &'a [String])>,
}

impl<'a> CategoryMemo<'a> {
    /// Past this many names the scan would cost more than the lookup.
    const MOST: usize = 32;

    fn entry(&mut self, topics: &'a TopicCounts, category: &Arc<str>) -> Option<usize> {
        let key = category.as_ptr();
        if let Some(i) = self.seen.iter().position(|(k, ..)| *k == key) {
            return Some(i);
        }
        if self.seen.len() == Self::MOST {
            return None;
        }
        let (generation, set) = topics.top_set_with_generation(category);
        self.seen.push((key, generation, set));
        Some(self.seen.len() - 1)
    }

    /// The category's top topic set and its generation.
    fn top_set(&mut self, topics: &'a TopicCounts, category: &Arc<str>) -> (u64, &'a [String]) {
        match self.entry(topics, category) {
            Some(i) => (self.seen[i].1, self.seen[i].2),
            None => topics.top_set_with_generation(category),
        }
    }
}

impl Evaluation {
    /// The factors and the score, as an idea keeps them.
    pub(super) fn score(&self) -> (Factors, f64) {
        (self.factors, self.score)
    }

    /// Keeps this as `idea`'s score; whether its score changed.
    pub(super) fn keep(self, idea: &mut LiveIdea) -> bool {
        idea.cohesion = KnownCohesion {
            generation: self.generation,
            value: self.cohesion,
        };
        if idea.score == Some(self.score()) {
            return false;
        }
        idea.score = Some(self.score());
        true
    }
}

impl<'a> ScoringInputs<'a> {
    pub(super) fn evaluate(&self, idea: &LiveIdea, memo: &mut CategoryMemo<'a>) -> Evaluation {
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
            .as_ref()
            .map_or((0, &[][..]), |c| memo.top_set(self.topics, c));
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

    /// Evaluates `idea` and keeps the result; whether its score changed.
    pub(super) fn rescore_idea(&self, idea: &mut LiveIdea, memo: &mut CategoryMemo<'a>) -> bool {
        self.evaluate(idea, memo).keep(idea)
    }

    /// What `idea`'s factors would be, evaluated now (nothing is kept).
    pub(super) fn factors_of(&self, idea: &LiveIdea) -> Factors {
        self.evaluate(idea, &mut CategoryMemo::default()).factors
    }

    /// Re-scores the ideas in `slots` (ascending) of `ideas`, whose first
    /// element is slot `base`; writes the slots whose score changed to the
    /// front of `rows` (at least one place per slot) and returns how many.
    fn rescore_run(
        &self,
        ideas: &mut [Option<Box<LiveIdea>>],
        base: usize,
        slots: &[u32],
        rows: &mut [MaybeUninit<u32>],
    ) -> usize {
        let mut written = 0;
        let mut memo = CategoryMemo::default();
        for (i, &slot) in slots.iter().enumerate() {
            prefetch_ahead(ideas, base, slots, i);
            let Some(idea) = ideas[slot as usize - base].as_deref_mut() else {
                continue;
            };
            if !self.rescore_idea(idea, &mut memo) {
                continue;
            }
            rows[written].write(slot);
            written += 1;
        }
        written
    }

    /// [`ScoringInputs::rescore_run`] of `slots` (ascending, distinct), split
    /// over up to `threads` threads, each re-scoring its own run of the ideas;
    /// appends the slots whose score changed to `out`, in slot order.
    pub fn rescore(
        &self,
        ideas: &mut [Option<Box<LiveIdea>>],
        slots: &[u32],
        threads: usize,
        out: &mut Vec<u32>,
    ) {
        in_runs(ideas, slots, threads, out, &|ideas, base, slots, rows| {
            self.rescore_run(ideas, base, slots, rows)
        });
    }
}

/// A run of re-scoring: the ideas of `slots` (ascending) of `ideas`, whose
/// first element is slot `base`, writing its outputs to the front of its
/// places (one per slot); returns how many it wrote.
pub(super) type Run<'r, T> =
    dyn Fn(&mut [Option<Box<LiveIdea>>], usize, &[u32], &mut [MaybeUninit<T>]) -> usize + Sync + 'r;

/// `run` over `slots` (ascending, distinct), split over up to `threads`
/// threads, each taking its own runs of the ideas; appends the outputs to
/// `out` in slot order, the same for any thread count.
///
/// Every thread writes straight into `out`'s spare capacity, in a region of
/// its own: on a tick there is an output per live idea, and outputs built
/// apart and appended would be written twice.
pub(super) fn in_runs<T: Send>(
    ideas: &mut [Option<Box<LiveIdea>>],
    slots: &[u32],
    threads: usize,
    out: &mut Vec<T>,
    run: &Run<'_, T>,
) {
    debug_assert!(slots.windows(2).all(|w| w[0] < w[1]), "slots ascending");
    out.reserve(slots.len());
    let spare = &mut out.spare_capacity_mut()[..slots.len()];
    let written = if threads <= 1 || slots.len() < 2 {
        run(ideas, 0, slots, spare)
    } else {
        split(ideas, slots, threads, spare, run)
    };
    // SAFETY: `run` and `split` initialize the first `written` places of the
    // spare capacity (and `written <= slots.len()`, which was reserved).
    unsafe { out.set_len(out.len() + written) };
}

/// The runs of [`in_runs`] on their threads; returns how many outputs they
/// wrote to the front of `rows`, in slot order.
fn split<T: Send>(
    ideas: &mut [Option<Box<LiveIdea>>],
    slots: &[u32],
    threads: usize,
    rows: &mut [MaybeUninit<T>],
    run: &Run<'_, T>,
) -> usize {
    // Disjoint runs of at most RUN_SLOTS slots: each takes the ideas after
    // the previous run's last slot, through its own last, and as many places
    // of `rows` as it has slots. Threads take runs in turn until none is
    // left, so a thread slowed down (the other timely worker shares its
    // core) does fewer, and worker 0 does not wait for it at the end.
    type Part<'i, 's, 'r, T> = (
        &'i mut [Option<Box<LiveIdea>>],
        usize,
        &'s [u32],
        &'r mut [MaybeUninit<T>],
    );
    let run_slots = RUN_SLOTS.min(slots.len().div_ceil(threads));
    let mut runs: Vec<Mutex<Option<Part<T>>>> = Vec::new();
    let mut offsets = Vec::new();
    let mut rest = ideas;
    let mut rest_rows = &mut *rows;
    let mut base = 0;
    let mut offset = 0;
    for part in slots.chunks(run_slots) {
        let end = part[part.len() - 1] as usize + 1;
        let (ideas, tail) = std::mem::take(&mut rest).split_at_mut(end - base);
        let (places, rows_tail) = std::mem::take(&mut rest_rows).split_at_mut(part.len());
        runs.push(Mutex::new(Some((ideas, base, part, places))));
        offsets.push(offset);
        rest = tail;
        rest_rows = rows_tail;
        base = end;
        offset += part.len();
    }
    let written: Vec<AtomicUsize> = runs.iter().map(|_| AtomicUsize::new(0)).collect();
    let next = AtomicUsize::new(0);
    let work = || loop {
        let k = next.fetch_add(1, Ordering::Relaxed);
        let Some(part) = runs.get(k) else { break };
        if let Some((ideas, base, slots, places)) = take(part) {
            let n = run(ideas, base, slots, places);
            written[k].store(n, Ordering::Relaxed);
        }
    };
    std::thread::scope(|scope| {
        // A thread the OS refuses to start leaves its share to the others:
        // slower, same outputs.
        let helpers: Vec<_> = (1..threads.min(runs.len()))
            .filter_map(|_| {
                std::thread::Builder::new()
                    .name("ideaflow-scoring".into())
                    .spawn_scoped(scope, work)
                    .ok()
            })
            .collect();
        work();
        for helper in helpers {
            if let Err(panic) = helper.join() {
                std::panic::resume_unwind(panic);
            }
        }
    });
    drop(runs);
    close_gaps(
        rows,
        offsets
            .into_iter()
            .zip(written.into_iter().map(AtomicUsize::into_inner)),
    )
}

/// Moves the rows of runs that start at `offset` and hold `n` rows each (in
/// ascending, non-overlapping order) down to the front of `rows`, closing the
/// gaps left by runs that wrote fewer rows than they had places; returns how
/// many rows there are. Swaps only: the places left behind hold what the
/// gaps held, never a second copy of a row.
fn close_gaps<T>(
    rows: &mut [MaybeUninit<T>],
    runs: impl IntoIterator<Item = (usize, usize)>,
) -> usize {
    let mut filled = 0;
    for (offset, n) in runs {
        debug_assert!(offset >= filled, "runs ascending and disjoint");
        if offset != filled {
            for i in 0..n {
                rows.swap(filled + i, offset + i);
            }
        }
        filled += n;
    }
    filled
}

/// Slots in a run of a split re-scoring: small enough that the threads
/// finish together, large enough that taking one is rare (a tick over half
/// a million live ideas makes ~60). Tests use short runs, so that their
/// few hundred ideas make many runs, some without rows.
#[cfg(not(test))]
const RUN_SLOTS: usize = 8192;
#[cfg(test)]
const RUN_SLOTS: usize = 7;

/// Ideas ahead of the one being re-scored whose memory is asked for: each
/// step of the chain (the idea's box, then its vector's header, then the
/// vector) is fetched a few ideas before the next needs it, so the
/// sweep waits on about one miss at a time instead of four in a row.
const AHEAD_BOX: usize = 12;
const AHEAD_HEADERS: usize = 6;
const AHEAD_VECTOR: usize = 3;

pub(super) fn prefetch_ahead(
    ideas: &[Option<Box<LiveIdea>>],
    base: usize,
    slots: &[u32],
    i: usize,
) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closing_gaps_keeps_rows_in_order() {
        // Runs of 4 places at 0, 4 and 8, writing 2, 4 and 3 rows.
        let mut rows: Vec<MaybeUninit<String>> = (0..12).map(|_| MaybeUninit::uninit()).collect();
        let mut expected = Vec::new();
        for (offset, n) in [(0, 2), (4, 4), (8, 3)] {
            for i in 0..n {
                let row = format!("run at {offset}, row {i}");
                rows[offset + i].write(row.clone());
                expected.push(row);
            }
        }
        let n = close_gaps(&mut rows, [(0, 2), (4, 4), (8, 3)]);
        assert_eq!(n, 9);
        // SAFETY: close_gaps moved the nine written rows to the front.
        let got: Vec<String> = rows[..n]
            .iter_mut()
            .map(|r| unsafe { r.assume_init_read() })
            .collect();
        assert_eq!(got, expected);
    }
}
