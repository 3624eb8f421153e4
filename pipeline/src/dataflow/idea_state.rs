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
use ideaflow_operators::idea_state::{prepare, IdeaState, Labels, PreparedSignal};
use ideaflow_operators::score::ScoringParams;
use ideaflow_operators::views::Change;
use ideaflow_operators::Signal;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
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
/// changelog (sorted by key) at the epoch's time.
pub fn apply_to_state<'scope>(
    prepared: Stream<'scope, u64, Vec<PreparedSignal>>,
    state: Option<IdeaState>,
    epoch_secs: u64,
) -> Stream<'scope, u64, Vec<Change>> {
    prepared.unary_frontier::<CapacityContainerBuilder<Vec<Change>>, _, _, _>(
        Exchange::new(|_: &PreparedSignal| 0),
        "IdeaState",
        move |_cap, _info| {
            let mut state = state;
            let mut pending: BTreeMap<u64, (Capability<u64>, Vec<PreparedSignal>)> =
                BTreeMap::new();
            move |(input, frontier), output| {
                input.for_each_stamp(|cap, data| {
                    let t = *cap.least().expect("a totally ordered time");
                    let Some(cap) = cap.retain_least(output.output_index()) else {
                        return;
                    };
                    let entry = pending.entry(t).or_insert_with(|| (cap, Vec::new()));
                    for d in data {
                        entry.1.append(d);
                    }
                });
                while let Some(entry) = pending.first_entry() {
                    if frontier.less_equal(entry.key()) {
                        break;
                    }
                    let (t, (cap, signals)) = entry.remove_entry();
                    let Some(state) = state.as_mut() else {
                        // Only worker 0 is routed data; others never get here.
                        continue;
                    };
                    let changes = state.apply_epoch((t + epoch_secs) as i64, signals);
                    output.session(&cap).give_iterator(changes.into_iter());
                }
            }
        },
    )
}
