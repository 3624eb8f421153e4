//! The idea state as a timely operator. Prepared signals (hashed, signed,
//! labelled on every worker) meet on one worker, which owns the state and
//! applies each epoch once the frontier has passed it, in time order: the
//! changelog it emits is the same whatever the worker count or arrival order.
//!
//! One owner keeps near-duplicate lookups and the per-source statistics exact
//! and global; the parallel work (parsing, embedding, hashing, LSH signatures,
//! labels) happens before it.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use crate::model_files::LazyEmbedder;
use ideaflow_operators::classify::Classifier;
use ideaflow_operators::dedupe::LshIndex;
use ideaflow_operators::feedback::{EmbeddedCorrection, FeedbackState, IdeaFact, LatestFactors};
use ideaflow_operators::idea_state::{prepare, IdeaState, Labels, PreparedSignal};
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

/// Applies completed epochs to the state on worker 0; emits each epoch's
/// changelog at the epoch's time, and beside it what feedback needs of it
/// ([`IdeaFact`]s). `weights` is the feedback edge: scoring weights learned
/// from marketplace feedback, which take effect in the first epoch at or
/// after their time.
///
/// The facts leave on an output of their own rather than through a split
/// downstream: on a tick the changelog holds a score row per live idea, and
/// every operator hop moves each row once more.
pub fn apply_to_state<'scope>(
    prepared: Stream<'scope, u64, Vec<PreparedSignal>>,
    learned: Stream<'scope, u64, Vec<Learned>>,
    state: SharedState,
    epoch_secs: u64,
) -> (
    Stream<'scope, u64, Vec<Change>>,
    Stream<'scope, u64, Vec<IdeaFact>>,
) {
    let mut builder = OperatorBuilder::new("IdeaState".to_owned(), prepared.scope());
    let mut signals_in = builder.new_input(prepared, Exchange::new(|_: &PreparedSignal| 0));
    let mut weights_in = builder.new_input(learned, Pipeline);
    let (changes_out, changes) = builder.new_output::<Vec<Change>>();
    let (facts_out, facts) = builder.new_output::<Vec<IdeaFact>>();
    let mut changes_out =
        OutputBuilder::<_, CapacityContainerBuilder<Vec<Change>>>::from(changes_out);
    let mut facts_out =
        OutputBuilder::<_, CapacityContainerBuilder<Vec<IdeaFact>>>::from(facts_out);
    builder.build(move |_initial| {
        let mut logged = false;
        // Per epoch: a capability on each output, and its signals.
        type Epoch = (Capability<u64>, Capability<u64>, Vec<PreparedSignal>);
        let mut pending: BTreeMap<u64, Epoch> = BTreeMap::new();
        let mut learned: BTreeMap<u64, Vec<Learned>> = BTreeMap::new();
        move |frontiers| {
            let (signals_frontier, weights_frontier) = (&frontiers[0], &frontiers[1]);
            let mut changes_out = changes_out.activate();
            let mut facts_out = facts_out.activate();
            signals_in.for_each_stamp(|cap, data| {
                let t = *cap.least().expect("a totally ordered time");
                let (Some(c0), Some(c1)) = (cap.retain_least(0), cap.retain_least(1)) else {
                    return;
                };
                let entry = pending.entry(t).or_insert_with(|| (c0, c1, Vec::new()));
                for d in data {
                    entry.2.append(d);
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
                let (t, (changes_cap, facts_cap, signals)) = entry.remove_entry();
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
                let epoch = state.apply_epoch((t + epoch_secs) as i64, signals);
                // Not the scores: feedback reads the latest factors from the
                // state itself (see `apply_feedback`).
                facts_out.session(&facts_cap).give_iterator(
                    epoch
                        .iter()
                        .filter(|c| !matches!(c.key, ViewKey::Score(_)))
                        .filter_map(IdeaFact::of),
                );
                changes_out.session(&changes_cap).give_container(&mut { epoch });
            }
            if signals_frontier.is_empty() && pending.is_empty() && !logged {
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
    (changes, facts)
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
    Classifier(Arc<Classifier>),
}

/// What the feedback operator needs on the worker that owns the state.
pub struct FeedbackOwner {
    pub state: FeedbackState,
    /// Embeds corrected sentences (classification feedback), loaded at the
    /// first correction: most streams have none.
    pub embedder: LazyEmbedder,
    /// The configured classifier, whose anchors feedback moves.
    pub classifier: Option<Arc<Classifier>>,
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
                    let mut out = owner
                        .state
                        .apply_epoch_facts(watermark, events, &changes, latest);
                    let embedded = embed_corrections(&mut owner.embedder, corrections);
                    owner.state.apply_corrections(watermark, embedded, &mut out);
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
