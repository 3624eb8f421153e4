//! Near-duplicate lookups made ahead, on several threads: an epoch's signals
//! are applied in order on one thread, but each one's lookup against the
//! index as it stood before the epoch only reads it. Applying a signal then
//! completes its prematch with the vectors the epoch inserted before it
//! ([`NearIndex::complete`](crate::dedupe::NearIndex::complete)), which gives
//! exactly what a lookup at that moment would.

use std::collections::HashSet;

use super::{IdeaState, PreparedSignal};
use crate::dedupe::Prematch;

/// Fewer lookups than this are made in order: a thread's start costs about
/// what one lookup among thousands of candidates does.
const PARALLEL_PREMATCH_MIN: usize = 8;

impl IdeaState {
    /// A prematch for each signal that may need a near-duplicate lookup (its
    /// content is not a live idea's, and it is the first of its content in
    /// the epoch), made on the scoring threads; empty when there are too few
    /// or one thread. A signal without one is looked up when it is applied.
    pub(super) fn prematch_epoch(&self, signals: &[PreparedSignal]) -> Vec<Option<Prematch>> {
        let mut seen = HashSet::with_capacity(signals.len());
        let wanted: Vec<bool> = signals
            .iter()
            .map(|s| !self.by_hash.contains_key(&s.hash) && seen.insert(s.hash))
            .collect();
        let lookups = wanted.iter().filter(|w| **w).count();
        let threads = self.scoring_threads.min(lookups);
        if threads <= 1 || lookups < PARALLEL_PREMATCH_MIN {
            return Vec::new();
        }
        let threshold = self.dedupe.near_threshold;
        let prematch_part = |part: &[(&PreparedSignal, &bool)]| -> Vec<Option<Prematch>> {
            part.iter()
                .map(|(s, wanted)| {
                    wanted.then(|| self.near.prematch(&s.embedding, &s.signatures, threshold))
                })
                .collect()
        };
        let items: Vec<(&PreparedSignal, &bool)> = signals.iter().zip(&wanted).collect();
        let chunk = items.len().div_ceil(threads);
        std::thread::scope(|scope| {
            // A part whose thread cannot be started (the OS refused one) is
            // looked up when its signals are applied instead.
            let others: Vec<_> = items
                .chunks(chunk)
                .skip(1)
                .map(|part| {
                    std::thread::Builder::new()
                        .name("ideaflow-prematch".into())
                        .spawn_scoped(scope, move || prematch_part(part))
                        .ok()
                })
                .collect();
            let mut all = prematch_part(&items[..chunk]);
            for (part, other) in items.chunks(chunk).skip(1).zip(others) {
                match other.map(|handle| handle.join()) {
                    Some(Ok(found)) => all.extend(found),
                    Some(Err(panic)) => std::panic::resume_unwind(panic),
                    None => all.extend(part.iter().map(|_| None)),
                }
            }
            all
        })
    }
}
