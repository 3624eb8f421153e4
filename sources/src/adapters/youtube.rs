//! YouTube Data API v3 `videos.list` responses (part=snippet,statistics):
//! `{"items":[{"id":..., "snippet":{title, description, tags, publishedAt,
//! channelTitle, defaultLanguage}, "statistics":{viewCount, likeCount, commentCount}}]}`.
//! The API sends statistics as strings; both strings and numbers are accepted.

use ideaflow_operators::{Engagement, RejectReason, Rejection, Signal, Source};
use serde_json::Value;

use super::*;

pub fn adapt(input: &[u8], options: &AdaptOptions) -> Vec<Adapted> {
    let doc = match whole_document(input) {
        Ok(v) => v,
        Err(e) => return e,
    };
    let Some(items) = doc.get("items").and_then(Value::as_array) else {
        return vec![Err((
            0,
            Rejection::new(
                RejectReason::MissingField,
                "not a videos.list response: items is missing",
            ),
        ))];
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| video(item, options).map_err(|r| (i as u64, r)))
        .collect()
}

fn video(item: &Value, options: &AdaptOptions) -> Result<Signal, Rejection> {
    let id = match item.get("id") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        // search.list puts the id in {"videoId": ...}
        Some(Value::Object(o)) => o
            .get("videoId")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| Rejection::new(RejectReason::MissingField, "item has no id"))?,
        _ => return Err(Rejection::new(RejectReason::MissingField, "item has no id")),
    };
    let snippet = item
        .get("snippet")
        .ok_or_else(|| Rejection::new(RejectReason::MissingField, "item has no snippet"))?;
    let published = rfc3339(req_str_at(snippet, "publishedAt")?, "snippet.publishedAt")?;
    let content = content_of(&[
        str_at(snippet, "title").unwrap_or(""),
        str_at(snippet, "description").unwrap_or(""),
    ])?;
    let stats = item.get("statistics").cloned().unwrap_or(Value::Null);
    let mut s = signal(
        id.clone(),
        Source::Youtube,
        options.captured_at.unwrap_or(published),
        content,
    );
    s.published_at = Some(published);
    s.community = str_at(snippet, "channelTitle").map(str::to_owned);
    s.topics = topics_from(snippet.get("tags"));
    s.locale = str_at(snippet, "defaultLanguage")
        .or_else(|| str_at(snippet, "defaultAudioLanguage"))
        .map(str::to_owned);
    s.engagement = Engagement {
        views: count_at(&stats, "viewCount")?,
        likes: count_at(&stats, "likeCount")?,
        comments: count_at(&stats, "commentCount")?,
        shares: 0,
    };
    s.url = Some(format!("https://www.youtube.com/watch?v={id}"));
    Ok(s)
}
