//! Personal data purge, applied by every adapter before a signal exists:
//! e-mail addresses and phone numbers are masked, author handles are replaced
//! by a one-way hash so that the same author stays recognizable without being named.

use std::sync::LazyLock;

use regex::Regex;
use sha2::{Digest, Sha256};

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}").unwrap()
});

// International or national numbers with at least 9 digits, optionally grouped
// by spaces, dots, dashes or parentheses. Years, prices and percentages have fewer.
static PHONE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:\+\d{1,3}[\s.\-]?)?(?:\(\d{1,4}\)[\s.\-]?)?\d{2,4}(?:[\s.\-]?\d{2,4}){2,4}")
        .unwrap()
});

// Reddit-style u/name and @mentions.
static HANDLE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(^|[\s(\[,;:])(?:/?u/|@)([A-Za-z0-9_][A-Za-z0-9_\-]{1,38})").unwrap()
});

pub const EMAIL_MASK: &str = "[email]";
pub const PHONE_MASK: &str = "[phone]";

/// One-way, stable pseudonym for an author handle: `user_` + 12 hex digits.
pub fn hash_handle(handle: &str) -> String {
    let normalized = handle
        .trim()
        .trim_start_matches('@')
        .trim_start_matches("u/")
        .to_lowercase();
    let digest = Sha256::digest(format!("ideaflow-author:{normalized}").as_bytes());
    format!("user_{}", &hex::encode(digest)[..12])
}

/// Masks e-mail addresses and phone numbers and pseudonymizes handles in free text.
pub fn purge(text: &str) -> String {
    let text = EMAIL.replace_all(text, EMAIL_MASK);
    let text = PHONE.replace_all(&text, |caps: &regex::Captures<'_>| {
        let digits = caps[0].chars().filter(char::is_ascii_digit).count();
        if digits >= 9 {
            PHONE_MASK.to_string()
        } else {
            caps[0].to_string()
        }
    });
    HANDLE
        .replace_all(&text, |caps: &regex::Captures<'_>| {
            format!("{}@{}", &caps[1], hash_handle(&caps[2]))
        })
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_emails_and_phones() {
        let out = purge("mail jane.doe+x@example.co.uk or call +1 (415) 555-0134 now");
        assert!(!out.contains("jane"), "{out}");
        assert!(!out.contains("555"), "{out}");
        assert!(
            out.contains(EMAIL_MASK) && out.contains(PHONE_MASK),
            "{out}"
        );
    }

    #[test]
    fn keeps_ordinary_numbers() {
        let s = "73% of 2024 buyers paid $19.99";
        assert_eq!(purge(s), s);
    }

    #[test]
    fn pseudonymizes_handles() {
        let out = purge("thanks u/CatLover99 and @bob_smith");
        assert!(
            !out.contains("CatLover99") && !out.contains("bob_smith"),
            "{out}"
        );
        assert_eq!(hash_handle("@CatLover99"), hash_handle("u/catlover99"));
    }
}
