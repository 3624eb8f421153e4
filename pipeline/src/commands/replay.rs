//! `ideaflow replay`: replays streams and writes the final state of every
//! view as JSON Lines sorted by key, so that runs can be diffed.

use std::sync::Arc;

use anyhow::{Context, Result};
use chrono::Duration;
use ideaflow_operators::classify::Anchor;
use ideaflow_sinks::{DeadLetterSink, JsonlWriter};
use ideaflow_sources::replay::{ReplaySource, Speed};
use serde_json::json;

use super::classify::build_classifier;
use super::set_model_threads;
use crate::cli::ReplayArgs;
use crate::config::Config;
use crate::dataflow::ideas::Labels;
use crate::dataflow::run_ideas_pipeline;
use crate::model_files::{embedder_options, read_model_files};

pub fn run(args: ReplayArgs) -> Result<()> {
    let mut config = Config::load(&args.config)?;
    config.override_run(args.workers, args.speed)?;
    set_model_threads(config.model.threads);
    let speed: Speed = config.pipeline.speed.parse().map_err(anyhow::Error::msg)?;
    let source = ReplaySource::new(
        args.input.clone(),
        Duration::seconds(config.pipeline.allowed_lateness_secs as i64),
        speed,
    )?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create --out {}", args.out.display()))?;
    let files = read_model_files(&config.model.dir)?;
    let options = embedder_options(&config.model)?;
    let mut embedder = ideaflow_operators::embed::Embedder::load(&files, options.clone())?;
    let names: Vec<&String> = config.categories.keys().collect();
    let texts: Vec<&str> = config.categories.values().map(String::as_str).collect();
    let vectors = embedder.embed(&texts)?;
    let labels = Labels {
        categories: names
            .into_iter()
            .zip(vectors)
            .map(|(n, e)| Anchor {
                name: n.clone(),
                embedding: e,
            })
            .collect(),
        classifier: if config.classifier.anchors.is_empty() {
            None
        } else {
            Some(build_classifier(&config, &mut embedder)?)
        },
    };
    let labels = Arc::new(labels);
    let dead = DeadLetterSink::open(&args.out.join("dead_letters.jsonl"), false)?;
    let (summary, ideas) = run_ideas_pipeline(&config, source, Arc::new(files), options, dead)?;

    let mut out = JsonlWriter::create(&args.out.join("ideas.jsonl"))?;
    for idea in &ideas {
        out.write(&idea.view(&labels))?;
    }
    out.flush()?;
    let mut counts = JsonlWriter::create(&args.out.join("dead_letter_counts.jsonl"))?;
    for (reason, n) in &summary.dead_by_reason {
        counts.write(&json!({"reason": reason, "count": n}))?;
    }
    counts.flush()?;
    println!(
        "ideaflow replay: {} events, {} signals, {} ideas, {} dead-lettered -> {} ({:.1}s)",
        summary.events,
        summary.signals_out,
        ideas.len(),
        summary.dead_letters,
        args.out.display(),
        summary.seconds
    );
    Ok(())
}
