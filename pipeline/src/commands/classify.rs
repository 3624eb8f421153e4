//! `ideaflow classify` and `ideaflow explain`: seed 000's classifier on the
//! configured anchors, or the calibrated classes built from them and the
//! labeled examples, with the in-process model; `classify --evaluate`
//! measures both on labeled sentences.

use anyhow::{bail, Context, Result};
use ideaflow_operators::classify::calibrated::{Calibrated, Example};
use ideaflow_operators::classify::evaluate::Evaluation;
use ideaflow_operators::classify::{Anchor, Categories, Classes, Classifier, Routing, FALLBACK};
use ideaflow_operators::embed::Embedder;
use ideaflow_sinks::JsonlWriter;
use serde_json::{json, Value};

use super::{open_input, output_path, set_model_threads};
use crate::cli::{ClassifyArgs, ClassifyMode, ExplainArgs};
use crate::config::Config;
use crate::model_files::load_embedder;

/// Embeds the configured anchors (seed order) into a classifier.
pub fn build_classifier(config: &Config, embedder: &mut Embedder) -> Result<Classifier> {
    let anchors = &config.classifier.anchors;
    if anchors.is_empty() {
        bail!("classifier.anchors is empty in the config: add the four anchors (see config/ideaflow.toml)");
    }
    let texts: Vec<&str> = anchors.iter().map(|a| a.text.as_str()).collect();
    let vectors = embedder.embed(&texts)?;
    Ok(Classifier::new(
        anchors
            .iter()
            .zip(vectors)
            .map(|(a, embedding)| Anchor {
                name: a.name.clone(),
                embedding,
            })
            .collect(),
        config.classifier.confidence_threshold,
        config.classifier.min_sentence_chars,
    ))
}

/// A labeled sentence of an examples or evaluation file, with its line.
struct Labeled {
    line: usize,
    text: String,
    label: String,
}

/// The `{"text","label"}` lines of `path`; with `held_out`, only every
/// `every`-th (1-based line numbers), else only the others when `rest`.
fn read_labeled(path: &std::path::Path, every: usize, keep: Split) -> Result<Vec<Labeled>> {
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
        let v: Value = serde_json::from_str(line).with_context(|| {
            format!(
                "{} line {n}: not JSON; write {{\"text\", \"label\"}}",
                path.display()
            )
        })?;
        let label = v["label"].as_str().or_else(|| v["category"].as_str());
        let (Some(text), Some(label)) = (v["text"].as_str(), label) else {
            bail!(
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

#[derive(Clone, Copy, PartialEq, Eq)]
enum Split {
    All,
    HeldOut,
    Rest,
}

/// The calibrated classes: the anchors and the examples not held out.
pub fn build_calibrated(
    config: &Config,
    embedder: &mut Embedder,
    seed: &Classifier,
) -> Result<Calibrated> {
    let c = &config.classifier;
    let examples = read_labeled(&c.examples, c.holdout_every, Split::Rest)
        .context("classifier.examples: the calibrated mode is built from it")?;
    let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
    let vectors = embedder.embed(&texts)?;
    let examples: Vec<Example> = examples
        .into_iter()
        .zip(vectors)
        .map(|(e, embedding)| Example {
            label: e.label,
            embedding,
        })
        .collect();
    Calibrated::fit(seed.anchors(), &examples, Some(FALLBACK))
        .with_context(|| format!("calibrating from {}", c.examples.display()))
}

/// The classes `classify` and `explain` route with, and the seed's
/// classifier, whose sentence split both modes use.
struct Mode {
    splitter: Classifier,
    classes: Classes,
}

impl Mode {
    fn build(mode: ClassifyMode, config: &Config, embedder: &mut Embedder) -> Result<Mode> {
        let seed = build_classifier(config, embedder)?;
        Ok(Mode {
            splitter: seed.clone(),
            classes: classes_from(config, embedder, seed, mode)?,
        })
    }

    fn sentences(&self, text: &str) -> Vec<String> {
        self.splitter.sentences(text)
    }

    fn route(&self, embedding: &[f32]) -> Routing {
        self.classes.route(embedding)
    }

    fn classify(&self, sentences: &[String], embeddings: &[Vec<f32>]) -> Value {
        self.classes.classify(sentences, embeddings)
    }
}

/// The configured categories' descriptions, embedded.
fn category_descriptions(config: &Config, embedder: &mut Embedder) -> Result<Vec<Anchor>> {
    let names: Vec<&String> = config.categories.keys().collect();
    let texts: Vec<&str> = config.categories.values().map(String::as_str).collect();
    let vectors = embedder
        .embed(&texts)
        .context("embedding the category descriptions failed")?;
    Ok(names
        .into_iter()
        .zip(vectors)
        .map(|(n, embedding)| Anchor {
            name: n.clone(),
            embedding,
        })
        .collect())
}

/// How ideas get their niche category in `mode`: the nearest description,
/// or the categories calibrated from `classifier.category_examples`.
pub fn build_categories(
    config: &Config,
    embedder: &mut Embedder,
    mode: ClassifyMode,
) -> Result<Categories> {
    let descriptions = category_descriptions(config, embedder)?;
    if mode == ClassifyMode::Seed || descriptions.is_empty() {
        return Ok(Categories::Nearest(descriptions));
    }
    let c = &config.classifier;
    let examples = read_labeled(&c.category_examples, c.holdout_every, Split::Rest).context(
        "classifier.category_examples: the calibrated categories are built from it (or set classify.mode = \"seed\")",
    )?;
    let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
    let examples: Vec<Example> = examples
        .iter()
        .zip(embedder.embed(&texts)?)
        .map(|(e, embedding)| Example {
            label: e.label.clone(),
            embedding,
        })
        .collect();
    let calibrated = Calibrated::fit(&descriptions, &examples, None)
        .with_context(|| format!("calibrating from {}", c.category_examples.display()))?;
    Ok(Categories::Calibrated(calibrated))
}

/// How ideas get their anchor class in `mode`.
pub fn build_classes(
    config: &Config,
    embedder: &mut Embedder,
    mode: ClassifyMode,
) -> Result<Classes> {
    let seed = build_classifier(config, embedder)?;
    classes_from(config, embedder, seed, mode)
}

/// The classes in `mode`, from the seed's embedded anchors.
fn classes_from(
    config: &Config,
    embedder: &mut Embedder,
    seed: Classifier,
    mode: ClassifyMode,
) -> Result<Classes> {
    Ok(match mode {
        ClassifyMode::Seed => Classes::Seed(seed),
        ClassifyMode::Calibrated => Classes::Calibrated(build_calibrated(config, embedder, &seed)?),
    })
}

/// Whether `path`'s first line labels its text with `category` (not `label`).
fn first_line_names_a_category(path: &std::path::Path) -> bool {
    let first = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.lines().find(|l| !l.trim().is_empty()).map(str::to_owned));
    first
        .and_then(|l| serde_json::from_str::<Value>(&l).ok())
        .is_some_and(|v| v.get("category").is_some() && v.get("label").is_none())
}

/// `classify --evaluate FILE`: both modes on the labeled sentences.
fn evaluate(args: &ClassifyArgs, path: &std::path::Path) -> Result<()> {
    let config = Config::load(&args.config)?;
    set_model_threads(config.model.threads);
    let mut embedder = load_embedder(&config.model)?;
    let split = if args.held_out {
        Split::HeldOut
    } else {
        Split::All
    };
    let labeled = read_labeled(path, config.classifier.holdout_every, split)?;
    // `{"text","category"}` lines are niche categories, as --categories says.
    let categories = args.categories || first_line_names_a_category(path);
    if labeled.is_empty() {
        bail!("{} holds no labeled sentence to evaluate", path.display());
    }
    let texts: Vec<&str> = labeled.iter().map(|l| l.text.as_str()).collect();
    let vectors = embedder.embed(&texts)?;
    // Each mode's prediction for each sentence, and the class names in order.
    let (names, predictions): (Vec<String>, [Vec<String>; 2]) = if categories {
        let nearest = build_categories(&config, &mut embedder, ClassifyMode::Seed)?;
        let calibrated = build_categories(&config, &mut embedder, ClassifyMode::Calibrated)?;
        let name = |m: &Categories, v: &[f32]| m.category(v).map(|(n, _)| n).unwrap_or_default();
        (
            config.categories.keys().cloned().collect(),
            [
                vectors.iter().map(|v| name(&nearest, v)).collect(),
                vectors.iter().map(|v| name(&calibrated, v)).collect(),
            ],
        )
    } else {
        let seed = Mode::build(ClassifyMode::Seed, &config, &mut embedder)?;
        let calibrated = Mode::build(ClassifyMode::Calibrated, &config, &mut embedder)?;
        (
            config
                .classifier
                .anchors
                .iter()
                .map(|a| a.name.clone())
                .collect(),
            [
                vectors.iter().map(|v| seed.route(v).category).collect(),
                vectors
                    .iter()
                    .map(|v| calibrated.route(v).category)
                    .collect(),
            ],
        )
    };
    let mut report = serde_json::Map::new();
    for (name, predicted) in ["seed", "calibrated"].into_iter().zip(&predictions) {
        let mut e = Evaluation::new(&names);
        for (l, p) in labeled.iter().zip(predicted) {
            e.add(&l.label, p);
        }
        if args.json {
            report.insert(name.into(), e.to_json());
        } else {
            println!("== {name} ==\n{}", e.render());
        }
    }
    let which = if args.held_out {
        format!(
            "the held-out lines (every {}th, never used to calibrate)",
            config.classifier.holdout_every
        )
    } else {
        "every line".to_owned()
    };
    if args.json {
        report.insert("sentences".into(), json!(labeled.len()));
        report.insert("file".into(), json!(path.display().to_string()));
        report.insert("held_out".into(), json!(args.held_out));
        println!("{}", Value::Object(report));
    } else {
        println!(
            "{} sentences: {which} of {} (first at line {})",
            labeled.len(),
            path.display(),
            labeled[0].line
        );
    }
    Ok(())
}

pub fn classify(args: ClassifyArgs) -> Result<()> {
    if let Some(path) = args.evaluate.clone() {
        return evaluate(&args, &path);
    }
    let config = Config::load(&args.config)?;
    set_model_threads(config.model.threads);
    let mut embedder = load_embedder(&config.model)?;
    let classifier = Mode::build(args.mode, &config, &mut embedder)?;
    let input = open_input(args.input.as_deref())?;
    let mut out = JsonlWriter::create(&output_path(args.out))?;
    // In input order: each line's id and its sentences, or why it was refused.
    let mut pending: Vec<(Value, Result<Vec<String>, String>)> = Vec::new();
    let flush = |pending: &mut Vec<(Value, Result<Vec<String>, String>)>,
                 embedder: &mut Embedder,
                 out: &mut JsonlWriter|
     -> Result<()> {
        // Every sentence of the chunk in one embedding call.
        let all: Vec<&str> = pending
            .iter()
            .filter_map(|(_, s)| s.as_ref().ok())
            .flat_map(|s| s.iter().map(String::as_str))
            .collect();
        let vectors = embedder.embed(&all)?;
        let mut at = 0;
        for (id, sentences) in pending.drain(..) {
            let line = match sentences {
                Ok(sentences) => {
                    let result =
                        classifier.classify(&sentences, &vectors[at..at + sentences.len()]);
                    at += sentences.len();
                    json!({"id": id, "routed_content": result["routed_content"], "analytics": result["analytics"]})
                }
                // The seed's shape for a text it cannot analyze.
                Err(why) => json!({"id": id, "routed_content": {}, "analytics": {"error": why}}),
            };
            out.write(&line)?;
        }
        Ok(())
    };
    for (n, line) in std::io::BufRead::split(input, b'\n').enumerate() {
        let line = line.context("reading input failed")?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let (id, text) = parse_line(&line);
        let sentences = text.map(|text| classifier.sentences(&text)).map_err(|why| {
            tracing::warn!(line = n + 1, "{why}");
            format!("line {}: {why}", n + 1)
        });
        pending.push((id, sentences));
        if pending.len() >= 256 {
            flush(&mut pending, &mut embedder, &mut out)?;
        }
    }
    flush(&mut pending, &mut embedder, &mut out)?;
    out.flush()?;
    Ok(())
}

/// A line's id (null when it has none) and its text, or why it has no text.
fn parse_line(line: &[u8]) -> (Value, Result<String, String>) {
    let value: Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        Err(e) => {
            return (
                Value::Null,
                Err(format!(
                    "not JSON ({e}): each line must be an object {{\"id\", \"text\"}}"
                )),
            )
        }
    };
    let Some(object) = value.as_object() else {
        return (
            Value::Null,
            Err("not a JSON object: each line must be an object {\"id\", \"text\"}".into()),
        );
    };
    let id = object.get("id").cloned().unwrap_or(Value::Null);
    match object.get("text") {
        Some(Value::String(text)) => (id, Ok(text.clone())),
        Some(_) => (id, Err("\"text\" must be a string".into())),
        None => (id, Err("\"text\" is missing".into())),
    }
}

pub fn explain(args: ExplainArgs) -> Result<()> {
    let config = Config::load(&args.config)?;
    set_model_threads(config.model.threads);
    let mut embedder = load_embedder(&config.model)?;
    let seed = build_classifier(&config, &mut embedder)?;
    let embedding = embedder.embed(&[args.sentence.as_str()])?.remove(0);
    if args.mode == ClassifyMode::Calibrated {
        let calibrated = build_calibrated(&config, &mut embedder, &seed)?;
        return explain_calibrated(&args, &calibrated, &embedding);
    }
    let classifier = seed;
    let routing = classifier.route(&embedding);
    if args.json {
        let sims: serde_json::Map<String, Value> = routing
            .similarities
            .iter()
            .map(|(n, s)| (n.clone(), json!(*s as f64)))
            .collect();
        println!(
            "{}",
            json!({"sentence": args.sentence, "similarities": sims, "category": routing.category,
                   "confidence": routing.confidence as f64, "fell_back": routing.fell_back,
                   "margin": routing.margin as f64})
        );
        return Ok(());
    }
    println!("sentence: {:?}", args.sentence);
    for (name, s) in &routing.similarities {
        let mark = if (*s - routing.confidence).abs() < f32::EPSILON {
            "  <- best"
        } else {
            ""
        };
        println!("  {name:<8} {s:+.4}{mark}");
    }
    if routing.fell_back {
        println!(
            "category: {} (best similarity {:.4} is below the {:.2} threshold, so it falls back to Hunch)",
            routing.category, routing.confidence, config.classifier.confidence_threshold
        );
    } else {
        println!(
            "category: {} (confidence {:.4}, margin {:.4} over the next)",
            routing.category, routing.confidence, routing.margin
        );
    }
    let n = classifier.sentences(&args.sentence).len();
    if n != 1 {
        println!(
            "note: classify would split this text into {n} sentence(s) of at least {} characters",
            config.classifier.min_sentence_chars
        );
    }
    Ok(())
}

/// `explain --mode calibrated`: each class's cosine, bias and score, the
/// margin, and whether it fell back.
fn explain_calibrated(args: &ExplainArgs, c: &Calibrated, embedding: &[f32]) -> Result<()> {
    let routing = c.route(embedding);
    let rows: Vec<(String, f32, f32)> = routing
        .similarities
        .iter()
        .zip(c.classes())
        .map(|((name, cos), class)| (name.clone(), *cos, class.bias))
        .collect();
    if args.json {
        let classes: serde_json::Map<String, Value> = rows
            .iter()
            .map(|(n, cos, b)| {
                (
                    n.clone(),
                    json!({"similarity": *cos as f64, "bias": *b as f64, "score": (cos + b) as f64}),
                )
            })
            .collect();
        println!(
            "{}",
            json!({"sentence": args.sentence, "mode": "calibrated", "classes": classes,
                   "category": routing.category, "confidence": routing.confidence as f64,
                   "margin": routing.margin as f64, "fell_back": routing.fell_back,
                   "fallback_margin": c.fallback_margin() as f64})
        );
        return Ok(());
    }
    println!("sentence: {:?} (calibrated classes)", args.sentence);
    println!(
        "  {:<8} {:>8} {:>8} {:>8}",
        "class", "cosine", "bias", "score"
    );
    for (name, cos, b) in &rows {
        println!("  {name:<8} {cos:+8.4} {b:+8.4} {:+8.4}", cos + b);
    }
    if routing.fell_back {
        println!(
            "category: {} (the best two scores are {:.4} apart, under the learned margin {:.4})",
            routing.category,
            routing.margin,
            c.fallback_margin()
        );
    } else {
        println!(
            "category: {} (margin {:.4} over the next; falls back under {:.4})",
            routing.category,
            routing.margin,
            c.fallback_margin()
        );
    }
    Ok(())
}
