//! Hands each completed epoch's changelog to a consumer on worker 0, in epoch
//! order, once the frontier has passed it: consumers see whole epochs only.

use std::collections::BTreeMap;

use ideaflow_operators::top_k::TopKDelta;
use ideaflow_operators::views::Change;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Operator;
use timely::dataflow::Stream;

use std::sync::atomic::Ordering;

use super::idea_state::SharedState;
use crate::source_status::RepeatCounters;

/// Where completed epochs go: the replay's in-memory views, the Postgres and
/// Redis sinks, a null sink for benchmarks.
pub trait EpochConsumer: Send {
    /// `epoch_end` is the epoch's watermark in seconds; `changes` holds at
    /// most one change per key, in an order that is deterministic but not
    /// sorted (see `IdeaState::apply_epoch`). Drain it, or take it when the
    /// rows must outlive the call: the buffer left behind goes back to the
    /// idea state for a later epoch's changelog. `moves` are the epoch's
    /// top-K moves per category, when the consumer keeps top lists
    /// ([`EpochConsumer::top_k`]).
    ///
    /// In a batch of epochs (a backlog) the score rows of all of them come
    /// with its last epoch, one per idea: a consumer that stops between two
    /// epochs of a batch has their other rows without those scores.
    fn epoch(
        &mut self,
        epoch_end: i64,
        changes: &mut Vec<Change>,
        moves: BTreeMap<String, TopKDelta>,
    ) -> anyhow::Result<()>;
    /// How many ideas per category the consumer's top lists hold, if it
    /// keeps any: the idea state ranks them and hands each epoch's moves.
    fn top_k(&self) -> Option<usize> {
        None
    }
    /// Every epoch starting before `complete_before` (seconds; `i64::MAX`
    /// once the inputs ended) is complete and was handed over (those with
    /// changes): records read into them may be acknowledged once what was
    /// handed over is committed.
    fn frontier(&mut self, _complete_before: i64) -> anyhow::Result<()> {
        Ok(())
    }
    /// Called once after the last epoch.
    fn finish(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// `state`, where each delivered changelog's buffer is recycled, is the
/// idea state that emitted them (present on worker 0 only, with the consumer).
/// Epochs starting at or after `cutoff` are not handed over: a stop set it
/// at the first epoch that was not complete when reading stopped.
pub fn deliver_epochs<'scope>(
    changes: Stream<'scope, u64, Vec<Change>>,
    mut consumer: Option<Box<dyn EpochConsumer>>,
    state: SharedState,
    epoch_secs: u64,
    failed: std::sync::Arc<std::sync::Mutex<Option<anyhow::Error>>>,
    cutoff: std::sync::Arc<std::sync::atomic::AtomicU64>,
    repeats: Option<std::sync::Arc<RepeatCounters>>,
) -> Stream<'scope, u64, Vec<()>> {
    changes.unary_frontier::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
        // The idea state emits on worker 0, where the consumer lives.
        Pipeline,
        "DeliverEpochs",
        move |_cap, _info| {
            let mut pending: BTreeMap<u64, Vec<Change>> = BTreeMap::new();
            let mut complete_before = 0u64;
            move |(input, frontier), _output| {
                input.for_each_stamp(|cap, data| {
                    let t = *cap.least().expect("a totally ordered time");
                    let epoch = pending.entry(t).or_default();
                    for d in data {
                        // The idea state sends an epoch's changelog as one
                        // container: take it whole rather than copy it.
                        if epoch.is_empty() {
                            std::mem::swap(epoch, d);
                        } else {
                            epoch.append(d);
                        }
                    }
                });
                // An epoch whose changelog is empty (its signals all
                // repeats, its scores held back by a batch) may still have
                // moved the top lists.
                if let Some(state) = state.borrow().as_ref() {
                    for end in state.moved_epochs() {
                        pending
                            .entry((end as u64).saturating_sub(epoch_secs))
                            .or_default();
                    }
                }
                while let Some(entry) = pending.first_entry() {
                    if frontier.less_equal(entry.key()) {
                        break;
                    }
                    let (t, mut changes) = entry.remove_entry();
                    let epoch_end = (t + epoch_secs) as i64;
                    let moves = state
                        .borrow_mut()
                        .as_mut()
                        .map(|s| s.take_moves(epoch_end))
                        .unwrap_or_default();
                    let beyond = t >= cutoff.load(std::sync::atomic::Ordering::SeqCst);
                    let Some(c) = consumer.as_mut().filter(|_| !beyond) else {
                        continue;
                    };
                    if let Err(e) = c.epoch(epoch_end, &mut changes, moves) {
                        tracing::error!(error = %e, epoch = t, "a sink failed; stopping delivery");
                        failed.lock().expect("not poisoned").get_or_insert(e);
                        consumer = None;
                    }
                    if let Some(state) = state.borrow_mut().as_mut() {
                        state.recycle_changelog(changes);
                        if let Some(r) = &repeats {
                            let stats = state.stats();
                            r.signal_repeats.store(stats.repeats, Ordering::Relaxed);
                            r.signal_repolls.store(stats.repolls, Ordering::Relaxed);
                            r.refused(&state.take_refused());
                            r.applied_through(t);
                        }
                    }
                }
                // An empty frontier: every epoch is complete (`i64::MAX`),
                // unless a stop cut them off.
                let done = frontier.frontier().first().copied().unwrap_or(u64::MAX);
                let done = done.min(cutoff.load(std::sync::atomic::Ordering::SeqCst));
                if done > complete_before {
                    complete_before = done;
                    if let Some(c) = consumer.as_mut() {
                        if let Err(e) = c.frontier(i64::try_from(done).unwrap_or(i64::MAX)) {
                            failed.lock().expect("not poisoned").get_or_insert(e);
                            consumer = None;
                        }
                    }
                }
                if frontier.is_empty() {
                    if let Some(mut c) = consumer.take() {
                        if let Err(e) = c.finish() {
                            failed.lock().expect("not poisoned").get_or_insert(e);
                        }
                    }
                }
            }
        },
    )
}
