//! Nostalgia-archive records, one JSON object per line:
//! `{"topic":"Tamagotchi", "year":1996, "date":"1996-11-23" (optional),
//!   "anniversary_year":2026, "description":"optional", "topics":["90s","toys"]}`.
//! The signal is the anniversary: "Tamagotchi turns 30 (1996)", captured on the
//! anniversary date (the date's month and day, or January 1, in anniversary_year;
//! --captured-at overrides).

use chrono::{Datelike, NaiveDate, TimeZone, Utc};
use ideaflow_operators::{RejectReason, Rejection, Signal, Source};
use serde_json::{json, Value};

use super::*;

pub fn adapt_record(v: &Value, options: &AdaptOptions) -> Result<Signal, Rejection> {
    let topic = req_str_at(v, "topic")?;
    let year = v
        .get("year")
        .and_then(Value::as_i64)
        .ok_or_else(|| Rejection::new(RejectReason::MissingField, "record has no numeric year"))?;
    let date = match str_at(v, "date") {
        Some(d) => Some(NaiveDate::parse_from_str(d, "%Y-%m-%d").map_err(|_| {
            Rejection::new(
                RejectReason::InvalidValue,
                format!("date {d:?} is not YYYY-MM-DD"),
            )
        })?),
        None => None,
    };
    let anniversary_year = match (
        v.get("anniversary_year").and_then(Value::as_i64),
        options.captured_at,
    ) {
        (Some(y), _) => y,
        (None, Some(t)) => t.year() as i64,
        (None, None) => {
            return Err(Rejection::new(
                RejectReason::MissingField,
                "record has no anniversary_year; add it or pass --captured-at",
            ))
        }
    };
    let age = anniversary_year - year;
    if age <= 0 {
        return Err(Rejection::new(
            RejectReason::InvalidValue,
            format!("anniversary_year {anniversary_year} is not after year {year}"),
        ));
    }
    let (m, d) = date.map(|d| (d.month(), d.day())).unwrap_or((1, 1));
    let when = NaiveDate::from_ymd_opt(anniversary_year as i32, m, d)
        .or_else(|| NaiveDate::from_ymd_opt(anniversary_year as i32, m, d - 1)) // Feb 29
        .ok_or_else(|| {
            Rejection::new(
                RejectReason::InvalidValue,
                "anniversary date does not exist",
            )
        })?;
    let captured = options
        .captured_at
        .unwrap_or_else(|| Utc.from_utc_datetime(&when.and_hms_opt(0, 0, 0).expect("midnight")));
    let headline = format!("{topic} turns {age} ({year})");
    let content = content_of(&[&headline, str_at(v, "description").unwrap_or("")])?;
    let mut s = signal(
        format!("archive-{}-{anniversary_year}", slug(topic)),
        Source::Archive,
        captured,
        content,
    );
    let mut topics = vec![json!(topic), json!("nostalgia")];
    if let Some(Value::Array(extra)) = v.get("topics") {
        topics.extend(extra.iter().cloned());
    }
    s.topics = topics_from(Some(&Value::Array(topics)));
    s.metadata.insert("original_year".into(), json!(year));
    s.metadata.insert("anniversary".into(), json!(age));
    Ok(s)
}

fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}
