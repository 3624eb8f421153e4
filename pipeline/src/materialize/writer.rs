//! The thread that writes completed epochs to Postgres and Redis.
//!
//! The dataflow hands each epoch over and goes on; the writer takes whatever
//! has piled up since its last write as one batch ([`PendingEpochs`]), so a
//! sink that keeps up writes every epoch, and one that falls behind writes
//! fewer, larger batches instead of stalling the dataflow behind every
//! epoch. Past [`MAX_PENDING_CHANGES`] waiting changes the dataflow waits
//! (back-pressure: memory stays bounded and nothing is dropped).

use std::collections::BTreeSet;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use ideaflow_operators::views::{Change, ViewKey, ViewRow, ViewState};
use ideaflow_sinks::postgres::{self, PostgresSink};
use ideaflow_sinks::redis_sink::{EpochMoves, RedisSink};
use ideaflow_sinks::DeadLetterTap;
use tokio::runtime::Runtime;
use tokio::sync::broadcast;

use super::pending::PendingEpochs;
use super::{EpochCommitted, FeedSignal};

/// Distinct changes waiting for the sinks before the dataflow waits for
/// them: about the changelog of one tick over a million live ideas.
pub const MAX_PENDING_CHANGES: usize = 1_000_000;

/// How many of a batch's signals the live feed carries.
const FEED_SIGNALS: usize = 8;

/// Everything the writer writes to, owned by its thread.
pub struct Targets {
    pub runtime: Arc<Runtime>,
    pub postgres: PostgresSink,
    pub redis: RedisSink,
    /// Applied after each committed batch: the final state `replay --out`
    /// and `verify` read.
    pub views: Arc<Mutex<ViewState>>,
    pub feed: Option<broadcast::Sender<EpochCommitted>>,
    pub metrics: Option<crate::metrics::Metrics>,
    /// Refused records not yet in Postgres; each batch's transaction takes them.
    pub dead_letters: Option<DeadLetterTap>,
    /// Set when the vector index was dropped for a bulk load: built, with
    /// this `maintenance_work_mem`, once the inputs end.
    pub index_after_load: Option<String>,
}

#[derive(Default)]
struct Queue {
    pending: PendingEpochs,
    /// No more epochs: write what is left, finish, and stop.
    closed: bool,
    failed: Option<anyhow::Error>,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    /// Signalled whenever `queue` changes.
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().expect("the queue's holders do not panic")
    }

    fn wait<'a>(&self, queue: MutexGuard<'a, Queue>) -> MutexGuard<'a, Queue> {
        self.changed
            .wait(queue)
            .expect("the queue's holders do not panic")
    }
}

pub struct SinkWriter {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    /// For `ideaflow_sink_pending_changes`.
    pending_gauge: Option<prometheus::IntGauge>,
}

impl SinkWriter {
    pub fn start(targets: Targets) -> Result<Self> {
        let shared = Arc::new(Shared::default());
        let theirs = shared.clone();
        let pending_gauge = targets
            .metrics
            .as_ref()
            .map(|m| m.sink_pending_changes.clone());
        let thread = std::thread::Builder::new()
            .name("sink-writer".into())
            .spawn(move || write_until_closed(&theirs, targets))
            .context("cannot start the sink writer thread")?;
        Ok(SinkWriter {
            shared,
            thread: Some(thread),
            pending_gauge,
        })
    }

    /// Queues one completed epoch; waits while too much is queued. Fails if
    /// a write failed (the pipeline stops there).
    pub fn submit(&self, epoch_end: i64, changes: Vec<Change>, moves: EpochMoves) -> Result<()> {
        let mut queue = self.shared.lock();
        loop {
            if let Some(e) = &queue.failed {
                return Err(anyhow!("{e:#}"));
            }
            if queue.pending.len() < MAX_PENDING_CHANGES {
                break;
            }
            queue = self.shared.wait(queue);
        }
        queue.pending.push(epoch_end, changes, moves);
        if let Some(g) = &self.pending_gauge {
            g.set(queue.pending.len() as i64);
        }
        self.shared.changed.notify_all();
        Ok(())
    }

    /// Waits until every queued epoch is written and the end-of-input work
    /// (last dead letters, the deferred index) is done.
    pub fn finish(&mut self) -> Result<()> {
        self.shared.lock().closed = true;
        self.shared.changed.notify_all();
        if let Some(thread) = self.thread.take() {
            thread
                .join()
                .map_err(|_| anyhow!("the sink writer panicked; see the log above"))?;
        }
        match self.shared.lock().failed.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for SinkWriter {
    /// Without `finish` (the pipeline failed), the writer still writes what
    /// was queued, then stops.
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.changed.notify_all();
    }
}

fn write_until_closed(shared: &Shared, mut targets: Targets) {
    loop {
        let batch = {
            let mut queue = shared.lock();
            while queue.pending.is_empty() && !queue.closed {
                queue = shared.wait(queue);
            }
            if queue.pending.is_empty() {
                break;
            }
            let batch = std::mem::take(&mut queue.pending);
            if let Some(m) = &targets.metrics {
                m.sink_pending_changes.set(0);
            }
            shared.changed.notify_all();
            batch
        };
        if let Err(e) = targets.write(batch) {
            shared.lock().failed = Some(e);
            shared.changed.notify_all();
            return;
        }
    }
    if let Err(e) = targets.finish() {
        shared.lock().failed = Some(e);
    }
}

impl Targets {
    fn take_dead_letters(&self) -> Vec<ideaflow_operators::DeadLetter> {
        self.dead_letters
            .as_ref()
            .map(|t| std::mem::take(&mut *t.lock().expect("not poisoned")))
            .unwrap_or_default()
    }

    /// One batch: one transaction in each sink, both at once; announced once
    /// both have committed it.
    fn write(&mut self, batch: PendingEpochs) -> Result<()> {
        let started = Instant::now();
        let epoch_end = batch.last_epoch;
        let dead = self.take_dead_letters();
        let (written_pg, written_redis) = std::thread::scope(|scope| {
            let redis = &mut self.redis;
            let (changes, moves) = (batch.changes(), &batch.moves);
            let redis = scope.spawn(move || redis.write_epoch(epoch_end, changes, moves));
            let pg = self
                .runtime
                .block_on(self.postgres.write_epoch(epoch_end, changes, &dead));
            let redis = redis.join().expect("the Redis writer does not panic");
            (pg, redis)
        });
        written_pg.with_context(|| format!("writing epochs up to {epoch_end} to Postgres"))?;
        written_redis.with_context(|| format!("writing epochs up to {epoch_end} to Redis"))?;
        let top_moves: BTreeSet<&str> = batch
            .moves
            .iter()
            .flat_map(|m| m.moves.keys().map(String::as_str))
            .collect();
        self.redis
            .announce(epoch_end, batch.len(), top_moves.len())
            .with_context(|| format!("announcing epoch {epoch_end} on Redis"))?;
        if let Some(m) = &self.metrics {
            m.observe_write(
                batch.epochs,
                batch.changes(),
                started.elapsed().as_secs_f64(),
            );
        }
        let summary = EpochCommitted {
            epoch: epoch_end,
            changes: batch.len(),
            ideas_changed: batch
                .changes()
                .iter()
                .filter_map(|c| match &c.key {
                    ViewKey::Idea(id) => Some(id.to_string()),
                    _ => None,
                })
                .collect(),
            top_moves: top_moves.into_iter().map(str::to_owned).collect(),
            signals: batch
                .changes()
                .iter()
                .filter_map(|c| match &c.row {
                    Some(ViewRow::Signal(r)) => Some(FeedSignal {
                        source: r.source.as_str().to_owned(),
                        content: r.content.clone(),
                        dedupe: format!("{:?}", r.dedupe).to_lowercase(),
                        captured_at: r.captured_at.timestamp(),
                    }),
                    _ => None,
                })
                .take(FEED_SIGNALS)
                .collect(),
        };
        self.views
            .lock()
            .expect("not poisoned")
            .apply(batch.into_changes());
        if let Some(feed) = &self.feed {
            // No subscriber is fine: nobody is watching.
            let _ = feed.send(summary);
        }
        Ok(())
    }

    /// After the last epoch: the dead letters refused since the last batch,
    /// and the vector index a bulk load deferred.
    fn finish(&mut self) -> Result<()> {
        let dead = self.take_dead_letters();
        if !dead.is_empty() {
            self.runtime
                .block_on(self.postgres.write_dead_letters(&dead))
                .context("writing the last dead letters to Postgres")?;
        }
        if let Some(memory) = self.index_after_load.take() {
            let started = Instant::now();
            tracing::info!(
                maintenance_work_mem = %memory,
                "inputs ended: building the HNSW index on ideas.embedding"
            );
            self.runtime
                .block_on(postgres::build_vector_index(self.postgres.pool(), &memory))
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
