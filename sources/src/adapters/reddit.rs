//! Reddit listing JSON, as `/r/<sub>/hot.json` returns it:
//! `{"kind":"Listing","data":{"children":[{"kind":"t3","data":{...}}]}}`.
//! Used fields: id, title, selftext, subreddit, created_utc, ups, num_comments,
//! num_crossposts, view_count, permalink, author (pseudonymized), link_flair_text.

use ideaflow_operators::pii::hash_handle;
use ideaflow_operators::{Engagement, RejectReason, Rejection, Signal, Source};
use serde_json::{json, Value};

use super::*;

pub fn adapt(input: &[u8], options: &AdaptOptions) -> Vec<Adapted> {
    let doc = match whole_document(input) {
        Ok(v) => v,
        Err(e) => return e,
    };
    let Some(children) = doc.pointer("/data/children").and_then(Value::as_array) else {
        return vec![Err((
            0,
            Rejection::new(
                RejectReason::MissingField,
                "not a Reddit listing: data.children is missing",
            ),
        ))];
    };
    children
        .iter()
        .enumerate()
        .map(|(i, child)| {
            post(child.get("data").unwrap_or(&Value::Null), options).map_err(|r| (i as u64, r))
        })
        .collect()
}

fn post(d: &Value, options: &AdaptOptions) -> Result<Signal, Rejection> {
    let id = req_str_at(d, "id")?;
    let created = d
        .get("created_utc")
        .and_then(Value::as_f64)
        .ok_or_else(|| Rejection::new(RejectReason::MissingField, "post has no created_utc"))?;
    let published = unix_time(created)?;
    let content = content_of(&[
        str_at(d, "title").unwrap_or(""),
        str_at(d, "selftext").unwrap_or(""),
    ])?;
    let mut s = signal(
        format!("t3_{id}"),
        Source::Reddit,
        options.captured_at.unwrap_or(published),
        content,
    );
    s.published_at = Some(published);
    s.community = str_at(d, "subreddit").map(|c| format!("r/{c}"));
    s.engagement = Engagement {
        views: count_at(d, "view_count")?,
        likes: count_at(d, "ups")?,
        comments: count_at(d, "num_comments")?,
        shares: count_at(d, "num_crossposts")?,
    };
    s.url = str_at(d, "permalink").map(|p| format!("https://www.reddit.com{p}"));
    s.topics = topics_from(Some(&json!([str_at(d, "link_flair_text").unwrap_or("")])));
    if let Some(author) = str_at(d, "author") {
        s.metadata
            .insert("author".into(), json!(hash_handle(author)));
    }
    Ok(s)
}
