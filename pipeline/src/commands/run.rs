//! `ideaflow run`: the long-running pipeline. Inputs are replayed through
//! validate → embed → dedupe/classify/centroids/score; every completed epoch
//! is materialized into Postgres and Redis (rebuilt from the inputs at start:
//! the views are a deterministic function of them); the HTTP API and the
//! dashboard serve the views live. When bounded inputs end, the API keeps
//! serving until Ctrl-C (or exit at once with `--exit-at-end`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use chrono::Duration;
use ideaflow_operators::views::{Change, ViewKey, ViewRow, ViewState};
use ideaflow_sinks::{DeadLetterSink, JsonlWriter};
use ideaflow_sources::bus::in_flight::InFlight;
use ideaflow_sources::input::InputSpec;
use ideaflow_sources::replay::{ReplaySource, Speed};
use tokio::sync::{broadcast, oneshot};

use super::set_model_threads;
use crate::api::{self, AppState};
use crate::checkpoint::capture::{Checkpoints, Resumed};
use crate::checkpoint::restart;
use crate::cli::RunArgs;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::core_setup::CoreSetup;
use crate::dataflow::{run_dataflow, Continuity, Lead};
use crate::dataflow::{Inputs, LiveSettings};
use crate::materialize::{self, KeptViews, Materializer};
use crate::metrics::Metrics;
use crate::model_files::ModelSource;
use crate::source_status::{SourceStatus, StatusCollector};

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
    if let Some(ns) = &args.namespace {
        config.set_namespace(ns)?;
    }
    if let Some(listen) = &args.listen {
        config.api.listen = listen.clone();
    }
    config.override_run(args.workers, args.speed)?;
    let cluster = Cluster::from_args(&args.cluster)?;
    if let Some(c) = cluster.as_ref().filter(|c| !c.leads()) {
        return super::follow(&config, c, true, "run");
    }
    set_model_threads(config.model.threads);
    // SIGTERM or SIGINT asks for a clean stop; a second one exits at once.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register_conditional_shutdown(signal, 1, stop.clone())?;
        signal_hook::flag::register(signal, stop.clone())?;
    }
    let lateness = Duration::seconds(config.pipeline.allowed_lateness_secs as i64);
    let in_flight = InFlight::default();
    let status = SourceStatus::new(in_flight.clone());
    let inputs = open_inputs(
        &config,
        lateness,
        status.clone(),
        stop.clone(),
        args.exit_at_end,
    )?;
    // Fail before starting workers if the model is missing or broken.
    let (model, mut embedder) = ModelSource::open(&config.model)?;
    let core = Arc::new(CoreSetup::build(&config, &mut embedder)?);
    let sink_runtime = Arc::new(
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
    );
    let metrics = Metrics::new();
    let (checkpoints, mut resumed, sinks) =
        start_from_checkpoint(&config, &core, &sink_runtime, &metrics)?;
    let mut inputs = inputs;
    if let Some(r) = resumed.as_mut() {
        r.file_start = inputs.resume_at(&r.run)?;
    }
    let dead_tap = ideaflow_sinks::DeadLetterTap::default();
    let (output, dead) = match &resumed {
        Some(r) => (
            restart::output_from(&config.pipeline.output, r)?,
            restart::dead_letters_from(&config.pipeline.dead_letter, r)?,
        ),
        None => (
            JsonlWriter::create(&config.pipeline.output)?,
            DeadLetterSink::open(&config.pipeline.dead_letter, false)?,
        ),
    };
    let dead = dead.with_tap(dead_tap.clone());
    metrics
        .registry
        .register(Box::new(StatusCollector(status.clone())))
        .map_err(|e| anyhow::anyhow!("registering the source metrics: {e}"))?;
    let (feed, _) = broadcast::channel(1024);
    let views = Arc::new(Mutex::new(ViewState::default()));
    // The dataflow's dead letters before the checkpoint: appended with the
    // rest when the run ends.
    if let Some(r) = &resumed {
        let mut v = views.lock().expect("not poisoned");
        let restored = restart::refused_inside(r);
        *checkpoints
            .as_ref()
            .expect("resumed runs take checkpoints")
            .refused_inside
            .lock()
            .expect("not poisoned") = restored.clone();
        v.apply(restored.into_iter().map(|(n, d)| Change {
            key: ViewKey::DeadLetter(n),
            row: Some(ViewRow::DeadLetter(n, d)),
        }));
    }

    // The API runs on its own runtime, beside the timely workers.
    let api_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (stop_api, api_stopped) = oneshot::channel::<()>();
    let server = if config.api.listen.is_empty() {
        None
    } else {
        let pool = api_runtime.block_on(ideaflow_sinks::postgres::connect(
            &config.postgres.url,
            &config.postgres.schema,
        ))?;
        let state = Arc::new(AppState {
            pool,
            redis: redis::Client::open(config.redis.url.as_str())?,
            namespace: config.redis.namespace.clone(),
            categories: config.categories.keys().cloned().collect(),
            weights: config.scoring.weights,
            embedder: Arc::new(Mutex::new(embedder)),
            feed: feed.clone(),
            metrics: metrics.clone(),
            max_limit: config.api.max_limit,
            max_query_chars: config.api.max_query_chars,
            sources: Some(status.clone()),
            webhook: webhook(&config, &status)?.map(Arc::new),
        });
        let listener = api_runtime.block_on(api::bind(&config.api.listen))?;
        let mut app = api::router(state);
        if let Some(cors) = api::cors::layer(&config.api.cors_origins)? {
            app = app.layer(cors);
        }
        let settings = api::server::ServeSettings {
            header_read_timeout: std::time::Duration::from_secs(
                config.api.header_read_timeout_secs.max(1),
            ),
            unparsed: Some(metrics.http_requests.clone()),
        };
        Some(api_runtime.spawn(async move {
            api::server::serve(listener, app, settings, async {
                let _ = api_stopped.await;
            })
            .await
        }))
    };

    tracing::info!(
        inputs = ?config.pipeline.inputs,
        workers = config.pipeline.workers,
        output = %config.pipeline.output.display(),
        dead_letter = %config.pipeline.dead_letter.display(),
        schema = %config.postgres.schema,
        namespace = %config.redis.namespace,
        "pipeline starting"
    );
    let mut consumer = Materializer::new(
        sink_runtime.clone(),
        Some(sinks),
        views.clone(),
        Some(feed),
        Some(metrics),
    )
    .keeping(KeptViews::DeadLetters)
    .with_dead_letters(dead_tap)
    .with_sources(in_flight)
    .with_stop(stop.clone());
    if let Some(c) = &checkpoints {
        consumer = consumer.with_checkpoints(c);
    }
    let lead = Lead {
        source: inputs,
        dead,
        consumer: Box::new(consumer),
        signals_out: Some(output),
        continuity: Continuity {
            checkpoints,
            resumed,
        },
    };
    let summary = run_dataflow(&config, cluster.as_ref(), Some(lead), model, core, true)?
        .ok_or_else(|| anyhow::anyhow!("the leading worker returned no summary"))?;
    let refused_inside = super::replay::append_dataflow_dead_letters(
        &views.lock().expect("not poisoned"),
        &config.pipeline.dead_letter,
    )?;
    // Postgres's count, not the run's: the run keeps no views in memory, and
    // one resumed from a checkpoint has seen only the epochs since.
    let ideas = sink_runtime
        .block_on(async {
            let pool =
                ideaflow_sinks::postgres::connect(&config.postgres.url, &config.postgres.schema)
                    .await?;
            ideaflow_sinks::postgres_read_back::idea_count(&pool).await
        })
        .context("counting the ideas in Postgres at the end of the run")?;
    tracing::info!(
        events = summary.events,
        signals_out = summary.signals_out,
        ideas,
        dead_letters = summary.dead_letters + refused_inside.len() as u64,
        seconds = format!("{:.2}", summary.seconds),
        "pipeline finished"
    );
    println!(
        "ideaflow run: {} events in, {} signals embedded to {}, {} ideas in Postgres schema {} and Redis namespace {}, {} dead-lettered to {} ({:.1}s)",
        summary.events,
        summary.signals_out,
        config.pipeline.output.display(),
        ideas,
        config.postgres.schema,
        config.redis.namespace,
        summary.dead_letters + refused_inside.len() as u64,
        config.pipeline.dead_letter.display(),
        summary.seconds
    );
    for (reason, n) in &summary.dead_by_reason {
        println!("  dead-letter {reason}: {n}");
    }
    if let Some(server) = server {
        if !args.exit_at_end && !stop.load(Ordering::SeqCst) {
            println!(
                "serving the API and dashboard at http://{}/ (Ctrl-C to stop)",
                config.api.listen
            );
            let stopped = api_runtime.block_on(async {
                let asked = async {
                    while !stop.load(Ordering::SeqCst) {
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                };
                tokio::select! {
                    _ = asked => None,
                    r = server => Some(r),
                }
            });
            // The server ends by itself only when it fails: say so, and exit
            // with an error rather than as if stopped on purpose.
            match stopped {
                Some(Ok(Err(e))) => return Err(e.context("the HTTP API stopped")),
                Some(Err(e)) => return Err(anyhow::anyhow!("the HTTP API task failed: {e}")),
                Some(Ok(Ok(()))) | None => {}
            }
        }
        let _ = stop_api.send(());
    }
    Ok(())
}

/// The file chain (files and `-`, in order) and a source per bus URL.
fn open_inputs(
    config: &Config,
    lateness: Duration,
    status: Arc<SourceStatus>,
    stop: Arc<AtomicBool>,
    exit_when_idle: bool,
) -> Result<Inputs> {
    let speed: Speed = config.pipeline.speed.parse().map_err(anyhow::Error::msg)?;
    let specs = config.input_specs()?;
    let files: Vec<std::path::PathBuf> = specs
        .iter()
        .filter_map(|s| match s {
            InputSpec::File(p) => Some(p.clone()),
            _ => None,
        })
        .collect();
    let buses = specs
        .iter()
        .filter_map(ideaflow_sources::bus::open)
        .collect::<Result<Vec<_>, _>>()?;
    let files = if files.is_empty() {
        None
    } else {
        Some(
            ReplaySource::new(files, lateness, speed)?
                .with_max_future(config.pipeline.max_future()),
        )
    };
    Ok(Inputs {
        files,
        buses,
        live: LiveSettings {
            idle_after: std::time::Duration::from_secs(config.pipeline.idle_source_secs),
            exit_when_idle,
            shutdown_timeout: std::time::Duration::from_secs(config.pipeline.shutdown_timeout_secs),
            stop,
            allowed_lateness: lateness,
            max_future: config.pipeline.max_future(),
            status,
        },
    })
}

/// The webhook endpoint, when tokens are set, with the bus it appends to:
/// `api.webhook_bus`, or the first Redis stream or Kafka topic among the inputs.
fn webhook(
    config: &Config,
    status: &Arc<SourceStatus>,
) -> Result<Option<crate::api::webhook::Webhook>> {
    let specs = config.input_specs()?;
    let bus = if config.api.webhook_bus.is_empty() {
        specs
            .iter()
            .find(|s| matches!(s, InputSpec::Kafka(_) | InputSpec::RedisStream(_)))
            .cloned()
    } else {
        let wanted = InputSpec::parse(&config.api.webhook_bus)?;
        if !specs.contains(&wanted) {
            anyhow::bail!(
                "api.webhook_bus = {:?} is not one of pipeline.inputs: the pipeline would never read what the webhook appends; name one of them",
                config.api.webhook_bus
            );
        }
        Some(wanted)
    };
    let appender = bus
        .as_ref()
        .and_then(ideaflow_sources::bus::open_append)
        .transpose()?;
    Ok(crate::api::webhook::Webhook::new(
        crate::api::webhook::WebhookSettings {
            tokens: config.api.webhook_tokens.clone(),
            rate: config.api.webhook_rate,
            burst: config.api.webhook_burst,
            max_body: config.api.webhook_max_body_bytes,
            max_lag: config.api.webhook_max_lag,
        },
        appender,
        Some(status.clone()),
    ))
}

/// The checkpoints this run takes (`pipeline.checkpoint_dir`), the one it
/// resumes from, and the sinks: kept as they are when resuming (they hold
/// at least what the checkpoint does), emptied when the state is rebuilt.
fn start_from_checkpoint(
    config: &Config,
    core: &CoreSetup,
    runtime: &tokio::runtime::Runtime,
    metrics: &Metrics,
) -> Result<(Option<Checkpoints>, Option<Resumed>, materialize::Sinks)> {
    let dir = &config.pipeline.checkpoint_dir;
    if dir.as_os_str().is_empty() {
        return Ok((
            None,
            None,
            materialize::connect_waiting(config, runtime, true)?,
        ));
    }
    if let Some(why) = restart::unusable_inputs(config) {
        tracing::warn!(
            reason = why,
            "no checkpoints: every start rebuilds the state from the inputs"
        );
        return Ok((
            None,
            None,
            materialize::connect_waiting(config, runtime, true)?,
        ));
    }
    let store = crate::checkpoint::store::Store::open(dir, config.pipeline.checkpoints_kept)
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot use pipeline.checkpoint_dir {}: {e}; make it a writable folder or set it to \"\"",
                dir.display()
            )
        })?;
    let fingerprint = crate::checkpoint::fingerprint(config);
    let mut resumed = restart::newest(config, core, &store, &fingerprint)?;
    let sinks = match resumed.as_mut() {
        Some(_) => {
            let mut sinks = materialize::connect_waiting(config, runtime, false)?;
            let pg = runtime.block_on(sinks.postgres.committed_epoch())?;
            let redis = sinks.redis.committed_epoch()?;
            match (pg, redis) {
                (Some(pg), Some(redis)) => {
                    // Epochs after the checkpoint that the sinks hold
                    // already are written again, leaving the same rows
                    // (upserts, keyed dead letters, and no idea.scored
                    // event appended twice): if the inputs grew since (a
                    // file appended to), those epochs now hold more.
                    tracing::info!(
                        postgres = pg,
                        redis,
                        "the sinks' progress: epochs after the checkpoint are written again"
                    );
                    let remembered = runtime.block_on(sinks.postgres.remembered())?;
                    sinks.redis.remember(remembered)?;
                    sinks.committed_at_start = Some((pg, redis));
                    sinks
                }
                _ => {
                    tracing::warn!(
                        postgres = ?pg,
                        redis = ?redis,
                        "a sink holds no progress marker (emptied since the checkpoint?): \
                         rebuilding the state from the inputs"
                    );
                    resumed = None;
                    drop(sinks);
                    materialize::connect_waiting(config, runtime, true)?
                }
            }
        }
        None => materialize::connect_waiting(config, runtime, true)?,
    };
    let trimmer = if config.pipeline.trim_sources {
        crate::checkpoint::trim::Trimmer::new(&config.input_specs()?)
    } else {
        None
    };
    if resumed.is_none() {
        if trimmer.is_some() {
            tracing::warn!(
                "pipeline.trim_sources is on: the Redis streams may have dropped entries \
                 earlier runs' checkpoints held; the rebuild starts from what they hold now"
            );
        }
        // The sinks are emptied and rebuilt: no checkpoint of before may be
        // taken up again with them.
        for old in store.list()? {
            tracing::info!(path = %old.display(), "removing a checkpoint the rebuild replaces");
            std::fs::remove_file(&old)?;
        }
    }
    let checkpoints = Checkpoints {
        store,
        every: std::time::Duration::from_secs(config.pipeline.checkpoint_every_secs),
        fingerprint,
        refused_inside: Arc::default(),
        committed_before: Arc::new(std::sync::atomic::AtomicI64::new(
            resumed.as_ref().map_or(0, |r| {
                i64::try_from(r.header.complete_before).unwrap_or(i64::MAX)
            }),
        )),
        base_classes: core.labels().classifier.clone().map(Arc::new),
        ending: Arc::default(),
        metrics: Some(metrics.clone()),
        trimmer,
    };
    Ok((Some(checkpoints), resumed, sinks))
}
