//! Ideas as a differential collection: signals keyed by content hash (exact
//! dedupe), reduced to one idea per hash, labelled with its nearest category
//! and anchor class. The collection changes as signals arrive; its final
//! contents are what `replay --out` writes.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use differential_dataflow::AsCollection;
use ideaflow_operators::classify::{nearest, Anchor, Classifier};
use ideaflow_operators::content_hash::content_hash;
use ideaflow_operators::idea::idea_id;
use ideaflow_operators::{Engagement, Signal, Source};
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Operator;
use timely::dataflow::Stream;

/// What an idea keeps of each of its signals. Embeddings travel as f32 bits so
/// the record is totally ordered (differential sorts values).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct IdeaSignal {
    pub captured_at: i64,
    pub source: Source,
    pub id: String,
    pub content: String,
    pub community: Option<String>,
    pub topics: Vec<String>,
    pub engagement: Engagement,
    pub embedding_bits: Vec<u32>,
}

/// One idea: the exact-duplicate group of a content hash.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct IdeaRow {
    pub id: String,
    pub content_hash: String,
    pub content: String,
    pub community: Option<String>,
    pub topics: Vec<String>,
    pub signal_count: i64,
    pub engagement: Engagement,
    pub first_seen: i64,
    pub last_seen: i64,
    pub embedding_bits: Vec<u32>,
}

/// The labelled idea written by `replay --out`.
#[derive(Clone, Debug, Serialize)]
pub struct IdeaView {
    pub id: String,
    pub content_hash: String,
    pub content: String,
    pub category: Option<String>,
    pub category_similarity: Option<f32>,
    pub anchor_class: Option<String>,
    pub community: Option<String>,
    pub topics: Vec<String>,
    pub signal_count: i64,
    pub engagement: Engagement,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub embedding: Vec<f32>,
}

/// Labels for ideas: category anchors (niches) and the seed's classifier.
pub struct Labels {
    pub categories: Vec<Anchor>,
    pub classifier: Option<Classifier>,
}

impl IdeaRow {
    pub fn view(&self, labels: &Labels) -> IdeaView {
        let embedding: Vec<f32> = self
            .embedding_bits
            .iter()
            .map(|b| f32::from_bits(*b))
            .collect();
        let category = nearest(&embedding, &labels.categories);
        let time = |s: i64| Utc.timestamp_opt(s, 0).single().unwrap_or_default();
        IdeaView {
            id: self.id.clone(),
            content_hash: self.content_hash.clone(),
            content: self.content.clone(),
            category: category.map(|(c, _)| c.to_owned()),
            category_similarity: category.map(|(_, s)| s),
            // The idea's whole text routed as one sentence would be.
            anchor_class: labels
                .classifier
                .as_ref()
                .map(|c| c.route(&embedding).category),
            community: self.community.clone(),
            topics: self.topics.clone(),
            signal_count: self.signal_count,
            engagement: self.engagement,
            first_seen: time(self.first_seen),
            last_seen: time(self.last_seen),
            embedding,
        }
    }
}

fn idea_signal(s: Signal) -> (String, IdeaSignal) {
    let hash = content_hash(&s.content);
    let bits = s
        .embedding
        .unwrap_or_default()
        .iter()
        .map(|x| x.to_bits())
        .collect();
    (
        hash,
        IdeaSignal {
            captured_at: s.captured_at.timestamp(),
            source: s.source,
            id: s.id,
            content: s.content,
            community: s.community,
            topics: s.topics,
            engagement: s.engagement,
            embedding_bits: bits,
        },
    )
}

/// Idea updates as differential emits them: ((content hash, idea), time, diff).
pub type IdeaUpdates<'scope> = Stream<'scope, u64, Vec<((String, IdeaRow), u64, isize)>>;

/// Reduces embedded signals to ideas and collects the changes to `ideas` on
/// this worker (the caller consolidates after the run).
pub fn collect_ideas<'scope>(
    signals: Stream<'scope, u64, Vec<Signal>>,
    ideas: Rc<RefCell<Vec<(IdeaRow, isize)>>>,
) -> IdeaUpdates<'scope> {
    let updates = signals
        .unary::<timely::container::CapacityContainerBuilder<Vec<_>>, _, _, _>(
            Pipeline,
            "ToUpdates",
            |_, _| {
                move |input, output| {
                    input.for_each_stamp(|cap, data| {
                        let t = *cap.least().expect("totally ordered");
                        let mut session = output.session(&cap);
                        for batch in data {
                            session.give_iterator(
                                batch.drain(..).map(|s| (idea_signal(s), t, 1isize)),
                            );
                        }
                    });
                }
            },
        )
        .as_collection();
    let rows = updates.reduce(
        |hash: &String, group: &[(&IdeaSignal, isize)], out: &mut Vec<(IdeaRow, isize)>| {
            // Values arrive sorted: the first is the earliest (time, source, id),
            // the idea's representative whatever the arrival order.
            let first = group[0].0;
            let mut row = IdeaRow {
                id: idea_id(hash).to_string(),
                content_hash: hash.clone(),
                content: first.content.clone(),
                community: first.community.clone(),
                topics: Vec::new(),
                signal_count: 0,
                engagement: Engagement::default(),
                first_seen: first.captured_at,
                last_seen: first.captured_at,
                embedding_bits: first.embedding_bits.clone(),
            };
            for (s, n) in group {
                row.signal_count += *n as i64;
                for _ in 0..*n {
                    row.engagement = row.engagement.saturating_add(&s.engagement);
                }
                row.last_seen = row.last_seen.max(s.captured_at);
                row.topics.extend(s.topics.iter().cloned());
            }
            row.topics.sort();
            row.topics.dedup();
            out.push((row, 1));
        },
    );
    let sink = ideas.clone();
    rows.inspect(move |((_, row), _t, diff)| sink.borrow_mut().push((row.clone(), *diff)))
        .inner
}

/// Sums every worker's changes and keeps the ideas present at the end, by id.
pub fn final_ideas(changes: Vec<(IdeaRow, isize)>) -> Vec<IdeaRow> {
    let mut changes = changes;
    changes.sort();
    let mut out: Vec<IdeaRow> = Vec::new();
    let mut i = 0;
    while i < changes.len() {
        let mut j = i;
        let mut sum = 0;
        while j < changes.len() && changes[j].0 == changes[i].0 {
            sum += changes[j].1;
            j += 1;
        }
        if sum > 0 {
            out.push(changes[i].0.clone());
        }
        i = j;
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

/// Shared so every worker labels with the same embedded anchors.
pub type SharedLabels = Arc<Labels>;
