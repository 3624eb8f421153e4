//! Saving the idea state whole, and resuming a saved one: what a checkpoint
//! holds of it and how a restart takes it back.
//!
//! The state derives its serde form; what it does not save is what its
//! configuration gives (the calendar, the configured classifier), a run's
//! scratch, and the epoch half done ([`IdeaState::savable`] says when there
//! is none). Embeddings held in several places are written once each and
//! read back shared ([`crate::shared_embedding::shared_while_writing`]).

use std::sync::Arc;

use super::IdeaState;
use crate::classify::{Anchor, Classes};

/// Why a saved state cannot be resumed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResumeError {
    /// The state was saved under other settings that change results.
    #[error(
        "it was saved with other [{0}] settings than the configuration's: \
         a state built under other settings would give other results"
    )]
    Settings(&'static str),
    /// Anchors moved by feedback, but the configuration has no classifier to
    /// move them in.
    #[error("it holds anchors moved by classification feedback, but the configuration classifies nothing")]
    NoClassifier,
}

impl IdeaState {
    /// Whether the state is between epochs, with no tick's evaluation
    /// deferred (only then is it saved: [`IdeaState::catch_up_all`] first).
    pub fn savable(&self) -> bool {
        self.open.is_none() && self.deferred.is_empty()
    }

    /// A copy of what a save writes (the rest left empty), for a checkpoint
    /// to encode on a thread of its own while this state goes on. The
    /// embeddings are shared, not copied: they never change once made, and
    /// sharing keeps the copy to the state's bookkeeping (a fraction of its
    /// memory) and the save's each-embedding-once pooling intact.
    pub fn snapshot(&self) -> Option<IdeaState> {
        if !self.savable() {
            return None;
        }
        Some(std::thread::scope(|scope| {
            // The live ideas (most of the copy's allocations) are copied on
            // helper threads while this one copies the rest.
            let ideas = copy_in_parallel(&self.ideas, self.scoring_threads, scope);
            let mut copy = IdeaState {
                category_names: Default::default(),
                dedupe: self.dedupe.clone(),
                windows: self.windows.clone(),
                scoring: self.scoring.clone(),
                weights: self.weights,
                weights_changed: self.weights_changed,
                classifier: None,
                reclassify: self.reclassify,
                calendar: self.calendar.clone(),
                bloom: self.bloom.clone(),
                near: self.near.snapshot(),
                ideas: Vec::new(),
                free: self.free.clone(),
                by_hash: self.by_hash.clone(),
                archived: self.archived.clone(),
                archive_order: self.archive_order.clone(),
                forgotten: Vec::new(),
                by_id: self.by_id.clone(),
                archived_factors: self.archived_factors.clone(),
                applied_through: self.applied_through,
                open: None,
                own_sums: self.own_sums.clone(),
                categories: self.categories.clone(),
                communities: self.communities.clone(),
                topics: self.topics.clone(),
                rates: self.rates.clone(),
                distinct: self.distinct.clone(),
                last_tick: self.last_tick,
                stats: self.stats,
                scoring_threads: 1,
                parallel_scoring_min: self.parallel_scoring_min,
                seen_signals: self.seen_signals.clone(),
                refused: Default::default(),
                spare_changelog: Vec::new(),
                sums_to_hand: Vec::new(),
                unflushed: self.unflushed.clone(),
                deferred: Default::default(),
                live_sources: self.live_sources,
                top: None,
                moves: Default::default(),
            };
            copy.ideas = ideas.join();
            copy
        }))
    }

    /// The anchors classification feedback moved (saved beside the state:
    /// the classifier itself comes from the configuration).
    pub fn moved_anchors(&self) -> Option<Vec<Anchor>> {
        self.classifier.as_ref().map(|c| c.anchors())
    }

    /// Every centroid's settled sum, as the deltas that give it: a resumed
    /// state's pipeline adds them to its collection of sums (which starts
    /// empty) at the first epoch, so that the sums it hands back go on
    /// from the saved ones.
    pub fn centroid_sums(&self) -> Vec<(super::CentroidKey, crate::centroid::VectorDelta)> {
        let mut sums = Vec::new();
        for (kind, window) in [
            (crate::views::CentroidKind::Category, &self.categories),
            (crate::views::CentroidKind::Community, &self.communities),
        ] {
            sums.extend(
                window
                    .settled_sums()
                    .into_iter()
                    .map(|(key, delta)| ((kind, key), delta)),
            );
        }
        sums
    }

    /// For a resumed state in the pipeline, whose collection of centroid
    /// sums starts empty: the next epoch's deltas start with every sum, so
    /// that the sums the collection hands back go on from the saved ones.
    /// (Without a dataflow, [`IdeaState::apply_epoch`] keeps its own sums,
    /// which were saved; do not call this there.)
    pub fn hand_sums_to_dataflow(&mut self) {
        self.sums_to_hand = self.centroid_sums();
    }

    /// Takes back `saved` (as [`IdeaState`]'s serde form wrote it) in place
    /// of `fresh` (built from the configuration): the configuration's parts
    /// come from `fresh`, which must have the same settings, and
    /// `moved_anchors` are put back into `base`, the configured classifier.
    pub fn resume(
        mut saved: IdeaState,
        fresh: IdeaState,
        moved_anchors: Option<Vec<Anchor>>,
        base: Option<&Classes>,
    ) -> Result<IdeaState, ResumeError> {
        if saved.dedupe != fresh.dedupe {
            return Err(ResumeError::Settings("dedupe"));
        }
        if saved.windows != fresh.windows {
            return Err(ResumeError::Settings("windows"));
        }
        if saved.scoring != fresh.scoring {
            return Err(ResumeError::Settings("scoring"));
        }
        if saved.calendar != fresh.calendar {
            return Err(ResumeError::Settings("calendar"));
        }
        saved.classifier = match (moved_anchors, base) {
            (Some(anchors), Some(base)) => Some(Arc::new(base.with_anchors(anchors))),
            (Some(_), None) => return Err(ResumeError::NoClassifier),
            (None, _) => None,
        };
        saved.scoring_threads = fresh.scoring_threads;
        saved.parallel_scoring_min = fresh.parallel_scoring_min;
        saved.refused = fresh.refused;
        // One shared name per category again (the saved rows each read back
        // their own copy).
        let mut names = std::mem::take(&mut saved.category_names);
        for idea in saved.ideas.iter_mut().flatten() {
            saved.live_sources[idea.row.source as usize] += 1;
            if let Some(c) = &mut idea.row.category {
                match names.get(&**c) {
                    Some(shared) => *c = shared.clone(),
                    None => {
                        names.insert(c.clone());
                    }
                }
            }
        }
        saved.category_names = names;
        Ok(saved)
    }
}

/// `items` copied in `threads` parts on threads of their own (a thread the
/// OS refuses to start leaves its part to [`ParallelCopy::join`]).
fn copy_in_parallel<'scope, T: Clone + Send + Sync>(
    items: &'scope [T],
    threads: usize,
    scope: &'scope std::thread::Scope<'scope, '_>,
) -> ParallelCopy<'scope, T> {
    let part = items.len().div_ceil(threads.max(1)).max(1);
    let parts = items
        .chunks(part)
        .map(|chunk| {
            let copying = std::thread::Builder::new()
                .name("ideaflow-snapshot".into())
                .spawn_scoped(scope, move || chunk.to_vec())
                .ok();
            (chunk, copying)
        })
        .collect();
    ParallelCopy {
        parts,
        len: items.len(),
    }
}

type Copying<'scope, T> = Option<std::thread::ScopedJoinHandle<'scope, Vec<T>>>;

struct ParallelCopy<'scope, T> {
    parts: Vec<(&'scope [T], Copying<'scope, T>)>,
    len: usize,
}

impl<T: Clone> ParallelCopy<'_, T> {
    /// The parts put together, in order.
    fn join(self) -> Vec<T> {
        let mut all = Vec::with_capacity(self.len);
        for (chunk, copying) in self.parts {
            match copying {
                Some(handle) => match handle.join() {
                    Ok(part) => all.extend(part),
                    Err(panic) => std::panic::resume_unwind(panic),
                },
                None => all.extend_from_slice(chunk),
            }
        }
        all
    }
}
