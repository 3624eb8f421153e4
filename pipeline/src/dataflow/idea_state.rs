//! The idea state as a timely operator. Prepared signals (hashed, signed,
//! labelled on every worker) meet on one worker, which owns the state and
//! applies each epoch once the frontier has passed it, in time order: the
//! changelog it emits is the same whatever the worker count or arrival order.
//!
//! One owner keeps near-duplicate lookups and the per-source statistics exact
//! and global; the parallel work (parsing, embedding, hashing, LSH signatures,
//! labels) happens before it. The rolling centroids' sums are a differential
//! collection beside it ([`centroid_sums`]), which each epoch goes through
//! before it is scored.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::wire::WirePrepared;
use crate::model_files::LazyEmbedder;
use differential_dataflow::operators::arrange::arrangement::arrange_core;
use differential_dataflow::trace::implementations::{KeyBatcher, KeySpine, ValBuilder, ValSpine};
use ideaflow_operators::centroid::VectorDelta;
use ideaflow_operators::classify::Classes;
use ideaflow_operators::dedupe::LshIndex;
use ideaflow_operators::feedback::{EmbeddedCorrection, IdeaFact, LatestFactors};
use ideaflow_operators::idea_state::{prepare, CentroidKey, IdeaState, Labels, PreparedSignal};
use ideaflow_operators::score::ScoringParams;
use ideaflow_operators::score::Weights;
use ideaflow_operators::views::{Change, ViewKey};
use ideaflow_operators::Payload;
use ideaflow_operators::{Event, Signal};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Capability, Operator};
use timely::dataflow::Stream;

/// The idea state, owned by the idea state operator and read by the
/// feedback operator on the same worker (`None` on the others).
pub type SharedState = Rc<RefCell<Option<IdeaState>>>;

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

/// A centroid's change in one epoch, as a differential update: ((key, ()),
/// time, delta), the delta being the difference type; keyed with no value,
/// as an arrangement by key takes it.
pub type CentroidDeltaUpdate = ((CentroidKey, ()), u64, VectorDelta);

/// A change of the centroid sums collection: (key, its sum), time, ±1.
pub type CentroidSumUpdate = ((CentroidKey, VectorDelta), u64, isize);

/// The rolling centroids as a differential collection: the idea state's
/// per-epoch deltas (the difference type is the vector sum) arranged by key
/// and accumulated into each key's sum, as `count` does. Each epoch's output
/// holds a retraction of a key's old sum and its new one.
///
/// Arranged where the deltas are made (the `Pipeline` contract, not
/// `count`'s exchange by key): only the state's owner makes them, every
/// epoch waits for its sums, and a key sharded to another worker would make
/// each epoch wait until that worker, busy preparing signals, is scheduled.
/// There are a few dozen keys, so one worker sums them at no cost.
pub fn centroid_sums<'scope>(
    deltas: Stream<'scope, u64, Vec<CentroidDeltaUpdate>>,
) -> Stream<'scope, u64, Vec<CentroidSumUpdate>> {
    arrange_core::<_, _, KeyBatcher<CentroidKey, u64, VectorDelta>, KeySpine<CentroidKey, u64, VectorDelta>>(
        deltas,
        Pipeline,
        "CentroidDeltas",
        KeyBatcher::new,
    )
    .reduce_abelian::<_, ValBuilder<CentroidKey, VectorDelta, u64, isize>, ValSpine<CentroidKey, VectorDelta, u64, isize>, _, _>(
        "CentroidSums",
        |_key, deltas, sum| sum.push((deltas[0].1.clone(), 1)),
        |rows, key, updates| {
            rows.clear();
            rows.extend(updates.drain(..).map(|(sum, t, r)| ((key.clone(), sum), t, r)));
        },
    )
    .as_collection(|key, sum| (key.clone(), sum.clone()))
    .inner
}

/// The idea state's outputs: the changelog, the facts feedback reads, and
/// the centroid deltas that go around the differential loop.
pub type StateOutputs<'scope> = (
    Stream<'scope, u64, Vec<Change>>,
    Stream<'scope, u64, Vec<IdeaFact>>,
    Stream<'scope, u64, Vec<CentroidDeltaUpdate>>,
);

/// Applies completed epochs to the state on worker 0; emits each epoch's
/// changelog at the epoch's time, and beside it what feedback needs of it
/// ([`IdeaFact`]s). `weights` is the feedback edge: scoring weights learned
/// from marketplace feedback, which take effect in the first epoch at or
/// after their time.
///
/// An epoch goes around a second loop, through differential: its first half
/// ([`IdeaState::begin_epoch`]) emits the centroids' deltas at the epoch's
/// time t (the third output); [`centroid_sums`] accumulates them and its
/// changes come back on `sums`, one time unit later (t + 1, the loop's
/// delay); once `sums` has passed t + 1 the second half
/// ([`IdeaState::finish_epoch`]) settles the centroids and scores. The
/// changelog and facts of t wait for it; the next epoch begins after it.
///
/// The facts leave on an output of their own rather than through a split
/// downstream: on a tick the changelog holds a score row per live idea, and
/// every operator hop moves each row once more.
///
/// Epochs are applied in batches while the inputs are a backlog (files at
/// full speed): a batch ends once it spans `tick_batch` ticks, when no
/// later signal is waiting (the inputs ended, or went quiet), or when the
/// backlog is read; only then are its score rows emitted, one per idea
/// whose score changed in it ([`IdeaState::finish_epoch_batched`]). Live
/// and paced inputs have every epoch emit its own.
pub fn apply_to_state<'scope>(
    prepared: Stream<'scope, u64, Vec<PreparedSignal>>,
    learned: Stream<'scope, u64, Vec<Learned>>,
    sums: Stream<'scope, u64, Vec<CentroidSumUpdate>>,
    state: SharedState,
    batching: Batching,
    arrived: Arc<AtomicU64>,
) -> StateOutputs<'scope> {
    let Batching {
        epoch_secs,
        tick_batch,
        backlog,
    } = batching;
    let mut builder = OperatorBuilder::new("IdeaState".to_owned(), prepared.scope());
    let mut signals_in = builder.new_input(
        prepared.map(WirePrepared),
        Exchange::new(|_: &WirePrepared| 0),
    );
    let mut weights_in = builder.new_input(learned, Pipeline);
    let mut sums_in = builder.new_input(sums, Exchange::new(|_: &CentroidSumUpdate| 0));
    let (changes_out, changes) = builder.new_output::<Vec<Change>>();
    let (facts_out, facts) = builder.new_output::<Vec<IdeaFact>>();
    let (deltas_out, deltas) = builder.new_output::<Vec<CentroidDeltaUpdate>>();
    let mut changes_out =
        OutputBuilder::<_, CapacityContainerBuilder<Vec<Change>>>::from(changes_out);
    let mut facts_out =
        OutputBuilder::<_, CapacityContainerBuilder<Vec<IdeaFact>>>::from(facts_out);
    let mut deltas_out =
        OutputBuilder::<_, CapacityContainerBuilder<Vec<CentroidDeltaUpdate>>>::from(deltas_out);
    builder.build(move |_initial| {
        let mut logged = false;
        // Per epoch: a capability on each output, and its signals.
        type Epoch = (
            Capability<u64>,
            Capability<u64>,
            Capability<u64>,
            Vec<PreparedSignal>,
        );
        let mut pending: BTreeMap<u64, Epoch> = BTreeMap::new();
        let mut learned: BTreeMap<u64, Vec<Learned>> = BTreeMap::new();
        // The centroid sums' changes, by the time they arrived at.
        let mut settled: BTreeMap<u64, Vec<CentroidSumUpdate>> = BTreeMap::new();
        // The epoch begun and waiting for its sums: its time, and the
        // capabilities its changelog and facts are given at.
        let mut open: Option<(u64, Capability<u64>, Capability<u64>)> = None;
        move |frontiers| {
            let (signals_frontier, weights_frontier, sums_frontier) =
                (&frontiers[0], &frontiers[1], &frontiers[2]);
            let mut changes_out = changes_out.activate();
            let mut facts_out = facts_out.activate();
            let mut deltas_out = deltas_out.activate();
            signals_in.for_each_stamp(|cap, data| {
                let t = *cap.least().expect("a totally ordered time");
                let (Some(c0), Some(c1), Some(c2)) =
                    (cap.retain_least(0), cap.retain_least(1), cap.retain_least(2))
                else {
                    return;
                };
                let entry = pending
                    .entry(t)
                    .or_insert_with(|| (c0, c1, c2, Vec::new()));
                for d in data {
                    arrived.fetch_add(d.len() as u64, Ordering::Relaxed);
                    entry.3.extend(d.drain(..).map(|w| w.0));
                }
            });
            weights_in.for_each_stamp(|cap, data| {
                let t = *cap.least().expect("a totally ordered time");
                let entry = learned.entry(t).or_default();
                for d in data {
                    entry.append(d);
                }
            });
            sums_in.for_each_stamp(|cap, data| {
                let t = *cap.least().expect("a totally ordered time");
                let entry = settled.entry(t).or_default();
                for d in data {
                    entry.append(d);
                }
            });
            loop {
                if let Some((t, _, _)) = &open {
                    let t = *t;
                    if sums_frontier.less_equal(&(t + 1)) {
                        break;
                    }
                    let (_, changes_cap, facts_cap) = open.take().expect("open");
                    let mut updates = Vec::new();
                    while let Some(entry) = settled.first_entry() {
                        if *entry.key() > t + 1 {
                            break;
                        }
                        updates.append(&mut entry.remove());
                    }
                    let mut state = state.borrow_mut();
                    let Some(state) = state.as_mut() else {
                        continue;
                    };
                    // A later epoch with signals is sure to be finished
                    // (and to end the batch if nothing follows it).
                    let flush = tick_batch <= 1
                        || !backlog.load(Ordering::SeqCst)
                        || pending.is_empty()
                        || state.ticks_in_batch() >= tick_batch;
                    if flush && state.ticks_in_batch() > 1 {
                        tracing::debug!(
                            ticks = state.ticks_in_batch(),
                            score_rows = state.held_back(),
                            "a batch of epochs ends"
                        );
                    }
                    let epoch = state.finish_epoch_batched(latest_sums(updates), flush);
                    // Not the scores: feedback reads the latest factors from
                    // the state itself (see `apply_feedback`).
                    // What the tick forgot first: it came before the
                    // signals, which may start an idea over.
                    let forgotten = state.forgotten().iter().map(|&id| IdeaFact::Forgotten { id });
                    facts_out.session(&facts_cap).give_iterator(
                        forgotten.chain(
                            epoch
                                .iter()
                                .filter(|c| !matches!(c.key, ViewKey::Score(_)))
                                .filter_map(IdeaFact::of),
                        ),
                    );
                    changes_out
                        .session(&changes_cap)
                        .give_container(&mut { epoch });
                    continue;
                }
                let Some(entry) = pending.first_entry() else {
                    break;
                };
                let t = *entry.key();
                if signals_frontier.less_equal(&t) || weights_frontier.less_equal(&t) {
                    break;
                }
                let (t, (changes_cap, facts_cap, deltas_cap, signals)) = entry.remove_entry();
                let mut state = state.borrow_mut();
                let Some(state) = state.as_mut() else {
                    // Only worker 0 is routed data; others never get here.
                    continue;
                };
                while let Some(w) = learned.first_entry() {
                    if *w.key() > t {
                        break;
                    }
                    for l in w.remove() {
                        match l {
                            Learned::Weights(weights) => state.set_weights(weights),
                            Learned::Classifier(c) => state.set_classifier(c),
                        }
                    }
                }
                let deltas = state.begin_epoch((t + epoch_secs) as i64, signals);
                deltas_out
                    .session(&deltas_cap)
                    .give_iterator(deltas.into_iter().map(|(key, delta)| ((key, ()), t, delta)));
                // Dropped here: the sums of t can complete only once nothing
                // more of t may come.
                drop(deltas_cap);
                open = Some((t, changes_cap, facts_cap));
            }
            if signals_frontier.is_empty() && pending.is_empty() && open.is_none() && !logged {
                logged = true;
                // The state stays: feedback may still read it.
                if let Some(state) = state.borrow().as_ref() {
                    // The dedupe path's counters, for tuning (LSH
                    // candidates per lookup above all).
                    tracing::info!(stats = ?state.stats(), active_ideas = state.active_ideas(), "idea state done");
                }
            }
        }
    });
    (changes, facts, deltas)
}

/// How the idea state's operator groups epochs.
#[derive(Clone, Debug)]
pub struct Batching {
    /// Event time per epoch (`pipeline.epoch_secs`).
    pub epoch_secs: u64,
    /// Most ticks a batch of epochs spans (`pipeline.tick_batch`; 1: every
    /// epoch is its own batch).
    pub tick_batch: usize,
    /// Set by the source while the inputs are a backlog.
    pub backlog: Arc<std::sync::atomic::AtomicBool>,
}

/// Each key's sum after an epoch, from the collection's changes in it: the
/// new sum where one was added, `None` where the old was only retracted (the
/// key's window emptied).
fn latest_sums(updates: Vec<CentroidSumUpdate>) -> Vec<(CentroidKey, Option<VectorDelta>)> {
    let mut latest: BTreeMap<CentroidKey, Option<VectorDelta>> = BTreeMap::new();
    for ((key, sum), _, diff) in updates {
        if diff > 0 {
            latest.insert(key, Some(sum));
        } else {
            latest.entry(key).or_insert(None);
        }
    }
    latest.into_iter().collect()
}

/// What the feedback operator emits: view changes for the sinks, and new
/// weights for the idea state (through the loop).
#[derive(Clone)]
pub enum FeedbackOut {
    Change(Box<Change>),
    Learned(Learned),
}

/// What the feedback loop teaches the idea state: scoring weights, and the
/// classifier with its anchors moved by classification feedback.
#[derive(Clone)]
pub enum Learned {
    Weights(Weights),
    Classifier(Arc<Classes>),
}

/// What the feedback operator needs on the worker that owns the state.
pub struct FeedbackOwner {
    /// Shared with the checkpoints, which save it between epochs.
    pub state: crate::checkpoint::capture::SharedFeedback,
    /// Embeds corrected sentences (classification feedback), loaded at the
    /// first correction: most streams have none.
    pub embedder: LazyEmbedder,
    /// The configured classifier, whose anchors feedback moves.
    pub classifier: Option<Arc<Classes>>,
}

/// Joins listing and feedback events with the idea state's changelog on
/// worker 0 and applies each completed epoch to the feedback state
/// (windows, A/B tests, allocations, weight learning).
///
/// Ideas' latest factors (for weight learning) are read from the idea state
/// through `state` rather than sent as one fact per score row: on worker 0
/// the two operators strictly alternate, state(t) → feedback(t) →
/// state(t + 1), because feedback waits for the state's facts to pass t and
/// the state waits for the learned loop (feedback's output, delayed one
/// epoch) to pass t + 1. So at feedback's epoch t the state holds exactly
/// the epochs up to t, which is what the facts would have said (checked in
/// debug builds).
pub fn apply_feedback<'scope>(
    events: Stream<'scope, u64, Vec<Event>>,
    idea_changes: Stream<'scope, u64, Vec<IdeaFact>>,
    owner: Option<FeedbackOwner>,
    state: SharedState,
    epoch_secs: u64,
    repeats: Option<Arc<crate::source_status::RepeatCounters>>,
) -> Stream<'scope, u64, Vec<FeedbackOut>> {
    events.binary_frontier::<_, CapacityContainerBuilder<Vec<FeedbackOut>>, _, _, _, _>(
        idea_changes,
        Exchange::new(|_: &Event| 0),
        Pipeline,
        "Feedback",
        move |_cap, _info| {
            let mut owner = owner;
            type Epoch = (Option<Capability<u64>>, Vec<Event>, Vec<IdeaFact>);
            let mut pending: BTreeMap<u64, Epoch> = BTreeMap::new();
            let mut logged = false;
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
                    let (Some(owner), Some(cap)) = (owner.as_mut(), cap) else {
                        continue;
                    };
                    let watermark = (t + epoch_secs) as i64;
                    let mut feedback = owner.state.borrow_mut();
                    let Some(feedback) = feedback.as_mut() else {
                        continue;
                    };
                    let events = feedback.take_once(watermark, events);
                    if let Some(r) = &repeats {
                        r.envelope_repeats
                            .store(feedback.repeated_events(), Ordering::Relaxed);
                        r.refused(&feedback.take_refused());
                    }
                    let (corrections, events): (Vec<Event>, Vec<Event>) = events
                        .into_iter()
                        .partition(|e| matches!(e.payload, Payload::Correction(_)));
                    let ideas = state.borrow();
                    let ideas = ideas.as_ref();
                    debug_assert!(
                        ideas
                            .and_then(IdeaState::applied_through)
                            .is_none_or(|w| w <= watermark),
                        "the idea state ran ahead of feedback"
                    );
                    let latest = ideas.map(|s| s as &dyn LatestFactors);
                    let mut out = feedback.apply_epoch_facts(watermark, events, &changes, latest);
                    let embedded = embed_corrections(&mut owner.embedder, corrections);
                    feedback.apply_corrections(watermark, embedded, &mut out);
                    let classifier = match (out.new_anchors.take(), &owner.classifier) {
                        (Some(anchors), Some(base)) => Some(Arc::new(base.with_anchors(anchors))),
                        _ => None,
                    };
                    let mut session = output.session(&cap);
                    session.give_iterator(
                        out.changes
                            .into_iter()
                            .map(|c| FeedbackOut::Change(Box::new(c))),
                    );
                    if let Some(w) = out.new_weights {
                        session.give(FeedbackOut::Learned(Learned::Weights(w)));
                    }
                    if let Some(c) = classifier {
                        session.give(FeedbackOut::Learned(Learned::Classifier(c)));
                    }
                }
                let done = events_frontier.is_empty() && changes_frontier.is_empty();
                if let (true, false, Some(owner)) = (done, logged, owner.as_ref()) {
                    logged = true;
                    // What the feedback state holds at the end: with the
                    // idea state's horizon it stays bounded on long streams.
                    if let Some(f) = owner.state.borrow().as_ref() {
                        tracing::info!(size = ?f.size(), "feedback done");
                    }
                }
            }
        },
    )
}

/// The corrected sentences' embeddings, as the classifier embeds sentences.
/// A failure to embed is logged and the corrections skipped: they are valid
/// input, and the model is ours.
fn embed_corrections(
    embedder: &mut LazyEmbedder,
    corrections: Vec<Event>,
) -> Vec<EmbeddedCorrection> {
    if corrections.is_empty() {
        return Vec::new();
    }
    let embedder = match embedder.get() {
        Ok(embedder) => embedder,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), n = corrections.len(), "the model for corrected sentences does not load; skipping them");
            return Vec::new();
        }
    };
    let sentences: Vec<&str> = corrections
        .iter()
        .map(|e| match &e.payload {
            Payload::Correction(c) => c.sentence.as_str(),
            _ => "",
        })
        .collect();
    match embedder.embed(&sentences) {
        Ok(vectors) => corrections
            .into_iter()
            .zip(vectors)
            .map(|(event, v)| EmbeddedCorrection {
                event,
                embedding: v.into(),
            })
            .collect(),
        Err(e) => {
            tracing::error!(error = %e, n = sentences.len(), "embedding corrected sentences failed; skipping them");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use differential_dataflow::difference::IsZero;
    use ideaflow_operators::centroid::{AccumulatedSums, VectorDelta};
    use ideaflow_operators::views::CentroidKind;
    use ideaflow_operators::EMBEDDING_DIM;
    use timely::dataflow::operators::{Input, Inspect, Probe};

    use super::{centroid_sums, latest_sums, CentroidDeltaUpdate, CentroidKey, CentroidSumUpdate};

    fn vector(seed: u64) -> Vec<f32> {
        (0..EMBEDDING_DIM as u64)
            .map(|i| ((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.0 - 1.0)
            .collect()
    }

    /// Twelve epochs of deltas over three keys: each epoch adds a member and
    /// retracts the one added two epochs before, except that "food" takes
    /// members only in the first three epochs, so its window empties.
    fn epochs() -> Vec<Vec<(CentroidKey, VectorDelta)>> {
        let keys = [
            (CentroidKind::Category, "animals"),
            (CentroidKind::Category, "food"),
            (CentroidKind::Community, "r/aww"),
        ];
        (0..12u64)
            .map(|e| {
                keys.iter()
                    .enumerate()
                    .filter_map(|(k, (kind, name))| {
                        let k = k as u64;
                        let member = |e: u64| vector(e * 3 + k);
                        let takes = |e: u64| k != 1 || e < 3;
                        let mut delta = VectorDelta::default();
                        if takes(e) {
                            delta.add(&member(e), 1);
                        }
                        if e >= 2 && takes(e - 2) {
                            delta.add(&member(e - 2), -1);
                        }
                        (!delta.is_zero()).then(|| ((*kind, (*name).to_owned()), delta))
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn differential_sums_the_deltas_as_accumulating_them_in_place_does() {
        let epochs = epochs();
        let seen: Arc<Mutex<BTreeMap<u64, Vec<CentroidSumUpdate>>>> = Arc::default();
        let sink = seen.clone();
        let fed = epochs.clone();
        timely::execute_directly(move |worker| {
            let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
                let (input, deltas) = scope.new_input::<Vec<CentroidDeltaUpdate>>();
                let (probe, _) = centroid_sums(deltas)
                    .inspect(move |u: &CentroidSumUpdate| {
                        sink.lock().unwrap().entry(u.1).or_default().push(u.clone())
                    })
                    .probe();
                (input, probe)
            });
            for (e, epoch) in fed.into_iter().enumerate() {
                let t = e as u64 * 60;
                input.advance_to(t);
                for (key, delta) in epoch {
                    input.send(((key, ()), t, delta));
                }
                input.advance_to(t + 60);
                while probe.less_than(&(t + 60)) {
                    worker.step();
                }
            }
        });
        let mut own = AccumulatedSums::default();
        let seen = seen.lock().unwrap();
        let mut emptied = 0;
        for (e, epoch) in epochs.into_iter().enumerate() {
            let expected = own.accumulate(epoch);
            let got = latest_sums(seen.get(&(e as u64 * 60)).cloned().unwrap_or_default());
            emptied += got.iter().filter(|(_, sum)| sum.is_none()).count();
            assert_eq!(got, expected, "epoch {e}");
        }
        assert_eq!(emptied, 1, "food's window empties once");
    }
}
