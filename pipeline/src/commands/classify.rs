//! `ideaflow classify` and `ideaflow explain`: seed 000's classifier on the
//! configured anchors, with the in-process model.

use anyhow::{bail, Context, Result};
use ideaflow_operators::classify::{Anchor, Classifier};
use ideaflow_operators::embed::Embedder;
use ideaflow_sinks::JsonlWriter;
use serde_json::{json, Value};

use super::{open_input, output_path, set_model_threads};
use crate::cli::{ClassifyArgs, ExplainArgs};
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

pub fn classify(args: ClassifyArgs) -> Result<()> {
    let config = Config::load(&args.config)?;
    set_model_threads(config.model.threads);
    let mut embedder = load_embedder(&config.model)?;
    let classifier = build_classifier(&config, &mut embedder)?;
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
    let classifier = build_classifier(&config, &mut embedder)?;
    let embedding = embedder.embed(&[args.sentence.as_str()])?.remove(0);
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
                   "confidence": routing.confidence as f64, "fell_back": routing.fell_back})
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
            "category: {} (confidence {:.4})",
            routing.category, routing.confidence
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
