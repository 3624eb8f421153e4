//! The words a sentence uses, as features beside its embedding.
//!
//! The anchor classes are speech acts (a hunch, a finding, a recommendation,
//! a creative concept), and a mean-pooled sentence embedding mostly says what
//! a sentence is *about*. The cue words the seed's anchors list ("suspect",
//! "data", "should", "imagine", a figure or a percentage) carry the act, so
//! the calibrated classes also read which words of a learned vocabulary a
//! sentence contains.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Stands for every token with a digit in it: figures are evidence whatever
/// their value.
const NUMBER: &str = "<num>";

/// The distinct terms of `text`: lowercase runs of letters and digits, `%`
/// on its own, and any token holding a digit as [`NUMBER`].
pub fn terms(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut token = String::new();
    let mut flush = |token: &mut String| {
        if token.is_empty() {
            return;
        }
        if token.chars().any(|c| c.is_numeric()) {
            out.insert(NUMBER.to_owned());
        } else {
            out.insert(std::mem::take(token));
        }
        token.clear();
    };
    for c in text.chars() {
        if c.is_alphanumeric() {
            token.extend(c.to_lowercase());
        } else {
            flush(&mut token);
            if c == '%' {
                token.push('%');
                flush(&mut token);
            }
        }
    }
    flush(&mut token);
    out
}

/// The terms that occur in at least `min_count` training texts, in order: a
/// term seen once says more about that sentence than about its class.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Vocabulary {
    terms: Vec<String>,
}

impl Vocabulary {
    pub fn learn<'a>(texts: impl IntoIterator<Item = &'a str>, min_count: usize) -> Self {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for text in texts {
            for term in terms(text) {
                *counts.entry(term).or_default() += 1;
            }
        }
        Vocabulary {
            terms: counts
                .into_iter()
                .filter(|(_, n)| *n >= min_count)
                .map(|(t, _)| t)
                .collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.terms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// `text`'s known terms as (index, value): each `weight / √(known terms)`,
    /// so that a long sentence's words weigh as much together as a short one's.
    pub fn features(&self, text: &str, weight: f64) -> Vec<(usize, f64)> {
        if weight == 0.0 {
            return Vec::new();
        }
        let known: Vec<usize> = terms(text)
            .iter()
            .filter_map(|t| self.terms.binary_search(t).ok())
            .collect();
        let value = weight / (known.len().max(1) as f64).sqrt();
        known.into_iter().map(|i| (i, value)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_are_lowercase_words_figures_and_percent_signs() {
        let t: Vec<String> = terms("Sales rose 12.5% — we SHOULD re-test it, Café!")
            .into_iter()
            .collect();
        assert_eq!(
            t,
            ["%", "<num>", "café", "it", "re", "rose", "sales", "should", "test", "we"]
        );
    }

    #[test]
    fn the_vocabulary_keeps_repeated_terms_and_weighs_by_length() {
        let v = Vocabulary::learn(["we should test", "you should try", "data shows"], 2);
        assert_eq!(v.len(), 1, "only `should` occurs twice");
        assert_eq!(v.features("We should, we SHOULD", 2.0), vec![(0, 2.0)]);
        assert!(v.features("nothing known", 1.0).is_empty());
        assert!(v.features("should", 0.0).is_empty(), "weight 0: off");
    }
}
