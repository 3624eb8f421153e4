//! The consumer `run` and `replay --materialize` hand completed epochs to:
//! Postgres, Redis, the in-memory views, and the live feed the HTTP API
//! streams from. A writer thread (`writer`) materializes them into Postgres
//! and Redis while the dataflow goes on, one transaction per sink for each
//! batch of the epochs completed since its last write (`pending`): a reader
//! never sees part of an epoch, and a slow database slows the pipeline
//! instead of dropping data.

mod pending;
mod retry;
mod writer;

use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use ideaflow_operators::top_k::TopKDelta;
use ideaflow_operators::views::{Change, ViewState};
use ideaflow_sinks::postgres::{self, PostgresSink};
use ideaflow_sinks::redis_sink::{EpochMoves, RedisSink};
use ideaflow_sinks::DeadLetterTap;
use ideaflow_sources::bus::in_flight::InFlight;
use ideaflow_sources::replay::Speed;
use tokio::runtime::Runtime;
use tokio::sync::broadcast;

use crate::config::Config;
use crate::dataflow::deliver::EpochConsumer;
use writer::{SinkWriter, Targets};

/// What the live feed announces for each committed epoch.
#[derive(Clone, Debug, serde::Serialize)]
pub struct EpochCommitted {
    pub epoch: i64,
    pub changes: usize,
    pub ideas_changed: Vec<String>,
    pub top_moves: Vec<String>,
    /// The epoch's first signals, for the dashboard's live signal stream.
    pub signals: Vec<FeedSignal>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct FeedSignal {
    pub source: String,
    pub content: String,
    pub dedupe: String,
    pub captured_at: i64,
}

pub struct Materializer {
    pub views: Arc<Mutex<ViewState>>,
    /// How many ideas per category Redis's top sets hold (with sinks): the
    /// idea state ranks them and hands each epoch's moves with it.
    top_k: Option<usize>,
    /// The dead letters the dataflow refused so far (by their view key),
    /// for the checkpoints: a resumed run appends them at its end too.
    refused_inside: Option<crate::checkpoint::capture::RefusedInside>,

    /// The sinks until the first epoch starts the writer with them.
    targets: Option<Targets>,
    writer: Option<SinkWriter>,
    /// Bus records waiting for their epochs' commit.
    in_flight: Option<InFlight>,
}

/// Which rows the writer keeps in memory once both sinks committed them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeptViews {
    /// Every view: the final state a replay's `--out` and `verify` read.
    All,
    /// The dead letters the dataflow refused, alone: what `run` appends to
    /// its dead-letter file at its end. The views themselves are in Postgres
    /// and Redis; a copy in a long-running service's memory would grow
    /// with every signal it ever took.
    DeadLetters,
}

/// Where epochs are materialized.
pub struct Sinks {
    pub postgres: PostgresSink,
    pub redis: RedisSink,
    /// Set when the vector index was dropped for a bulk load: build it, with
    /// this `maintenance_work_mem`, once the inputs end.
    pub index_after_load: Option<String>,
    /// How long a failed write is retried (`pipeline.sink_retry_secs`).
    pub retry_for: std::time::Duration,
    /// For a run resumed from a checkpoint: the last epoch each sink had
    /// committed, (Postgres, Redis). A Redis whose marker falls behind its
    /// own came back without its data, even before this run's first write.
    pub committed_at_start: Option<(i64, i64)>,
}

/// [`connect`], waiting for servers that are not reachable yet (`run` may
/// start before them): tried again with backoff for up to
/// `pipeline.sink_retry_secs`, as failed writes are.
pub fn connect_waiting(config: &Config, runtime: &Runtime, fresh: bool) -> Result<Sinks> {
    let patience = config.pipeline.sink_retry();
    let started = std::time::Instant::now();
    let mut backoff = retry::Backoff::new();
    loop {
        match connect(config, runtime, fresh) {
            Err(e) if retry::is_transient(&e) && started.elapsed() < patience => {
                backoff.wait_after("Postgres or Redis is not reachable yet", &e);
            }
            result => return result,
        }
    }
}

/// Connects to Postgres (creating the schema and applying migrations) and
/// Redis; with `fresh`, empties both first (a replay starts from nothing),
/// and, when that rebuild runs at full speed and
/// `postgres.build_index_after_load` is on, drops the vector index until the
/// inputs end; otherwise makes sure it is there (a bulk load cut short may
/// have left it dropped).
pub fn connect(config: &Config, runtime: &Runtime, fresh: bool) -> Result<Sinks> {
    let bulk = fresh
        && config.postgres.build_index_after_load
        && matches!(config.pipeline.speed.parse(), Ok(Speed::Max));
    let pool = runtime.block_on(async {
        let pool = postgres::connect(&config.postgres.url, &config.postgres.schema).await?;
        postgres::migrate(&pool).await?;
        if fresh {
            postgres::truncate(&pool).await?;
        }
        if bulk {
            postgres::drop_vector_index(&pool, &config.postgres.schema).await?;
        } else {
            postgres::build_vector_index(&pool, &config.postgres.index_build_memory).await?;
        }
        anyhow::Ok(pool)
    })?;
    let mut redis = RedisSink::connect(
        &config.redis.url,
        &config.redis.namespace,
        config.redis.top_k,
    )?;
    if fresh {
        redis
            .clear()
            .context("clearing the Redis namespace failed")?;
    }
    Ok(Sinks {
        postgres: PostgresSink::new(pool, "views")?,
        redis,
        index_after_load: bulk.then(|| config.postgres.index_build_memory.clone()),
        retry_for: config.pipeline.sink_retry(),
        committed_at_start: None,
    })
}

impl Materializer {
    pub fn new(
        runtime: Arc<Runtime>,
        sinks: Option<Sinks>,
        views: Arc<Mutex<ViewState>>,
        feed: Option<broadcast::Sender<EpochCommitted>>,
        metrics: Option<crate::metrics::Metrics>,
    ) -> Self {
        let top_k = sinks.as_ref().map(|s| s.redis.top_k());
        let targets = sinks.map(|s| Targets {
            runtime,
            postgres: s.postgres,
            redis: s.redis,
            views: views.clone(),
            feed,
            metrics,
            dead_letters: None,
            index_after_load: s.index_after_load,
            retry_for: s.retry_for,
            kept: KeptViews::All,
            redis_committed: s.committed_at_start.map(|(_, redis)| redis),
            views_epoch: s.committed_at_start.map(|(pg, redis)| pg.min(redis)),
            in_flight: None,
            stop: None,
            committed_before: None,
        });
        Materializer {
            views,
            top_k,
            refused_inside: None,
            targets,
            writer: None,
            in_flight: None,
        }
    }

    /// Shares what the checkpoints save: the dataflow's dead letters, and
    /// how far both sinks have committed.
    pub fn with_checkpoints(mut self, c: &crate::checkpoint::capture::Checkpoints) -> Self {
        self.refused_inside = Some(c.refused_inside.clone());
        if let Some(t) = self.targets.as_mut() {
            t.committed_before = Some(c.committed_before.clone());
        }
        self
    }

    /// Keeps only `kept` of the committed views in memory (all by default).
    pub fn keeping(mut self, kept: KeptViews) -> Self {
        if let Some(t) = self.targets.as_mut() {
            t.kept = kept;
        }
        self
    }

    /// Acknowledges bus records once their epochs are committed, and records
    /// the sources' positions with each write.
    pub fn with_sources(mut self, in_flight: InFlight) -> Self {
        if let Some(t) = self.targets.as_mut() {
            t.in_flight = Some(in_flight.clone());
        }
        self.in_flight = Some(in_flight);
        self
    }

    /// A stop asked by `stop` (SIGTERM) ends without waiting for the
    /// vector index.
    pub fn with_stop(mut self, stop: Arc<std::sync::atomic::AtomicBool>) -> Self {
        if let Some(t) = self.targets.as_mut() {
            t.stop = Some(stop);
        }
        self
    }

    /// Writes the dead letters `tap` collects into Postgres with each batch.
    pub fn with_dead_letters(mut self, tap: DeadLetterTap) -> Self {
        if let Some(t) = self.targets.as_mut() {
            t.dead_letters = Some(tap);
        }
        self
    }

    /// The bus sources' positions once the epochs ending by `epoch_end` are committed.
    fn positions_through(&self, epoch_end: i64) -> Option<serde_json::Value> {
        self.in_flight
            .as_ref()
            .filter(|f| !f.is_empty())
            .and_then(|f| serde_json::to_value(f.positions_through(epoch_end)).ok())
    }

    /// The writer, started with the sinks on first use.
    fn writer(&mut self) -> Result<Option<&mut SinkWriter>> {
        if let Some(targets) = self.targets.take() {
            self.writer = Some(SinkWriter::start(targets)?);
        }
        Ok(self.writer.as_mut())
    }
}

impl EpochConsumer for Materializer {
    fn top_k(&self) -> Option<usize> {
        self.top_k
    }

    fn epoch(
        &mut self,
        epoch_end: i64,
        changes: &mut Vec<Change>,
        moves: std::collections::BTreeMap<String, TopKDelta>,
    ) -> Result<()> {
        let moves = EpochMoves { epoch_end, moves };
        if let Some(refused) = &self.refused_inside {
            let mut refused = refused.lock().expect("not poisoned");
            refused.extend(changes.iter().filter_map(|c| match &c.row {
                Some(ideaflow_operators::views::ViewRow::DeadLetter(n, d)) => Some((*n, d.clone())),
                _ => None,
            }));
        }
        let positions = self.positions_through(epoch_end);
        match self.writer()? {
            // The writer thread keeps them until they are written.
            Some(writer) => writer.submit(epoch_end, std::mem::take(changes), moves, positions),
            None => {
                self.views
                    .lock()
                    .expect("not poisoned")
                    .apply(changes.drain(..));
                if let Some(f) = &self.in_flight {
                    f.committed(epoch_end);
                }
                Ok(())
            }
        }
    }

    fn frontier(&mut self, complete_before: i64) -> Result<()> {
        let positions = self.positions_through(complete_before);
        match self.writer()? {
            Some(writer) => writer.frontier(complete_before, positions),
            None => {
                if let Some(f) = &self.in_flight {
                    f.committed(complete_before);
                }
                Ok(())
            }
        }
    }

    fn finish(&mut self) -> Result<()> {
        match self.writer()? {
            Some(writer) => writer.finish(),
            None => Ok(()),
        }
    }
}
