//! The idea state as a timely operator. Prepared signals (hashed, signed,
//! labelled on every worker) meet on one worker, which owns the state and
//! applies each epoch once the frontier has passed it, in time order: the
//! changelog it emits is the same whatever the worker count or arrival order.
//!
//! One owner keeps near-duplicate lookups and the per-source statistics exact
//! and global; the parallel work (parsing, embedding, hashing, LSH signatures,
//! labels) happens before it.

use std::collections::BTreeMap;
use std::sync::Arc;

use ideaflow_operators::dedupe::LshIndex;
use ideaflow_operators::feedback::FeedbackState;
use ideaflow_operators::idea_state::{prepare, IdeaState, Labels, PreparedSignal};
use ideaflow_operators::score::ScoringParams;
use ideaflow_operators::score::Weights;
use ideaflow_operators::views::Change;
use ideaflow_operators::{Event, Signal};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Capability, Operator};
use timely::dataflow::Stream;

/// What every worker needs to prepare signals.
pub struct PrepareContext {
    pub lsh: LshIndex,
    pub labels: Arc<Labels>,
    pub scoring: ScoringParams,
}

pub fn prepare_signals<'scope>(
    signals: Stream<'scope, u64, Vec<Signal>>,
    context: Arc<PrepareContext>,
) -> Stream<'scope, u64, Vec<PreparedSignal>> {
    signals.map(move |s| prepare(s, &context.lsh, &context.labels, &context.scoring))
}

/// Applies completed epochs to the state on worker 0; emits each epoch's
/// changelog (sorted by key) at the epoch's time. `weights` is the feedback
/// edge: scoring weights learned from marketplace feedback, which take effect
/// in the first epoch at or after their time.
pub fn apply_to_state<'scope>(
    prepared: Stream<'scope, u64, Vec<PreparedSignal>>,
    weights: Stream<'scope, u64, Vec<Weights>>,
    state: Option<IdeaState>,
    epoch_secs: u64,
) -> Stream<'scope, u64, Vec<Change>> {
    prepared.binary_frontier::<_, CapacityContainerBuilder<Vec<Change>>, _, _, _, _>(
        weights,
        Exchange::new(|_: &PreparedSignal| 0),
        Pipeline,
        "IdeaState",
        move |_cap, _info| {
            let mut state = state;
            let mut pending: BTreeMap<u64, (Capability<u64>, Vec<PreparedSignal>)> =
                BTreeMap::new();
            let mut learned: BTreeMap<u64, Vec<Weights>> = BTreeMap::new();
            move |(signals_in, signals_frontier), (weights_in, weights_frontier), output| {
                signals_in.for_each_stamp(|cap, data| {
                    let t = *cap.least().expect("a totally ordered time");
                    let Some(cap) = cap.retain_least(output.output_index()) else {
                        return;
                    };
                    let entry = pending.entry(t).or_insert_with(|| (cap, Vec::new()));
                    for d in data {
                        entry.1.append(d);
                    }
                });
                weights_in.for_each_stamp(|cap, data| {
                    let t = *cap.least().expect("a totally ordered time");
                    let entry = learned.entry(t).or_default();
                    for d in data {
                        entry.append(d);
                    }
                });
                while let Some(entry) = pending.first_entry() {
                    let t = *entry.key();
                    if signals_frontier.less_equal(&t) || weights_frontier.less_equal(&t) {
                        break;
                    }
                    let (t, (cap, signals)) = entry.remove_entry();
                    let Some(state) = state.as_mut() else {
                        // Only worker 0 is routed data; others never get here.
                        continue;
                    };
                    while let Some(w) = learned.first_entry() {
                        if *w.key() > t {
                            break;
                        }
                        for weights in w.remove() {
                            state.set_weights(weights);
                        }
                    }
                    let changes = state.apply_epoch((t + epoch_secs) as i64, signals);
                    output.session(&cap).give_iterator(changes.into_iter());
                }
            }
        },
    )
}

/// What the feedback operator emits: view changes for the sinks, and new
/// weights for the idea state (through the loop).
#[derive(Clone)]
pub enum FeedbackOut {
    Change(Box<Change>),
    Weights(Weights),
}

/// Joins listing and feedback events with the idea state's changelog on
/// worker 0 and applies each completed epoch to the feedback state
/// (windows, A/B tests, allocations, weight learning).
pub fn apply_feedback<'scope>(
    events: Stream<'scope, u64, Vec<Event>>,
    idea_changes: Stream<'scope, u64, Vec<Change>>,
    state: Option<FeedbackState>,
    epoch_secs: u64,
) -> Stream<'scope, u64, Vec<FeedbackOut>> {
    events.binary_frontier::<_, CapacityContainerBuilder<Vec<FeedbackOut>>, _, _, _, _>(
        idea_changes,
        Exchange::new(|_: &Event| 0),
        Pipeline,
        "Feedback",
        move |_cap, _info| {
            let mut state = state;
            type Epoch = (Option<Capability<u64>>, Vec<Event>, Vec<Change>);
            let mut pending: BTreeMap<u64, Epoch> = BTreeMap::new();
            move |(events_in, events_frontier), (changes_in, changes_frontier), output| {
                events_in.for_each_stamp(|cap, data| {
                    let t = *cap.least().expect("a totally ordered time");
                    let entry = pending.entry(t).or_default();
                    if entry.0.is_none() {
                        entry.0 = cap.retain_least(output.output_index());
                    }
                    for d in data {
                        entry.1.append(d);
                    }
                });
                changes_in.for_each_stamp(|cap, data| {
                    let t = *cap.least().expect("a totally ordered time");
                    let entry = pending.entry(t).or_default();
                    if entry.0.is_none() {
                        entry.0 = cap.retain_least(output.output_index());
                    }
                    for d in data {
                        entry.2.append(d);
                    }
                });
                while let Some(entry) = pending.first_entry() {
                    let t = *entry.key();
                    if events_frontier.less_equal(&t) || changes_frontier.less_equal(&t) {
                        break;
                    }
                    let (t, (cap, events, changes)) = entry.remove_entry();
                    let (Some(state), Some(cap)) = (state.as_mut(), cap) else {
                        continue;
                    };
                    let out = state.apply_epoch((t + epoch_secs) as i64, events, &changes);
                    let mut session = output.session(&cap);
                    session.give_iterator(
                        out.changes
                            .into_iter()
                            .map(|c| FeedbackOut::Change(Box::new(c))),
                    );
                    if let Some(w) = out.new_weights {
                        session.give(FeedbackOut::Weights(w));
                    }
                }
            }
        },
    )
}
