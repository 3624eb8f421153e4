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
    /// Whether the state is between epochs (only then is it saved).
    pub fn savable(&self) -> bool {
        self.open.is_none()
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
