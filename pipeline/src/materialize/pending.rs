//! Completed epochs waiting for the sinks, merged key by key.
//!
//! While the sinks write one batch, the dataflow goes on completing epochs.
//! They wait here, folded into one changelog holding each key's latest change:
//! a score re-issued on every tick while a write was in flight is written
//! once. Every key's last change wins, as it would if each epoch were written
//! in turn, so the materialized state after a batch is the state after its
//! last epoch, and each batch is still one transaction per sink (a reader
//! never sees part of an epoch; it may see fewer of them).

use std::collections::HashMap;

use ideaflow_operators::views::{Change, ViewKey};
use ideaflow_sinks::redis_sink::EpochMoves;

#[derive(Default)]
pub struct PendingEpochs {
    /// How many epochs were folded in, and where the last one ends.
    pub epochs: usize,
    pub last_epoch: i64,
    /// At most one change per key, in the order keys first appeared.
    changes: Vec<Change>,
    /// Where each key's change sits in `changes`; built only once a second
    /// epoch arrives (a sink that keeps up never pays for it).
    at: HashMap<ViewKey, usize>,
    /// Each folded epoch's top-K moves, in epoch order (the `idea.scored`
    /// events are per epoch, whatever the batching).
    pub moves: Vec<EpochMoves>,
    /// The sources' positions committed with the last folded epoch (JSON).
    pub positions: Option<serde_json::Value>,
}

impl PendingEpochs {
    /// Folds in the next epoch (at most one change per key, as the dataflow
    /// emits them).
    pub fn push(&mut self, epoch_end: i64, changes: Vec<Change>, moves: EpochMoves) {
        if self.epochs == 0 {
            self.changes = changes;
        } else {
            if self.at.is_empty() {
                self.at = self
                    .changes
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.key.clone(), i))
                    .collect();
            }
            for change in changes {
                match self.at.get(&change.key) {
                    Some(&i) => self.changes[i] = change,
                    None => {
                        self.at.insert(change.key.clone(), self.changes.len());
                        self.changes.push(change);
                    }
                }
            }
        }
        if !moves.moves.is_empty() {
            self.moves.push(moves);
        }
        self.epochs += 1;
        self.last_epoch = epoch_end;
    }

    pub fn is_empty(&self) -> bool {
        self.epochs == 0
    }

    /// Changes waiting (distinct keys).
    pub fn len(&self) -> usize {
        self.changes.len()
    }

    pub fn changes(&self) -> &[Change] {
        &self.changes
    }

    pub fn into_changes(self) -> Vec<Change> {
        self.changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ideaflow_operators::views::ViewState;

    /// A topic count: the simplest keyed row.
    fn change(topic: &str, count: Option<u64>) -> Change {
        use ideaflow_operators::views::{TopicCountRow, ViewRow};
        Change {
            key: ViewKey::TopicCount(Box::new(("food".into(), topic.into()))),
            row: count.map(|count| {
                ViewRow::TopicCount(TopicCountRow {
                    category: "food".into(),
                    topic: topic.into(),
                    count,
                })
            }),
        }
    }

    #[test]
    fn a_batch_leaves_the_state_its_epochs_leave_in_turn() {
        let epochs = vec![
            vec![change("a", Some(1)), change("b", Some(1))],
            vec![change("a", Some(2)), change("c", Some(1))],
            vec![change("b", None), change("d", Some(1))],
            vec![change("c", None), change("b", Some(3))],
        ];
        let mut one_by_one = ViewState::default();
        let mut pending = PendingEpochs::default();
        for (t, e) in epochs.into_iter().enumerate() {
            one_by_one.apply(e.clone());
            pending.push(t as i64, e, EpochMoves::default());
        }
        assert_eq!((pending.epochs, pending.last_epoch), (4, 3));
        assert_eq!(pending.len(), 4, "one change per key");
        let mut batched = ViewState::default();
        batched.apply(pending.into_changes());
        assert_eq!(
            batched.rows().collect::<Vec<_>>(),
            one_by_one.rows().collect::<Vec<_>>()
        );
    }
}
