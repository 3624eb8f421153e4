//! Score rows a batch of epochs holds back: when the frontier passes
//! several epochs at once (a replay, a catch-up), no reader can see a score
//! between two of them, so each idea's score row is emitted once, with its
//! last value, when the batch ends ([`super::IdeaState::finish_epoch_batched`]).
//!
//! A tick re-scores every live idea: emitting a row per idea per tick was
//! most of the changelog (93 rows per signal on the core bench's hourly
//! ticks), each built, handed on and folded away by the consumer. What a
//! batch holds back instead is a timestamp per slot, plus the last scores
//! of the ideas it archived.
//!
//! A checkpoint may fall inside a batch (the state is saved with what it
//! holds back, and a resumed state emits it when its batch ends): the sinks
//! then hold every epoch before the checkpoint but those scores, and the
//! checkpoint holds them.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::idea::IdeaId;
use crate::score::Factors;

/// No score row held back for the slot.
const NONE: i64 = i64::MIN;

/// An archived idea's last score, held back: its row's content.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct HeldScore {
    pub category: Option<Arc<str>>,
    pub factors: Factors,
    pub score: f64,
    /// When it was computed.
    pub at: i64,
}

#[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct Unflushed {
    /// Per slot: the watermark at which its idea's score last changed,
    /// since its row was last emitted (`NONE`: nothing held).
    changed_at: Vec<i64>,
    /// The slots marked since the last flush, in the order marked (a slot
    /// archived and taken again may appear twice).
    marked: Vec<u32>,
    /// Slots holding a row back.
    count: usize,
    /// The last scores of ideas archived before their row was emitted, by
    /// id (an idea archived twice in a batch keeps its last).
    archived: BTreeMap<IdeaId, HeldScore>,
    /// Ticks begun since the last flush.
    pub ticks: usize,
}

impl Unflushed {
    /// The score of `slot`'s idea changed at `watermark`.
    pub fn mark(&mut self, slot: u32, watermark: i64) {
        let s = slot as usize;
        if s >= self.changed_at.len() {
            self.changed_at.resize(s + 1, NONE);
        }
        if self.changed_at[s] == NONE {
            self.count += 1;
            self.marked.push(slot);
        }
        self.changed_at[s] = watermark;
    }

    /// When the score of `slot`'s idea last changed, if its row is held
    /// back; the slot holds nothing back afterwards (its idea is leaving it).
    pub fn take(&mut self, slot: u32) -> Option<i64> {
        let at = self.changed_at.get_mut(slot as usize)?;
        if *at == NONE {
            return None;
        }
        self.count -= 1;
        Some(std::mem::replace(at, NONE))
    }

    /// Keeps an archived idea's last score for the flush.
    pub fn hold_archived(&mut self, id: IdeaId, score: HeldScore) {
        self.archived.insert(id, score);
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.count == 0 && self.archived.is_empty()
    }

    /// Rows held back: the slots' and the archived ideas'.
    pub fn len(&self) -> usize {
        self.count + self.archived.len()
    }

    /// Ends the batch: the archived ideas' scores (by id), and the slots
    /// holding a row back with when their score changed, ascending.
    pub fn drain(&mut self) -> (BTreeMap<IdeaId, HeldScore>, Vec<(u32, i64)>) {
        let mut slots = std::mem::take(&mut self.marked);
        slots.sort_unstable();
        slots.dedup();
        let held: Vec<(u32, i64)> = slots
            .into_iter()
            .filter_map(|s| Some((s, self.take(s)?)))
            .collect();
        debug_assert_eq!(self.count, 0, "every held slot was marked");
        self.ticks = 0;
        (std::mem::take(&mut self.archived), held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_gives_each_slot_once_with_its_last_change() {
        let mut u = Unflushed::default();
        u.mark(5, 100);
        u.mark(2, 100);
        u.mark(5, 160);
        assert_eq!(u.len(), 2);
        // Slot 2's idea leaves it, and a new one takes it later.
        assert_eq!(u.take(2), Some(100));
        assert_eq!(u.take(2), None);
        u.mark(2, 220);
        u.mark(9, 220);
        let (archived, held) = u.drain();
        assert!(archived.is_empty());
        assert_eq!(held, vec![(2, 220), (5, 160), (9, 220)]);
        assert!(u.is_empty());
        assert_eq!(u.drain().1, vec![]);
    }
}
