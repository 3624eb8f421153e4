//! `ideaflow run`: the long-running pipeline (bounded inputs end it).

use std::sync::Arc;

use anyhow::{Context, Result};
use chrono::Duration;
use ideaflow_sinks::{DeadLetterSink, JsonlWriter};
use ideaflow_sources::replay::{ReplaySource, Speed};

use super::set_model_threads;
use crate::cli::RunArgs;
use crate::config::Config;
use crate::dataflow::run_embed_pipeline;
use crate::model_files::read_model_files;

pub fn run(args: RunArgs) -> Result<()> {
    let mut config = Config::load(&args.config)?;
    if !args.input.is_empty() {
        config.pipeline.inputs = args.input.clone();
    }
    if let Some(out) = args.out {
        config.pipeline.output = out;
    }
    if let Some(dl) = args.dead_letter {
        config.pipeline.dead_letter = dl;
    }
    config.override_run(args.workers, args.speed)?;
    set_model_threads(config.model.threads);
    let speed: Speed = config.pipeline.speed.parse().map_err(anyhow::Error::msg)?;
    let source = ReplaySource::new(
        config.pipeline.inputs.clone(),
        Duration::seconds(config.pipeline.allowed_lateness_secs as i64),
        speed,
    )?;
    // Fail before starting workers if the model is missing or broken.
    let files = read_model_files(&config.model.dir)?;
    let embed_options = crate::model_files::embedder_options(&config.model)?;
    ideaflow_operators::embed::MiniLm::load(&files, embed_options.blas)
        .context("the embedding model does not load")?;
    let output = JsonlWriter::create(&config.pipeline.output)?;
    let dead = DeadLetterSink::open(&config.pipeline.dead_letter, false)?;
    tracing::info!(
        inputs = ?config.pipeline.inputs,
        workers = config.pipeline.workers,
        output = %config.pipeline.output.display(),
        dead_letter = %config.pipeline.dead_letter.display(),
        "pipeline starting"
    );
    let summary = run_embed_pipeline(
        &config,
        source,
        Arc::new(files),
        embed_options,
        output,
        dead,
    )?;
    tracing::info!(
        events = summary.events,
        signals_out = summary.signals_out,
        dead_letters = summary.dead_letters,
        seconds = format!("{:.2}", summary.seconds),
        "pipeline finished"
    );
    println!(
        "ideaflow run: {} events in, {} signals embedded to {}, {} dead-lettered to {} ({:.1}s)",
        summary.events,
        summary.signals_out,
        config.pipeline.output.display(),
        summary.dead_letters,
        config.pipeline.dead_letter.display(),
        summary.seconds
    );
    for (reason, n) in &summary.dead_by_reason {
        println!("  dead-letter {reason}: {n}");
    }
    Ok(())
}
