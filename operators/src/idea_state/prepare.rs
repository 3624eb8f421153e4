//! Per-signal work that needs no shared state: content hash, LSH signatures,
//! labels and engagement rate. It runs on every worker before the signals meet
//! in the idea state, so the expensive parts (NFKC normalization, 640
//! projections, anchor similarities) scale with the workers.

use serde::{Deserialize, Serialize};

use crate::classify::{Categories, Classes};
use crate::content_hash::content_identity;
use crate::dedupe::LshIndex;
use crate::score::{engagement_rate, ScoringParams};
use crate::shared_embedding::SharedEmbedding;
use crate::{Signal, EMBEDDING_DIM};

/// What ideas are labelled with: the category anchors (niches) and the seed's
/// classifier (anchor classes), both embedded at start.
pub struct Labels {
    pub categories: Categories,
    pub classifier: Option<Classes>,
}

/// A signal ready for the idea state.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PreparedSignal {
    pub signal: Signal,
    pub embedding: SharedEmbedding,
    pub hash: [u8; 16],
    /// Whether the text holds a letter or digit. An illegible one (emoji or
    /// punctuation only) is deduplicated by its exact text alone: its vector
    /// is the model's reading of unknown tokens, the same for all of them,
    /// so near-duplicate matching would make them all one idea.
    pub legible: bool,
    /// LSH signatures (none for an illegible text: it takes no part in
    /// near-duplicate matching).
    pub signatures: Vec<u32>,
    pub category: Option<(String, f32)>,
    pub anchor_class: Option<String>,
    pub rate: f64,
}

impl PreparedSignal {
    pub fn hash_hex(&self) -> String {
        hex::encode(self.hash)
    }

    /// The order signals of one epoch are applied in: by event time, then a
    /// total order on content, so arrival order never matters.
    pub fn order_key(&self) -> (i64, crate::Source, &str, &str, crate::Engagement) {
        (
            self.signal.captured_at.timestamp_micros(),
            self.signal.source,
            self.signal.id.as_str(),
            self.signal.content.as_str(),
            // Two polls of one signal at one capture time differ in their figures.
            self.signal.engagement,
        )
    }
}

pub fn prepare(
    mut signal: Signal,
    lsh: &LshIndex,
    labels: &Labels,
    scoring: &ScoringParams,
) -> PreparedSignal {
    let embedding: SharedEmbedding = signal
        .embedding
        .take()
        .filter(|e| e.len() == EMBEDDING_DIM)
        .unwrap_or_else(|| vec![0.0; EMBEDDING_DIM])
        .into();
    let (hash, legible) = content_identity(&signal.content);
    let signatures = if legible {
        lsh.signatures(&embedding)
    } else {
        Vec::new()
    };
    let category = labels.categories.category(&signal.content, &embedding);
    let anchor_class = labels
        .classifier
        .as_ref()
        .map(|c| c.route(&signal.content, &embedding).category);
    let age = signal
        .published_at
        .map(|p| (signal.captured_at - p).num_milliseconds() as f64 / 60_000.0);
    let rate = engagement_rate(&signal.engagement, age, scoring);
    PreparedSignal {
        signal,
        embedding,
        hash,
        legible,
        signatures,
        category,
        anchor_class,
        rate,
    }
}
