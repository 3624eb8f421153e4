//! The canonical Signal: one observation of something trending, from any source.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Embedding width of all-MiniLM-L6-v2, and so of every vector in ideaflow.
pub const EMBEDDING_DIM: usize = 384;

/// Longest accepted `content`, in characters (Unicode scalar values).
pub const MAX_CONTENT_CHARS: usize = 10_000;

/// Where a signal was observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Reddit,
    Youtube,
    Tiktok,
    Instagram,
    Calendar,
    Archive,
    Webhook,
}

impl Source {
    pub const ALL: [Source; 7] = [
        Source::Reddit,
        Source::Youtube,
        Source::Tiktok,
        Source::Instagram,
        Source::Calendar,
        Source::Archive,
        Source::Webhook,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Source::Reddit => "reddit",
            Source::Youtube => "youtube",
            Source::Tiktok => "tiktok",
            Source::Instagram => "instagram",
            Source::Calendar => "calendar",
            Source::Archive => "archive",
            Source::Webhook => "webhook",
        }
    }

    pub fn parse(s: &str) -> Option<Source> {
        Source::ALL.into_iter().find(|src| src.as_str() == s)
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Engagement counters as the platform reported them at capture time.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Engagement {
    #[serde(default)]
    pub views: u64,
    #[serde(default)]
    pub likes: u64,
    #[serde(default)]
    pub comments: u64,
    #[serde(default)]
    pub shares: u64,
}

impl Engagement {
    pub fn total(&self) -> u64 {
        self.views
            .saturating_add(self.likes)
            .saturating_add(self.comments)
            .saturating_add(self.shares)
    }

    pub fn saturating_add(&self, other: &Engagement) -> Engagement {
        Engagement {
            views: self.views.saturating_add(other.views),
            likes: self.likes.saturating_add(other.likes),
            comments: self.comments.saturating_add(other.comments),
            shares: self.shares.saturating_add(other.shares),
        }
    }

    pub fn saturating_sub(&self, other: &Engagement) -> Engagement {
        Engagement {
            views: self.views.saturating_sub(other.views),
            likes: self.likes.saturating_sub(other.likes),
            comments: self.comments.saturating_sub(other.comments),
            shares: self.shares.saturating_sub(other.shares),
        }
    }
}

/// A validated signal. Construct it through [`crate::validate`], which enforces
/// every invariant documented on the fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Signal {
    /// Unique within its source.
    pub id: String,
    pub source: Source,
    /// Event time: when the signal was observed.
    pub captured_at: DateTime<Utc>,
    /// Non-empty after trimming, at most [`MAX_CONTENT_CHARS`] characters.
    pub content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_at: Option<DateTime<Utc>>,
    /// Subreddit, channel, hashtag page...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub community: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topics: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    #[serde(default)]
    pub engagement: Engagement,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Exactly [`EMBEDDING_DIM`] finite floats when present; the embedder skips such records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding: Option<Vec<f32>>,
}

impl Signal {
    /// The signal's peak time: when it was published if known, else when it was captured.
    pub fn peak_time(&self) -> DateTime<Utc> {
        self.published_at.unwrap_or(self.captured_at)
    }
}
