//! TikTok hashtag-trend records (the Creative Center "trending hashtags" list),
//! one JSON object per line:
//! `{"hashtag_id":"123", "hashtag_name":"catsoftiktok", "country_info":{"id":"US"},
//!   "publish_cnt":1200, "video_views":3400000, "rank":3,
//!   "trend":[{"time":1705276800,"value":0.4}, ...], "description":"optional",
//!   "captured_at":"2024-01-15T10:00:00Z"}`.
//! captured_at (RFC 3339) or the last trend point's time gives the capture time.

use ideaflow_operators::{Engagement, RejectReason, Rejection, Signal, Source};
use serde_json::{json, Value};

use super::*;

pub fn adapt_record(v: &Value, options: &AdaptOptions) -> Result<Signal, Rejection> {
    let name = req_str_at(v, "hashtag_name")?.trim_start_matches('#');
    let id = str_at(v, "hashtag_id").unwrap_or(name);
    let last_trend = v.get("trend").and_then(Value::as_array).and_then(|t| {
        t.iter()
            .filter_map(|p| p.get("time").and_then(Value::as_f64))
            .reduce(f64::max)
    });
    let captured = match (options.captured_at, str_at(v, "captured_at"), last_trend) {
        (Some(t), _, _) => t,
        (None, Some(s), _) => rfc3339(s, "captured_at")?,
        (None, None, Some(t)) => unix_time(t)?,
        _ => {
            return Err(Rejection::new(
                RejectReason::MissingField,
                "record has neither captured_at nor trend points; pass --captured-at",
            ))
        }
    };
    let content = content_of(&[&format!("#{name}"), str_at(v, "description").unwrap_or("")])?;
    let locale = v
        .pointer("/country_info/id")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let mut s = signal(
        format!("tiktok-{id}-{}", captured.timestamp()),
        Source::Tiktok,
        captured,
        content,
    );
    s.topics = topics_from(Some(&json!([name])));
    s.community = Some(format!("#{name}"));
    s.locale = locale;
    s.engagement = Engagement {
        views: count_at(v, "video_views")?,
        likes: 0,
        comments: 0,
        shares: count_at(v, "publish_cnt")?,
    };
    if let Some(rank) = v.get("rank").and_then(Value::as_u64) {
        s.metadata.insert("rank".into(), json!(rank));
    }
    s.url = Some(format!("https://www.tiktok.com/tag/{name}"));
    Ok(s)
}
