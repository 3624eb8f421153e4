//! Calibrated classes: seed 000's anchors made useful with the real model.
//!
//! The seed's anchor texts sit far from ordinary sentences, so with the real
//! model nearly every sentence falls below its 0.3 threshold and becomes a
//! Hunch. Here each class is the normalized mean of its anchor text's
//! embedding and of labeled example sentences' (`config/labeled/`), each
//! class gets a bias learned on those examples (each example scored against
//! prototypes built without it: leave-one-out, so the bias is not fitted to
//! what it is measured on), and a sentence falls back to Hunch only when the
//! best two classes are within a margin, also learned. Deterministic: the
//! same anchors and examples give the same classes, bit for bit.
//!
//! The same calibration serves niche categories (no fallback there).

use serde_json::Value;

use super::{best_and_margin, classify_with, Anchor, Routing};
use crate::embed::cosine;

/// A labeled example sentence, embedded.
#[derive(Clone, Debug)]
pub struct Example {
    pub label: String,
    pub embedding: Vec<f32>,
}

/// A class: its prototype (unit length) and its learned bias.
#[derive(Clone, Debug, PartialEq)]
pub struct Class {
    pub name: String,
    pub prototype: Vec<f32>,
    pub bias: f32,
}

#[derive(Debug, thiserror::Error)]
pub enum CalibrationError {
    #[error("example label {label:?} is not one of the classes ({classes}): fix the examples file or the configured names")]
    UnknownLabel { label: String, classes: String },
    #[error("no classes to calibrate: configure the anchors (or categories) first")]
    NoClasses,
}

/// The biases tried for each class, and the margins below which a sentence
/// falls back: steps fine enough for cosines, few enough to search exactly.
const BIAS_STEP: f32 = 0.005;
const BIAS_STEPS: i32 = 20;
const MARGIN_STEP: f32 = 0.0025;
const MARGIN_STEPS: i32 = 20;
const ROUNDS: usize = 10;

#[derive(Clone, Debug)]
pub struct Calibrated {
    classes: Vec<Class>,
    /// The class a sentence between classes falls back to (Hunch), if any.
    fallback: Option<usize>,
    margin: f32,
}

fn unit(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    if norm == 0.0 {
        return v.to_vec();
    }
    v.iter().map(|x| (f64::from(*x) / norm) as f32).collect()
}

fn add(sum: &mut [f64], v: &[f32], sign: f64) {
    for (s, x) in sum.iter_mut().zip(v) {
        *s += sign * f64::from(*x);
    }
}

fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|x| *x as f32).collect()
}

impl Calibrated {
    /// Classes from `anchors` (their order is the tie order) and `examples`;
    /// `fallback` names the class for sentences between classes.
    pub fn fit(
        anchors: &[Anchor],
        examples: &[Example],
        fallback: Option<&str>,
    ) -> Result<Self, CalibrationError> {
        if anchors.is_empty() {
            return Err(CalibrationError::NoClasses);
        }
        let names: Vec<&str> = anchors.iter().map(|a| a.name.as_str()).collect();
        let dim = anchors[0].embedding.len();
        // Per class: the sum of the unit anchor and the unit examples.
        let mut sums: Vec<Vec<f64>> = anchors
            .iter()
            .map(|a| {
                let mut s = vec![0.0; dim];
                add(&mut s, &unit(&a.embedding), 1.0);
                s
            })
            .collect();
        let mut labeled: Vec<(usize, Vec<f32>)> = Vec::with_capacity(examples.len());
        for e in examples {
            let Some(c) = names.iter().position(|n| *n == e.label) else {
                return Err(CalibrationError::UnknownLabel {
                    label: e.label.clone(),
                    classes: names.join(", "),
                });
            };
            let u = unit(&e.embedding);
            add(&mut sums[c], &u, 1.0);
            labeled.push((c, u));
        }
        // Leave-one-out cosines: each example against every prototype, its
        // own class's built without it.
        let prototypes: Vec<Vec<f32>> = sums.iter().map(|s| to_f32(s)).collect();
        let loo: Vec<(usize, Vec<f32>)> = labeled
            .iter()
            .map(|(c, u)| {
                let scores = prototypes
                    .iter()
                    .enumerate()
                    .map(|(k, p)| {
                        if k == *c {
                            let mut own = sums[k].clone();
                            add(&mut own, u, -1.0);
                            cosine(u, &to_f32(&own))
                        } else {
                            cosine(u, p)
                        }
                    })
                    .collect();
                (*c, scores)
            })
            .collect();
        let fallback = fallback.and_then(|f| names.iter().position(|n| *n == f));
        let mut biases = vec![0.0f32; anchors.len()];
        let mut margin = 0.0f32;
        let correct = |biases: &[f32], margin: f32| -> usize {
            loo.iter()
                .filter(|(truth, scores)| predict(scores, biases, fallback, margin) == *truth)
                .count()
        };
        // Coordinate ascent over a fixed grid: each class's bias (then the
        // margin) set to the value that gets most examples right, ties to
        // the value nearest zero, until nothing changes.
        for _ in 0..ROUNDS {
            let before = (biases.clone(), margin);
            for c in 0..biases.len() {
                let mut best = (correct(&biases, margin), biases[c]);
                for step in -BIAS_STEPS..=BIAS_STEPS {
                    let b = step as f32 * BIAS_STEP;
                    let mut tried = biases.clone();
                    tried[c] = b;
                    let n = correct(&tried, margin);
                    if n > best.0 || (n == best.0 && b.abs() < best.1.abs()) {
                        best = (n, b);
                    }
                }
                biases[c] = best.1;
            }
            if fallback.is_some() {
                let mut best = (correct(&biases, margin), margin);
                for step in 0..=MARGIN_STEPS {
                    let m = step as f32 * MARGIN_STEP;
                    let n = correct(&biases, m);
                    if n > best.0 || (n == best.0 && m < best.1) {
                        best = (n, m);
                    }
                }
                margin = best.1;
            }
            if (biases.clone(), margin) == before {
                break;
            }
        }
        let classes = anchors
            .iter()
            .zip(sums.iter().zip(biases))
            .map(|(a, (s, bias))| Class {
                name: a.name.clone(),
                prototype: unit(&to_f32(s)),
                bias,
            })
            .collect();
        Ok(Calibrated {
            classes,
            fallback,
            margin,
        })
    }

    pub fn classes(&self) -> &[Class] {
        &self.classes
    }

    /// The prototypes, as anchors (what classification feedback moves).
    pub fn prototypes(&self) -> Vec<Anchor> {
        self.classes
            .iter()
            .map(|c| Anchor {
                name: c.name.clone(),
                embedding: c.prototype.clone(),
            })
            .collect()
    }

    /// The same classes, biases and margin with the prototypes of the
    /// classes `moved` names replaced (made unit length).
    pub fn with_prototypes(&self, moved: &[Anchor]) -> Calibrated {
        let mut next = self.clone();
        for c in &mut next.classes {
            if let Some(a) = moved.iter().find(|a| a.name == c.name) {
                c.prototype = unit(&a.embedding);
            }
        }
        next
    }

    /// The margin under which a sentence falls back.
    pub fn fallback_margin(&self) -> f32 {
        self.margin
    }

    /// One sentence: each class's cosine to its prototype (as similarities),
    /// the class with the best cosine plus bias, its margin over the next,
    /// and the fallback when that margin is under the learned one.
    pub fn route(&self, embedding: &[f32]) -> Routing {
        let similarities: Vec<(String, f32)> = self
            .classes
            .iter()
            .map(|c| (c.name.clone(), cosine(embedding, &c.prototype)))
            .collect();
        let scores: Vec<f32> = similarities
            .iter()
            .zip(&self.classes)
            .map(|((_, s), c)| s + c.bias)
            .collect();
        let (best, margin) = best_and_margin(&scores);
        let fell_back = self
            .fallback
            .is_some_and(|f| f != best && margin < self.margin);
        let chosen = if fell_back {
            self.fallback.unwrap_or(best)
        } else {
            best
        };
        Routing {
            category: self.classes[chosen].name.clone(),
            confidence: similarities[chosen].1,
            fell_back,
            similarities,
            margin,
        }
    }

    /// `classify_text`'s shape (`routed_content`, `analytics`), routed here.
    pub fn classify(&self, sentences: &[String], sentence_embeddings: &[Vec<f32>]) -> Value {
        classify_with(|e| self.route(e), sentences, sentence_embeddings)
    }
}

/// The class `scores` (cosines) pick with `biases` and the fallback margin.
fn predict(scores: &[f32], biases: &[f32], fallback: Option<usize>, margin: f32) -> usize {
    let biased: Vec<f32> = scores.iter().zip(biases).map(|(s, b)| s + b).collect();
    let (best, m) = best_and_margin(&biased);
    match fallback {
        Some(f) if f != best && m < margin => f,
        _ => best,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(x: &[f32]) -> Vec<f32> {
        x.to_vec()
    }

    fn anchors() -> Vec<Anchor> {
        ["Hunch", "Wisdom", "Nudge"]
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let mut e = vec![0.0; 3];
                e[i] = 1.0;
                Anchor {
                    name: n.to_string(),
                    embedding: e,
                }
            })
            .collect()
    }

    #[test]
    fn examples_pull_the_classes_and_unknown_labels_are_refused() {
        // Wisdom's examples lean towards the third axis: its prototype moves.
        let examples = vec![
            Example {
                label: "Wisdom".into(),
                embedding: v(&[0.0, 0.6, 0.8]),
            },
            Example {
                label: "Wisdom".into(),
                embedding: v(&[0.0, 0.7, 0.7]),
            },
        ];
        let c = Calibrated::fit(&anchors(), &examples, Some("Hunch")).unwrap();
        assert!(c.classes()[1].prototype[2] > 0.4, "{:?}", c.classes()[1]);
        assert_eq!(c.route(&[0.0, 0.5, 0.9]).category, "Wisdom");
        let again = Calibrated::fit(&anchors(), &examples, Some("Hunch")).unwrap();
        assert_eq!(c.classes(), again.classes(), "deterministic");
        let bad = vec![Example {
            label: "Spell".into(),
            embedding: v(&[1.0, 0.0, 0.0]),
        }];
        let e = Calibrated::fit(&anchors(), &bad, None)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("\"Spell\"") && e.contains("Hunch, Wisdom, Nudge"),
            "{e}"
        );
    }

    #[test]
    fn biases_fix_a_class_that_wins_too_often() {
        // Nudge's examples sit close to Wisdom's: without a bias Nudge takes
        // the Wisdom examples near the boundary.
        let mut examples = Vec::new();
        for i in 0..10 {
            let t = i as f32 * 0.02;
            examples.push(Example {
                label: "Wisdom".into(),
                embedding: v(&[0.0, 0.62 - t, 0.6 + t]),
            });
            examples.push(Example {
                label: "Nudge".into(),
                embedding: v(&[0.0, 0.2, 0.98]),
            });
        }
        let c = Calibrated::fit(&anchors(), &examples, None).unwrap();
        let right = examples
            .iter()
            .filter(|e| c.route(&e.embedding).category == e.label)
            .count();
        assert!(
            right >= 18,
            "{right} of 20 right; classes {:?}",
            c.classes()
        );
    }

    #[test]
    fn hunch_only_between_classes() {
        let c = Calibrated::fit(&anchors(), &[], Some("Hunch")).unwrap();
        let clear = c.route(&[0.0, 1.0, 0.1]);
        assert_eq!(clear.category, "Wisdom");
        assert!(!clear.fell_back);
        assert!(clear.margin > 0.5);
    }
}
