//! The common line parsed without a JSON tree: a bare Signal whose fields all
//! have their expected types, read straight into a [`Signal`].
//!
//! The tree walk in the parent module builds a map with an owned key and
//! value for every field, copies the 2 KB base64 vector into a string and
//! then decodes it again; on the replay path that was most of a line's cost.
//! Here serde reads the fields into a struct (strings borrowed from the line
//! where they are only looked at), and the vector is decoded from the line's
//! bytes into its floats.
//!
//! This path only ever *accepts*. Anything it does not take as it is (an
//! envelope, a missing, null, empty or mistyped field, a duplicate key, a
//! vector that does not decode) makes it answer `None`, and the line goes
//! through the tree walk, which gives today's rejection with its reason and
//! message. So the reasons cannot drift, and an accepted line must give
//! exactly the event the tree walk gives: the tests check that on generated
//! lines and on every mutation of them they make.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{checked_vector, normalize_topic, parse_time};
use crate::event::{EnvelopeMeta, Event, Payload};
use crate::signal::{Engagement, Signal, Source, EMBEDDING_DIM, MAX_CONTENT_CHARS};

/// A bare Signal line in the common form, or `None` for the tree walk to judge.
pub(super) fn parse_signal_line(text: &str) -> Option<Event> {
    let line: Line<'_> = serde_json::from_str(text).ok()?;
    // An envelope, or a Signal naming itself by `signalId` only: the tree walk
    // decides between them.
    if line.event_type.0 || (line.signal_id.0 && line.id.is_none()) {
        return None;
    }
    let id = required(line.id?)?;
    let source = Source::parse(&required(line.source?)?)?;
    let captured_at = parse_time(&required(line.captured_at?)?, "", "").ok()?;
    let content = required(line.content?)?;
    if content.chars().count() > MAX_CONTENT_CHARS {
        return None;
    }
    let published_at = match optional(line.published_at) {
        Some(s) => Some(parse_time(&s, "", "").ok()?),
        None => None,
    };
    let mut topics: Vec<String> = Vec::with_capacity(line.topics.as_ref().map_or(0, Vec::len));
    for topic in line.topics.unwrap_or_default() {
        let t = normalize_topic(&topic.0);
        if !t.is_empty() && !topics.contains(&t) {
            topics.push(t);
        }
    }
    let embedding = match line.embedding {
        Some(v) => Some(checked_vector(v.0, "").ok()?),
        None => None,
    };
    let e = line.engagement.unwrap_or_default();
    let engagement = Engagement {
        views: e.views.unwrap_or(0),
        likes: e.likes.unwrap_or(0),
        comments: e.comments.unwrap_or(0),
        shares: e.shares.unwrap_or(0),
    };
    let signal = Signal {
        id: id.into_owned(),
        source,
        captured_at,
        content: content.into_owned(),
        published_at,
        community: optional(line.community).map(Cow::into_owned),
        topics,
        locale: optional(line.locale).map(Cow::into_owned),
        engagement,
        url: optional(line.url).map(Cow::into_owned),
        metadata: line.metadata.unwrap_or_default(),
        embedding,
    };
    Some(Event {
        time: signal.captured_at,
        payload: Payload::Signal(Box::new(signal)),
        meta: EnvelopeMeta::default(),
    })
}

/// A required string as the tree walk takes it: not blank.
fn required(s: Str<'_>) -> Option<Cow<'_, str>> {
    (!s.0.trim().is_empty()).then_some(s.0)
}

/// An optional string as the tree walk takes it: blank is absent.
fn optional(s: Option<Str<'_>>) -> Option<Cow<'_, str>> {
    s.map(|s| s.0).filter(|s| !s.trim().is_empty())
}

/// The fields of a bare Signal line. Unknown fields are skipped, as the tree
/// walk ignores them; a duplicate known field is an error here (the tree walk
/// keeps the last one), so such a line goes the slow way.
#[derive(Deserialize)]
struct Line<'a> {
    #[serde(rename = "eventType", default)]
    event_type: Present,
    #[serde(rename = "signalId", default)]
    signal_id: Present,
    #[serde(borrow)]
    id: Option<Str<'a>>,
    #[serde(borrow)]
    source: Option<Str<'a>>,
    #[serde(borrow)]
    captured_at: Option<Str<'a>>,
    #[serde(borrow)]
    content: Option<Str<'a>>,
    #[serde(borrow)]
    published_at: Option<Str<'a>>,
    #[serde(borrow)]
    community: Option<Str<'a>>,
    #[serde(borrow)]
    topics: Option<Vec<Str<'a>>>,
    #[serde(borrow)]
    locale: Option<Str<'a>>,
    engagement: Option<Counts>,
    #[serde(borrow)]
    url: Option<Str<'a>>,
    metadata: Option<Map<String, Value>>,
    embedding: Option<Vector>,
}

/// Whether a field is there at all, whatever its value (`null` included): the
/// tree walk treats any object with an `eventType` key as an envelope.
#[derive(Default)]
struct Present(bool);

impl<'de> Deserialize<'de> for Present {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        IgnoredAny::deserialize(d).map(|_| Present(true))
    }
}

/// Engagement counts: whole non-negative numbers only (anything else is the
/// tree walk's to name).
#[derive(Default, Deserialize)]
struct Counts {
    views: Option<u64>,
    likes: Option<u64>,
    comments: Option<u64>,
    shares: Option<u64>,
}

/// A string borrowed from the line when it has no escapes.
struct Str<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(s.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// The embedding, decoded where it lies: base64 of 384 little-endian f32
/// straight into the floats, or an array of exactly 384 numbers. Whether the
/// floats are finite and of length 1 is `checked_vector`'s, as on the slow way.
struct Vector(Vec<f32>);

impl<'de> Deserialize<'de> for Vector {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Vector;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("base64 of 384 f32 or an array of 384 numbers")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                decode_base64(s.as_bytes())
                    .map(Vector)
                    .ok_or_else(|| E::custom("not 384 base64 floats"))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(EMBEDDING_DIM);
                while let Some(x) = seq.next_element::<f64>()? {
                    if out.len() == EMBEDDING_DIM {
                        return Err(de::Error::custom("more than 384 numbers"));
                    }
                    out.push(x as f32);
                }
                if out.len() != EMBEDDING_DIM {
                    return Err(de::Error::custom("fewer than 384 numbers"));
                }
                Ok(Vector(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// Standard base64 of exactly 1,536 bytes (2,048 characters, so no padding
/// and no partial last group: every decoder that accepts it agrees on the
/// bytes), decoded with SIMD into 384 floats.
fn decode_base64(encoded: &[u8]) -> Option<Vec<f32>> {
    const BYTES: usize = EMBEDDING_DIM * 4;
    if encoded.len() != BYTES / 3 * 4 {
        return None;
    }
    let mut bytes = [0u8; BYTES];
    let decoded = base64_simd::STANDARD
        .decode(encoded, base64_simd::Out::from_slice(&mut bytes))
        .ok()?;
    if decoded.len() != BYTES {
        return None;
    }
    Some(
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::{encode_embedding_base64, parse_line, parse_line_by_tree};
    use super::parse_signal_line;

    /// A signal line in the generator's shape, every field filled in.
    fn full_line(vector: &str) -> String {
        format!(
            r##"{{"id":"gen-7-11","source":"tiktok","captured_at":"2024-10-01T00:01:09Z","published_at":"2024-09-30T20:12:18Z","content":"Thanksgiving turkey as a minimalist poster today 11","community":"#holidayvibes","topics":["christmas"," #Christmas ","Fall"],"locale":"en-US","engagement":{{"views":56,"likes":1,"comments":0,"shares":0}},"url":"https://example.com/p/1","metadata":{{"truth":{{"niche":"holidays","idea":"1:4:3","dup":{{"kind":"original"}}}}}},"embedding":{vector}}}"##
        )
    }

    fn unit_vector(seed: u32) -> Vec<f32> {
        let mut v: Vec<f32> = (0..384u32)
            .map(|i| ((i.wrapping_mul(2654435761).wrapping_add(seed) % 1000) as f32 - 500.0) / 97.0)
            .collect();
        crate::embed::l2_normalize(&mut v);
        v
    }

    fn b64(v: &[f32]) -> String {
        format!("\"{}\"", encode_embedding_base64(v))
    }

    /// Both ways give the same event, or the same rejection (reason and
    /// message); `Debug` tells -0.0 from 0.0, so vectors compare bit for bit.
    fn same(line: &[u8]) {
        let fast = format!("{:?}", parse_line(line));
        let tree = format!("{:?}", parse_line_by_tree(line));
        assert_eq!(fast, tree, "line: {}", String::from_utf8_lossy(line));
    }

    #[test]
    fn the_common_line_takes_the_fast_way_and_agrees() {
        let line = full_line(&b64(&unit_vector(1)));
        assert!(parse_signal_line(&line).is_some());
        same(line.as_bytes());
        let numbers: Vec<String> = unit_vector(2).iter().map(|x| x.to_string()).collect();
        let line = full_line(&format!("[{}]", numbers.join(",")));
        assert!(parse_signal_line(&line).is_some());
        same(line.as_bytes());
        let minimal =
            r#"{"id":"a","source":"reddit","captured_at":"2024-01-15T10:30:00Z","content":"x"}"#;
        assert!(parse_signal_line(minimal).is_some());
        same(minimal.as_bytes());
    }

    /// Every field removed, nulled, blanked, mistyped or duplicated, and the
    /// vector in every wrong shape: the answer is the tree walk's each time.
    #[test]
    fn every_mutation_gets_the_tree_walks_answer() {
        let vector = b64(&unit_vector(3));
        let line = full_line(&vector);
        let fields = [
            "id",
            "source",
            "captured_at",
            "content",
            "published_at",
            "community",
            "topics",
            "locale",
            "engagement",
            "url",
            "metadata",
            "embedding",
        ];
        let values = [
            "null",
            "\"\"",
            "\"  \"",
            "0",
            "-1",
            "1.5",
            "true",
            "[]",
            "[\"a\",null]",
            "{}",
            "\"reddit\"",
            "\"2024-01-15T10:30:00+02:00\"",
            "\"caf\\u00e9 \\\"q\\\"\"",
            "{\"views\":-1}",
            "{\"views\":1e400}",
            "{\"likes\":18446744073709551616}",
            "{\"shares\":2.0}",
            "{\"views\":\"3\"}",
            "{\"views\":null,\"other\":1}",
        ];
        let mut lines = vec![line.clone()];
        for field in fields {
            let key = format!("\"{field}\":");
            let start = line.find(&key).unwrap();
            // The field's value ends at the next top-level comma or the end.
            let mut depth = 0;
            let mut in_str = false;
            let mut esc = false;
            let mut end = line.len() - 1;
            for (i, c) in line[start + key.len()..].char_indices() {
                match (in_str, esc, c) {
                    (true, true, _) => esc = false,
                    (true, false, '\\') => esc = true,
                    (true, false, '"') => in_str = false,
                    (false, _, '"') => in_str = true,
                    (false, _, '{' | '[') => depth += 1,
                    (false, _, '}' | ']') if depth > 0 => depth -= 1,
                    (false, _, ',' | '}') if depth == 0 => {
                        end = start + key.len() + i;
                        break;
                    }
                    _ => {}
                }
            }
            let (before, after) = (&line[..start], &line[end..]);
            let without = format!("{}{}", before, after.strip_prefix(',').unwrap_or(after));
            lines.push(without.replace(",}", "}"));
            for value in values {
                lines.push(format!("{before}{key}{value}{after}"));
            }
            // The same key twice: the tree walk keeps the last.
            lines.push(format!("{before}{key}\"dup\",{}{after}", &line[start..end]));
        }
        let mut big = unit_vector(4);
        big.iter_mut().for_each(|x| *x *= 3.0);
        let mut bad = unit_vector(5);
        bad[9] = f32::NAN;
        let short = encode_embedding_base64(&unit_vector(6)[..383]);
        let padded = format!("\"{}==\"", &short);
        for vector in [
            b64(&big),
            b64(&bad),
            b64(&[0.0; 384]),
            format!("\"{short}\""),
            padded,
            format!("\"{}\"", encode_embedding_base64(&[0.5; 385])),
            vector.replace('A', "!"),
            vector.replacen('A', "\\u0041", 1),
            format!("[{}]", ["0.05"; 384].join(",")),
            format!("[{}]", ["1"; 383].join(",")),
            format!("[{}]", ["1"; 385].join(",")),
            format!("[{},\"x\"]", ["1"; 383].join(",")),
            format!("[{},1e39]", ["1"; 383].join(",")),
        ] {
            lines.push(full_line(&vector));
        }
        let v = &vector;
        lines.extend([
            full_line(v).replacen('{', r#"{"eventType":null,"#, 1),
            full_line(v).replacen(r#""id""#, r#""signalId""#, 1),
            full_line(v).replacen('{', r#"{"signalId":"other","#, 1),
            full_line(v).replacen('{', r#"{"extra":{"deep":[1,2,{"x":null}]},"#, 1),
            full_line(v).replacen(r#""content""#, r#""con\u0074ent""#, 1),
            full_line(v).replacen("minimalist", &"é".repeat(5000), 1),
        ]);
        for line in &lines {
            same(line.as_bytes());
        }
        // Bytes that are not UTF-8, in a field neither way reads.
        let mut raw = full_line(v).replacen('{', r#"{"unknown":"#, 1).into_bytes();
        raw.splice(12..12, [b'"', 0xff, b'"', b',']);
        same(&raw);
    }

    proptest! {
        /// Random lines built from plausible and implausible pieces.
        #[test]
        fn random_lines_agree(
            id in prop::option::of(prop::sample::select(vec!["\"a1\"", "\"\"", "null", "7", "\"  x \""])),
            source in prop::option::of(prop::sample::select(vec!["\"reddit\"", "\"webhook\"", "\"Reddit\"", "null", "[]"])),
            time in prop::option::of(prop::sample::select(vec![
                "\"2024-01-15T10:30:00Z\"", "\"2024-01-15T10:30:00.123456789-05:00\"", "\"2024-13-01T00:00:00Z\"", "\"\"", "1"])),
            content in prop::option::of("[ a-zé#\\\\\"]{0,12}"),
            views in prop::option::of(prop::sample::select(vec!["0", "5", "-3", "4.0", "\"1\"", "null", "99999999999999999999"])),
            topics in prop::option::of(prop::collection::vec("[ #a-zA-Z]{0,5}", 0..4)),
            embedding in prop::option::of(0u8..4),
        ) {
            let mut fields = Vec::new();
            if let Some(v) = id { fields.push(format!("\"id\":{v}")); }
            if let Some(v) = source { fields.push(format!("\"source\":{v}")); }
            if let Some(v) = time { fields.push(format!("\"captured_at\":{v}")); }
            if let Some(v) = content { fields.push(format!("\"content\":{}", serde_json::Value::from(v))); }
            if let Some(v) = views { fields.push(format!("\"engagement\":{{\"views\":{v}}}")); }
            if let Some(t) = topics { fields.push(format!("\"topics\":{}", serde_json::Value::from(t))); }
            match embedding {
                Some(0) => fields.push(format!("\"embedding\":{}", b64(&unit_vector(7)))),
                Some(1) => fields.push(format!("\"embedding\":{}", b64(&[2.0; 384]))),
                Some(2) => fields.push("\"embedding\":\"AAAA\"".into()),
                Some(_) => fields.push("\"embedding\":null".into()),
                None => {}
            }
            let line = format!("{{{}}}", fields.join(","));
            same(line.as_bytes());
        }
    }
}
