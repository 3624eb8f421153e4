//! The calibrated classes' trained layers, kept as text beside their examples.
//!
//! Training embeds every labeled example (hundreds of sentences: seconds of
//! model time) and fits the layer, so a start does not do it: `ideaflow
//! classify --train` saves each trained model with a fingerprint of what it
//! was trained from (the examples file, the class names and texts, the
//! settings, the model's files), and a start uses the saved one while that
//! fingerprint still holds. When it does not (an example, a category or the
//! model changed) the start trains again and says so: a new category with
//! its description and examples works without code either way. Saved weights
//! also make every machine classify with the same layer, whatever its CPU's
//! rounding of the example embeddings.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use ideaflow_operators::classify::calibrated::{Calibrated, Example};
use ideaflow_operators::classify::Anchor;
use ideaflow_operators::embed::Embedder;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::Config;

/// Bumped whenever the calibrated model's definition or training changes,
/// so that files saved before are trained again.
const FORMAT: u32 = 1;

/// What one calibrated model is trained from.
pub struct Spec<'a> {
    /// "anchor classes" or "categories", for messages.
    pub what: &'static str,
    /// Each class's name and text (anchor text or category description), in
    /// the tie order, with the text's embedding.
    pub classes: Vec<(Anchor, &'a str)>,
    pub examples: &'a Path,
    pub weights_file: &'a Path,
    pub fallback: Option<&'a str>,
    pub lexical_weight: f64,
}

#[derive(Serialize, Deserialize)]
struct Saved {
    format: u32,
    fingerprint: String,
    /// For a reader of the file: what it was trained from.
    examples: PathBuf,
    sentences: usize,
    model: Calibrated,
}

/// A labeled sentence of an examples file, with its line.
pub struct Labeled {
    pub line: usize,
    pub text: String,
    pub label: String,
}

/// Which lines of a labeled file to read.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Split {
    All,
    /// Every `classifier.holdout_every`-th line (1-based): never trained on.
    HeldOut,
    /// The others: what the classes are trained on.
    Rest,
}

/// The `{"text","label"}` (or `{"text","category"}`) lines of `path` in `keep`.
pub fn read_labeled(path: &Path, every: usize, keep: Split) -> Result<Vec<Labeled>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read labeled sentences from {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let held = every > 0 && n % every == 0;
        match keep {
            Split::HeldOut if !held => continue,
            Split::Rest if held => continue,
            _ => {}
        }
        let v: serde_json::Value = serde_json::from_str(line).with_context(|| {
            format!(
                "{} line {n}: not JSON; write {{\"text\", \"label\"}}",
                path.display()
            )
        })?;
        let label = v["label"].as_str().or_else(|| v["category"].as_str());
        let (Some(text), Some(label)) = (v["text"].as_str(), label) else {
            anyhow::bail!(
                "{} line {n}: needs string fields \"text\" and \"label\" (or \"category\")",
                path.display()
            );
        };
        out.push(Labeled {
            line: n,
            text: text.to_owned(),
            label: label.to_owned(),
        });
    }
    Ok(out)
}

/// A hash of everything the trained model depends on.
fn fingerprint(config: &Config, spec: &Spec) -> Result<String> {
    let mut h = Sha256::new();
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    field(&FORMAT.to_le_bytes());
    for (anchor, text) in &spec.classes {
        field(anchor.name.as_bytes());
        field(text.as_bytes());
    }
    field(
        &std::fs::read(spec.examples)
            .with_context(|| format!("cannot read {}", spec.examples.display()))?,
    );
    field(&config.classifier.holdout_every.to_le_bytes());
    field(spec.fallback.unwrap_or("").as_bytes());
    field(&spec.lexical_weight.to_le_bytes());
    // The model: its configuration, its tokenizer and the size of its
    // weights (reading 90 MB at every start to hash them is not worth it).
    let dir = &config.model.dir;
    for name in ["config.json", "tokenizer.json"] {
        field(&std::fs::read(dir.join(name)).with_context(|| {
            format!(
                "cannot read {}: run scripts/setup.sh to install the model",
                dir.join(name).display()
            )
        })?);
    }
    let weights = dir.join("model.safetensors");
    let size = std::fs::metadata(&weights)
        .with_context(|| format!("cannot read {}", weights.display()))?
        .len();
    field(&size.to_le_bytes());
    Ok(format!("{:x}", h.finalize()))
}

/// Trains the model of `spec`: its examples outside the held-out lines,
/// embedded, and the class texts' embeddings.
pub fn train(config: &Config, embedder: &mut Embedder, spec: &Spec) -> Result<(Calibrated, usize)> {
    let labeled = read_labeled(spec.examples, config.classifier.holdout_every, Split::Rest)
        .with_context(|| format!("the calibrated {} are trained from it", spec.what))?;
    let texts: Vec<&str> = labeled.iter().map(|l| l.text.as_str()).collect();
    let vectors = embedder.embed(&texts)?;
    let examples: Vec<Example> = labeled
        .into_iter()
        .zip(vectors)
        .map(|(l, embedding)| Example {
            label: l.label,
            text: l.text,
            embedding,
        })
        .collect();
    let anchors: Vec<Anchor> = spec.classes.iter().map(|(a, _)| a.clone()).collect();
    let model = Calibrated::fit(&anchors, &examples, spec.fallback, spec.lexical_weight)
        .with_context(|| format!("training from {}", spec.examples.display()))?;
    Ok((model, examples.len()))
}

/// Trains `spec`'s model and saves it to its weights file.
pub fn train_and_save(config: &Config, embedder: &mut Embedder, spec: &Spec) -> Result<Calibrated> {
    let fingerprint = fingerprint(config, spec)?;
    let (model, sentences) = train(config, embedder, spec)?;
    let saved = Saved {
        format: FORMAT,
        fingerprint,
        examples: spec.examples.to_path_buf(),
        sentences,
        model,
    };
    let text = serde_json::to_string(&saved)?;
    let tmp = spec.weights_file.with_extension("json.tmp");
    std::fs::write(&tmp, text + "\n")
        .and_then(|()| std::fs::rename(&tmp, spec.weights_file))
        .with_context(|| {
            format!(
                "cannot write {}: check the folder exists and is writable",
                spec.weights_file.display()
            )
        })?;
    Ok(saved.model)
}

/// Why a saved model cannot be used, or the model.
fn load(path: &Path, fingerprint: &str) -> std::result::Result<Calibrated, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read it ({e})"))?;
    let saved: Saved =
        serde_json::from_str(&text).map_err(|e| format!("it is not a saved model ({e})"))?;
    if saved.format != FORMAT {
        return Err(format!(
            "it was saved in format {}, this build reads {FORMAT}",
            saved.format
        ));
    }
    if saved.fingerprint != fingerprint {
        return Err(
            "it was trained from other examples, class texts, settings or model".to_owned(),
        );
    }
    Ok(saved.model)
}

/// The saved model of `spec` while it is current, else one trained now.
pub fn load_or_train(config: &Config, embedder: &mut Embedder, spec: &Spec) -> Result<Calibrated> {
    let fingerprint = fingerprint(config, spec)?;
    let path = spec.weights_file;
    if !path.as_os_str().is_empty() {
        match load(path, &fingerprint) {
            Ok(model) => return Ok(model),
            Err(why) => tracing::warn!(
                file = %path.display(),
                "the saved calibrated {} are not used: {why}; training them at start \
                 (run `ideaflow classify --train` to save them)",
                spec.what
            ),
        }
    }
    let started = Instant::now();
    let (model, sentences) = train(config, embedder, spec)?;
    tracing::info!(
        sentences,
        secs = started.elapsed().as_secs_f64(),
        "trained the calibrated {}",
        spec.what
    );
    Ok(model)
}

/// Whether `spec`'s saved model is current: `Err(why)` when it is not.
pub fn check_saved(config: &Config, spec: &Spec) -> Result<std::result::Result<(), String>> {
    let fingerprint = fingerprint(config, spec)?;
    Ok(load(spec.weights_file, &fingerprint).map(|_| ()))
}
