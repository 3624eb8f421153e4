//! Classification feedback (seed 000's feedback endpoint, in the dataflow):
//! `classification.corrected` events move the anchor a sentence should have
//! been routed to. Each anchor becomes the normalized mean of its text's
//! embedding (weight `text_weight`) and the corrected sentences' embeddings
//! within `window_secs` (each weighted by its rating, 1–5); later
//! classifications route against the moved anchors.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::classify::Anchor;
use crate::embed::cosine;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnchorParams {
    /// Corrections older than this (event time) no longer move the anchor.
    pub window_secs: i64,
    /// The anchor text's weight against the corrections' ratings.
    pub text_weight: f64,
}

impl Default for AnchorParams {
    fn default() -> Self {
        AnchorParams {
            window_secs: 30 * 86_400,
            text_weight: 5.0,
        }
    }
}

/// One anchor after a change: how many corrections move it and how far.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AnchorRow {
    pub effective_from: DateTime<Utc>,
    pub anchor: String,
    pub corrections: u64,
    pub rating_sum: u64,
    /// 1 − cosine(moved anchor, the anchor text's embedding).
    pub shift: f64,
}

#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct Correction {
    time: i64,
    rating: u8,
    embedding: Arc<[f32]>,
}

#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct AnchorFeedback {
    params: AnchorParams,
    base: Vec<Anchor>,
    corrections: BTreeMap<String, VecDeque<Correction>>,
}

impl AnchorFeedback {
    pub fn new(base: Vec<Anchor>, params: AnchorParams) -> Self {
        AnchorFeedback {
            params,
            base,
            corrections: BTreeMap::new(),
        }
    }

    /// Whether `other` moves the same anchors under the same settings (the
    /// corrections aside).
    pub fn same_settings(&self, other: &AnchorFeedback) -> bool {
        self.params == other.params && self.base == other.base
    }

    pub fn knows(&self, anchor: &str) -> bool {
        self.base.iter().any(|a| a.name == anchor)
    }

    /// Records a correction toward `anchor` (which must be known).
    pub fn correct(&mut self, time: i64, anchor: &str, rating: u8, embedding: Arc<[f32]>) {
        self.corrections
            .entry(anchor.to_owned())
            .or_default()
            .push_back(Correction {
                time,
                rating: rating.clamp(1, 5),
                embedding,
            });
    }

    /// Drops corrections that left the window; returns the anchors whose set
    /// of corrections changed since the last call (`changed` names them) with
    /// their rows, and the whole moved anchor set when any changed.
    pub fn refresh(
        &mut self,
        watermark: i64,
        mut changed: Vec<String>,
    ) -> (Vec<AnchorRow>, Option<Vec<Anchor>>) {
        let from = watermark - self.params.window_secs;
        for (name, list) in self.corrections.iter_mut() {
            let before = list.len();
            while list.front().is_some_and(|c| c.time <= from) {
                list.pop_front();
            }
            if list.len() != before {
                changed.push(name.clone());
            }
        }
        changed.sort();
        changed.dedup();
        if changed.is_empty() {
            return (Vec::new(), None);
        }
        let anchors = self.anchors();
        let rows = changed
            .iter()
            .filter_map(|name| {
                let base = self.base.iter().find(|a| &a.name == name)?;
                let moved = anchors.iter().find(|a| &a.name == name)?;
                let list = self.corrections.get(name);
                Some(AnchorRow {
                    effective_from: DateTime::from_timestamp(watermark, 0).unwrap_or_default(),
                    anchor: name.clone(),
                    corrections: list.map_or(0, |l| l.len() as u64),
                    rating_sum: list.map_or(0, |l| l.iter().map(|c| c.rating as u64).sum()),
                    shift: 1.0 - cosine(&moved.embedding, &base.embedding) as f64,
                })
            })
            .collect();
        (rows, Some(anchors))
    }

    /// Every anchor, moved by its corrections in the window.
    pub fn anchors(&self) -> Vec<Anchor> {
        self.base
            .iter()
            .map(|a| {
                let Some(list) = self.corrections.get(&a.name).filter(|l| !l.is_empty()) else {
                    return a.clone();
                };
                let w0 = self.params.text_weight.max(0.0);
                let mut sum: Vec<f64> = a.embedding.iter().map(|x| *x as f64 * w0).collect();
                for c in list {
                    for (s, x) in sum.iter_mut().zip(c.embedding.iter()) {
                        *s += *x as f64 * c.rating as f64;
                    }
                }
                let norm = sum.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
                Anchor {
                    name: a.name.clone(),
                    embedding: sum.iter().map(|x| (x / norm) as f32).collect(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    fn base() -> Vec<Anchor> {
        vec![
            Anchor {
                name: "Idea".into(),
                embedding: unit(&[1.0, 0.0, 0.0]),
            },
            Anchor {
                name: "Hunch".into(),
                embedding: unit(&[0.0, 1.0, 0.0]),
            },
        ]
    }

    #[test]
    fn corrections_pull_the_anchor_by_their_rating_and_expire() {
        let params = AnchorParams {
            window_secs: 100,
            text_weight: 5.0,
        };
        let mut a = AnchorFeedback::new(base(), params);
        let example: Arc<[f32]> = Arc::from(unit(&[0.0, 0.0, 1.0]));
        a.correct(10, "Idea", 5, example.clone());
        let (rows, moved) = a.refresh(20, vec!["Idea".into()]);
        let moved = moved.expect("an anchor changed");
        // (5·text + 5·example) / |…|: halfway, cosine 1/√2 to each.
        let idea = &moved[0].embedding;
        assert!((cosine(idea, &example) - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-5);
        assert_eq!(
            moved[1].embedding,
            base()[1].embedding,
            "untouched anchors stay"
        );
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].corrections, rows[0].rating_sum), (1, 5));
        assert!((rows[0].shift - (1.0 - std::f64::consts::FRAC_1_SQRT_2)).abs() < 1e-5);
        // A rating of 1 pulls a fifth as hard as a 5.
        let mut weak = AnchorFeedback::new(base(), AnchorParams::default());
        weak.correct(10, "Idea", 1, example.clone());
        let w = &weak.anchors()[0].embedding;
        assert!(cosine(w, &example) < cosine(idea, &example));
        // Out of the window, the anchor is its text again.
        let (rows, moved) = a.refresh(200, vec![]);
        assert_eq!(rows[0].corrections, 0);
        assert_eq!(moved.unwrap()[0].embedding, base()[0].embedding);
        assert!(a.refresh(300, vec![]).1.is_none(), "nothing changed");
    }
}
