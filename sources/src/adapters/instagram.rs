//! Instagram hashtag top-media records (Graph API `/{hashtag-id}/top_media`
//! items, with the hashtag they were found under), one JSON object per line:
//! `{"hashtag":"cottagecore", "id":"1789...", "caption":"...", "like_count":120,
//!   "comments_count":8, "timestamp":"2024-01-15T09:00:00+0000", "permalink":"...",
//!   "username":"optional, pseudonymized"}`.

use ideaflow_operators::pii::hash_handle;
use ideaflow_operators::{Engagement, Rejection, Signal, Source};
use serde_json::{json, Value};

use super::*;

pub fn adapt_record(v: &Value, options: &AdaptOptions) -> Result<Signal, Rejection> {
    let id = match v.get("id") {
        Some(Value::Number(n)) => n.to_string(),
        _ => req_str_at(v, "id")?.to_owned(),
    };
    let hashtag = req_str_at(v, "hashtag")?.trim_start_matches('#');
    // The Graph API writes offsets as +0000; RFC 3339 wants +00:00.
    let raw_ts = req_str_at(v, "timestamp")?;
    let fixed = fix_offset(raw_ts);
    let published = rfc3339(&fixed, "timestamp")?;
    let content = content_of(&[str_at(v, "caption").unwrap_or(&format!("#{hashtag}"))])?;
    let mut s = signal(
        format!("ig-{id}"),
        Source::Instagram,
        options.captured_at.unwrap_or(published),
        content,
    );
    s.published_at = Some(published);
    s.community = Some(format!("#{hashtag}"));
    let mut topics = vec![json!(hashtag)];
    if let Some(caption) = str_at(v, "caption") {
        topics.extend(
            caption
                .split_whitespace()
                .filter(|w| w.starts_with('#'))
                .map(|w| json!(w)),
        );
    }
    s.topics = topics_from(Some(&Value::Array(topics)));
    s.engagement = Engagement {
        views: count_at(v, "impressions")?,
        likes: count_at(v, "like_count")?,
        comments: count_at(v, "comments_count")?,
        shares: 0,
    };
    s.url = str_at(v, "permalink").map(str::to_owned);
    if let Some(user) = str_at(v, "username") {
        s.metadata.insert("author".into(), json!(hash_handle(user)));
    }
    Ok(s)
}

fn fix_offset(ts: &str) -> String {
    let b = ts.as_bytes();
    if b.len() > 5
        && (b[b.len() - 5] == b'+' || b[b.len() - 5] == b'-')
        && b[b.len() - 4..].iter().all(u8::is_ascii_digit)
    {
        format!("{}:{}", &ts[..ts.len() - 2], &ts[ts.len() - 2..])
    } else {
        ts.to_owned()
    }
}
