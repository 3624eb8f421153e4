//! `ideaflow classify` and `ideaflow explain`: seed 000's classifier on the
//! configured anchors, or the calibrated classes built from them and the
//! labeled examples, with the in-process model; `classify --evaluate`
//! measures both on labeled sentences.

use anyhow::{bail, Context, Result};
use ideaflow_operators::classify::calibrated::Calibrated;
use ideaflow_operators::classify::evaluate::Evaluation;
use ideaflow_operators::classify::{Anchor, Categories, Classes, Classifier, Routing, FALLBACK};
use ideaflow_operators::embed::Embedder;
use ideaflow_sinks::JsonlWriter;
use serde_json::{json, Value};

use super::{open_input, output_path, set_model_threads};
use crate::calibration::{self, read_labeled, Labeled, Spec, Split};
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

/// The calibrated anchor classes: the saved ones while current, else
/// trained now from the anchors and the examples not held out.
pub fn build_calibrated(
    config: &Config,
    embedder: &mut Embedder,
    seed: &Classifier,
) -> Result<Calibrated> {
    calibration::load_or_train(config, embedder, &anchor_spec(config, seed))
}

/// What the calibrated anchor classes are trained from.
fn anchor_spec<'a>(config: &'a Config, seed: &Classifier) -> Spec<'a> {
    let c = &config.classifier;
    Spec {
        what: "anchor classes",
        classes: seed
            .anchors()
            .iter()
            .cloned()
            .zip(c.anchors.iter().map(|a| a.text.as_str()))
            .collect(),
        examples: &c.examples,
        weights_file: &c.weights_file,
        fallback: Some(FALLBACK),
        lexical_weight: c.lexical_weight,
    }
}

/// What the calibrated niche categories are trained from.
fn category_spec(config: &Config, descriptions: Vec<Anchor>) -> Spec<'_> {
    let c = &config.classifier;
    Spec {
        what: "categories",
        classes: descriptions
            .into_iter()
            .zip(config.categories.values().map(String::as_str))
            .collect(),
        examples: &c.category_examples,
        weights_file: &c.category_weights_file,
        fallback: None,
        lexical_weight: c.category_lexical_weight,
    }
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

    fn route(&self, text: &str, embedding: &[f32]) -> Routing {
        self.classes.route(text, embedding)
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
    let spec = category_spec(config, descriptions);
    let calibrated = calibration::load_or_train(config, embedder, &spec)
        .context("or set classify.mode = \"seed\" to use the nearest description")?;
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

/// `classify --train`: both calibrated models, trained and saved.
fn train(args: &ClassifyArgs) -> Result<()> {
    let config = Config::load(&args.config)?;
    set_model_threads(config.model.threads);
    let mut embedder = load_embedder(&config.model)?;
    let seed = build_classifier(&config, &mut embedder)?;
    let descriptions = category_descriptions(&config, &mut embedder)?;
    let mut specs = vec![anchor_spec(&config, &seed)];
    if !descriptions.is_empty() {
        specs.push(category_spec(&config, descriptions));
    }
    for spec in &specs {
        let started = std::time::Instant::now();
        let model = calibration::train_and_save(&config, &mut embedder, spec)?;
        println!(
            "trained the calibrated {} ({}) from {} in {:.1} s: saved to {}",
            spec.what,
            model
                .classes()
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            spec.examples.display(),
            started.elapsed().as_secs_f64(),
            spec.weights_file.display()
        );
    }
    Ok(())
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
        let name = |m: &Categories, (l, v): (&Labeled, &Vec<f32>)| {
            m.category(&l.text, v).map(|(n, _)| n).unwrap_or_default()
        };
        (
            config.categories.keys().cloned().collect(),
            [
                labeled
                    .iter()
                    .zip(&vectors)
                    .map(|x| name(&nearest, x))
                    .collect(),
                labeled
                    .iter()
                    .zip(&vectors)
                    .map(|x| name(&calibrated, x))
                    .collect(),
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
                labeled
                    .iter()
                    .zip(&vectors)
                    .map(|(l, v)| seed.route(&l.text, v).category)
                    .collect(),
                labeled
                    .iter()
                    .zip(&vectors)
                    .map(|(l, v)| calibrated.route(&l.text, v).category)
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
    if args.train {
        return train(&args);
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

/// `explain --mode calibrated`: each class's cosine to its prototype and
/// its probability, the margin, and whether it fell back.
fn explain_calibrated(args: &ExplainArgs, c: &Calibrated, embedding: &[f32]) -> Result<()> {
    let routing = c.route(&args.sentence, embedding);
    let scores = c.scores(&args.sentence, embedding);
    let rows: Vec<(&str, f32, f64)> = c
        .classes()
        .iter()
        .zip(&scores)
        .map(|(class, (cos, p))| (class.name.as_str(), *cos, *p))
        .collect();
    if args.json {
        let classes: serde_json::Map<String, Value> = rows
            .iter()
            .map(|(n, cos, p)| {
                (
                    n.to_string(),
                    json!({"similarity": *cos as f64, "probability": p}),
                )
            })
            .collect();
        println!(
            "{}",
            json!({"sentence": args.sentence, "mode": "calibrated", "classes": classes,
                   "category": routing.category, "confidence": routing.confidence as f64,
                   "margin": routing.margin as f64, "fell_back": routing.fell_back,
                   "fallback_margin": c.fallback_margin()})
        );
        return Ok(());
    }
    println!("sentence: {:?} (calibrated classes)", args.sentence);
    println!("  {:<8} {:>8} {:>11}", "class", "cosine", "probability");
    for (name, cos, p) in &rows {
        println!("  {name:<8} {cos:+8.4} {p:>11.4}");
    }
    if routing.fell_back {
        println!(
            "category: {} (the best two probabilities are {:.4} apart, under the learned margin {:.4})",
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
