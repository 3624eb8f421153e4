//! Seed 000's semantic classifier (`SemanticBrain.classify_text`), sentence
//! for sentence: split on `[.!?]+`, skip sentences under 10 characters, route
//! each to the anchor with the highest cosine similarity, and call it a Hunch
//! when even the best is below the confidence threshold (0.3).
//!
//! Pure: callers embed the anchors and sentences and pass the vectors in.
//!
//! Beside it, [`calibrated`]: classes from the anchors and labeled examples,
//! calibrated, with Hunch only for sentences between classes; and
//! [`evaluate`]: accuracy, precision, recall and the confusion matrix of
//! either on labeled sentences.

pub mod calibrated;
pub mod evaluate;
pub mod lexical;

use std::sync::LazyLock;

use regex::Regex;
use serde_json::{json, Map, Value};

use crate::embed::cosine;

static SENTENCE_END: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[.!?]+").expect("valid regex"));

/// The seed's `_split_sentences`: split on runs of `.`, `!`, `?`; trim; drop empties.
pub fn split_sentences(text: &str) -> Vec<String> {
    SENTENCE_END
        .split(text)
        .map(|s| s.trim_matches(is_py_whitespace))
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Python's `str.strip()` whitespace (Unicode White_Space plus the ASCII separators).
fn is_py_whitespace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// The fallback category for low-confidence sentences.
pub const FALLBACK: &str = "Hunch";

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Anchor {
    pub name: String,
    pub embedding: Vec<f32>,
}

#[derive(Clone, Debug)]
pub struct Classifier {
    anchors: Vec<Anchor>,
    threshold: f32,
    min_chars: usize,
}

/// One sentence's routing: every anchor's similarity, the winner, and whether
/// the fallback applied.
#[derive(Clone, Debug, PartialEq)]
pub struct Routing {
    pub similarities: Vec<(String, f32)>,
    pub category: String,
    pub confidence: f32,
    pub fell_back: bool,
    /// The best score less the second best: how clearly it won.
    pub margin: f32,
}

/// The best and the runner-up of `scores` (the earlier wins a tie, as
/// Python's `max` does): (index of the best, best − second).
pub(crate) fn best_and_margin<T>(scores: &[T]) -> (usize, T)
where
    T: Copy + PartialOrd + std::ops::Sub<Output = T> + Default,
{
    let mut best = 0;
    for (i, s) in scores.iter().enumerate() {
        if *s > scores[best] {
            best = i;
        }
    }
    let second = scores
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != best)
        .map(|(_, s)| *s)
        .fold(None, |top: Option<T>, s| match top {
            Some(t) if t >= s => Some(t),
            _ => Some(s),
        });
    let margin = match (scores.get(best), second) {
        (Some(b), Some(s)) => *b - s,
        _ => T::default(),
    };
    (best, margin)
}

impl Classifier {
    /// The same classifier routing against other anchors (moved by feedback).
    pub fn with_anchors(&self, anchors: Vec<Anchor>) -> Classifier {
        Classifier {
            anchors,
            threshold: self.threshold,
            min_chars: self.min_chars,
        }
    }

    /// Anchors in the seed's order (ties go to the earlier one, as Python's `max` does).
    pub fn new(anchors: Vec<Anchor>, threshold: f32, min_chars: usize) -> Self {
        Classifier {
            anchors,
            threshold,
            min_chars,
        }
    }

    pub fn anchors(&self) -> &[Anchor] {
        &self.anchors
    }

    /// The sentences `classify_text` would route (split, trimmed, long enough).
    pub fn sentences(&self, text: &str) -> Vec<String> {
        split_sentences(text)
            .into_iter()
            .filter(|s| s.chars().count() >= self.min_chars)
            .collect()
    }

    /// The seed's `_classify_sentence`.
    pub fn route(&self, embedding: &[f32]) -> Routing {
        let similarities: Vec<(String, f32)> = self
            .anchors
            .iter()
            .map(|a| (a.name.clone(), cosine(embedding, &a.embedding)))
            .collect();
        let scores: Vec<f32> = similarities.iter().map(|(_, s)| *s).collect();
        let (best, margin) = best_and_margin(&scores);
        let (name, confidence) = similarities
            .get(best)
            .cloned()
            .unwrap_or((FALLBACK.into(), 0.0));
        let fell_back = confidence < self.threshold;
        Routing {
            category: if fell_back { FALLBACK.into() } else { name },
            confidence,
            fell_back,
            similarities,
            margin,
        }
    }

    /// The seed's `classify_text` result without timestamps and processing time:
    /// `{"routed_content": {...}, "analytics": {...}}`. `sentence_embeddings`
    /// are the embeddings of [`Classifier::sentences`] of the text, in order.
    pub fn classify(&self, sentences: &[String], sentence_embeddings: &[Vec<f32>]) -> Value {
        classify_with(|_, e| self.route(e), sentences, sentence_embeddings)
    }
}

/// `classify_text`'s result with `route` deciding each sentence.
pub(crate) fn classify_with(
    route: impl Fn(&str, &[f32]) -> Routing,
    sentences: &[String],
    sentence_embeddings: &[Vec<f32>],
) -> Value {
    {
        let mut routed: Vec<(String, Vec<(String, f32)>)> = Vec::new();
        for (sentence, emb) in sentences.iter().zip(sentence_embeddings) {
            let r = route(sentence, emb);
            match routed.iter_mut().find(|(c, _)| *c == r.category) {
                Some((_, items)) => items.push((sentence.clone(), r.confidence)),
                None => routed.push((r.category, vec![(sentence.clone(), r.confidence)])),
            }
        }
        // Python's sort is stable: equal confidences keep sentence order.
        for (_, items) in routed.iter_mut() {
            items.sort_by(|a, b| b.1.total_cmp(&a.1));
        }
        let mut routed_json = Map::new();
        for (category, items) in &routed {
            let list: Vec<Value> = items
                .iter()
                .map(|(t, c)| json!({"text": t, "confidence": *c as f64}))
                .collect();
            routed_json.insert(category.clone(), Value::Array(list));
        }
        json!({"routed_content": routed_json, "analytics": analytics(&routed)})
    }
}

/// The seed's `_generate_analytics`.
fn analytics(routed: &[(String, Vec<(String, f32)>)]) -> Value {
    let total: usize = routed.iter().map(|(_, items)| items.len()).sum();
    if total == 0 {
        return json!({"error": "No content to analyze"});
    }
    let mut distribution = Map::new();
    let mut average = Map::new();
    let mut dominant: Option<(&str, usize)> = None;
    for (category, items) in routed {
        let count = items.len();
        distribution.insert(
            category.clone(),
            json!({"count": count, "percentage": count as f64 / total as f64 * 100.0}),
        );
        let mean = items.iter().map(|(_, c)| *c as f64).sum::<f64>() / count as f64;
        average.insert(category.clone(), json!(mean));
        if dominant.is_none_or(|(_, n)| count > n) {
            dominant = Some((category, count));
        }
    }
    json!({
        "distribution": distribution,
        "average_confidence": average,
        "dominant_category": dominant.map(|(c, _)| c),
        "total_sentences": total,
    })
}

/// The anchor classes ideas get (`classify.mode`): seed 000's classifier,
/// or the calibrated classes. Classification feedback moves what
/// [`Classes::anchors`] gives (the seed's anchors, or the calibrated
/// prototypes) and routes with [`Classes::with_anchors`].
#[derive(Clone, Debug)]
pub enum Classes {
    Seed(Classifier),
    Calibrated(calibrated::Calibrated),
}

impl Classes {
    /// `text`'s class; the seed's classifier reads only its embedding.
    pub fn route(&self, text: &str, embedding: &[f32]) -> Routing {
        match self {
            Classes::Seed(c) => c.route(embedding),
            Classes::Calibrated(c) => c.route(text, embedding),
        }
    }

    /// `classify_text`'s shape (`routed_content`, `analytics`), routed here.
    pub fn classify(&self, sentences: &[String], sentence_embeddings: &[Vec<f32>]) -> Value {
        classify_with(|t, e| self.route(t, e), sentences, sentence_embeddings)
    }

    pub fn anchors(&self) -> Vec<Anchor> {
        match self {
            Classes::Seed(c) => c.anchors().to_vec(),
            Classes::Calibrated(c) => c.prototypes(),
        }
    }

    /// The same classes routing against `anchors` (moved by feedback).
    pub fn with_anchors(&self, anchors: Vec<Anchor>) -> Classes {
        match self {
            Classes::Seed(c) => Classes::Seed(c.with_anchors(anchors)),
            Classes::Calibrated(c) => Classes::Calibrated(c.with_prototypes(&anchors)),
        }
    }
}

/// How ideas get their niche category: the nearest description (seed), or
/// the calibrated categories (descriptions and labeled examples).
#[derive(Clone, Debug)]
pub enum Categories {
    Nearest(Vec<Anchor>),
    Calibrated(calibrated::Calibrated),
}

impl Categories {
    /// `text`'s category and its similarity (the cosine to the category's
    /// description or prototype); `None` without categories.
    pub fn category(&self, text: &str, embedding: &[f32]) -> Option<(String, f32)> {
        match self {
            Categories::Nearest(anchors) => {
                nearest(embedding, anchors).map(|(n, s)| (n.to_owned(), s))
            }
            Categories::Calibrated(c) => (!c.classes().is_empty()).then(|| {
                let r = c.route(text, embedding);
                let similarity = r
                    .similarities
                    .iter()
                    .find(|(n, _)| *n == r.category)
                    .map_or(0.0, |(_, s)| *s);
                (r.category, similarity)
            }),
        }
    }
}

/// The category (niche) whose anchor is nearest; `None` without anchors.
pub fn nearest<'a>(embedding: &[f32], anchors: &'a [Anchor]) -> Option<(&'a str, f32)> {
    anchors
        .iter()
        .map(|a| (a.name.as_str(), cosine(embedding, &a.embedding)))
        .fold(None, |best, (n, s)| match best {
            Some((_, b)) if b >= s => best,
            _ => Some((n, s)),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_python_re_split() {
        assert_eq!(
            split_sentences("Hi there. How are you?! Fine...  \n ok"),
            vec!["Hi there", "How are you", "Fine", "ok"]
        );
        assert!(split_sentences("...!?").is_empty());
    }

    fn unit(i: usize) -> Vec<f32> {
        let mut v = vec![0.0; 4];
        v[i] = 1.0;
        v
    }

    fn classifier() -> Classifier {
        let anchors = ["Hunch", "Wisdom", "Nudge", "Spell"]
            .iter()
            .enumerate()
            .map(|(i, n)| Anchor {
                name: n.to_string(),
                embedding: unit(i),
            })
            .collect();
        Classifier::new(anchors, 0.3, 10)
    }

    #[test]
    fn routes_to_best_and_falls_back_below_threshold() {
        let c = classifier();
        let r = c.route(&[0.1, 0.9, 0.0, 0.1]);
        assert_eq!(r.category, "Wisdom");
        let r = c.route(&[0.2, 0.1, 0.25, -0.9]);
        assert_eq!(r.category, "Hunch");
        assert!(r.fell_back);
    }

    #[test]
    fn analytics_in_the_seed_shape() {
        let c = classifier();
        let sentences: Vec<String> = vec![
            "first sentence".into(),
            "second sentence".into(),
            "third sentence".into(),
        ];
        let out = c.classify(&sentences, &[unit(1), unit(2), vec![0.0, 0.9, 0.1, 0.0]]);
        assert_eq!(out["analytics"]["total_sentences"], 3);
        assert_eq!(out["analytics"]["dominant_category"], "Wisdom");
        assert_eq!(out["analytics"]["distribution"]["Wisdom"]["count"], 2);
        assert_eq!(out["routed_content"]["Wisdom"][0]["text"], "first sentence");
        let keys: Vec<&String> = out["routed_content"].as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            ["Wisdom", "Nudge"],
            "categories in order of first appearance"
        );
        let empty = c.classify(&[], &[]);
        assert_eq!(empty["analytics"]["error"], "No content to analyze");
    }
}
