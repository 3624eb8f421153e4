//! Adapters: raw platform payloads to canonical Signals. Each adapter purges
//! personal data (e-mails, phones masked; author handles pseudonymized) before
//! a Signal exists, and reports records it cannot use instead of dropping them.
//!
//! Accepted shapes are documented on each adapter and in `config/adapters.md`.

mod archive;
mod calendar;
mod instagram;
mod reddit;
mod tiktok;
mod youtube;

use chrono::{DateTime, TimeZone, Utc};
use ideaflow_operators::pii::purge;
use ideaflow_operators::signal::MAX_CONTENT_CHARS;
use ideaflow_operators::{RejectReason, Rejection, Signal};
use serde_json::Value;

/// The platforms `ideaflow normalize --adapter` knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Adapter {
    /// Reddit listing JSON (`/r/<sub>/hot.json`): data.children[].data.
    Reddit,
    /// YouTube Data API v3 `videos.list` response: items[] with snippet and statistics.
    Youtube,
    /// TikTok Creative Center hashtag-trend records, one JSON object per line.
    Tiktok,
    /// Instagram Graph API hashtag top-media records, one JSON object per line.
    Instagram,
    /// Event calendar CSV with header `date,name,locale,topics`.
    Calendar,
    /// Nostalgia archive records (topic, year), one JSON object per line.
    Archive,
}

impl Adapter {
    pub const ALL: [Adapter; 6] = [
        Adapter::Reddit,
        Adapter::Youtube,
        Adapter::Tiktok,
        Adapter::Instagram,
        Adapter::Calendar,
        Adapter::Archive,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Adapter::Reddit => "reddit",
            Adapter::Youtube => "youtube",
            Adapter::Tiktok => "tiktok",
            Adapter::Instagram => "instagram",
            Adapter::Calendar => "calendar",
            Adapter::Archive => "archive",
        }
    }

    pub fn parse(name: &str) -> Option<Adapter> {
        Adapter::ALL.into_iter().find(|a| a.name() == name)
    }
}

/// One adapted record: a Signal, or why the record at `record` (0-based) was refused.
pub type Adapted = Result<Signal, (u64, Rejection)>;

/// Settings shared by all adapters.
#[derive(Clone, Debug)]
pub struct AdaptOptions {
    /// Capture time for payloads that do not carry one (Reddit and YouTube
    /// responses say when a post was made, not when it was seen). Defaults to
    /// the record's own publication time, which keeps normalization deterministic.
    pub captured_at: Option<DateTime<Utc>>,
}

/// Converts a whole payload (the file's bytes) into Signals.
pub fn adapt(adapter: Adapter, input: &[u8], options: &AdaptOptions) -> Vec<Adapted> {
    match adapter {
        Adapter::Reddit => reddit::adapt(input, options),
        Adapter::Youtube => youtube::adapt(input, options),
        Adapter::Tiktok => per_line(input, |v| tiktok::adapt_record(v, options)),
        Adapter::Instagram => per_line(input, |v| instagram::adapt_record(v, options)),
        Adapter::Calendar => calendar::adapt(input),
        Adapter::Archive => per_line(input, |v| archive::adapt_record(v, options)),
    }
}

fn per_line(input: &[u8], f: impl Fn(&Value) -> Result<Signal, Rejection>) -> Vec<Adapted> {
    let mut out = Vec::new();
    for (i, line) in input.split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let result = std::str::from_utf8(line)
            .map_err(|e| Rejection::new(RejectReason::InvalidUtf8, e.to_string()))
            .and_then(|s| {
                serde_json::from_str::<Value>(s)
                    .map_err(|e| Rejection::new(RejectReason::MalformedJson, e.to_string()))
            })
            .and_then(|v| f(&v));
        out.push(result.map_err(|r| (i as u64, r)));
    }
    out
}

/// Parses a whole JSON document, or one refusal for all of it.
fn whole_document(input: &[u8]) -> Result<Value, Vec<Adapted>> {
    serde_json::from_slice(input).map_err(|e| {
        vec![Err((
            0,
            Rejection::new(
                RejectReason::MalformedJson,
                format!("payload is not valid JSON: {e}"),
            ),
        ))]
    })
}

/// Title and body joined, personal data purged, cut to the content limit.
fn content_of(parts: &[&str]) -> Result<String, Rejection> {
    let joined = parts
        .iter()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("\n\n");
    let purged = purge(&joined);
    if purged.trim().is_empty() {
        return Err(Rejection::new(
            RejectReason::EmptyField,
            "record has no text to use as content",
        ));
    }
    Ok(purged.chars().take(MAX_CONTENT_CHARS).collect())
}

fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
}

fn req_str_at<'a>(v: &'a Value, key: &str) -> Result<&'a str, Rejection> {
    str_at(v, key)
        .ok_or_else(|| Rejection::new(RejectReason::MissingField, format!("record has no {key}")))
}

/// A count that may be a number or a numeric string (YouTube sends strings).
fn count_at(v: &Value, key: &str) -> Result<u64, Rejection> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => n
            .as_u64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| *f >= 0.0 && f.is_finite())
                    .map(|f| f as u64)
            })
            .ok_or_else(|| {
                Rejection::new(
                    RejectReason::NegativeCount,
                    format!("{key} is {n}; counts must be non-negative"),
                )
            }),
        Some(Value::String(s)) => s.trim().parse::<u64>().map_err(|_| {
            Rejection::new(
                RejectReason::WrongType,
                format!("{key} is {s:?}; expected a non-negative integer"),
            )
        }),
        Some(other) => Err(Rejection::new(
            RejectReason::WrongType,
            format!("{key} must be a count, got {other}"),
        )),
    }
}

fn unix_time(secs: f64) -> Result<DateTime<Utc>, Rejection> {
    Utc.timestamp_opt(secs.trunc() as i64, 0)
        .single()
        .ok_or_else(|| {
            Rejection::new(
                RejectReason::InvalidValue,
                format!("{secs} is not a valid Unix time"),
            )
        })
}

fn rfc3339(s: &str, key: &str) -> Result<DateTime<Utc>, Rejection> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            Rejection::new(
                RejectReason::InvalidValue,
                format!("{key} {s:?} is not RFC 3339: {e}"),
            )
        })
}

fn topics_from(values: Option<&Value>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if let Some(Value::Array(items)) = values {
        for t in items.iter().filter_map(Value::as_str) {
            let t = ideaflow_operators::validate::normalize_topic(t);
            if !t.is_empty() && !out.contains(&t) {
                out.push(t);
            }
        }
    }
    out
}

fn signal(
    id: String,
    source: ideaflow_operators::Source,
    captured_at: DateTime<Utc>,
    content: String,
) -> Signal {
    Signal {
        id,
        source,
        captured_at,
        content,
        published_at: None,
        community: None,
        topics: Vec::new(),
        locale: None,
        engagement: Default::default(),
        url: None,
        metadata: Default::default(),
        embedding: None,
    }
}
