//! The consumer `run` and `replay --materialize` hand completed epochs to:
//! Postgres, Redis, the in-memory views, and the live feed the HTTP API
//! streams from. Postgres and Redis are written epoch by epoch, each epoch
//! atomically and both at once; the dataflow waits for both writes before the
//! next epoch (so a slow database slows the pipeline instead of dropping
//! data).

use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use ideaflow_operators::views::{Change, ViewState};
use ideaflow_sinks::postgres::{self, PostgresSink};
use ideaflow_sinks::redis_sink::RedisSink;
use ideaflow_sinks::DeadLetterTap;
use ideaflow_sources::replay::Speed;
use tokio::runtime::Runtime;
use tokio::sync::broadcast;

use crate::config::Config;
use crate::dataflow::deliver::EpochConsumer;

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

/// How many of an epoch's signals the live feed carries.
const FEED_SIGNALS: usize = 8;

pub struct Materializer {
    runtime: Arc<Runtime>,
    postgres: Option<PostgresSink>,
    redis: Option<RedisSink>,
    pub views: Arc<Mutex<ViewState>>,
    feed: Option<broadcast::Sender<EpochCommitted>>,
    metrics: Option<crate::metrics::Metrics>,
    /// Refused records not yet in Postgres; each epoch's transaction takes them.
    dead_letters: Option<DeadLetterTap>,
    /// See [`Sinks::index_after_load`].
    index_after_load: Option<String>,
}

/// Where epochs are materialized.
pub struct Sinks {
    pub postgres: PostgresSink,
    pub redis: RedisSink,
    /// Set when the vector index was dropped for a bulk load: build it, with
    /// this `maintenance_work_mem`, once the inputs end.
    pub index_after_load: Option<String>,
}

/// Connects to Postgres (creating the schema and applying migrations) and
/// Redis; with `fresh`, empties both first (a replay starts from nothing),
/// and, when that rebuild runs at full speed and
/// `postgres.build_index_after_load` is on, drops the vector index until the
/// inputs end.
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
        postgres: PostgresSink::new(pool, "views"),
        redis,
        index_after_load: bulk.then(|| config.postgres.index_build_memory.clone()),
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
        let (postgres, redis, index_after_load) = match sinks {
            Some(s) => (Some(s.postgres), Some(s.redis), s.index_after_load),
            None => (None, None, None),
        };
        Materializer {
            runtime,
            postgres,
            redis,
            views,
            feed,
            metrics,
            dead_letters: None,
            index_after_load,
        }
    }

    /// Writes the dead letters `tap` collects into Postgres with each epoch.
    pub fn with_dead_letters(mut self, tap: DeadLetterTap) -> Self {
        self.dead_letters = Some(tap);
        self
    }

    fn take_dead_letters(&self) -> Vec<ideaflow_operators::DeadLetter> {
        self.dead_letters
            .as_ref()
            .map(|t| std::mem::take(&mut *t.lock().expect("not poisoned")))
            .unwrap_or_default()
    }
}

impl EpochConsumer for Materializer {
    fn epoch(&mut self, epoch_end: i64, changes: Vec<Change>) -> Result<()> {
        let started = std::time::Instant::now();
        let dead = self.take_dead_letters();
        // Postgres and Redis take the epoch at the same time (each in its
        // own transaction); it is announced once both have committed it.
        let (written_pg, written_redis) = std::thread::scope(|scope| {
            let redis = self.redis.as_mut().map(|r| {
                let changes = &changes;
                scope.spawn(move || r.write_epoch(epoch_end, changes))
            });
            let pg = match &self.postgres {
                Some(pg) => self
                    .runtime
                    .block_on(pg.write_epoch(epoch_end, &changes, &dead)),
                None => Ok(()),
            };
            let redis = redis.map(|h| h.join().expect("the Redis writer does not panic"));
            (pg, redis)
        });
        written_pg.with_context(|| format!("writing epoch {epoch_end} to Postgres"))?;
        let moves = match written_redis {
            Some(written) => {
                written.with_context(|| format!("writing epoch {epoch_end} to Redis"))?
            }
            None => Default::default(),
        };
        if let Some(r) = self.redis.as_mut() {
            r.announce(epoch_end, changes.len(), &moves)
                .with_context(|| format!("announcing epoch {epoch_end} on Redis"))?;
        }
        if let Some(m) = &self.metrics {
            m.observe_epoch(&changes, started.elapsed().as_secs_f64());
        }
        let ideas_changed: Vec<String> = changes
            .iter()
            .filter_map(|c| match &c.key {
                ideaflow_operators::views::ViewKey::Idea(id) => Some(id.to_string()),
                _ => None,
            })
            .collect();
        let signals = changes
            .iter()
            .filter_map(|c| match &c.row {
                Some(ideaflow_operators::views::ViewRow::Signal(r)) => Some(FeedSignal {
                    source: r.source.as_str().to_owned(),
                    content: r.content.clone(),
                    dedupe: format!("{:?}", r.dedupe).to_lowercase(),
                    captured_at: r.captured_at.timestamp(),
                }),
                _ => None,
            })
            .take(FEED_SIGNALS)
            .collect();
        let summary = EpochCommitted {
            epoch: epoch_end,
            changes: changes.len(),
            ideas_changed,
            top_moves: moves.keys().cloned().collect(),
            signals,
        };
        self.views.lock().expect("not poisoned").apply(changes);
        if let Some(feed) = &self.feed {
            // No subscriber is fine: nobody is watching.
            let _ = feed.send(summary);
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        let dead = self.take_dead_letters();
        if let (Some(pg), false) = (&self.postgres, dead.is_empty()) {
            self.runtime
                .block_on(pg.write_dead_letters(&dead))
                .context("writing the last dead letters to Postgres")?;
        }
        if let (Some(pg), Some(memory)) = (&self.postgres, self.index_after_load.take()) {
            let started = std::time::Instant::now();
            tracing::info!(
                maintenance_work_mem = %memory,
                "inputs ended: building the HNSW index on ideas.embedding"
            );
            self.runtime
                .block_on(postgres::build_vector_index(pg.pool(), &memory))
                .context(
                    "building the vector index after the load (check postgres.index_build_memory)",
                )?;
            tracing::info!(
                seconds = format!("{:.1}", started.elapsed().as_secs_f64()),
                "HNSW index built"
            );
        }
        Ok(())
    }
}
