//! Idea identity: an idea is the set of signals sharing content (or merged
//! into it as near-duplicates), named by a UUID v5 of its content hash so that
//! every replay, worker count and machine names it the same.

use std::sync::Arc;

use uuid::Uuid;

/// An idea id as rows and keys carry it: shared, not copied, because every
/// tick re-issues a score row (and its key and feedback fact) per live idea.
pub type IdeaId = Arc<str>;

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
}
