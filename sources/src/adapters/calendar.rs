//! Event calendar CSV: header `date,name,locale,topics`; date is YYYY-MM-DD,
//! locale is empty for global events, topics are separated by `;` or `|`.
//! Each row becomes a `calendar` signal at 00:00 UTC of its date.

use chrono::{NaiveDate, TimeZone, Utc};
use ideaflow_operators::{RejectReason, Rejection, Signal, Source};
use serde_json::{json, Value};

use super::*;

pub fn adapt(input: &[u8]) -> Vec<Adapted> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(true)
        .from_reader(input);
    let headers = match reader.headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            return vec![Err((
                0,
                Rejection::new(
                    RejectReason::MalformedJson,
                    format!("unreadable CSV header: {e}"),
                ),
            ))]
        }
    };
    let col = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
    let (Some(date_col), Some(name_col)) = (col("date"), col("name")) else {
        return vec![Err((
            0,
            Rejection::new(
                RejectReason::MissingField,
                "calendar CSV needs a header with date,name[,locale,topics]",
            ),
        ))];
    };
    let (locale_col, topics_col) = (col("locale"), col("topics"));
    reader
        .records()
        .enumerate()
        .map(|(i, rec)| {
            let rec = rec.map_err(|e| {
                (
                    i as u64,
                    Rejection::new(RejectReason::MalformedJson, format!("bad CSV row: {e}")),
                )
            })?;
            row(&rec, date_col, name_col, locale_col, topics_col).map_err(|r| (i as u64, r))
        })
        .collect()
}

fn row(
    rec: &csv::StringRecord,
    date_col: usize,
    name_col: usize,
    locale_col: Option<usize>,
    topics_col: Option<usize>,
) -> Result<Signal, Rejection> {
    let date_s = rec.get(date_col).unwrap_or("");
    let date = NaiveDate::parse_from_str(date_s, "%Y-%m-%d").map_err(|_| {
        Rejection::new(
            RejectReason::InvalidValue,
            format!("date {date_s:?} is not YYYY-MM-DD"),
        )
    })?;
    let name = rec.get(name_col).unwrap_or("").trim();
    if name.is_empty() {
        return Err(Rejection::new(
            RejectReason::EmptyField,
            "event has no name",
        ));
    }
    let locale = locale_col
        .and_then(|c| rec.get(c))
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let topics: Vec<Value> = topics_col
        .and_then(|c| rec.get(c))
        .unwrap_or("")
        .split([';', '|'])
        .map(|t| json!(t))
        .collect();
    let at = Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0).expect("midnight exists"));
    let id = format!(
        "cal-{date}-{}",
        ideaflow_operators::content_hash::content_hash(&format!("{name}|{}", locale.unwrap_or("")))
    );
    let mut s = signal(id, Source::Calendar, at, content_of(&[name])?);
    s.published_at = Some(at);
    s.locale = locale.map(str::to_owned);
    s.topics = topics_from(Some(&Value::Array(topics)));
    Ok(s)
}
