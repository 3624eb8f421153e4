//! The materialized views the idea state maintains, and the changes it emits.
//!
//! The state emits, per completed epoch, a keyed changelog: each key changed
//! in the epoch appears once, as an upsert of its new row or a delete. Applying
//! the changelogs of all epochs in order gives each view's current contents;
//! sinks apply one epoch at a time, atomically.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::content_hash::ContentHash;
pub use crate::feedback::{
    AbResultRow, AllocationRow, PublishRow, SlaAlertRow, WeightsRow, WindowKind, WindowRow,
};
use crate::idea::IdeaId;
use crate::rejection::DeadLetter;
use crate::score::Factors;
use crate::shared_embedding::SharedEmbedding;
use crate::{Engagement, Source};

/// How a signal was deduplicated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DedupeKind {
    /// It started a new idea.
    New,
    /// Its content hash matched a live idea.
    Exact,
    /// Its embedding was within the threshold of a live idea.
    Near,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdeaStatus {
    /// Seen within the retention window: merged into, re-scored on every tick.
    Active,
    /// Not seen for the retention window: its last score is kept, frozen.
    Archived,
}

/// One signal and the idea it went to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SignalRow {
    pub source: Source,
    pub id: String,
    pub idea_id: IdeaId,
    pub content_hash: ContentHash,
    pub dedupe: DedupeKind,
    /// Cosine to the idea it was merged into (near-duplicates only).
    pub similarity: Option<f32>,
    pub captured_at: DateTime<Utc>,
    pub published_at: Option<DateTime<Utc>>,
    pub content: String,
    pub community: Option<String>,
    pub topics: Vec<String>,
    pub locale: Option<String>,
    pub url: Option<String>,
    pub engagement: Engagement,
    pub engagement_rate: f64,
}

/// One idea: the signals sharing its content, exactly or nearly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IdeaRow {
    pub id: IdeaId,
    pub content_hash: ContentHash,
    /// The text of its first signal.
    pub content: String,
    pub source: Source,
    /// Shared with the idea's score rows, which carry it on every tick.
    pub category: Option<Arc<str>>,
    pub category_similarity: Option<f32>,
    pub anchor_class: Option<String>,
    pub community: Option<String>,
    pub locale: Option<String>,
    pub topics: Vec<String>,
    pub signal_count: u64,
    pub near_duplicates: u64,
    pub engagement: Engagement,
    pub engagement_rate: f64,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub peak_at: DateTime<Utc>,
    pub status: IdeaStatus,
    pub embedding: SharedEmbedding,
}

#[cfg(test)]
impl IdeaRow {
    /// An idea row with only what unit tests set: one signal at `at`, no
    /// text, topics or engagement, a 4-d zero vector.
    pub(crate) fn bare(
        id: IdeaId,
        category: Option<Arc<str>>,
        status: IdeaStatus,
        at: DateTime<Utc>,
    ) -> IdeaRow {
        IdeaRow {
            id,
            content_hash: Default::default(),
            content: String::new(),
            source: Source::Reddit,
            category,
            category_similarity: None,
            anchor_class: None,
            community: None,
            locale: None,
            topics: vec![],
            signal_count: 1,
            near_duplicates: 0,
            engagement: Default::default(),
            engagement_rate: 0.0,
            first_seen: at,
            last_seen: at,
            peak_at: at,
            status,
            embedding: vec![0.0f32; 4].into(),
        }
    }
}

/// An idea's score: its five factors as of `scored_at` and their weighted sum.
/// Kept apart from [`IdeaRow`] because it changes on every tick while the idea
/// (and its vector) changes only when signals merge into it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoreRow {
    pub idea_id: IdeaId,
    pub category: Option<Arc<str>>,
    pub factors: Factors,
    pub score: f64,
    /// The watermark the factors were evaluated at.
    pub scored_at: DateTime<Utc>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CentroidKind {
    Category,
    Community,
}

impl CentroidKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CentroidKind::Category => "category",
            CentroidKind::Community => "community",
        }
    }
}

/// The mean embedding of a category's or community's ideas in the window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CentroidRow {
    pub kind: CentroidKind,
    pub key: String,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    pub n: u64,
    pub embedding: Vec<f32>,
}

/// Signals of a category carrying a topic, in the window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopicCountRow {
    pub category: String,
    pub topic: String,
    pub count: u64,
}

/// HyperLogLog estimates for one source and tumbling window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DistinctCountRow {
    pub source: Source,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    pub signals: u64,
    pub ideas: u64,
    pub communities: u64,
}

/// The key of a row in one of the views, ordered view by view.
///
/// Keys of several fields are boxed, as the large rows are (see
/// [`ViewRow`]): a key is as large as its largest variant, and every score
/// row of a tick (one per live idea) carries one. Boxed, a [`Change`] is
/// 160 bytes rather than 200.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ViewKey {
    Idea(IdeaId),
    Score(IdeaId),
    /// (source name, id): sources sort by name.
    Signal(&'static str, String),
    Centroid(CentroidKind, String),
    /// (category, topic).
    TopicCount(Box<(String, String)>),
    DistinctCount(&'static str, i64),
    /// (kind, window start, idea, marketplace, variant).
    Window(Box<(WindowKind, i64, String, String, String)>),
    /// (idea, marketplace, window end, treatment variant).
    AbResult(Box<(String, String, i64, String)>),
    /// (day start, idea, marketplace, variant).
    Allocation(Box<(i64, String, String, String)>),
    /// Effective from (seconds).
    Weights(i64),
    /// Records refused inside the dataflow (e.g. feedback for unknown ideas), numbered.
    DeadLetter(u64),
    /// (published at, idea, marketplace, variant).
    Publish(Box<(i64, String, String, String)>),
    /// At (seconds).
    SlaAlert(i64),
    /// (effective from, anchor name).
    Anchor(i64, String),
}

/// The large rows are boxed: a changelog moves through several operators
/// (each hop a move of the whole enum), and score rows, by far the most
/// frequent (every live idea on every tick), are small.
#[derive(Clone, Debug, PartialEq)]
pub enum ViewRow {
    Idea(Box<IdeaRow>),
    Score(ScoreRow),
    Signal(Box<SignalRow>),
    Centroid(CentroidRow),
    TopicCount(TopicCountRow),
    DistinctCount(DistinctCountRow),
    Window(Box<WindowRow>),
    AbResult(Box<AbResultRow>),
    Allocation(AllocationRow),
    Weights(WeightsRow),
    DeadLetter(u64, DeadLetter),
    Publish(Box<PublishRow>),
    SlaAlert(SlaAlertRow),
    Anchor(crate::feedback::anchors::AnchorRow),
}

impl ViewRow {
    pub fn key(&self) -> ViewKey {
        match self {
            ViewRow::Idea(r) => ViewKey::Idea(r.id),
            ViewRow::Score(r) => ViewKey::Score(r.idea_id),
            ViewRow::Signal(r) => ViewKey::Signal(r.source.as_str(), r.id.clone()),
            ViewRow::Centroid(r) => ViewKey::Centroid(r.kind, r.key.clone()),
            ViewRow::TopicCount(r) => {
                ViewKey::TopicCount(Box::new((r.category.clone(), r.topic.clone())))
            }
            ViewRow::DistinctCount(r) => {
                ViewKey::DistinctCount(r.source.as_str(), r.window_start.timestamp())
            }
            ViewRow::Window(r) => crate::feedback::window_key(r),
            ViewRow::AbResult(r) => ViewKey::AbResult(Box::new((
                r.idea_id.clone(),
                r.marketplace.clone(),
                r.window_end.timestamp(),
                r.treatment.clone(),
            ))),
            ViewRow::Allocation(r) => ViewKey::Allocation(Box::new((
                r.day_start.timestamp(),
                r.idea_id.clone(),
                r.marketplace.clone(),
                r.variant.clone(),
            ))),
            ViewRow::Weights(r) => ViewKey::Weights(r.effective_from.timestamp()),
            ViewRow::DeadLetter(n, _) => ViewKey::DeadLetter(*n),
            ViewRow::Publish(r) => ViewKey::Publish(Box::new((
                r.published_at.timestamp(),
                r.idea_id.clone(),
                r.marketplace.clone(),
                r.variant.clone(),
            ))),
            ViewRow::SlaAlert(r) => ViewKey::SlaAlert(r.at.timestamp()),
            ViewRow::Anchor(r) => ViewKey::Anchor(r.effective_from.timestamp(), r.anchor.clone()),
        }
    }
}

/// One change to one key: its new row, or `None` when it left the view.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub key: ViewKey,
    pub row: Option<ViewRow>,
}

// A tick's changelog holds one per live idea: keep it from growing unseen.
const _: () = assert!(std::mem::size_of::<Change>() <= 160);

impl Change {
    pub fn upsert(row: ViewRow) -> Change {
        Change {
            key: row.key(),
            row: Some(row),
        }
    }

    pub fn delete(key: ViewKey) -> Change {
        Change { key, row: None }
    }
}

/// Every view's current contents: the changelogs applied in order.
///
/// Hashed, not ordered: a replay applies a score row per live idea per tick,
/// and an ordered map spent most of a replay's time comparing keys. Order is
/// paid for once, by [`ViewState::rows`]. The hasher is seeded per process,
/// since keys carry ids from the inputs.
#[derive(Clone, Debug, Default)]
pub struct ViewState {
    rows: std::collections::HashMap<ViewKey, ViewRow, foldhash::fast::RandomState>,
}

impl ViewState {
    pub fn apply(&mut self, changes: impl IntoIterator<Item = Change>) {
        for change in changes {
            match change.row {
                Some(row) => {
                    self.rows.insert(change.key, row);
                }
                None => {
                    self.rows.remove(&change.key);
                }
            }
        }
    }

    pub fn get(&self, key: &ViewKey) -> Option<&ViewRow> {
        self.rows.get(key)
    }

    /// All rows, sorted by key (view by view).
    pub fn rows(&self) -> impl Iterator<Item = &ViewRow> {
        self.rows_where(|_| true)
    }

    /// The rows whose key `keep` accepts, sorted by key (only those are sorted).
    pub fn rows_where(&self, keep: impl Fn(&ViewKey) -> bool) -> impl Iterator<Item = &ViewRow> {
        let mut keyed: Vec<(&ViewKey, &ViewRow)> =
            self.rows.iter().filter(|(key, _)| keep(key)).collect();
        keyed.sort_unstable_by(|a, b| a.0.cmp(b.0));
        keyed.into_iter().map(|(_, row)| row)
    }

    /// The ideas' rows, in no particular order.
    pub fn ideas(&self) -> impl Iterator<Item = &IdeaRow> {
        self.rows.values().filter_map(|r| match r {
            ViewRow::Idea(i) => Some(&**i),
            _ => None,
        })
    }

    pub fn score(&self, idea_id: IdeaId) -> Option<&ScoreRow> {
        match self.rows.get(&ViewKey::Score(idea_id)) {
            Some(ViewRow::Score(s)) => Some(s),
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}
