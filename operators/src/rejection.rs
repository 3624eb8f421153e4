//! Why an input line or event was refused. Every refusal becomes a dead-letter
//! record carrying one of these; nothing is dropped silently.

use serde::{Deserialize, Serialize};

/// Machine-readable reason codes (stable: dashboards and alerts key on them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    LineTooLong,
    InvalidUtf8,
    MalformedJson,
    NotAnObject,
    MissingField,
    EmptyField,
    WrongType,
    NegativeCount,
    NonFinite,
    InvalidValue,
    UnknownEventType,
    /// Event time behind the watermark: the window it belongs to is closed.
    Late,
    /// Event time too far ahead of the wall clock: admitted, it would move
    /// the watermark past every record that follows.
    FutureTime,
    /// A feedback or listing event whose idea never appeared within the wait.
    UnknownIdea,
}

impl RejectReason {
    pub const ALL: [RejectReason; 14] = [
        RejectReason::LineTooLong,
        RejectReason::InvalidUtf8,
        RejectReason::MalformedJson,
        RejectReason::NotAnObject,
        RejectReason::MissingField,
        RejectReason::EmptyField,
        RejectReason::WrongType,
        RejectReason::NegativeCount,
        RejectReason::NonFinite,
        RejectReason::InvalidValue,
        RejectReason::UnknownEventType,
        RejectReason::Late,
        RejectReason::FutureTime,
        RejectReason::UnknownIdea,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::LineTooLong => "line_too_long",
            RejectReason::InvalidUtf8 => "invalid_utf8",
            RejectReason::MalformedJson => "malformed_json",
            RejectReason::NotAnObject => "not_an_object",
            RejectReason::MissingField => "missing_field",
            RejectReason::EmptyField => "empty_field",
            RejectReason::WrongType => "wrong_type",
            RejectReason::NegativeCount => "negative_count",
            RejectReason::NonFinite => "non_finite",
            RejectReason::InvalidValue => "invalid_value",
            RejectReason::UnknownEventType => "unknown_event_type",
            RejectReason::Late => "late",
            RejectReason::FutureTime => "future_time",
            RejectReason::UnknownIdea => "unknown_idea",
        }
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal: the reason code plus a sentence a person can act on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct Rejection {
    pub reason: RejectReason,
    pub message: String,
}

impl Rejection {
    pub fn new(reason: RejectReason, message: impl Into<String>) -> Self {
        Rejection {
            reason,
            message: message.into(),
        }
    }
}

/// Where a refused record came from, so it can be found and replayed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Position {
    pub file: String,
    /// 1-based line number.
    pub line: u64,
    /// Byte offset of the line's start in the (decompressed) stream.
    pub offset: u64,
}

/// A dead-letter record: the raw input, where it was, and why it was refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub reason: RejectReason,
    pub message: String,
    pub position: Position,
    /// The raw line (lossily decoded when it was not UTF-8; cut to its first
    /// 64 KiB when it was over the line limit).
    pub raw: String,
}
