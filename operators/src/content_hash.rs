//! Content identity: the normalized text two signals must share to be exact
//! duplicates, and its hash (the seed's `content_hash CHAR(32)`).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use unicode_normalization::UnicodeNormalization;

/// A content hash as rows carry it: its 16 bytes, written as 32 lowercase
/// hex digits wherever it leaves the process. Every live idea's row holds
/// one; as text it would be a 32-byte allocation of its own.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContentHash(pub [u8; 16]);

impl ContentHash {
    /// Its written form, in `buf` (no allocation).
    pub fn write<'b>(&self, buf: &'b mut [u8; 32]) -> &'b str {
        hex::encode_to_slice(self.0, buf).expect("32 hex digits for 16 bytes");
        std::str::from_utf8(buf).expect("hex digits are ASCII")
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.write(&mut [0; 32]))
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for ContentHash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.write(&mut [0; 32]))
    }
}

impl<'de> Deserialize<'de> for ContentHash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(deserializer)?;
        let mut bytes = [0; 16];
        hex::decode_to_slice(text.as_bytes(), &mut bytes).map_err(|e| {
            serde::de::Error::custom(format!(
                "{text:?} is not a content hash (32 hex digits): {e}"
            ))
        })?;
        Ok(ContentHash(bytes))
    }
}

/// NFKC, lowercase, punctuation/symbols/emoji removed, whitespace collapsed.
/// "Cats   in HATS!! 🐱" and "cats in hats" normalize to the same text.
pub fn normalize_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pending_space = false;
    for c in text.nfkc().flat_map(char::to_lowercase) {
        if c.is_alphanumeric() {
            if pending_space && !out.is_empty() {
                out.push(' ');
            }
            pending_space = false;
            out.push(c);
        } else if c.is_whitespace() {
            pending_space = true;
        }
        // Everything else (punctuation, symbols, emoji, joiners) is dropped.
        // Dropping rather than spacing keeps "don't" and "dont" together.
    }
    out
}

/// What a text is identified by, and whether it is legible: its normalized
/// form, or, for a text with no letters or digits at all ("🐱🐱🐱", "!!!"),
/// which would normalize to the empty string and so be one idea with every
/// other such text, its NFKC lowercase form with whitespace collapsed and
/// nothing dropped. The two forms cannot collide: the first is only letters,
/// digits and spaces; the second is never empty for content that passed
/// validation and holds none.
fn identity(text: &str) -> (String, bool) {
    let normalized = normalize_text(text);
    if normalized.is_empty() {
        (symbols_text(text), false)
    } else {
        (normalized, true)
    }
}

fn symbols_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text
        .nfkc()
        .flat_map(char::to_lowercase)
        .collect::<String>()
        .split_whitespace()
    {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// 128-bit content hash of the text's identity (its normalized form, see
/// [`content_identity`]), as 32 lowercase hex digits.
pub fn content_hash(text: &str) -> String {
    hex::encode(content_hash_bytes(text))
}

/// The same hash as raw bytes, for keys and filters.
pub fn content_hash_bytes(text: &str) -> [u8; 16] {
    content_identity(text).0
}

/// The content hash as raw bytes, and whether the text is legible: whether it
/// holds a letter or digit. The model reads an illegible text ("🐱🐱🐱",
/// "!!!") as unknown tokens only, so every such text embeds alike and its
/// vector says nothing about what it shows.
pub fn content_identity(text: &str) -> ([u8; 16], bool) {
    let (identity, legible) = identity(text);
    let digest = Sha256::digest(identity.as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    (out, legible)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_content_hash_is_written_as_its_hex_text() {
        let hash = ContentHash(content_hash_bytes("Cats in hats"));
        assert_eq!(hash.to_string(), content_hash("Cats in hats"));
        let json = serde_json::to_string(&hash).unwrap();
        assert_eq!(json, format!("\"{}\"", content_hash("Cats in hats")));
        assert_eq!(serde_json::from_str::<ContentHash>(&json).unwrap(), hash);
        assert!(serde_json::from_str::<ContentHash>("\"not hex\"").is_err());
        assert!(serde_json::from_str::<ContentHash>("\"abcd\"").is_err());
    }

    #[test]
    fn case_punctuation_emoji_and_spacing_do_not_matter() {
        assert_eq!(normalize_text("  Cats   in HATS!! 🐱 "), "cats in hats");
        assert_eq!(
            content_hash("Cats in hats"),
            content_hash("cats, in... hats 🐱🐱")
        );
        assert_ne!(content_hash("cats in hats"), content_hash("dogs in hats"));
        assert_eq!(content_hash("x").len(), 32);
    }

    #[test]
    fn texts_without_letters_or_digits_keep_their_symbols() {
        assert_ne!(content_hash("🐱🐱🐱"), content_hash("!!!"));
        assert_ne!(content_hash("🐱🐱🐱"), content_hash("🔥🔥"));
        assert_eq!(content_hash(" 🐱  🐱 "), content_hash("🐱 🐱"));
        assert_eq!(
            content_hash("！！！"),
            content_hash("!!!"),
            "NFKC still folds"
        );
        // A text with any letter or digit is identified as before.
        assert_eq!(content_hash("cats 🐱"), content_hash("CATS!!"));
        assert_eq!(identity("cats 🐱"), ("cats".to_owned(), true));
        assert_eq!(identity(" 🐱  🐱 "), ("🐱 🐱".to_owned(), false));
    }

    #[test]
    fn nfkc_folds_compatibility_forms() {
        assert_eq!(normalize_text("ｆｕｌｌｗｉｄｔｈ"), "fullwidth");
        assert_eq!(normalize_text("Ⅻ café"), normalize_text("xii café"));
    }
}
