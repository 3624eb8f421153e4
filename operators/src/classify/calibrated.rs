//! Calibrated classes: seed 000's anchors made useful with the real model.
//!
//! The seed's anchor texts sit far from ordinary sentences, so with the real
//! model nearly every sentence falls below its 0.3 threshold and becomes a
//! Hunch. Here each class has a prototype, the normalized mean of its anchor
//! text's embedding and of labeled example sentences' (`config/labeled/`),
//! and a small linear layer trained on those examples reads the sentence's
//! embedding and its words ([`lexical`](super::lexical)):
//!
//! ```text
//! logit(class) = TEMPERATURE · cos(sentence, prototype)
//!              + weights · sentence + term_weights · words + bias
//! ```
//!
//! The prototype term makes a class what its examples look like before any
//! training, and it is what classification feedback moves: a correction
//! moves the class's prototype toward the corrected sentence, which raises
//! that class's logit for sentences like it. The layer learns what the
//! prototypes miss (mean-pooled embeddings say what a sentence is about more
//! than what it does), under an L2 penalty that keeps it small where the
//! examples say little. A sentence falls back to Hunch only when the best two
//! classes' probabilities are within a margin learned by cross-validation on
//! the examples. Training is full-batch and in a fixed order: the same
//! anchors and examples give the same classes, bit for bit.
//!
//! The same calibration serves niche categories (no fallback there).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::lexical::Vocabulary;
use super::{best_and_margin, classify_with, Anchor, Routing};
use crate::embed::cosine;

/// A labeled example sentence, embedded.
#[derive(Clone, Debug)]
pub struct Example {
    pub label: String,
    pub text: String,
    pub embedding: Vec<f32>,
}

/// A class: its prototype (unit length) and its share of the linear layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Class {
    pub name: String,
    pub prototype: Vec<f32>,
    /// Over the unit-length sentence embedding.
    pub weights: Vec<f64>,
    /// Over the vocabulary's terms.
    pub term_weights: Vec<f64>,
    pub bias: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum CalibrationError {
    #[error("example label {label:?} is not one of the classes ({classes}): fix the examples file or the configured names")]
    UnknownLabel { label: String, classes: String },
    #[error("no classes to calibrate: configure the anchors (or categories) first")]
    NoClasses,
}

/// How strongly the prototypes' cosines count: cosines between sentences
/// span a few tenths, so this makes them worth a few units of logit.
const TEMPERATURE: f64 = 5.0;
/// The L2 penalty of the linear layer (per example, on the mean loss).
const L2: f64 = 1e-3;
/// Full-batch accelerated gradient steps: the loss is smooth and strongly
/// convex, and the held-out accuracy stops moving well before this.
const STEPS: usize = 500;
/// A vocabulary term must occur in this many training sentences.
const MIN_TERM_COUNT: usize = 2;
/// Folds of the cross-validation the fallback margin is learned on.
const FOLDS: usize = 4;
/// The fallback margins tried (differences of probabilities).
const MARGIN_STEP: f64 = 0.01;
const MARGIN_STEPS: usize = 30;

/// Everything a class decision reads besides the weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Calibrated {
    classes: Vec<Class>,
    vocabulary: Vocabulary,
    /// The words' weight against the embedding (0: embedding only).
    lexical_weight: f64,
    /// The class a sentence between classes falls back to (Hunch), if any.
    fallback: Option<usize>,
    margin: f64,
}

/// One sentence as the layer sees it.
#[derive(Clone)]
struct Sample {
    class: usize,
    embedding: Vec<f64>,
    cosines: Vec<f64>,
    terms: Vec<(usize, f64)>,
}

/// The layer's parameters while it learns, one row per class.
#[derive(Clone)]
struct Layer {
    weights: Vec<Vec<f64>>,
    term_weights: Vec<Vec<f64>>,
    bias: Vec<f64>,
}

fn unit(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    if norm == 0.0 {
        return v.to_vec();
    }
    v.iter().map(|x| (f64::from(*x) / norm) as f32).collect()
}

fn unit_f64(v: &[f32]) -> Vec<f64> {
    unit(v).into_iter().map(f64::from).collect()
}

fn add(sum: &mut [f64], v: &[f32]) {
    for (s, x) in sum.iter_mut().zip(v) {
        *s += f64::from(*x);
    }
}

/// A dot product in four fixed lanes: fast, and the same sum every time.
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut lanes = [0.0f64; 4];
    let chunks = a.len() / 4 * 4;
    for i in (0..chunks).step_by(4) {
        for l in 0..4 {
            lanes[l] += a[i + l] * b[i + l];
        }
    }
    let mut sum = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
    for i in chunks..a.len().min(b.len()) {
        sum += a[i] * b[i];
    }
    sum
}

/// One class's logit for `s`, its cosine to the class's prototype given.
fn logit(weights: &[f64], term_weights: &[f64], bias: f64, cosine: f64, s: &Sample) -> f64 {
    let words: f64 = s.terms.iter().map(|(t, v)| term_weights[*t] * v).sum();
    TEMPERATURE * cosine + dot(weights, &s.embedding) + words + bias
}

/// Softmax of `logits`, in place.
fn softmax(logits: &mut [f64]) {
    let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let mut total = 0.0;
    for l in logits.iter_mut() {
        *l = (*l - max).exp();
        total += *l;
    }
    for l in logits.iter_mut() {
        *l /= total;
    }
}

impl Layer {
    fn zeros(classes: usize, dim: usize, terms: usize) -> Self {
        Layer {
            weights: vec![vec![0.0; dim]; classes],
            term_weights: vec![vec![0.0; terms]; classes],
            bias: vec![0.0; classes],
        }
    }

    fn probabilities(&self, s: &Sample) -> Vec<f64> {
        let mut logits: Vec<f64> = (0..self.bias.len())
            .map(|c| {
                logit(
                    &self.weights[c],
                    &self.term_weights[c],
                    self.bias[c],
                    s.cosines[c],
                    s,
                )
            })
            .collect();
        softmax(&mut logits);
        logits
    }

    /// `self + scale · other`, row by row.
    fn plus(&self, other: &Layer, scale: f64) -> Layer {
        let mix = |a: &[f64], b: &[f64]| -> Vec<f64> {
            a.iter().zip(b).map(|(x, y)| x + scale * y).collect()
        };
        Layer {
            weights: self
                .weights
                .iter()
                .zip(&other.weights)
                .map(|(a, b)| mix(a, b))
                .collect(),
            term_weights: self
                .term_weights
                .iter()
                .zip(&other.term_weights)
                .map(|(a, b)| mix(a, b))
                .collect(),
            bias: mix(&self.bias, &other.bias),
        }
    }

    /// The gradient of the class-balanced mean cross-entropy plus the L2
    /// penalty: each class weighs as much as any other, however many
    /// examples it has (a new category may start with few).
    fn gradient(&self, samples: &[Sample], balance: &[f64]) -> Layer {
        let k = self.bias.len();
        let mut g = Layer::zeros(k, self.weights[0].len(), self.term_weights[0].len());
        let n = samples.len().max(1) as f64;
        for s in samples {
            for (c, p) in self.probabilities(s).into_iter().enumerate() {
                let e = balance[s.class] * (p - if c == s.class { 1.0 } else { 0.0 }) / n;
                for (gw, x) in g.weights[c].iter_mut().zip(&s.embedding) {
                    *gw += e * x;
                }
                for (t, v) in &s.terms {
                    g.term_weights[c][*t] += e * v;
                }
                g.bias[c] += e;
            }
        }
        for c in 0..k {
            for (gw, w) in g.weights[c].iter_mut().zip(&self.weights[c]) {
                *gw += L2 * w;
            }
            for (gu, u) in g.term_weights[c].iter_mut().zip(&self.term_weights[c]) {
                *gu += L2 * u;
            }
        }
        g
    }

    /// Nesterov's accelerated gradient descent with the step the loss's
    /// smoothness allows (softmax cross-entropy: half the squared norm of
    /// the features, plus the penalty).
    fn train(samples: &[Sample], classes: usize, dim: usize, terms: usize) -> Layer {
        let smoothness = 0.5
            * samples
                .iter()
                .map(|s| {
                    dot(&s.embedding, &s.embedding)
                        + s.terms.iter().map(|(_, v)| v * v).sum::<f64>()
                        + 1.0
                })
                .fold(0.0, f64::max)
            + L2;
        // n / (classes with examples × the class's count): 1 when balanced.
        let mut counts = vec![0usize; classes];
        for s in samples {
            counts[s.class] += 1;
        }
        let present = counts.iter().filter(|n| **n > 0).count().max(1);
        let balance: Vec<f64> = counts
            .iter()
            .map(|n| samples.len() as f64 / (present * (*n).max(1)) as f64)
            .collect();
        let heaviest = balance.iter().cloned().fold(1.0, f64::max);
        let step = 1.0 / (smoothness * heaviest);
        let mut current = Layer::zeros(classes, dim, terms);
        let mut ahead = current.clone();
        let mut t = 1.0f64;
        for _ in 0..STEPS {
            let next = ahead.plus(&ahead.gradient(samples, &balance), -step);
            let t_next = (1.0 + (1.0 + 4.0 * t * t).sqrt()) / 2.0;
            let momentum = (t - 1.0) / t_next;
            ahead = next.plus(&next.plus(&current, -1.0), momentum);
            current = next;
            t = t_next;
        }
        current
    }
}

impl Calibrated {
    /// Classes from `anchors` (their order is the tie order) and `examples`;
    /// `fallback` names the class for sentences between classes;
    /// `lexical_weight` is the words' weight (0: the embedding alone).
    pub fn fit(
        anchors: &[Anchor],
        examples: &[Example],
        fallback: Option<&str>,
        lexical_weight: f64,
    ) -> Result<Self, CalibrationError> {
        if anchors.is_empty() {
            return Err(CalibrationError::NoClasses);
        }
        let names: Vec<&str> = anchors.iter().map(|a| a.name.as_str()).collect();
        let dim = anchors[0].embedding.len();
        let mut labels = Vec::with_capacity(examples.len());
        for e in examples {
            let Some(c) = names.iter().position(|n| *n == e.label) else {
                return Err(CalibrationError::UnknownLabel {
                    label: e.label.clone(),
                    classes: names.join(", "),
                });
            };
            labels.push(c);
        }
        // Each prototype: the unit anchor plus the unit examples, normalized.
        let mut sums: Vec<Vec<f64>> = anchors
            .iter()
            .map(|a| {
                let mut s = vec![0.0; dim];
                add(&mut s, &unit(&a.embedding));
                s
            })
            .collect();
        for (e, c) in examples.iter().zip(&labels) {
            add(&mut sums[*c], &unit(&e.embedding));
        }
        let prototypes: Vec<Vec<f32>> = sums
            .iter()
            .map(|s| unit(&s.iter().map(|x| *x as f32).collect::<Vec<_>>()))
            .collect();
        let vocabulary = if lexical_weight == 0.0 {
            Vocabulary::default()
        } else {
            Vocabulary::learn(examples.iter().map(|e| e.text.as_str()), MIN_TERM_COUNT)
        };
        let samples: Vec<Sample> = examples
            .iter()
            .zip(&labels)
            .map(|(e, c)| Sample {
                class: *c,
                embedding: unit_f64(&e.embedding),
                cosines: prototypes
                    .iter()
                    .map(|p| f64::from(cosine(&e.embedding, p)))
                    .collect(),
                terms: vocabulary.features(&e.text, lexical_weight),
            })
            .collect();
        let k = anchors.len();
        let layer = Layer::train(&samples, k, dim, vocabulary.len());
        let fallback = fallback.and_then(|f| names.iter().position(|n| *n == f));
        let margin = match fallback {
            Some(f) => learn_margin(&samples, k, dim, vocabulary.len(), f),
            None => 0.0,
        };
        let classes = anchors
            .iter()
            .zip(prototypes)
            .enumerate()
            .map(|(c, (a, prototype))| Class {
                name: a.name.clone(),
                prototype,
                weights: layer.weights[c].clone(),
                term_weights: layer.term_weights[c].clone(),
                bias: layer.bias[c],
            })
            .collect();
        Ok(Calibrated {
            classes,
            vocabulary,
            lexical_weight,
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

    /// The same classes with the prototypes of the classes `moved` names
    /// replaced (made unit length); the layer stays as trained.
    pub fn with_prototypes(&self, moved: &[Anchor]) -> Calibrated {
        let mut next = self.clone();
        for c in &mut next.classes {
            if let Some(a) = moved.iter().find(|a| a.name == c.name) {
                c.prototype = unit(&a.embedding);
            }
        }
        next
    }

    /// The probability margin under which a sentence falls back.
    pub fn fallback_margin(&self) -> f64 {
        self.margin
    }

    /// Each class's cosine to its prototype and its probability.
    pub fn scores(&self, text: &str, embedding: &[f32]) -> Vec<(f32, f64)> {
        let sample = Sample {
            class: 0,
            embedding: unit_f64(embedding),
            cosines: self
                .classes
                .iter()
                .map(|c| f64::from(cosine(embedding, &c.prototype)))
                .collect(),
            terms: self.vocabulary.features(text, self.lexical_weight),
        };
        let mut probabilities: Vec<f64> = self
            .classes
            .iter()
            .zip(&sample.cosines)
            .map(|(c, cos)| logit(&c.weights, &c.term_weights, c.bias, *cos, &sample))
            .collect();
        softmax(&mut probabilities);
        sample
            .cosines
            .iter()
            .zip(probabilities)
            .map(|(cos, p)| (*cos as f32, p))
            .collect()
    }

    /// One sentence: each class's cosine to its prototype (as similarities),
    /// the most probable class with its probability as the confidence, its
    /// margin over the next, and the fallback when that margin is under the
    /// learned one.
    pub fn route(&self, text: &str, embedding: &[f32]) -> Routing {
        let scores = self.scores(text, embedding);
        let probabilities: Vec<f64> = scores.iter().map(|(_, p)| *p).collect();
        let (best, margin) = best_and_margin(&probabilities);
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
            confidence: probabilities[chosen] as f32,
            fell_back,
            similarities: self
                .classes
                .iter()
                .zip(&scores)
                .map(|(c, (cos, _))| (c.name.clone(), *cos))
                .collect(),
            margin: margin as f32,
        }
    }

    /// `classify_text`'s shape (`routed_content`, `analytics`), routed here.
    pub fn classify(&self, sentences: &[String], sentence_embeddings: &[Vec<f32>]) -> Value {
        classify_with(|t, e| self.route(t, e), sentences, sentence_embeddings)
    }
}

/// The class `probabilities` pick with the fallback margin.
fn predict(probabilities: &[f64], fallback: usize, margin: f64) -> usize {
    let (best, m) = best_and_margin(probabilities);
    if best != fallback && m < margin {
        fallback
    } else {
        best
    }
}

/// The fallback margin that gets the most examples right when each is
/// classified by a layer trained without its fold (ties: the smallest).
fn learn_margin(samples: &[Sample], k: usize, dim: usize, terms: usize, fallback: usize) -> f64 {
    let mut predicted: Vec<(usize, Vec<f64>)> = Vec::with_capacity(samples.len());
    for fold in 0..FOLDS {
        let (held, rest): (Vec<_>, Vec<_>) = samples
            .iter()
            .enumerate()
            .partition(|(i, _)| i % FOLDS == fold);
        if held.is_empty() || rest.is_empty() {
            continue;
        }
        let rest: Vec<Sample> = rest.into_iter().map(|(_, s)| s.clone()).collect();
        let layer = Layer::train(&rest, k, dim, terms);
        predicted.extend(
            held.into_iter()
                .map(|(_, s)| (s.class, layer.probabilities(s))),
        );
    }
    let correct = |margin: f64| {
        predicted
            .iter()
            .filter(|(truth, p)| predict(p, fallback, margin) == *truth)
            .count()
    };
    (0..=MARGIN_STEPS)
        .map(|step| step as f64 * MARGIN_STEP)
        .fold((0.0, correct(0.0)), |best, m| {
            let n = correct(m);
            if n > best.1 {
                (m, n)
            } else {
                best
            }
        })
        .0
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn example(label: &str, text: &str, embedding: &[f32]) -> Example {
        Example {
            label: label.into(),
            text: text.into(),
            embedding: embedding.to_vec(),
        }
    }

    #[test]
    fn examples_pull_the_classes_and_unknown_labels_are_refused() {
        // Wisdom's examples lean towards the third axis: its prototype moves.
        let examples = vec![
            example("Wisdom", "one", &[0.0, 0.6, 0.8]),
            example("Wisdom", "two", &[0.0, 0.7, 0.7]),
        ];
        let c = Calibrated::fit(&anchors(), &examples, Some("Hunch"), 1.0).unwrap();
        assert!(c.classes()[1].prototype[2] > 0.4, "{:?}", c.classes()[1]);
        assert_eq!(c.route("", &[0.0, 0.5, 0.9]).category, "Wisdom");
        let again = Calibrated::fit(&anchors(), &examples, Some("Hunch"), 1.0).unwrap();
        assert_eq!(c, again, "deterministic");
        let bad = vec![example("Spell", "x", &[1.0, 0.0, 0.0])];
        let e = Calibrated::fit(&anchors(), &bad, None, 1.0)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("\"Spell\"") && e.contains("Hunch, Wisdom, Nudge"),
            "{e}"
        );
    }

    #[test]
    fn the_layer_fixes_what_the_prototypes_get_wrong() {
        // Wisdom's examples sit close to Nudge's: by the prototypes alone,
        // Nudge takes the Wisdom examples near the boundary.
        let mut examples = Vec::new();
        for i in 0..10 {
            let t = i as f32 * 0.02;
            examples.push(example("Wisdom", "w", &[0.0, 0.62 - t, 0.6 + t]));
            examples.push(example("Nudge", "n", &[0.0, 0.2, 0.98]));
        }
        let c = Calibrated::fit(&anchors(), &examples, None, 0.0).unwrap();
        let right = examples
            .iter()
            .filter(|e| c.route(&e.text, &e.embedding).category == e.label)
            .count();
        assert!(
            right >= 18,
            "{right} of 20 right; classes {:?}",
            c.classes()
        );
    }

    #[test]
    fn words_separate_classes_the_embedding_cannot() {
        // Same embedding, different cue words: only the words tell them apart.
        let same = [0.0, 0.6, 0.8];
        let mut examples = Vec::new();
        for i in 0..8 {
            examples.push(example("Wisdom", &format!("the data shows {i}"), &same));
            examples.push(example("Nudge", "we should act now", &same));
        }
        let words = Calibrated::fit(&anchors(), &examples, None, 1.0).unwrap();
        assert_eq!(words.route("our data shows it", &same).category, "Wisdom");
        assert_eq!(words.route("you should act", &same).category, "Nudge");
        let blind = Calibrated::fit(&anchors(), &examples, None, 0.0).unwrap();
        assert_eq!(
            blind.route("our data shows it", &same).category,
            blind.route("you should act", &same).category,
            "without words the two are the same sentence"
        );
    }

    #[test]
    fn moved_prototypes_move_the_decision() {
        let c = Calibrated::fit(&anchors(), &[], Some("Hunch"), 1.0).unwrap();
        let between = [0.0, 0.7, 0.72];
        assert_eq!(c.route("", &between).category, "Nudge");
        let mut moved = c.prototypes();
        moved[1].embedding = vec![0.0, 0.6, 0.8];
        let c = c.with_prototypes(&moved);
        assert_eq!(c.route("", &between).category, "Wisdom");
    }

    #[test]
    fn hunch_only_between_classes_and_the_model_round_trips() {
        let c = Calibrated::fit(&anchors(), &[], Some("Hunch"), 1.0).unwrap();
        let clear = c.route("", &[0.0, 1.0, 0.1]);
        assert_eq!(clear.category, "Wisdom");
        assert!(!clear.fell_back);
        assert!(clear.margin > 0.5, "{clear:?}");
        let text = serde_json::to_string(&c).unwrap();
        let back: Calibrated = serde_json::from_str(&text).unwrap();
        assert_eq!(back, c, "the saved model is the model");
    }
}
