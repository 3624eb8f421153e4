//! Turns one raw input line into a validated [`Event`], or a [`Rejection`]
//! that says exactly what is wrong with it.
//!
//! Validation walks a `serde_json::Value` by hand instead of deriving
//! `Deserialize`: the reason codes (missing vs empty vs wrong type vs negative)
//! are part of the product, and serde's errors do not separate them.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::event::{
    ClassificationCorrected, EnvelopeMeta, Event, EventType, FeedbackReceived, ListingPublished,
    Payload,
};
use crate::rejection::{RejectReason as R, Rejection};
use crate::signal::{Engagement, Signal, Source, EMBEDDING_DIM, MAX_CONTENT_CHARS};

/// Longest accepted input line, in bytes (without its newline).
pub const MAX_LINE_BYTES: usize = 1 << 20;

mod fast;

type Result<T> = std::result::Result<T, Rejection>;

/// Validates one line: an event envelope, or a bare Signal (= `signal.ingested`).
///
/// A bare Signal in the common form is read without building a JSON tree
/// (`fast`); every other line, and every line with something wrong, is
/// judged by [`parse_line_by_tree`], so the two give the same event or the
/// same rejection.
pub fn parse_line(line: &[u8]) -> Result<Event> {
    if line.len() <= MAX_LINE_BYTES {
        if let Some(event) = std::str::from_utf8(line)
            .ok()
            .and_then(fast::parse_signal_line)
        {
            return Ok(event);
        }
    }
    parse_line_by_tree(line)
}

/// The reference validation: the line as a `serde_json::Value`, walked field by
/// field, naming the first thing wrong with it.
pub fn parse_line_by_tree(line: &[u8]) -> Result<Event> {
    if line.len() > MAX_LINE_BYTES {
        return Err(Rejection::new(
            R::LineTooLong,
            format!(
                "line is {} bytes; the limit is {MAX_LINE_BYTES}",
                line.len()
            ),
        ));
    }
    let text = std::str::from_utf8(line).map_err(|e| {
        Rejection::new(
            R::InvalidUtf8,
            format!("line is not valid UTF-8 (at byte {})", e.valid_up_to()),
        )
    })?;
    let value: Value = serde_json::from_str(text).map_err(|e| {
        let msg = e.to_string();
        if msg.contains("number out of range") {
            Rejection::new(
                R::NonFinite,
                format!("a number does not fit a finite float: {msg}"),
            )
        } else {
            Rejection::new(R::MalformedJson, format!("not valid JSON: {msg}"))
        }
    })?;
    let Value::Object(mut obj) = value else {
        return Err(Rejection::new(
            R::NotAnObject,
            "a line must hold one JSON object (an event envelope or a Signal)",
        ));
    };
    if obj.contains_key("eventType") {
        parse_envelope(&mut obj)
    } else {
        let signal = parse_signal(&mut obj, "")?;
        Ok(Event {
            time: signal.captured_at,
            payload: Payload::Signal(Box::new(signal)),
            meta: EnvelopeMeta::default(),
        })
    }
}

fn parse_envelope(obj: &mut Map<String, Value>) -> Result<Event> {
    let type_name = req_str(obj, "eventType", "")?;
    let event_type = EventType::parse(type_name).ok_or_else(|| {
        Rejection::new(
            R::UnknownEventType,
            format!(
                "eventType {type_name:?} is not one of signal.ingested, feedback.received, \
                 listing.published, classification.corrected"
            ),
        )
    })?;
    let meta = EnvelopeMeta {
        event_id: opt_str(obj, "eventId", "")?,
        correlation_id: opt_str(obj, "correlationId", "")?,
        producer: opt_str(obj, "source", "")?,
        version: opt_str(obj, "version", "")?,
    };
    let timestamp = opt_time(obj, "timestamp", "")?;
    let data = match obj.get_mut("data") {
        Some(Value::Object(d)) => d,
        None | Some(Value::Null) => return Err(missing("data", "")),
        Some(other) => return Err(wrong_type("data", "", "an object", other)),
    };
    let need_time = || timestamp.ok_or_else(|| missing("timestamp", ""));
    let (time, payload) = match event_type {
        EventType::SignalIngested => {
            let signal = parse_signal(data, "data.")?;
            (signal.captured_at, Payload::Signal(Box::new(signal)))
        }
        EventType::FeedbackReceived => {
            let p = "data.";
            let fb = FeedbackReceived {
                idea_id: req_str(data, "ideaId", p)?.to_owned(),
                marketplace: req_str(data, "marketplace", p)?.to_owned(),
                variant: req_str(data, "variant", p)?.to_owned(),
                impressions: count(data, "impressions", p)?,
                clicks: count(data, "clicks", p)?,
                favorites: count(data, "favorites", p)?,
                add_to_cart: count(data, "addToCart", p)?,
                sales: count(data, "sales", p)?,
            };
            (need_time()?, Payload::Feedback(fb))
        }
        EventType::ListingPublished => {
            let p = "data.";
            let published_at = req_time(data, "publishedAt", p)?;
            let listing = ListingPublished {
                idea_id: req_str(data, "ideaId", p)?.to_owned(),
                marketplace: req_str(data, "marketplace", p)?.to_owned(),
                listing_id: req_str(data, "listingId", p)?.to_owned(),
                variant: req_str(data, "variant", p)?.to_owned(),
                published_at,
            };
            (timestamp.unwrap_or(published_at), Payload::Listing(listing))
        }
        EventType::ClassificationCorrected => {
            let p = "data.";
            let rating = count(data, "rating", p)?;
            if !(1..=5).contains(&rating) {
                return Err(Rejection::new(
                    R::InvalidValue,
                    format!("data.rating is {rating}; it must be 1 to 5"),
                ));
            }
            let correction = ClassificationCorrected {
                sentence: req_str(data, "sentence", p)?.to_owned(),
                predicted: req_str(data, "predicted", p)?.to_owned(),
                correct: req_str(data, "correct", p)?.to_owned(),
                rating: rating as u8,
            };
            (need_time()?, Payload::Correction(correction))
        }
    };
    Ok(Event {
        time,
        payload,
        meta,
    })
}

/// Validates a Signal object; `prefix` names where it sits, for messages.
/// Its metadata is taken out of `obj`, not copied: it can be any size.
pub fn parse_signal(obj: &mut Map<String, Value>, prefix: &str) -> Result<Signal> {
    // Checked below, in field order, like the rest.
    let metadata = obj.get_mut("metadata").map(Value::take);
    // Envelopes from the seed's ingestion service call it signalId.
    let id = if obj.contains_key("id") || !obj.contains_key("signalId") {
        req_str(obj, "id", prefix)?
    } else {
        req_str(obj, "signalId", prefix)?
    };
    let source_name = req_str(obj, "source", prefix)?;
    let source = Source::parse(source_name).ok_or_else(|| {
        Rejection::new(
            R::InvalidValue,
            format!(
                "{prefix}source {source_name:?} is not one of reddit, youtube, tiktok, instagram, \
                 calendar, archive, webhook"
            ),
        )
    })?;
    let captured_at = req_time(obj, "captured_at", prefix)?;
    let content = req_str(obj, "content", prefix)?;
    let chars = content.chars().count();
    if chars > MAX_CONTENT_CHARS {
        return Err(Rejection::new(
            R::InvalidValue,
            format!("{prefix}content has {chars} characters; the limit is {MAX_CONTENT_CHARS}"),
        ));
    }
    let engagement = match obj.get("engagement") {
        None | Some(Value::Null) => Engagement::default(),
        Some(Value::Object(e)) => {
            let p = format!("{prefix}engagement.");
            Engagement {
                views: opt_count(e, "views", &p)?,
                likes: opt_count(e, "likes", &p)?,
                comments: opt_count(e, "comments", &p)?,
                shares: opt_count(e, "shares", &p)?,
            }
        }
        Some(other) => return Err(wrong_type("engagement", prefix, "an object", other)),
    };
    let metadata = match metadata {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(other) => return Err(wrong_type("metadata", prefix, "an object", &other)),
    };
    Ok(Signal {
        id: id.to_owned(),
        source,
        captured_at,
        content: content.to_owned(),
        published_at: opt_time(obj, "published_at", prefix)?,
        community: opt_str(obj, "community", prefix)?,
        topics: topics(obj, prefix)?,
        locale: opt_str(obj, "locale", prefix)?,
        engagement,
        url: opt_str(obj, "url", prefix)?,
        metadata,
        embedding: embedding(obj, prefix)?,
    })
}

/// Topics are compared as tags: trimmed, without a leading '#', lowercased, deduplicated.
pub fn normalize_topic(topic: &str) -> String {
    topic.trim().trim_start_matches('#').trim().to_lowercase()
}

fn topics(obj: &Map<String, Value>, prefix: &str) -> Result<Vec<String>> {
    match obj.get("topics") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => {
            let mut out: Vec<String> = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let Value::String(s) = item else {
                    return Err(wrong_type(
                        &format!("topics[{i}]"),
                        prefix,
                        "a string",
                        item,
                    ));
                };
                let t = normalize_topic(s);
                if !t.is_empty() && !out.contains(&t) {
                    out.push(t);
                }
            }
            Ok(out)
        }
        Some(other) => Err(wrong_type("topics", prefix, "an array of strings", other)),
    }
}

fn embedding(obj: &Map<String, Value>, prefix: &str) -> Result<Option<Vec<f32>>> {
    match obj.get("embedding") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => {
            if items.len() != EMBEDDING_DIM {
                return Err(Rejection::new(
                    R::InvalidValue,
                    format!(
                        "{prefix}embedding has {} values; it must have exactly {EMBEDDING_DIM}",
                        items.len()
                    ),
                ));
            }
            let mut out = Vec::with_capacity(EMBEDDING_DIM);
            for (i, item) in items.iter().enumerate() {
                let Some(x) = item.as_f64() else {
                    return Err(wrong_type(
                        &format!("embedding[{i}]"),
                        prefix,
                        "a number",
                        item,
                    ));
                };
                out.push(x as f32);
            }
            checked_vector(out, prefix).map(Some)
        }
        Some(Value::String(encoded)) => {
            checked_vector(embedding_base64(encoded, prefix)?, prefix).map(Some)
        }
        Some(other) => Err(wrong_type(
            "embedding",
            prefix,
            "an array of 384 numbers (or base64 of 384 little-endian f32)",
            other,
        )),
    }
}

/// The compact form bulk producers use: base64 (standard alphabet) of the 384
/// floats as little-endian IEEE 754 binary32, 2048 characters. Parsing it is
/// ~20x cheaper than 384 JSON numbers.
fn embedding_base64(encoded: &str, prefix: &str) -> Result<Vec<f32>> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| {
            Rejection::new(
                R::InvalidValue,
                format!("{prefix}embedding is a string but not valid base64: {e}"),
            )
        })?;
    if bytes.len() != EMBEDDING_DIM * 4 {
        return Err(Rejection::new(
            R::InvalidValue,
            format!(
                "{prefix}embedding decodes to {} bytes; it must be {} (384 little-endian f32)",
                bytes.len(),
                EMBEDDING_DIM * 4
            ),
        ));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// How far from length 1 a vector may be and still be taken as it is: the
/// model's own output (f32 rounding of a normalized vector) is well inside.
const UNIT_TOLERANCE: f64 = 1e-4;

/// Every component a finite f32, and a direction of length 1. Everything
/// downstream compares vectors by their dot product (near-duplicates, anchors,
/// centroids), which is their cosine only for unit vectors: a vector of
/// another length is scaled to 1 (in f64, so the same input always gives the
/// same vector), and the model's vectors pass bit for bit, so a replay of a
/// live run's output sees the vectors the live run saw. An all-zero vector
/// has no direction and is refused.
fn checked_vector(mut v: Vec<f32>, prefix: &str) -> Result<Vec<f32>> {
    if plainly_unit(&v) {
        return Ok(v);
    }
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(Rejection::new(
            R::NonFinite,
            format!("{prefix}embedding[{i}] is not a finite 32-bit float"),
        ));
    }
    let norm = v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    if norm == 0.0 {
        return Err(Rejection::new(
            R::InvalidValue,
            format!(
                "{prefix}embedding is all zeros, which has no direction; send the model's vector, \
                 or leave embedding out to have ideaflow embed the content"
            ),
        ));
    }
    if (norm - 1.0).abs() > UNIT_TOLERANCE {
        for x in &mut v {
            *x = (f64::from(*x) / norm) as f32;
        }
    }
    Ok(v)
}

/// Whether `v` is finite and so close to length 1 that the sequential norm
/// below would leave it as it is: the common case, told apart with eight
/// independent sums the compiler vectorizes instead of one chain of 384
/// dependent additions. The two sums of the same squares differ by ~1e-13, far
/// inside half the tolerance, so the answer is the same; a non-finite
/// component makes the sum non-finite.
fn plainly_unit(v: &[f32]) -> bool {
    let mut lanes = [0f64; 8];
    let chunks = v.chunks_exact(8);
    let rest: f64 = chunks
        .remainder()
        .iter()
        .map(|&x| f64::from(x).powi(2))
        .sum();
    for chunk in chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane += f64::from(x) * f64::from(x);
        }
    }
    let norm = (lanes.iter().sum::<f64>() + rest).sqrt();
    norm.is_finite() && (norm - 1.0).abs() < UNIT_TOLERANCE / 2.0
}

/// Encodes an embedding in the base64 form `embedding` accepts.
pub fn encode_embedding_base64(v: &[f32]) -> String {
    use base64::Engine;
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn missing(field: &str, prefix: &str) -> Rejection {
    Rejection::new(
        R::MissingField,
        format!("required field {prefix}{field} is missing"),
    )
}

fn wrong_type(field: &str, prefix: &str, expected: &str, got: &Value) -> Rejection {
    Rejection::new(
        R::WrongType,
        format!("{prefix}{field} must be {expected}, got {}", type_name(got)),
    )
}

fn req_str<'a>(obj: &'a Map<String, Value>, field: &str, prefix: &str) -> Result<&'a str> {
    match obj.get(field) {
        None | Some(Value::Null) => Err(missing(field, prefix)),
        Some(Value::String(s)) if s.trim().is_empty() => Err(Rejection::new(
            R::EmptyField,
            format!("required field {prefix}{field} is empty"),
        )),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(wrong_type(field, prefix, "a string", other)),
    }
}

fn opt_str(obj: &Map<String, Value>, field: &str, prefix: &str) -> Result<Option<String>> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(wrong_type(field, prefix, "a string", other)),
    }
}

fn parse_time(s: &str, field: &str, prefix: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            Rejection::new(
                R::InvalidValue,
                format!("{prefix}{field} {s:?} is not an RFC 3339 time ({e}); use e.g. 2024-01-15T10:30:00Z"),
            )
        })
}

fn req_time(obj: &Map<String, Value>, field: &str, prefix: &str) -> Result<DateTime<Utc>> {
    parse_time(req_str(obj, field, prefix)?, field, prefix)
}

fn opt_time(obj: &Map<String, Value>, field: &str, prefix: &str) -> Result<Option<DateTime<Utc>>> {
    opt_str(obj, field, prefix)?
        .map(|s| parse_time(&s, field, prefix))
        .transpose()
}

fn count(obj: &Map<String, Value>, field: &str, prefix: &str) -> Result<u64> {
    match obj.get(field) {
        None | Some(Value::Null) => Err(missing(field, prefix)),
        Some(v) => count_value(v, field, prefix),
    }
}

fn opt_count(obj: &Map<String, Value>, field: &str, prefix: &str) -> Result<u64> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(0),
        Some(v) => count_value(v, field, prefix),
    }
}

fn count_value(v: &Value, field: &str, prefix: &str) -> Result<u64> {
    match v {
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                Ok(u)
            } else if n.as_i64().is_some() {
                Err(Rejection::new(
                    R::NegativeCount,
                    format!("{prefix}{field} is {n}; counts must be non-negative"),
                ))
            } else {
                Err(Rejection::new(
                    R::WrongType,
                    format!("{prefix}{field} is {n}; counts must be whole numbers"),
                ))
            }
        }
        other => Err(wrong_type(field, prefix, "a non-negative integer", other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(line: &str) -> R {
        parse_line(line.as_bytes()).unwrap_err().reason
    }

    const GOOD: &str = r#"{"id":"a1","source":"reddit","captured_at":"2024-01-15T10:30:00Z","content":"Cats in tiny hats","engagement":{"views":10}}"#;

    #[test]
    fn bare_signal_is_signal_ingested() {
        let ev = parse_line(GOOD.as_bytes()).unwrap();
        let Payload::Signal(s) = ev.payload else {
            panic!("not a signal")
        };
        assert_eq!(s.id, "a1");
        assert_eq!(s.engagement.views, 10);
        assert_eq!(ev.time, s.captured_at);
    }

    #[test]
    fn envelope_with_signal_id() {
        let line = r#"{"eventType":"signal.ingested","eventId":"e1","timestamp":"2024-01-15T10:30:00Z","source":"svc","version":"1.0","data":{"signalId":"s9","source":"tiktok","captured_at":"2024-01-15T10:29:00Z","content":"x y z"},"correlationId":"c"}"#;
        let ev = parse_line(line.as_bytes()).unwrap();
        assert_eq!(ev.meta.event_id.as_deref(), Some("e1"));
        let Payload::Signal(s) = ev.payload else {
            panic!()
        };
        assert_eq!(s.id, "s9");
    }

    #[test]
    fn reasons_are_precise() {
        assert_eq!(reason("{not json"), R::MalformedJson);
        assert_eq!(reason("[1,2]"), R::NotAnObject);
        assert_eq!(
            reason(r#"{"source":"reddit","captured_at":"2024-01-15T10:30:00Z","content":"x"}"#),
            R::MissingField
        );
        assert_eq!(
            reason(&GOOD.replace("Cats in tiny hats", "   ")),
            R::EmptyField
        );
        assert_eq!(
            reason(&GOOD.replace(r#""views":10"#, r#""views":-1"#)),
            R::NegativeCount
        );
        assert_eq!(
            reason(&GOOD.replace(r#""views":10"#, r#""views":"10""#)),
            R::WrongType
        );
        assert_eq!(
            reason(&GOOD.replace(r#""views":10"#, r#""views":1e999"#)),
            R::NonFinite
        );
        assert_eq!(reason(&GOOD.replace("reddit", "myspace")), R::InvalidValue);
        assert_eq!(
            reason(&GOOD.replace("2024-01-15T10:30:00Z", "yesterday")),
            R::InvalidValue
        );
        assert_eq!(
            reason(r#"{"eventType":"idea.exploded","data":{}}"#),
            R::UnknownEventType
        );
        assert_eq!(
            parse_line(b"{\"id\":\"\xff\"}").unwrap_err().reason,
            R::InvalidUtf8
        );
    }

    #[test]
    fn embedding_in_base64_round_trips_and_is_checked() {
        let mut v: Vec<f32> = (0..EMBEDDING_DIM).map(|i| i as f32 / 1000.0).collect();
        crate::embed::l2_normalize(&mut v);
        let line = GOOD.replace(
            "}}",
            &format!("}},\"embedding\":\"{}\"}}", encode_embedding_base64(&v)),
        );
        let Payload::Signal(s) = parse_line(line.as_bytes()).unwrap().payload else {
            panic!("a signal")
        };
        assert_eq!(s.embedding.unwrap(), v);
        let short = GOOD.replace("}}", "},\"embedding\":\"AAAA\"}");
        let err = parse_line(short.as_bytes()).unwrap_err();
        assert!(err.message.contains("1536"), "{}", err.message);
        let bad = GOOD.replace("}}", "},\"embedding\":\"not base64!\"}");
        assert!(parse_line(bad.as_bytes()).is_err());
    }

    #[test]
    fn embedding_must_be_384_finite() {
        let short = GOOD.replace("}}", "},\"embedding\":[0.1,0.2]}");
        assert_eq!(reason(&short), R::InvalidValue);
        let mut v = vec!["0.0".to_string(); 384];
        v[3] = "1e39".into();
        let huge = GOOD.replace("}}", &format!("}},\"embedding\":[{}]}}", v.join(",")));
        assert_eq!(reason(&huge), R::NonFinite);
        let zeros = GOOD.replace(
            "}}",
            &format!("}},\"embedding\":[{}]}}", ["0"; 384].join(",")),
        );
        assert_eq!(reason(&zeros), R::InvalidValue);
        let zeros = GOOD.replace(
            "}}",
            &format!(
                "}},\"embedding\":\"{}\"}}",
                encode_embedding_base64(&[0.0; 384])
            ),
        );
        assert_eq!(reason(&zeros), R::InvalidValue);
    }

    fn parsed_embedding(v: &[f32]) -> Vec<f32> {
        let line = GOOD.replace(
            "}}",
            &format!("}},\"embedding\":\"{}\"}}", encode_embedding_base64(v)),
        );
        let Payload::Signal(s) = parse_line(line.as_bytes()).unwrap().payload else {
            panic!("not a signal: {line}");
        };
        s.embedding.unwrap()
    }

    #[test]
    fn embeddings_are_taken_as_unit_vectors() {
        let unit = |v: &[f32]| {
            let n = v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
            (n - 1.0).abs() < 1e-6
        };
        // A direction, however short or long, becomes its unit vector.
        let mut tiny = vec![0.0; 384];
        tiny[7] = -1e-30;
        let v = parsed_embedding(&tiny);
        assert_eq!((v[7], v.iter().filter(|&&x| x != 0.0).count()), (-1.0, 1));
        for scale in [0.05f32, 3.0, 1e30] {
            let v = parsed_embedding(&vec![scale; 384]);
            assert!(unit(&v), "{scale}: {:?}", &v[..3]);
            assert!(v.iter().all(|&x| x == v[0]));
        }
        // The model's vectors (unit up to f32 rounding) pass bit for bit.
        let mut model: Vec<f32> = (0..384)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        crate::embed::l2_normalize(&mut model);
        let passed = parsed_embedding(&model);
        assert!(passed
            .iter()
            .zip(&model)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
    }
}
