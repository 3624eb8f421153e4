//! The thread that writes completed epochs to Postgres and Redis.
//!
//! The dataflow hands each epoch over and goes on; the writer takes whatever
//! has piled up since its last write as one batch ([`PendingEpochs`]), so a
//! sink that keeps up writes every epoch, and one that falls behind writes
//! fewer, larger batches instead of stalling the dataflow behind every
//! epoch. Past [`MAX_PENDING_CHANGES`] waiting changes the dataflow waits
//! (back-pressure: memory stays bounded and nothing is dropped).
//!
//! A batch whose write fails (a server restarting, a network blip) is
//! written again, with backoff, for up to `pipeline.sink_retry_secs`, and only
//! to the sink that has not committed it: a sink's progress marker, set in
//! the same transaction, tells whether a write whose reply was lost landed.
//! Only then does the pipeline stop with the error.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use ideaflow_operators::top_k::TopK;
use ideaflow_operators::views::{Change, ViewKey, ViewRow, ViewState};
use ideaflow_sinks::postgres::{self, PostgresSink};
use ideaflow_sinks::redis_sink::{EpochMoves, RedisSink};
use ideaflow_sinks::DeadLetterTap;
use tokio::runtime::Runtime;
use tokio::sync::broadcast;

use ideaflow_sources::bus::in_flight::InFlight;

use super::pending::PendingEpochs;
use super::retry::{is_transient, Backoff};
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
    /// Applied after each committed batch (the rows `kept` says): the final
    /// state `replay --out` and `verify` read.
    pub views: Arc<Mutex<ViewState>>,
    pub kept: super::KeptViews,
    pub feed: Option<broadcast::Sender<EpochCommitted>>,
    pub metrics: Option<crate::metrics::Metrics>,
    /// Refused records not yet in Postgres; each batch's transaction takes them.
    pub dead_letters: Option<DeadLetterTap>,
    /// Set when the vector index was dropped for a bulk load: built, with
    /// this `maintenance_work_mem`, once the inputs end.
    pub index_after_load: Option<String>,
    /// How long a failed write is retried before the pipeline stops.
    pub retry_for: Duration,
    /// The last epoch Redis committed: a server whose progress marker is
    /// behind it came back without its data.
    pub redis_committed: Option<i64>,
    /// The last epoch both sinks committed: a Redis refill is marked with
    /// it, so that the batch being written goes on top.
    pub views_epoch: Option<i64>,
    /// Set to the frontier of each write that succeeded: every epoch
    /// starting before it is committed by every sink (the checkpoints wait
    /// for it).
    pub committed_before: Option<Arc<std::sync::atomic::AtomicI64>>,
    /// Bus records waiting for their epochs' commit: acknowledged after it.
    pub in_flight: Option<InFlight>,
    /// Set when the service was asked to stop (SIGTERM): the end does not
    /// wait for the vector index.
    pub stop: Option<Arc<std::sync::atomic::AtomicBool>>,
}

/// A batch on its way to the sinks, and which of them have committed it.
struct Attempt {
    batch: PendingEpochs,
    /// The dead letters refused before the batch was taken: they go into
    /// Postgres with it, whatever number of tries that takes.
    dead: Vec<ideaflow_sinks::KeyedDeadLetter>,
    postgres: bool,
    redis: bool,
    announced: bool,
    /// Failed tries so far.
    failures: u32,
}

#[derive(Default)]
struct Queue {
    pending: PendingEpochs,
    /// Every epoch starting before it was handed over: once what is queued
    /// is committed, their records are acknowledged.
    frontier: Option<i64>,
    /// The sources' positions as of `frontier`.
    frontier_positions: Option<serde_json::Value>,
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
        if let Some(m) = &targets.metrics {
            m.register_gauge_of(
                "ideaflow_vector_index_pending",
                "Ideas committed whose vectors are not in the HNSW index yet (searchable soon)",
                targets.postgres.vectors_pending(),
            );
        }
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
    pub fn submit(
        &self,
        epoch_end: i64,
        changes: Vec<Change>,
        moves: EpochMoves,
        positions: Option<serde_json::Value>,
    ) -> Result<()> {
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
        if positions.is_some() {
            queue.pending.positions = positions;
        }
        if let Some(g) = &self.pending_gauge {
            g.set(queue.pending.len() as i64);
        }
        self.shared.changed.notify_all();
        Ok(())
    }

    /// Every epoch starting before `complete_before` was handed over: their
    /// records are acknowledged once what is queued is committed.
    pub fn frontier(
        &self,
        complete_before: i64,
        positions: Option<serde_json::Value>,
    ) -> Result<()> {
        let mut queue = self.shared.lock();
        if let Some(e) = &queue.failed {
            return Err(anyhow!("{e:#}"));
        }
        if queue.frontier.is_none_or(|f| complete_before >= f) {
            queue.frontier = Some(complete_before);
            queue.frontier_positions = positions;
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
    let mut ack_all = false;
    loop {
        let (batch, frontier, frontier_positions) = {
            let mut queue = shared.lock();
            while queue.pending.is_empty() && queue.frontier.is_none() && !queue.closed {
                queue = shared.wait(queue);
            }
            if queue.pending.is_empty() && queue.frontier.is_none() {
                break;
            }
            let batch = std::mem::take(&mut queue.pending);
            let frontier = queue.frontier.take();
            let frontier_positions = queue.frontier_positions.take();
            if let Some(m) = &targets.metrics {
                m.sink_pending_changes.set(0);
            }
            shared.changed.notify_all();
            (batch, frontier, frontier_positions)
        };
        // The inputs ended: everything is acknowledged once the last dead
        // letters are written too (`finish`), never marked as an epoch.
        let ended = frontier == Some(i64::MAX);
        ack_all |= ended;
        let frontier = frontier.filter(|_| !ended);
        let mut committed = frontier.max((!batch.is_empty()).then_some(batch.last_epoch));
        let written = if batch.is_empty() && frontier.is_none() {
            Ok(())
        } else if batch.is_empty() {
            // Nothing to write but the dead letters refused meanwhile: they
            // are in Postgres before their records are acknowledged.
            let through = frontier.expect("a frontier when no batch");
            match targets.write_dead_letters_at(through, frontier_positions) {
                Ok(true) => Ok(()),
                Ok(false) => {
                    committed = None;
                    Ok(())
                }
                Err(e) => Err(e),
            }
        } else {
            let mut attempt = Attempt {
                batch,
                dead: targets.take_dead_letters(),
                postgres: false,
                redis: false,
                announced: false,
                failures: 0,
            };
            targets.write_with_retries(&mut attempt)
        };
        if let Err(e) = written {
            shared.lock().failed = Some(e);
            shared.changed.notify_all();
            return;
        }
        if let (Some(flight), Some(through)) = (&targets.in_flight, committed) {
            flight.committed(through);
        }
        if let (Some(all), Some(f), Some(_)) = (&targets.committed_before, frontier, committed) {
            all.fetch_max(f, Ordering::SeqCst);
        }
    }
    match targets.finish() {
        Ok(()) => {
            if let (Some(flight), true) = (&targets.in_flight, ack_all) {
                flight.committed(i64::MAX);
            }
            if let (Some(all), true) = (&targets.committed_before, ack_all) {
                all.store(i64::MAX, Ordering::SeqCst);
            }
        }
        Err(e) => shared.lock().failed = Some(e),
    }
}

impl Targets {
    /// The dead letters refused since the last batch, written on their own
    /// as the epochs up to `through` (a later progress mark than any before,
    /// so that one epoch still means one state to a reader), with retries
    /// like a batch. Returns whether everything before `through` is now
    /// committed: false when the letters must wait for the next batch
    /// (`through` is no later than the last epoch written).
    fn write_dead_letters_at(
        &mut self,
        through: i64,
        positions: Option<serde_json::Value>,
    ) -> Result<bool> {
        let dead = self.take_dead_letters();
        if dead.is_empty() {
            return Ok(true);
        }
        if self.views_epoch.is_some_and(|e| e >= through) {
            if let Some(tap) = &self.dead_letters {
                let mut waiting = tap.lock().expect("not poisoned");
                let later = std::mem::replace(&mut *waiting, dead);
                waiting.extend(later);
            }
            return Ok(false);
        }
        self.postgres.set_positions(positions);
        let started = Instant::now();
        let mut backoff = Backoff::new();
        loop {
            let written = self
                .runtime
                .block_on(self.postgres.write_epoch(through, &[], &dead))
                .context("writing dead letters to Postgres");
            match written {
                Ok(()) => break,
                Err(e) if is_transient(&e) && started.elapsed() < self.retry_for => {
                    backoff.wait_after("writing dead letters failed", &e);
                    // The reply may have been lost after the commit.
                    let committed = self.runtime.block_on(self.postgres.committed_epoch());
                    if committed.ok().flatten().is_some_and(|c| c >= through) {
                        break;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        self.views_epoch = Some(through);
        Ok(true)
    }

    fn take_dead_letters(&self) -> Vec<ideaflow_sinks::KeyedDeadLetter> {
        self.dead_letters
            .as_ref()
            .map(|t| std::mem::take(&mut *t.lock().expect("not poisoned")))
            .unwrap_or_default()
    }

    /// [`Targets::write`] until it succeeds or `retry_for` has passed since
    /// the first failure, waiting longer after each.
    fn write_with_retries(&mut self, attempt: &mut Attempt) -> Result<()> {
        let mut failing_since: Option<Instant> = None;
        let mut backoff = Backoff::new();
        loop {
            let Err(e) = self.write(attempt) else {
                if failing_since.is_some() {
                    tracing::info!(
                        tries = attempt.failures + 1,
                        "the sinks took the batch after all"
                    );
                }
                return Ok(());
            };
            attempt.failures += 1;
            if let Some(m) = &self.metrics {
                m.sink_write_failures.inc();
            }
            if !is_transient(&e) {
                return Err(e);
            }
            let since = *failing_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= self.retry_for {
                return Err(e.context(format!(
                    "giving up after {} tries over {:.0}s (pipeline.sink_retry_secs = {})",
                    attempt.failures,
                    since.elapsed().as_secs_f64(),
                    self.retry_for.as_secs()
                )));
            }
            backoff.wait_after("a sink write failed", &e);
        }
    }

    /// One batch: one transaction in each sink that has not committed it yet,
    /// both at once; announced once both have.
    fn write(&mut self, attempt: &mut Attempt) -> Result<()> {
        let started = Instant::now();
        if attempt.failures > 0 {
            self.check_committed(attempt)?;
        }
        let batch = &attempt.batch;
        let epoch_end = batch.last_epoch;
        self.postgres.set_positions(batch.positions.clone());
        self.redis
            .set_positions(batch.positions.as_ref().map(|p| p.to_string()));
        let (written_pg, written_redis) = std::thread::scope(|scope| {
            let redis = &mut self.redis;
            let (changes, moves) = (batch.changes(), &batch.moves);
            let redis = (!attempt.redis)
                .then(|| scope.spawn(move || redis.write_epoch(epoch_end, changes, moves)));
            let pg = (!attempt.postgres).then(|| {
                self.runtime
                    .block_on(self.postgres.write_epoch(epoch_end, changes, &attempt.dead))
            });
            let redis = redis.map(|r| r.join().expect("the Redis writer does not panic"));
            (pg, redis)
        });
        // A sink that committed is done, even if the other failed.
        attempt.postgres |= matches!(written_pg, Some(Ok(())));
        if matches!(written_redis, Some(Ok(()))) {
            attempt.redis = true;
            self.redis_committed = Some(epoch_end);
        }
        if let Some(r) = written_pg {
            r.with_context(|| format!("writing epochs up to {epoch_end} to Postgres"))?;
        }
        if let Some(r) = written_redis {
            r.with_context(|| format!("writing epochs up to {epoch_end} to Redis"))?;
        }
        let batch = &attempt.batch;
        let top_moves: BTreeSet<&str> = batch
            .moves
            .iter()
            .flat_map(|m| m.moves.keys().map(String::as_str))
            .collect();
        if !attempt.announced {
            self.redis
                .announce(epoch_end, batch.len(), top_moves.len())
                .with_context(|| format!("announcing epoch {epoch_end} on Redis"))?;
            attempt.announced = true;
        }
        let top_moves: Vec<String> = top_moves.into_iter().map(str::to_owned).collect();
        let batch = std::mem::take(&mut attempt.batch);
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
            top_moves,
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
        let mut views = self.views.lock().expect("not poisoned");
        match self.kept {
            super::KeptViews::All => views.apply(batch.into_changes()),
            super::KeptViews::DeadLetters => views.apply(
                batch
                    .into_changes()
                    .into_iter()
                    .filter(|c| matches!(c.key, ViewKey::DeadLetter(_))),
            ),
        }
        drop(views);
        self.views_epoch = Some(epoch_end);
        if let Some(feed) = &self.feed {
            // No subscriber is fine: nobody is watching.
            let _ = feed.send(summary);
        }
        Ok(())
    }

    /// After a failed try: a new Redis connection (the old one is in an
    /// unknown state), and whether each sink committed the batch anyway (its
    /// reply was lost), so that it is not written twice.
    fn check_committed(&mut self, attempt: &mut Attempt) -> Result<()> {
        let epoch_end = attempt.batch.last_epoch;
        if !attempt.postgres {
            let committed = self
                .runtime
                .block_on(self.postgres.committed_epoch())
                .context("reading Postgres's progress")?;
            attempt.postgres = committed.is_some_and(|e| e >= epoch_end);
        }
        if attempt.redis && attempt.announced {
            return Ok(());
        }
        self.redis
            .reconnect()
            .context("connecting to Redis again")?;
        let committed = self
            .redis
            .committed_epoch()
            .context("reading Redis's progress")?;
        if committed < self.redis_committed {
            // Back without its data (this batch's too, if it had it).
            self.refill_redis()?;
            attempt.redis = false;
        } else if !attempt.redis {
            attempt.redis = committed.is_some_and(|e| e >= epoch_end);
        }
        Ok(())
    }

    /// Writes every view into a Redis that came back without them (a server
    /// restarted without persistence), as Postgres holds them, as one
    /// MULTI/EXEC under the progress marker of the last epoch both sinks
    /// committed: the batch being written then goes on top (Postgres may
    /// hold it already; its rows are upserts, written twice alike). The
    /// `{ns}:events` history before it is not rebuilt.
    ///
    /// Postgres, not the run's memory: a run resumed from a checkpoint has
    /// seen only the epochs since, and Redis refilled from those lost every
    /// idea the run had not touched yet.
    fn refill_redis(&mut self) -> Result<()> {
        tracing::warn!(
            epoch = self.views_epoch,
            "Redis came back without the views; writing them again from the committed state"
        );
        if let Some(m) = &self.metrics {
            m.redis_refills.inc();
        }
        self.redis
            .clear()
            .context("clearing the Redis namespace to refill it")?;
        self.redis_committed = self.views_epoch;
        let Some(epoch) = self.views_epoch else {
            return Ok(()); // nothing committed yet: nothing to refill
        };
        let rows = self
            .runtime
            .block_on(ideaflow_sinks::postgres_read_back::rows_redis_holds(
                self.postgres.pool(),
            ))
            .context("reading the committed views from Postgres to refill Redis")?;
        // Every category's whole top K, announced as no move.
        let mut moves = TopK::new(self.redis.top_k()).apply(&rows);
        for delta in moves.values_mut() {
            delta.entered.clear();
            delta.left.clear();
        }
        let moves = [EpochMoves {
            epoch_end: epoch,
            moves,
        }];
        self.redis
            .write_epoch(epoch, &rows, &moves)
            .context("refilling Redis from the committed state")?;
        Ok(())
    }

    /// After the last epoch: the dead letters refused since the last batch,
    /// the vectors still to index, and the vector index a bulk load
    /// deferred.
    fn finish(&mut self) -> Result<()> {
        let dead = self.take_dead_letters();
        if !dead.is_empty() {
            self.runtime
                .block_on(self.postgres.write_dead_letters(&dead))
                .context("writing the last dead letters to Postgres")?;
        }
        let stopping = self.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst));
        let waiting = self.postgres.vectors_pending().load(Ordering::Relaxed);
        if stopping {
            // A stop must end within pipeline.shutdown_timeout_secs: the
            // rows are committed, their vectors wait for the next start.
            self.postgres.abandon_indexing()
        } else {
            if waiting > 0 {
                tracing::info!(
                    ideas = waiting,
                    "waiting for the last vectors to be indexed"
                );
            }
            self.postgres.finish_indexing()
        }
        .context("indexing the last ideas' vectors failed (the next start indexes them)")?;
        if let Some(memory) = self.index_after_load.take() {
            let started = Instant::now();
            tracing::info!(
                maintenance_work_mem = %memory,
                "inputs ended: building the HNSW index on idea_vectors.embedding"
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
