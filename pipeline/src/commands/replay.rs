//! `ideaflow replay`: replays streams and writes the final state of every
//! view as JSON Lines sorted by key, so that runs can be diffed.

use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use chrono::Duration;
use ideaflow_operators::views::{Change, ViewState};
use ideaflow_sinks::view_files::write_views;
use ideaflow_sinks::{DeadLetterSink, JsonlWriter};
use ideaflow_sources::replay::{ReplaySource, Speed};
use serde_json::json;

use super::set_model_threads;
use crate::cli::ReplayArgs;
use crate::config::Config;
use crate::core_setup::CoreSetup;
use crate::dataflow::deliver::EpochConsumer;
use crate::dataflow::run_views_pipeline;
use crate::model_files::{embedder_options, read_model_files};

/// Applies every epoch to in-memory views shared with the caller.
pub struct InMemoryViews(pub Arc<Mutex<ViewState>>);

impl EpochConsumer for InMemoryViews {
    fn epoch(&mut self, _epoch_end: i64, changes: Vec<Change>) -> Result<()> {
        self.0.lock().expect("not poisoned").apply(changes);
        Ok(())
    }
}

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
    let core = Arc::new(CoreSetup::build(&config, &mut embedder)?);
    drop(embedder);
    let dead = DeadLetterSink::open(&args.out.join("dead_letters.jsonl"), false)?;
    let views = Arc::new(Mutex::new(ViewState::default()));
    let summary = run_views_pipeline(
        &config,
        source,
        Arc::new(files),
        options,
        dead,
        core,
        Box::new(InMemoryViews(views.clone())),
    )?;
    let views = views.lock().expect("not poisoned");
    write_views(&views, &args.out)?;
    let mut counts = JsonlWriter::create(&args.out.join("dead_letter_counts.jsonl"))?;
    for (reason, n) in &summary.dead_by_reason {
        counts.write(&json!({"reason": reason, "count": n}))?;
    }
    counts.flush()?;
    println!(
        "ideaflow replay: {} events, {} signals, {} ideas, {} dead-lettered -> {} ({:.1}s)",
        summary.events,
        summary.signals_out,
        views.ideas().count(),
        summary.dead_letters,
        args.out.display(),
        summary.seconds
    );
    Ok(())
}
