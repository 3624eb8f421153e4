//! Idea identity: an idea is the set of signals sharing content (or merged
//! into it as near-duplicates), named by a UUID v5 of its content hash so that
//! every replay, worker count and machine names it the same.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use crate::content_hash::ContentHash;

/// An idea id: a UUID, written hyphenated and lowercase wherever it leaves
/// the process (rows, keys, JSON, SQL, Redis keys). Kept as its 128 bits, so
/// that the score row a tick re-issues per live idea copies 16 bytes instead
/// of sharing a string (whose counter every copy and drop would touch), and
/// ordered as its written form sorts (fixed-width lowercase hex).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IdeaId(Uuid);

impl IdeaId {
    /// The idea named by this content hash (see [`idea_id`]).
    pub fn of_content_hash(content_hash: &str) -> IdeaId {
        IdeaId(idea_id(content_hash))
    }

    /// The idea named by this content hash, as [`IdeaId::of_content_hash`]
    /// of its written form.
    pub fn of_hash(hash: ContentHash) -> IdeaId {
        IdeaId::of_content_hash(hash.write(&mut [0; 32]))
    }

    /// The id written as `text` (`None` for anything but the written form:
    /// see [`id_bits`]).
    pub fn parse(text: &str) -> Option<IdeaId> {
        id_bits(text).map(IdeaId::from_bits)
    }

    pub fn from_bits(bits: u128) -> IdeaId {
        IdeaId(Uuid::from_u128(bits))
    }

    pub fn bits(self) -> u128 {
        self.0.as_u128()
    }

    /// Its written form, in `buf` (no allocation).
    pub fn write<'b>(&self, buf: &'b mut [u8; 36]) -> &'b str {
        self.0.hyphenated().encode_lower(buf)
    }
}

/// Tests name ideas by short names: a name's bytes, left-aligned, so that
/// ids sort as their names do.
#[cfg(test)]
impl From<&str> for IdeaId {
    fn from(name: &str) -> IdeaId {
        assert!(name.len() <= 16, "a test idea's name is at most 16 bytes");
        let mut bytes = [0; 16];
        bytes[..name.len()].copy_from_slice(name.as_bytes());
        IdeaId(Uuid::from_bytes(bytes))
    }
}

impl fmt::Display for IdeaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for IdeaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for IdeaId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0.hyphenated())
    }
}

impl<'de> Deserialize<'de> for IdeaId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(deserializer)?;
        IdeaId::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{text:?} is not an idea id (a hyphenated lowercase UUID)"
            ))
        })
    }
}

/// Namespace for idea ids (a fixed random UUID; never change it: ids are stored).
pub const IDEA_NAMESPACE: Uuid = Uuid::from_u128(0x6a1d_ea5f_10e4_4c6b_9d0f_3b7a_52e8_c0d1);

/// An idea id's 128 bits (`None` for text that is no idea id). Only the form
/// ids are written in (hyphenated, lowercase) counts: state keyed by the bits
/// matches exactly the texts a map keyed by the id's text would.
pub fn id_bits(id: &str) -> Option<u128> {
    if id.len() != 36 || id.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    Uuid::parse_str(id).ok().map(|u| u.as_u128())
}

/// The text of the idea id with these bits (the inverse of [`id_bits`]).
pub fn id_text(bits: u128) -> String {
    Uuid::from_u128(bits).hyphenated().to_string()
}

/// The idea id for a content hash (32 hex digits, see [`crate::content_hash`]).
pub fn idea_id(content_hash: &str) -> Uuid {
    Uuid::new_v5(&IDEA_NAMESPACE, content_hash.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_bits_and_id_text_round_trip_the_written_form_only() {
        let id = idea_id("0123456789abcdef0123456789abcdef").to_string();
        let bits = id_bits(&id).expect("an idea id");
        assert_eq!(id_text(bits), id);
        // Other spellings of the same UUID are not the id as written: maps
        // keyed by the bits match exactly what maps keyed by the text did.
        assert_eq!(id_bits(&id.to_uppercase()), None);
        assert_eq!(id_bits(&id.replace('-', "")), None);
        assert_eq!(id_bits("not an id"), None);
    }

    #[test]
    fn an_idea_id_is_written_and_ordered_as_its_hyphenated_text() {
        let ids: Vec<IdeaId> = ["cats", "dogs", "", "0123456789abcdef0123456789abcdef"]
            .into_iter()
            .map(IdeaId::of_content_hash)
            .chain([IdeaId::from_bits(0), IdeaId::from_bits(u128::MAX)])
            .collect();
        for id in &ids {
            let text = id.to_string();
            assert_eq!(text, Uuid::from_u128(id.bits()).hyphenated().to_string());
            assert_eq!(id.write(&mut [0; 36]), text);
            assert_eq!(IdeaId::parse(&text), Some(*id));
            let json = serde_json::to_string(id).unwrap();
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(serde_json::from_str::<IdeaId>(&json).unwrap(), *id);
            for other in &ids {
                assert_eq!(id.cmp(other), text.cmp(&other.to_string()));
            }
        }
        assert_eq!(
            IdeaId::of_content_hash("0123456789abcdef0123456789abcdef").to_string(),
            idea_id("0123456789abcdef0123456789abcdef").to_string()
        );
        assert!(serde_json::from_str::<IdeaId>("\"NOT-AN-ID\"").is_err());
        let upper = ids[0].to_string().to_uppercase();
        assert!(serde_json::from_str::<IdeaId>(&format!("\"{upper}\"")).is_err());
    }
}
