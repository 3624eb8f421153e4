//! The event envelope (seed 004, section 2.3.2) and the events ideaflow consumes.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::signal::Signal;

/// Event types ideaflow reads from its input streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum EventType {
    #[serde(rename = "signal.ingested")]
    SignalIngested,
    #[serde(rename = "feedback.received")]
    FeedbackReceived,
    #[serde(rename = "listing.published")]
    ListingPublished,
    #[serde(rename = "classification.corrected")]
    ClassificationCorrected,
}

impl EventType {
    pub const ALL: [EventType; 4] = [
        EventType::SignalIngested,
        EventType::FeedbackReceived,
        EventType::ListingPublished,
        EventType::ClassificationCorrected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::SignalIngested => "signal.ingested",
            EventType::FeedbackReceived => "feedback.received",
            EventType::ListingPublished => "listing.published",
            EventType::ClassificationCorrected => "classification.corrected",
        }
    }

    pub fn parse(s: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// Envelope fields kept alongside the payload, for tracing an event end to end.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeMeta {
    #[serde(rename = "eventId", default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    #[serde(
        rename = "correlationId",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub correlation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// `listing.published`: an idea went live on a marketplace as one variant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListingPublished {
    pub idea_id: String,
    pub marketplace: String,
    pub listing_id: String,
    pub variant: String,
    pub published_at: DateTime<Utc>,
}

/// `feedback.received`: marketplace counters since the previous report (increments).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FeedbackReceived {
    pub idea_id: String,
    pub marketplace: String,
    pub variant: String,
    pub impressions: u64,
    pub clicks: u64,
    pub favorites: u64,
    pub add_to_cart: u64,
    pub sales: u64,
}

/// `classification.corrected`: a user said a sentence belongs to another anchor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassificationCorrected {
    pub sentence: String,
    pub predicted: String,
    pub correct: String,
    /// 1 to 5.
    pub rating: u8,
}

/// One validated input event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "eventType", content = "data")]
pub enum Payload {
    #[serde(rename = "signal.ingested")]
    Signal(Box<Signal>),
    #[serde(rename = "feedback.received")]
    Feedback(FeedbackReceived),
    #[serde(rename = "listing.published")]
    Listing(ListingPublished),
    #[serde(rename = "classification.corrected")]
    Correction(ClassificationCorrected),
}

impl Payload {
    pub fn event_type(&self) -> EventType {
        match self {
            Payload::Signal(_) => EventType::SignalIngested,
            Payload::Feedback(_) => EventType::FeedbackReceived,
            Payload::Listing(_) => EventType::ListingPublished,
            Payload::Correction(_) => EventType::ClassificationCorrected,
        }
    }
}

/// A validated event with its event time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Event time: a signal's `captured_at`, otherwise the envelope's `timestamp`.
    pub time: DateTime<Utc>,
    pub payload: Payload,
    #[serde(default)]
    pub meta: EnvelopeMeta,
}

/// An [`Event`] as its JSON text inside another format (`#[serde(with)]`):
/// its own serde form leaves absent fields out, which only a
/// self-describing format reads back.
pub mod as_json_text {
    use serde::de::Error as _;
    use serde::ser::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    use super::Event;

    pub fn serialize<S: Serializer>(event: &Event, serializer: S) -> Result<S::Ok, S::Error> {
        let text = serde_json::to_string(event).map_err(S::Error::custom)?;
        serializer.serialize_str(&text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Event, D::Error> {
        let text = String::deserialize(deserializer)?;
        serde_json::from_str(&text).map_err(D::Error::custom)
    }
}
