//! `ideaflow replay`: replays streams and writes the final state of every
//! view as JSON Lines sorted by key, so that runs can be diffed; with
//! `--materialize`, also into Postgres and Redis (in the namespace).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use chrono::Duration;
use ideaflow_operators::views::ViewState;
use ideaflow_sinks::view_files::write_views;
use ideaflow_sinks::{DeadLetterSink, JsonlWriter};
use ideaflow_sources::replay::{ReplaySource, Speed};
use serde_json::json;

use super::set_model_threads;
use crate::cli::ReplayArgs;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::core_setup::CoreSetup;
use crate::dataflow::{run_dataflow, Lead, RunSummary};
use crate::materialize::{self, Materializer};
use crate::model_files::ModelSource;

/// Replays `inputs` through the whole pipeline into `views` (and, with
/// `materialize`, Postgres and Redis, emptied first), alone or as the leading
/// process of `cluster`. Dead letters go to `dead_letters` (a JSONL path)
/// when given.
pub fn replay_into(
    config: &Config,
    cluster: Option<&Cluster>,
    inputs: Vec<PathBuf>,
    dead_letters: Option<&Path>,
    views: Arc<Mutex<ViewState>>,
    materialize: bool,
) -> Result<RunSummary> {
    set_model_threads(config.model.threads);
    let speed: Speed = config.pipeline.speed.parse().map_err(anyhow::Error::msg)?;
    let source = ReplaySource::new(
        inputs,
        Duration::seconds(config.pipeline.allowed_lateness_secs as i64),
        speed,
    )?
    .with_max_future(config.pipeline.max_future());
    let (model, mut embedder) = ModelSource::open(&config.model)?;
    let core = Arc::new(CoreSetup::build(config, &mut embedder)?);
    drop(embedder);
    let dead_tap = ideaflow_sinks::DeadLetterTap::default();
    let mut dead = DeadLetterSink::open(dead_letters.unwrap_or(Path::new("/dev/null")), false)?;
    let runtime = Arc::new(
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
    );
    // One runtime for the pool's whole life: connections are tied to it.
    let sinks = if materialize {
        Some(materialize::connect(config, &runtime, true)?)
    } else {
        None
    };
    let mut consumer = Materializer::new(runtime.clone(), sinks, views, None, None);
    if materialize {
        dead = dead.with_tap(dead_tap.clone());
        consumer = consumer.with_dead_letters(dead_tap);
    }
    let lead = Lead {
        source: crate::dataflow::Inputs::files(
            source,
            Duration::seconds(config.pipeline.allowed_lateness_secs as i64),
        ),
        dead,
        consumer: Box::new(consumer),
        signals_out: None,
        continuity: Default::default(),
    };
    run_dataflow(config, cluster, Some(lead), model, core, false)?
        .ok_or_else(|| anyhow::anyhow!("the leading worker returned no summary"))
}

/// Appends the records the dataflow itself refused (feedback for ideas that
/// never appeared) to the source's dead-letter file, in key order; returns them.
pub fn append_dataflow_dead_letters(
    views: &ViewState,
    path: &Path,
) -> Result<Vec<ideaflow_operators::DeadLetter>> {
    let letters: Vec<ideaflow_operators::DeadLetter> = views
        .rows_where(|key| matches!(key, ideaflow_operators::views::ViewKey::DeadLetter(_)))
        .filter_map(|r| match r {
            ideaflow_operators::views::ViewRow::DeadLetter(_, d) => Some(d.clone()),
            _ => None,
        })
        .collect();
    if !letters.is_empty() {
        let mut w = JsonlWriter::append(path)?;
        for d in &letters {
            w.write(d)?;
        }
        w.flush()?;
    }
    Ok(letters)
}

/// The Redis key where a materialized replay records its inputs and `--out`,
/// so that `ideaflow verify --config F` knows what to compare with.
pub fn replay_record_key(config: &Config) -> String {
    format!("{}:replay", config.redis.namespace)
}

fn record_replay(config: &Config, inputs: &[PathBuf], out: &Path) -> Result<()> {
    let abs = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned());
    let record = json!({
        "inputs": inputs.iter().map(|p| abs(p)).collect::<Vec<_>>(),
        "out": abs(out),
    });
    let client = redis::Client::open(config.redis.url.as_str())?;
    let mut conn = client.get_connection()?;
    redis::cmd("SET")
        .arg(replay_record_key(config))
        .arg(record.to_string())
        .query::<()>(&mut conn)?;
    Ok(())
}

pub fn run(args: ReplayArgs) -> Result<()> {
    let mut config = Config::load(&args.config)?;
    config.override_run(args.workers, args.speed)?;
    if let Some(ns) = &args.namespace {
        config.set_namespace(ns)?;
    }
    let cluster = Cluster::from_args(&args.cluster)?;
    if let Some(c) = cluster.as_ref().filter(|c| !c.leads()) {
        return super::follow(&config, c, false, "replay");
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create --out {}", args.out.display()))?;
    let views = Arc::new(Mutex::new(ViewState::default()));
    let summary = replay_into(
        &config,
        cluster.as_ref(),
        args.input.clone(),
        Some(&args.out.join("dead_letters.jsonl")),
        views.clone(),
        args.materialize,
    )?;
    let views = views.lock().expect("not poisoned");
    write_views(&views, &args.out)?;
    let dead_path = args.out.join("dead_letters.jsonl");
    let refused_inside = append_dataflow_dead_letters(&views, &dead_path)?;
    if args.materialize {
        record_replay(&config, &args.input, &args.out)?;
    }
    let mut by_reason: std::collections::BTreeMap<String, u64> =
        summary.dead_by_reason.iter().cloned().collect();
    for d in &refused_inside {
        *by_reason.entry(d.reason.to_string()).or_default() += 1;
    }
    let mut counts = JsonlWriter::create(&args.out.join("dead_letter_counts.jsonl"))?;
    for (reason, n) in &by_reason {
        counts.write(&json!({"reason": reason, "count": n}))?;
    }
    counts.flush()?;
    println!(
        "ideaflow replay: {} events, {} signals, {} ideas, {} dead-lettered -> {} ({:.1}s){}",
        summary.events,
        summary.signals_out,
        views.ideas().count(),
        summary.dead_letters + refused_inside.len() as u64,
        args.out.display(),
        summary.seconds,
        if args.materialize {
            format!(
                "; materialized into Postgres schema {} and Redis namespace {}",
                config.postgres.schema, config.redis.namespace
            )
        } else {
            // Say so: `verify` and the API read the materialized views.
            "; Postgres and Redis untouched (--materialize writes them)".to_owned()
        }
    );
    Ok(())
}
