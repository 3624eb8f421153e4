//! The idea state: dedupe (Bloom → exact → near), rolling centroids, topic
//! counts, distinct counts and scores, advanced one completed epoch at a time.
//! An epoch has two halves: [`IdeaState::begin_epoch`] applies its signals
//! and returns the centroids' deltas; once they are summed (by differential
//! in the pipeline) [`IdeaState::finish_epoch`] settles the centroids and
//! scores.
//!
//! Determinism: an epoch's signals are applied in a total order
//! ([`PreparedSignal::order_key`]), epochs in time order, ticks at fixed
//! event-time boundaries, and every aggregate is exact (fixed-point centroid
//! sums, exact medians) or seeded (HyperLogLog, LSH). So the state after an
//! epoch depends only on the stream's contents up to it, not on arrival order,
//! worker count or replay speed.
//!
//! When each score factor is re-evaluated, and what it costs:
//! - on every epoch, for the ideas signals merged into or created (O(1) per
//!   record: two 384-d dot products, a calendar lookup);
//! - on every tick (default hourly, event time), for every active idea
//!   (inside a batch of epochs with no top lists kept, when each idea is
//!   next needed, at the last tick it missed and back to its score's last
//!   change: `deferred.rs`):
//!   freshness moves with the watermark, novelty and community fit with the
//!   centroids and engagement with the 7-day statistics (O(live ideas) per
//!   tick, never per record: two 384-d dot products, a statistics lookup and
//!   a score row per idea; the ideas are split into runs of slots that the
//!   scoring threads take in turn, each writing its rows into its own region
//!   of the changelog, in slot order);
//! - hashtag cohesion changes with the idea's topics (merges) and with its
//!   category's top topics: it is kept with the generation of the top list it
//!   was computed against and recomputed only when that list changed;
//! - seasonality depends only on the idea's last capture time and locale, so
//!   it is computed when the idea changes and reused on ticks;
//! - when the weights change ([`IdeaState::set_weights`]), every active idea
//!   is re-scored at the next epoch;
//! - when classification feedback moves the anchors
//!   ([`IdeaState::set_classifier`]), every active idea is classified again
//!   at the next tick (four dot products each; the class is not a factor).

mod deferred;
mod ingest;
mod params;
mod prepare;
mod rescore;
mod resume;
mod unflushed;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};

pub use params::{DedupeParams, WindowParams};
pub use prepare::{prepare, Labels, PreparedSignal};
use rescore::ScoringInputs;
pub use resume::ResumeError;

use foldhash::fast::FixedState;

use crate::calendar::Calendar;
use crate::centroid::{AccumulatedSums, CentroidSlot, CentroidWindow, VectorDelta, VectorSum};
use crate::dedupe::{NearIndex, RotatingBloom, VectorId};
use crate::distinct::DistinctCounts;
use crate::engagement_stats::EngagementStats;
use crate::idea::IdeaId;
use crate::redelivery::SeenSignals;
use crate::score::{Factors, ScoringParams, Weights};
use crate::top_k::{Ranking, TopK, TopKDelta};
use crate::topic_counts::TopicCounts;
use crate::views::{
    CentroidKind, CentroidRow, Change, DistinctCountRow, IdeaRow, IdeaStatus, ScoreRow, SignalRow,
    TopicCountRow, ViewKey, ViewRow,
};
use crate::{Engagement, Source};
use deferred::{Deferred, Snapshot};
use unflushed::{HeldScore, Unflushed};

/// Counters of the dedupe path, for metrics and the tuning report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DedupeStats {
    pub signals: u64,
    pub new_ideas: u64,
    pub exact: u64,
    pub near: u64,
    /// Signals the Bloom filter let through without an exact lookup.
    pub bloom_negative: u64,
    /// Bloom "maybe" answers the exact lookup found no live idea for.
    pub bloom_false_positive: u64,
    pub lsh_candidates: u64,
    pub archived: u64,
    /// Archived ideas forgotten (`dedupe.forget_archived_secs` after they
    /// were archived).
    pub forgotten: u64,
    /// Signals polled again with newer figures: their engagement replaced
    /// the earlier figures.
    pub repolls: u64,
    /// Signals delivered again that changed nothing (an identical or older
    /// copy, or one whose idea is archived).
    pub repeats: u64,
}

/// Below this many ideas to re-score, one thread does it: a thread's start
/// costs about what a few hundred evaluations do.
const PARALLEL_SCORING_MIN: usize = 4096;

#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct LiveIdea {
    row: IdeaRow,
    /// Its own content hash and those of the near-duplicates merged into it:
    /// an exact copy of any of them is an exact duplicate of the idea.
    /// (Boxed slices, not vectors: they rarely grow, and eight bytes less
    /// each keep a live idea within a smaller size class.)
    hashes: Box<[[u8; 16]]>,
    /// The representative's embedding and the near-duplicates', in the
    /// near-duplicate index: a signal close to any of them joins the idea.
    vectors: Box<[VectorId]>,
    first_seen: i64,
    last_seen: i64,
    /// The latest peak (published_at, else captured_at) of its signals: freshness.
    peak: i64,
    /// The earliest published_at of its signals: the age the rate divides by.
    earliest_published: Option<i64>,
    seasonality: f64,
    /// The embedding's squared norm, for the centroid cosines on every tick.
    norm2: f64,
    /// Hashtag cohesion and the generation of its category's top list it was
    /// computed against: ticks recompute it only when that list changed
    /// (merges, which change the topics, forget it).
    cohesion: KnownCohesion,
    /// The last score emitted: (factors, score).
    score: Option<(Factors, f64)>,
    /// Its category's and community's centroid slots, held while it lives.
    category_centroid: Option<CentroidSlot>,
    community_centroid: Option<CentroidSlot>,
}

// Each live idea is boxed: 448 bytes is a size class of mimalloc (and of
// jemalloc); a few bytes more would round every live idea up to 512.
const _: () = assert!(std::mem::size_of::<LiveIdea>() <= 448);

/// An idea's hashtag cohesion as last computed, and the generation of its
/// category's top list it was computed against; or none (NaN: cohesion is
/// a share, never NaN), which keeps a live idea eight bytes smaller than an
/// `Option` would.
#[derive(Clone, Copy, serde::Serialize, serde::Deserialize)]
struct KnownCohesion {
    generation: u64,
    value: f64,
}

impl KnownCohesion {
    const NONE: KnownCohesion = KnownCohesion {
        generation: 0,
        value: f64::NAN,
    };

    /// The cohesion if it was computed against this generation.
    fn at(self, generation: u64) -> Option<f64> {
        (!self.value.is_nan() && self.generation == generation).then_some(self.value)
    }
}

/// A centroid's key: a category or a community, by name.
pub type CentroidKey = (CentroidKind, String);

/// What an epoch's first half leaves for its second
/// ([`IdeaState::begin_epoch`], [`IdeaState::finish_epoch`]).
struct OpenEpoch {
    watermark: i64,
    changes: BTreeMap<ViewKey, Option<ViewRow>>,
    touched: Vec<u32>,
    ticked: bool,
}

/// What an archived idea keeps, so that it resumes its counts if its content
/// comes back after the retention window (until it is forgotten).
#[derive(Clone, Copy, serde::Serialize, serde::Deserialize)]
struct Archived {
    /// The tick that archived it.
    archived_at: i64,
    first_seen: i64,
    signal_count: u64,
    near_duplicates: u64,
    engagement: Engagement,
}

/// Saved whole by [`IdeaState::save`] (but for what its configuration gives
/// and the scratch of a run) and resumed by [`IdeaState::resume`].
#[derive(serde::Serialize, serde::Deserialize)]
pub struct IdeaState {
    /// One shared name per category (a closed set, from the configured
    /// anchors): every score row clones its idea's category, and a clone of
    /// a shared name touches a hot cache line, not one per idea.
    #[serde(skip)]
    category_names: BTreeSet<Arc<str>>,
    dedupe: DedupeParams,
    windows: WindowParams,
    scoring: ScoringParams,
    weights: Weights,
    weights_changed: bool,
    /// Anchors moved by classification feedback; `None`: the prepared
    /// signal's class (the configured anchors) stands.
    #[serde(skip)]
    classifier: Option<std::sync::Arc<crate::classify::Classes>>,
    /// The anchors moved since the last tick: live ideas are classified
    /// again at the next one.
    reclassify: bool,
    calendar: Calendar,
    bloom: RotatingBloom,
    near: NearIndex,
    /// Boxed: a slot costs a pointer, not a whole idea, and the vector grows
    /// by copying pointers (at a million slots, a doubling of unboxed ideas
    /// would hold both copies, about 750 MB, at once).
    ideas: Vec<Option<Box<LiveIdea>>>,
    free: Vec<u32>,
    by_hash: HashMap<[u8; 16], u32>,
    archived: HashMap<[u8; 16], Archived>,
    /// Archived ideas in the order they were archived (tick, first content
    /// hash: 24 bytes; the id follows from the hash), to forget them:
    /// without it an endless stream would keep ~150 bytes per idea it ever
    /// archived. An entry whose idea came back (and maybe was archived
    /// again) is skipped when its turn comes.
    archive_order: VecDeque<(i64, [u8; 16])>,
    /// The ids (as bits) of the ideas the current epoch's tick forgot, for
    /// the feedback operator ([`IdeaState::forgotten`]); cleared when the
    /// next epoch begins.
    #[serde(skip)]
    forgotten: Vec<u128>,
    /// Live ideas by id, and the last factors of archived ones: what the
    /// feedback operator reads ([`LatestFactors`]) instead of being sent
    /// every score row.
    by_id: HashMap<IdeaId, u32, FixedState>,
    /// Keyed by the id's 128 bits, not its text: archived ideas accumulate
    /// over an endless stream, and a shared id string costs 64 bytes more.
    archived_factors: HashMap<u128, Factors, FixedState>,
    applied_through: Option<i64>,
    /// The epoch begun and not yet finished.
    #[serde(skip)]
    open: Option<OpenEpoch>,
    /// The centroid sums when the state runs without a dataflow
    /// ([`IdeaState::apply_epoch`]); the pipeline keeps them in differential.
    own_sums: AccumulatedSums<CentroidKey>,
    categories: CentroidWindow,
    communities: CentroidWindow,
    topics: TopicCounts,
    rates: EngagementStats,
    distinct: DistinctCounts,
    last_tick: Option<i64>,
    stats: DedupeStats,
    /// Threads that evaluate scores when a tick re-scores every live idea.
    #[serde(skip)]
    scoring_threads: usize,
    /// Fewer ideas to re-score than this are done on one thread.
    #[serde(skip)]
    parallel_scoring_min: usize,
    /// The signals taken within `dedupe.event_id_horizon_secs`: a signal
    /// delivered again is a re-poll, never a second signal.
    seen_signals: SeenSignals,
    /// The signals refused as repeats, for the sources' counts (when asked).
    #[serde(skip)]
    refused: crate::redelivery::RepeatLog,
    /// A delivered changelog's buffer, empty, for the next epoch's: a tick's
    /// changelog holds a row per live idea (~80 MB at half a million), and
    /// a fresh buffer of that size is fresh pages the kernel must fault in
    /// and zero on every tick ([`IdeaState::recycle_changelog`]).
    #[serde(skip)]
    spare_changelog: Vec<Change>,
    /// The centroid sums a resumed state hands the pipeline's collection of
    /// sums with its first epoch ([`IdeaState::hand_sums_to_dataflow`]).
    #[serde(skip)]
    sums_to_hand: Vec<(CentroidKey, VectorDelta)>,
    /// The score rows the current batch of epochs holds back (saved with
    /// the state: a checkpoint may fall inside a batch).
    unflushed: Unflushed,
    /// The current batch's ticks whose evaluation waits (empty when the
    /// state is saved).
    #[serde(skip)]
    deferred: Deferred,
    /// Live ideas per source (by `Source as usize`): the sources whose
    /// statistics a tick's re-scoring computes, evaluated or deferred.
    #[serde(skip)]
    live_sources: [u32; Source::ALL.len()],
    /// The top K ideas per category, ranked epoch by epoch from the scores
    /// as they are computed (whether or not their rows are held back), for
    /// the sinks' top sets and `idea.scored` events; only when a consumer
    /// keeps them ([`IdeaState::keep_top_lists`]). Saved apart by the
    /// checkpoints.
    #[serde(skip)]
    top: Option<TopK>,
    /// Each ranked epoch's top-K moves (by the epoch's end), until the
    /// consumer takes them with the epoch ([`IdeaState::take_moves`]).
    #[serde(skip)]
    moves: BTreeMap<i64, BTreeMap<String, TopKDelta>>,
}

fn utc(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(secs, 0).single().unwrap_or_default()
}

impl IdeaState {
    pub fn new(
        dedupe: DedupeParams,
        windows: WindowParams,
        scoring: ScoringParams,
        calendar: Calendar,
    ) -> Self {
        let bloom = RotatingBloom::new(
            dedupe.bloom_capacity,
            dedupe.bloom_fp_rate,
            dedupe.retention_secs,
            dedupe.bloom_generations,
        );
        IdeaState {
            category_names: BTreeSet::new(),
            near: NearIndex::new(dedupe.lsh()),
            bloom,
            weights: scoring.weights.normalized(),
            weights_changed: false,
            classifier: None,
            reclassify: false,
            categories: CentroidWindow::new(windows.window_secs),
            communities: CentroidWindow::new(windows.window_secs),
            topics: TopicCounts::new(windows.window_secs),
            rates: EngagementStats::new(windows.window_secs),
            distinct: DistinctCounts::new(
                windows.distinct_window_secs,
                windows.distinct_error_rate,
            ),
            calendar,
            seen_signals: SeenSignals::new(dedupe.event_id_horizon_secs),
            refused: crate::redelivery::RepeatLog::default(),
            dedupe,
            windows,
            scoring,
            ideas: Vec::new(),
            free: Vec::new(),
            by_id: HashMap::with_hasher(FixedState::with_seed(0x1dea)),
            archived_factors: HashMap::with_hasher(FixedState::with_seed(0x1dea)),
            applied_through: None,
            open: None,
            own_sums: AccumulatedSums::default(),
            by_hash: HashMap::new(),
            archived: HashMap::new(),
            archive_order: VecDeque::new(),
            forgotten: Vec::new(),
            last_tick: None,
            stats: DedupeStats::default(),
            scoring_threads: 1,
            parallel_scoring_min: PARALLEL_SCORING_MIN,
            spare_changelog: Vec::new(),
            sums_to_hand: Vec::new(),
            unflushed: Unflushed::default(),
            deferred: Deferred::default(),
            live_sources: [0; Source::ALL.len()],
            top: None,
            moves: BTreeMap::new(),
        }
    }

    /// Ranks the top `k` ideas per category from now on (a consumer
    /// materializes them): each finished epoch's moves wait for
    /// [`IdeaState::take_moves`]. Lists already kept with that `k` (resumed)
    /// stay.
    pub fn keep_top_lists(&mut self, k: usize) {
        if self.top.as_ref().is_none_or(|t| t.k() != k.max(1)) {
            self.top = Some(TopK::new(k));
        }
    }

    /// Goes on with top lists a checkpoint saved beside this state.
    pub fn resume_top_lists(&mut self, mut top: TopK) {
        top.let_go_of_inactive();
        self.top = Some(top);
    }

    /// The top lists, as of the last finished epoch (for the checkpoints).
    pub fn top_lists(&self) -> Option<&TopK> {
        self.top.as_ref()
    }

    /// The ends of the finished epochs whose top-K moves wait to be taken.
    pub fn moved_epochs(&self) -> impl Iterator<Item = i64> + '_ {
        self.moves.keys().copied()
    }

    /// The top-K moves of the epoch ending at `epoch_end` (none if no
    /// category's top K changed in it, or no lists are kept).
    pub fn take_moves(&mut self, epoch_end: i64) -> BTreeMap<String, TopKDelta> {
        self.moves.remove(&epoch_end).unwrap_or_default()
    }

    /// Ticks since the current batch of epochs began (see
    /// [`IdeaState::finish_epoch_batched`]).
    pub fn ticks_in_batch(&self) -> usize {
        self.unflushed.ticks
    }

    /// Score rows the current batch holds back.
    pub fn held_back(&self) -> usize {
        self.unflushed.len()
    }

    /// Takes back a changelog this state emitted, once its consumer is done
    /// with it, so that a later epoch writes into memory already mapped.
    /// Keeps the larger of it and the spare it holds; any rows left in it are
    /// dropped.
    pub fn recycle_changelog(&mut self, mut changelog: Vec<Change>) {
        if changelog.capacity() > self.spare_changelog.capacity() {
            changelog.clear();
            self.spare_changelog = changelog;
        }
    }

    /// Threads a tick's re-scoring of every live idea may use (the state has
    /// one owner; this is how it uses the other cores). Results do not depend on it.
    pub fn set_scoring_threads(&mut self, threads: usize) {
        self.scoring_threads = threads.max(1);
    }

    pub fn stats(&self) -> DedupeStats {
        self.stats
    }

    /// Keeps the digests of the signals refused as repeats for
    /// [`Self::take_refused`].
    pub fn log_refused(&mut self) {
        self.refused.switch_on();
    }

    /// The signals refused as repeats since the last call.
    pub fn take_refused(&mut self) -> Vec<crate::redelivery::RecordDigest> {
        self.refused.take()
    }

    /// Signals remembered to take redeliveries once.
    pub fn seen_signals(&self) -> usize {
        self.seen_signals.len()
    }

    /// The watermark of the last epoch applied.
    pub fn applied_through(&self) -> Option<i64> {
        self.applied_through
    }

    /// Vectors in the near-duplicate index (each live idea's and its
    /// near-duplicates').
    pub fn indexed_vectors(&self) -> usize {
        self.near.len()
    }

    /// Archived ideas still remembered (until forgotten).
    pub fn archived_ideas(&self) -> usize {
        self.archived.len()
    }

    /// Live (not archived) ideas.
    pub fn active_ideas(&self) -> usize {
        self.ideas.len() - self.free.len()
    }

    pub fn weights(&self) -> Weights {
        self.weights
    }

    /// Moved anchors: new ideas are classified with them from now on, and
    /// every live idea at the next tick (archived ones keep their class).
    pub fn set_classifier(&mut self, classifier: std::sync::Arc<crate::classify::Classes>) {
        self.classifier = Some(classifier);
        self.reclassify = true;
    }

    /// New weights (normalized); every active idea is re-scored at the next epoch.
    pub fn set_weights(&mut self, weights: Weights) {
        let w = weights.normalized();
        if w != self.weights {
            self.weights = w;
            self.weights_changed = true;
        }
    }

    /// Applies one completed epoch ending at `watermark` (seconds) and returns
    /// its changelog, one change per key: the keyed changes sorted by key,
    /// then the scores in slot order (deterministic, not sorted).
    ///
    /// This runs the epoch without a dataflow: the centroid deltas are
    /// accumulated here ([`AccumulatedSums`]) instead of by the pipeline's
    /// differential reduce. The pipeline calls [`IdeaState::begin_epoch`]
    /// and [`IdeaState::finish_epoch`] itself.
    pub fn apply_epoch(&mut self, watermark: i64, signals: Vec<PreparedSignal>) -> Vec<Change> {
        let deltas = self.begin_epoch(watermark, signals);
        let settled = self.own_sums.accumulate(deltas);
        self.finish_epoch(settled)
    }

    /// The first half of an epoch: slides the windows on a tick and applies
    /// the signals (dedupe, new and merged ideas, topics, statistics).
    /// Returns the epoch's change of each centroid's sum, which the caller
    /// accumulates into the sums and hands to [`IdeaState::finish_epoch`]
    /// (scores read the centroids, so they wait for it).
    pub fn begin_epoch(
        &mut self,
        watermark: i64,
        mut signals: Vec<PreparedSignal>,
    ) -> Vec<(CentroidKey, VectorDelta)> {
        debug_assert!(
            self.open.is_none(),
            "an epoch begun before the last finished"
        );
        self.applied_through = Some(watermark);
        self.forgotten.clear();
        let mut changes: BTreeMap<ViewKey, Option<ViewRow>> = BTreeMap::new();
        let tick = watermark.div_euclid(self.windows.tick_secs) * self.windows.tick_secs;
        let ticked = self.last_tick.is_none_or(|t| tick > t);
        if ticked {
            self.last_tick = Some(tick);
            self.unflushed.ticks += 1;
            self.tick(tick, &mut changes);
        }
        signals.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
        let mut touched: Vec<u32> = Vec::with_capacity(signals.len());
        for s in signals {
            if let Some(slot) = self.apply_signal(s, &mut changes) {
                touched.push(slot);
            }
        }
        self.open = Some(OpenEpoch {
            watermark,
            changes,
            touched,
            ticked,
        });
        let mut deltas = std::mem::take(&mut self.sums_to_hand);
        for (kind, window) in [
            (CentroidKind::Category, &mut self.categories),
            (CentroidKind::Community, &mut self.communities),
        ] {
            deltas.extend(
                window
                    .take_deltas()
                    .into_iter()
                    .map(|(key, delta)| ((kind, key), delta)),
            );
        }
        deltas
    }

    /// The second half of the epoch [begun](IdeaState::begin_epoch) last:
    /// settles the centroids with `sums` (each key whose accumulated sum
    /// changed, `None` once empty), emits the aggregates and re-scores.
    /// Every score that changed is in the changelog.
    pub fn finish_epoch(&mut self, sums: Vec<(CentroidKey, Option<VectorDelta>)>) -> Vec<Change> {
        self.finish_epoch_batched(sums, true)
    }

    /// [`IdeaState::finish_epoch`] of an epoch in a batch: the score rows
    /// wait for the batch's end (`flush`), where each idea whose score
    /// changed in the batch gets one row with its last score; the other
    /// rows (ideas, signals, aggregates) are each epoch's own. Scores are
    /// ranked and read (feedback) exactly as epoch by epoch; only the rows
    /// nobody could read between two epochs of a batch are left out, and,
    /// when no top lists are kept, a tick's evaluation of every live idea
    /// waits until each idea is needed (`deferred.rs`). A batch of one
    /// epoch is `finish_epoch`.
    pub fn finish_epoch_batched(
        &mut self,
        sums: Vec<(CentroidKey, Option<VectorDelta>)>,
        flush: bool,
    ) -> Vec<Change> {
        let Some(OpenEpoch {
            watermark,
            changes: mut keyed,
            mut touched,
            ticked,
        }) = self.open.take()
        else {
            debug_assert!(false, "an epoch finished that was not begun");
            return Vec::new();
        };
        let (categories, communities): (Vec<_>, Vec<_>) = sums
            .into_iter()
            .partition(|((kind, _), _)| *kind == CentroidKind::Category);
        for (window, sums) in [
            (&mut self.categories, categories),
            (&mut self.communities, communities),
        ] {
            window.settle(
                sums.into_iter()
                    .map(|((_, key), sum)| (key, sum.map(VectorSum::from))),
            );
        }
        // Every active idea is re-scored (the tick's windows moved, or the
        // weights changed)...
        let full = std::mem::take(&mut self.weights_changed) || ticked;
        // ... unless nothing reads its scores before the batch ends: no top
        // lists, and its rows wait. Then its evaluation waits too.
        let defer = full && !flush && self.top.is_none();
        self.emit_aggregates(watermark, &mut keyed);
        let mut out = std::mem::take(&mut self.spare_changelog);
        out.reserve(keyed.len());
        out.extend(keyed.into_iter().map(|(key, row)| Change { key, row }));
        let mut changed = Vec::new();
        if defer {
            self.defer_scores(watermark);
        } else {
            if full {
                // Each deferred tick first, as it would have come.
                self.catch_up_all();
                touched = self.active_slots();
            } else {
                touched.sort_unstable();
                touched.dedup();
            }
            // Scores are not keyed: each idea is re-scored at most once per
            // epoch, and on ticks they are most of the changes.
            changed.reserve(touched.len());
            self.rescore(&touched, watermark, &mut changed);
            for &slot in &touched {
                self.deferred.up_to_date(slot);
            }
            for &slot in &changed {
                self.unflushed.mark(slot, watermark);
            }
        }
        self.rank(watermark, &out, &changed);
        if flush {
            self.catch_up_all();
            self.flush_scores(&mut out);
        }
        out
    }

    /// A tick whose re-scoring of every live idea waits: what it would read,
    /// as it would have read it (the centroids' mirrors and the statistics
    /// of the live ideas' sources computed now, as re-scoring computes them).
    fn defer_scores(&mut self, watermark: i64) {
        self.categories.refresh_mirrors();
        self.communities.refresh_mirrors();
        for source in Source::ALL {
            if self.live_sources[source as usize] > 0 {
                self.rates.get(source, watermark);
            }
        }
        self.deferred.push(Snapshot {
            weights: self.weights,
            categories: self.categories.sums_only(),
            communities: self.communities.sums_only(),
            topics: self.topics.top_sets_only(),
            rates: self.rates.cached_only(),
            window_start: self.window_start(),
            watermark,
        });
    }

    /// Evaluates `slot`'s idea at the deferred ticks it missed, before
    /// something changes or reads it.
    fn catch_up(&mut self, slot: u32) {
        if self.deferred.is_empty() {
            return;
        }
        let Some(idea) = self.ideas[slot as usize].as_deref_mut() else {
            return;
        };
        if let Some(at) = self.deferred.catch_up(slot, idea, &self.scoring) {
            self.unflushed.mark(slot, at);
        }
    }

    /// Evaluates every live idea at the deferred ticks it missed (at a
    /// batch's end, and before the state is saved).
    pub fn catch_up_all(&mut self) {
        if self.deferred.is_empty() {
            return;
        }
        let slots = self.active_slots();
        let threads = if slots.len() < self.parallel_scoring_min {
            1
        } else {
            self.scoring_threads
        };
        let changed = self
            .deferred
            .catch_up_all(&mut self.ideas, &slots, threads, &self.scoring);
        for (slot, at) in changed {
            self.unflushed.mark(slot, at);
        }
    }

    /// Ranks the epoch ending at `watermark` in the top lists (if kept):
    /// its keyed rows, then the scores of `changed` (ascending slots), in
    /// the order the changelog of an epoch on its own holds their rows.
    fn rank(&mut self, watermark: i64, keyed: &[Change], changed: &[u32]) {
        let Some(top) = self.top.as_mut() else {
            return;
        };
        let ideas = &self.ideas;
        let scores = changed.iter().filter_map(|&slot| {
            let idea = ideas[slot as usize].as_deref()?;
            Some(Ranking::Score {
                id: idea.row.id,
                category: &idea.row.category,
                score: idea.score?.1,
            })
        });
        let rows = keyed.iter().filter_map(Ranking::of);
        let count = rows.clone().count() + changed.len();
        let moves = top.apply_ranking(rows.chain(scores), count);
        if !moves.is_empty() {
            self.moves.insert(watermark, moves);
        }
    }

    /// Ends a batch of epochs: appends a score row for each idea whose
    /// score changed since the last flush (its last score and when it
    /// changed), in slot order after the archived ideas' (by id).
    fn flush_scores(&mut self, out: &mut Vec<Change>) {
        let (archived, held) = self.unflushed.drain();
        out.reserve(archived.len() + held.len());
        // An idea archived and then seen again in the batch is live again,
        // and its slot holds its row back.
        for (id, held) in archived {
            if !self.by_id.contains_key(&id) {
                out.push(score_row(id, held));
            }
        }
        for (slot, at) in held {
            if let Some(idea) = self.ideas[slot as usize].as_deref() {
                out.extend(held_score(idea, at).map(|held| score_row(idea.row.id, held)));
            }
        }
    }

    /// Where the centroids' window starts: windows slide only on ticks, so
    /// this follows from the last one (`None`: no tick yet).
    fn window_start(&self) -> Option<i64> {
        self.last_tick.map(|t| t - self.windows.window_secs)
    }

    fn active_slots(&self) -> Vec<u32> {
        // Sized up front: at half a million live ideas, growing it by
        // doubling would copy it into fresh pages on every tick.
        let mut slots = Vec::with_capacity(self.active_ideas());
        slots.extend((0..self.ideas.len() as u32).filter(|s| self.ideas[*s as usize].is_some()));
        slots
    }

    /// Windows slide to `tick`, statistics refresh, stale ideas are archived.
    fn tick(&mut self, tick: i64, changes: &mut BTreeMap<ViewKey, Option<ViewRow>>) {
        self.categories.expire(tick);
        self.communities.expire(tick);
        self.topics.expire(tick);
        self.topics.refresh_top(self.scoring.cohesion_top_topics);
        self.rates.refresh(tick);
        self.distinct
            .close(tick - self.windows.distinct_window_secs);
        let cutoff = tick - self.dedupe.retention_secs;
        for slot in 0..self.ideas.len() {
            let stale = self.ideas[slot]
                .as_ref()
                .is_some_and(|i| i.last_seen <= cutoff);
            if stale {
                self.archive(slot as u32, tick, changes);
            }
        }
        self.forget_archived(tick);
        self.seen_signals.expire(tick);
        if std::mem::take(&mut self.reclassify) {
            self.reclassify_live(changes);
        }
    }

    /// Classifies every live idea with the current anchors; emits the ideas
    /// whose class changed. O(live ideas × anchors), on ticks after the
    /// anchors moved only.
    fn reclassify_live(&mut self, changes: &mut BTreeMap<ViewKey, Option<ViewRow>>) {
        let Some(classifier) = self.classifier.clone() else {
            return;
        };
        for idea in self.ideas.iter_mut().flatten() {
            let class = classifier
                .route(&idea.row.content, &idea.row.embedding)
                .category;
            if idea.row.anchor_class.as_deref() != Some(class.as_str()) {
                idea.row.anchor_class = Some(class);
                changes.insert(
                    ViewKey::Idea(idea.row.id),
                    Some(ViewRow::Idea(Box::new(idea.row.clone()))),
                );
            }
        }
    }

    fn archive(&mut self, slot: u32, tick: i64, changes: &mut BTreeMap<ViewKey, Option<ViewRow>>) {
        self.catch_up(slot);
        let Some(mut idea) = self.ideas[slot as usize].take() else {
            return;
        };
        self.live_sources[idea.row.source as usize] -= 1;
        if let Some(held) = self
            .unflushed
            .take(slot)
            .and_then(|at| held_score(&idea, at))
        {
            self.unflushed.hold_archived(idea.row.id, held);
        }
        self.free.push(slot);
        self.by_id.remove(&idea.row.id);
        if let Some((factors, _)) = idea.score {
            self.archived_factors.insert(idea.row.id.bits(), factors);
        }
        self.archive_order.push_back((tick, idea.hashes[0]));
        if let Some(c) = idea.category_centroid.take() {
            self.categories.release(c);
        }
        if let Some(c) = idea.community_centroid.take() {
            self.communities.release(c);
        }
        for h in &idea.hashes {
            self.by_hash.remove(h);
        }
        for v in &idea.vectors {
            self.near.remove(*v);
        }
        self.archived.insert(
            idea.hashes[0],
            Archived {
                archived_at: tick,
                first_seen: idea.first_seen,
                signal_count: idea.row.signal_count,
                near_duplicates: idea.row.near_duplicates,
                engagement: idea.row.engagement,
            },
        );
        idea.row.status = IdeaStatus::Archived;
        self.stats.archived += 1;
        changes.insert(
            ViewKey::Idea(idea.row.id),
            Some(ViewRow::Idea(Box::new(idea.row))),
        );
    }

    /// Forgets the ideas archived `forget_archived_secs` or more before
    /// `tick`: their content, seen again, starts them over, and feedback
    /// learns nothing more from their last factors. Memory for archived
    /// ideas is then bounded by how many a horizon archives.
    fn forget_archived(&mut self, tick: i64) {
        let horizon = self.dedupe.forget_archived_secs;
        if horizon <= 0 {
            return;
        }
        while let Some(&(at, hash)) = self.archive_order.front() {
            if at > tick - horizon {
                break;
            }
            self.archive_order.pop_front();
            // Not if it came back since (and maybe was archived again later:
            // then a later entry is its own).
            if self
                .archived
                .get(&hash)
                .is_some_and(|a| a.archived_at == at)
            {
                self.archived.remove(&hash);
                // The id an idea gets from its first content hash (create).
                let id = crate::idea::idea_id(&hex::encode(hash)).as_u128();
                self.archived_factors.remove(&id);
                self.forgotten.push(id);
                self.stats.forgotten += 1;
            }
        }
    }

    /// The ids (as [`id_bits`]) of the archived ideas the last begun epoch's
    /// tick forgot, in the order they were archived: the feedback operator
    /// lets go of them too ([`crate::feedback::IdeaFact::Forgotten`]).
    pub fn forgotten(&self) -> &[u128] {
        &self.forgotten
    }

    /// Re-scores `slots` (ascending, distinct) at `watermark`; appends the
    /// slots whose score changed to `changed`, in the order of `slots`. A long
    /// list (every live idea, on a tick) is split over
    /// [`IdeaState::set_scoring_threads`] threads, each re-scoring its own
    /// run of slots; the result is the same for any thread count.
    fn rescore(&mut self, slots: &[u32], watermark: i64, changed: &mut Vec<u32>) {
        // Everything evaluation would compute lazily, computed now: the
        // centroids' f64 mirrors, and the statistics of the sources these
        // ideas come from (only those, as the lazy path would).
        self.categories.refresh_mirrors();
        self.communities.refresh_mirrors();
        let mut sources: Vec<crate::Source> = slots
            .iter()
            .filter_map(|s| self.ideas[*s as usize].as_ref().map(|i| i.row.source))
            .collect();
        sources.sort_unstable();
        sources.dedup();
        for source in sources {
            self.rates.get(source, watermark);
        }
        let inputs = ScoringInputs {
            scoring: &self.scoring,
            weights: &self.weights,
            categories: &self.categories,
            communities: &self.communities,
            topics: &self.topics,
            rates: &self.rates,
            window_start: self.window_start(),
            watermark,
        };
        let threads = if slots.len() < self.parallel_scoring_min {
            1
        } else {
            self.scoring_threads
        };
        inputs.rescore(&mut self.ideas, slots, threads, changed);
    }

    fn emit_aggregates(
        &mut self,
        watermark: i64,
        changes: &mut BTreeMap<ViewKey, Option<ViewRow>>,
    ) {
        let window_start = utc(watermark - self.windows.window_secs);
        let window_end = utc(watermark);
        for (kind, window) in [
            (CentroidKind::Category, &mut self.categories),
            (CentroidKind::Community, &mut self.communities),
        ] {
            for key in window.take_changed() {
                let k = ViewKey::Centroid(kind, key.clone());
                let row = window.get(&key).and_then(|sum| {
                    Some(ViewRow::Centroid(CentroidRow {
                        kind,
                        key: key.clone(),
                        window_start,
                        window_end,
                        n: sum.n as u64,
                        embedding: sum.mean()?,
                    }))
                });
                changes.insert(k, row);
            }
        }
        for (category, topic, count) in self.topics.take_changed() {
            let key = ViewKey::TopicCount(Box::new((category.clone(), topic.clone())));
            let row = (count > 0).then_some(ViewRow::TopicCount(TopicCountRow {
                category,
                topic,
                count,
            }));
            changes.insert(key, row);
        }
        for (source, e) in self.distinct.take_changed() {
            let row = DistinctCountRow {
                source,
                window_start: utc(e.window_start),
                window_end: utc(e.window_end),
                signals: e.signals,
                ideas: e.ideas,
                communities: e.communities,
            };
            changes.insert(
                ViewKey::DistinctCount(source.as_str(), e.window_start),
                Some(ViewRow::DistinctCount(row)),
            );
        }
    }
}

/// An idea's last score, computed at `at`, as its row will say it.
fn held_score(idea: &LiveIdea, at: i64) -> Option<HeldScore> {
    let (factors, score) = idea.score?;
    Some(HeldScore {
        category: idea.row.category.clone(),
        factors,
        score,
        at,
    })
}

fn score_row(id: IdeaId, held: HeldScore) -> Change {
    Change {
        key: ViewKey::Score(id),
        row: Some(ViewRow::Score(ScoreRow {
            idea_id: id,
            category: held.category,
            score: held.score,
            factors: held.factors,
            scored_at: utc(held.at),
        })),
    }
}

fn row_key(row: &SignalRow) -> ViewKey {
    ViewKey::Signal(row.source.as_str(), row.id.clone())
}

fn sorted_topics(topics: &[String]) -> Vec<String> {
    let mut t = topics.to_vec();
    t.sort();
    t.dedup();
    t
}

/// The factors of the last score row emitted for an idea, live or archived.
impl crate::feedback::LatestFactors for IdeaState {
    fn factors(&self, idea_id: &str) -> Option<Factors> {
        let id = IdeaId::parse(idea_id)?;
        match self.by_id.get(&id) {
            Some(slot) => {
                let idea = self.ideas[*slot as usize].as_deref()?;
                match self.deferred.factors(*slot, idea, &self.scoring) {
                    Some(caught_up) => Some(caught_up),
                    None => idea.score.map(|(f, _)| f),
                }
            }
            None => self.archived_factors.get(&id.bits()).copied(),
        }
    }
}

impl std::fmt::Debug for IdeaState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdeaState")
            .field("active_ideas", &self.active_ideas())
            .field("stats", &self.stats)
            .finish()
    }
}

#[cfg(test)]
mod tests;
