//! Ticks evaluated later, together. While a batch of epochs has no reader
//! for its ticks' scores (no top lists are kept, and the score rows wait
//! for the batch's end), a tick records what scoring reads (a snapshot:
//! weights, centroid sums, top topic sets, source statistics, watermark)
//! instead of re-scoring every live idea. Each idea is caught up with the
//! snapshots it missed when it is next needed: before a signal changes it,
//! before it is archived, when feedback reads its factors, and at the
//! batch's end, all of them at once on the scoring threads.
//!
//! A snapshot's score depends on the snapshot and the idea alone, so
//! catching up evaluates the last snapshot (the score kept) and goes back
//! only as far as it takes to find when the score last changed: usually
//! one snapshot more. A tick was bound by memory bandwidth (each live
//! idea's 1.5 KB vector read from DRAM, per tick); caught up, an idea's
//! vector is read once for the whole batch, and evaluated about twice.
//! Every evaluation is the one its tick would have made, with the same
//! inputs, so the scores, their rows and the times they changed are
//! exactly those of ticks evaluated as they happen.

use std::mem::MaybeUninit;

use super::rescore::{in_runs, prefetch_ahead, CategoryMemo, Evaluation, ScoringInputs};
use super::LiveIdea;
use crate::centroid::CentroidWindow;
use crate::engagement_stats::EngagementStats;
use crate::score::{Factors, ScoringParams, Weights};
use crate::topic_counts::TopicCounts;

/// What evaluating a score reads besides the idea, as a tick left it.
pub(super) struct Snapshot {
    pub weights: Weights,
    /// The sums only (with their f64 mirrors), not the members.
    pub categories: CentroidWindow,
    pub communities: CentroidWindow,
    /// The top topic sets only.
    pub topics: TopicCounts,
    /// The statistics only, not the samples.
    pub rates: EngagementStats,
    pub window_start: Option<i64>,
    pub watermark: i64,
}

impl Snapshot {
    fn inputs<'a>(&'a self, scoring: &'a ScoringParams) -> ScoringInputs<'a> {
        ScoringInputs {
            scoring,
            weights: &self.weights,
            categories: &self.categories,
            communities: &self.communities,
            topics: &self.topics,
            rates: &self.rates,
            window_start: self.window_start,
            watermark: self.watermark,
        }
    }
}

/// The ticks of the current batch not yet evaluated for every idea.
#[derive(Default)]
pub(super) struct Deferred {
    /// Snapshots some live idea was not evaluated at, oldest first, with
    /// their numbers.
    ledger: Vec<(u64, Snapshot)>,
    /// Snapshots taken so far (the last one's number).
    taken: u64,
    /// Per slot: the number of the last snapshot its idea was evaluated at
    /// or is not concerned by (it came later); meaningful while the ledger
    /// holds snapshots.
    through: Vec<u64>,
}

impl Deferred {
    pub fn is_empty(&self) -> bool {
        self.ledger.is_empty()
    }

    /// A tick whose evaluation is deferred.
    pub fn push(&mut self, snapshot: Snapshot) {
        self.taken += 1;
        self.ledger.push((self.taken, snapshot));
    }

    /// `slot`'s idea is evaluated through the last snapshot (or was created
    /// after it).
    pub fn up_to_date(&mut self, slot: u32) {
        let s = slot as usize;
        if s >= self.through.len() {
            self.through.resize(s + 1, 0);
        }
        self.through[s] = self.taken;
    }

    /// The snapshots `slot`'s idea was not evaluated at, oldest first.
    fn missed(&self, slot: u32) -> &[(u64, Snapshot)] {
        let through = self.through.get(slot as usize).copied().unwrap_or(0);
        let first = self.ledger.partition_point(|(n, _)| *n <= through);
        &self.ledger[first..]
    }

    /// Catches `idea` (in `slot`) up with every snapshot it missed; the
    /// watermark of the last one that changed its score, if any.
    pub fn catch_up(
        &mut self,
        slot: u32,
        idea: &mut LiveIdea,
        scoring: &ScoringParams,
    ) -> Option<i64> {
        let missed = self.missed(slot);
        let changed = catch_up_idea(
            idea,
            missed.len(),
            |i| missed[i].1.watermark,
            |i, idea| {
                let inputs = missed[i].1.inputs(scoring);
                inputs.evaluate(idea, &mut CategoryMemo::default())
            },
        );
        self.up_to_date(slot);
        changed
    }

    /// The factors `idea` (in `slot`) has once caught up, if it missed any
    /// snapshot (nothing is kept).
    pub fn factors(&self, slot: u32, idea: &LiveIdea, scoring: &ScoringParams) -> Option<Factors> {
        let (_, last) = self.missed(slot).last()?;
        Some(last.inputs(scoring).factors_of(idea))
    }

    /// Ends the ledger: every live idea in `slots` (ascending) evaluated at
    /// every snapshot it missed, split over `threads` threads; returns the
    /// slots whose score changed, each with the watermark of the last
    /// snapshot that changed it, in slot order.
    pub fn catch_up_all(
        &mut self,
        ideas: &mut [Option<Box<LiveIdea>>],
        slots: &[u32],
        threads: usize,
        scoring: &ScoringParams,
    ) -> Vec<(u32, i64)> {
        let mut changed = Vec::new();
        let ledger = std::mem::take(&mut self.ledger);
        if ledger.is_empty() {
            return changed;
        }
        let inputs: Vec<(u64, i64, ScoringInputs)> = ledger
            .iter()
            .map(|(n, s)| (*n, s.watermark, s.inputs(scoring)))
            .collect();
        let through = &self.through;
        in_runs(
            ideas,
            slots,
            threads,
            &mut changed,
            &|ideas, base, slots, out| catch_up_run(&inputs, through, ideas, base, slots, out),
        );
        changed
    }
}

/// Leaves `idea` as evaluating it at `missed` snapshots one after another
/// would, where `evaluate(i, idea)` evaluates it at the `i`th of them (oldest
/// first), whose watermark is `watermark(i)`; returns the watermark of the
/// last snapshot that changed its score, if any.
///
/// A snapshot's score depends on the snapshot and the idea alone, never on
/// the scores before it (between two snapshots nothing else touches the
/// idea: a signal catches it up first). So only the last ones are evaluated
/// ([`last_change`]). The cohesion an evaluation reuses is a cache of a
/// function of the idea's topics and a top-set generation, so the order
/// does not change it.
fn catch_up_idea(
    idea: &mut LiveIdea,
    missed: usize,
    watermark: impl Fn(usize) -> i64,
    mut evaluate: impl FnMut(usize, &LiveIdea) -> Evaluation,
) -> Option<i64> {
    let last = missed.checked_sub(1)?;
    let kept = evaluate(last, idea);
    let changed = last_change(idea.score, last, kept.score(), |i| {
        evaluate(i, idea).score()
    });
    kept.keep(idea);
    changed.map(watermark)
}

/// Of the scores an idea takes at snapshots `0..=last` one after another,
/// starting from `before`: the last snapshot at which its score changed,
/// if any. `at_last` is the last one's score; `score(i)` gives the others',
/// asked for backwards from the last, until two neighbours differ (the
/// last two, unless the score stood still), or down to the score before.
fn last_change<S: PartialEq + Copy>(
    before: Option<S>,
    last: usize,
    at_last: S,
    mut score: impl FnMut(usize) -> S,
) -> Option<usize> {
    let mut later = at_last;
    for i in (0..last).rev() {
        let earlier = score(i);
        if earlier != later {
            return Some(i + 1);
        }
        later = earlier;
    }
    (before != Some(later)).then_some(0)
}

/// [`Deferred::catch_up_all`] of a run of `slots` (ascending) of `ideas`,
/// whose first element is slot `base`: each idea caught up with the
/// snapshots of `ledger` numbered above its `through`.
fn catch_up_run(
    ledger: &[(u64, i64, ScoringInputs)],
    through: &[u64],
    ideas: &mut [Option<Box<LiveIdea>>],
    base: usize,
    slots: &[u32],
    out: &mut [MaybeUninit<(u32, i64)>],
) -> usize {
    let mut memos: Vec<CategoryMemo> = ledger.iter().map(|_| CategoryMemo::default()).collect();
    let mut written = 0;
    for (i, &slot) in slots.iter().enumerate() {
        prefetch_ahead(ideas, base, slots, i);
        let Some(idea) = ideas[slot as usize - base].as_deref_mut() else {
            continue;
        };
        let done = through.get(slot as usize).copied().unwrap_or(0);
        let first = ledger.partition_point(|(n, ..)| *n <= done);
        let changed = catch_up_idea(
            idea,
            ledger.len() - first,
            |k| ledger[first + k].1,
            |k, idea| ledger[first + k].2.evaluate(idea, &mut memos[first + k]),
        );
        if let Some(at) = changed {
            out[written].write((slot, at));
            written += 1;
        }
    }
    written
}

#[cfg(test)]
mod tests {
    use super::last_change;

    /// The last change found backwards, asking for as few scores as it can,
    /// is the one going forwards finds.
    #[test]
    fn the_last_change_is_found_from_the_end() {
        let forwards = |before: Option<u8>, scores: &[u8]| {
            let mut prev = before;
            let mut changed = None;
            for (i, s) in scores.iter().enumerate() {
                if prev != Some(*s) {
                    changed = Some(i);
                }
                prev = Some(*s);
            }
            changed
        };
        let cases: [(Option<u8>, &[u8]); 10] = [
            (Some(1), &[1, 1, 2, 2]),
            (Some(1), &[1, 1]),
            (Some(2), &[1, 1]),
            (None, &[1, 1, 1]),
            (Some(3), &[3]),
            (Some(3), &[4]),
            (Some(1), &[1, 2, 1]),
            (Some(1), &[2, 2, 2, 2]),
            (Some(1), &[1, 2, 3, 4]),
            (Some(5), &[5, 5, 5, 6]),
        ];
        for (before, scores) in cases {
            let last = scores.len() - 1;
            let mut asked = Vec::new();
            let backwards = last_change(before, last, scores[last], |i| {
                asked.push(i);
                scores[i]
            });
            assert_eq!(backwards, forwards(before, scores), "{before:?} {scores:?}");
            // Only back to the change (the last snapshot is always given).
            let back_to = backwards.map_or(0, |c| c.saturating_sub(1));
            assert_eq!(
                asked,
                (back_to..last).rev().collect::<Vec<_>>(),
                "{scores:?}"
            );
        }
    }
}
