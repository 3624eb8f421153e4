//! The HNSW index, kept up to date behind the epochs' commits.
//!
//! Inserting a new idea into a live HNSW index walks the graph (about 1.5 ms
//! an idea at 40,000 ideas on our machines). Inside the epoch's transaction
//! that cost held every commit: at ~800 new ideas/s a live pipeline fell
//! further behind with each epoch. So an epoch commits its rows (`idea_rows`
//! keeps every vector) without the index, and this writer then copies the
//! vectors of the ideas it touched into `idea_vectors`, the table the index
//! covers, on a connection and thread of its own, in commit order. A vector
//! becomes searchable moments after its idea's row becomes visible;
//! [`VectorIndexer::pending`] says how many wait. What a run committed but
//! did not index (a kill -9) is indexed when the next one starts.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::ConnectOptions;

use crate::postgres::PostgresError;

/// At most this many ideas in one transaction: a backlog drains in steps
/// that each commit (and show) their progress, and a stop waits for one
/// step at most (~3 s at 1.5 ms an idea).
const MAX_BATCH: usize = 2_000;

/// How often a failing write is tried again while the run goes on, and how
/// many times once the run is finishing.
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(5);
const FINAL_ATTEMPTS: u32 = 5;

/// Copies committed ideas' vectors into the index's table on its own thread.
pub struct VectorIndexer {
    queue: Option<Sender<Vec<String>>>,
    pending: Arc<AtomicU64>,
    finishing: Arc<AtomicBool>,
    /// Set by a stop: what is still queued is left to the next start.
    abandoned: Arc<AtomicBool>,
    worker: Option<JoinHandle<Result<(), PostgresError>>>,
}

impl VectorIndexer {
    /// Starts the writer on `pool`'s server and schema (a connection of its
    /// own: the caller's pool lives on the caller's runtime). It first
    /// indexes whatever earlier runs committed without indexing, and drops
    /// the vectors of ideas deleted meanwhile.
    pub fn start(pool: &PgPool) -> Result<Self, PostgresError> {
        // A batch taking seconds is expected here, not a slow statement to log.
        let options = (*pool.connect_options())
            .clone()
            .disable_statement_logging();
        let (queue, jobs) = mpsc::channel();
        let pending = Arc::new(AtomicU64::new(0));
        let counter = pending.clone();
        let finishing = Arc::new(AtomicBool::new(false));
        let finishing_in = finishing.clone();
        let abandoned = Arc::new(AtomicBool::new(false));
        let abandoned_in = abandoned.clone();
        let worker = std::thread::Builder::new()
            .name("vector-index".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| PostgresError::Write(sqlx::Error::Io(e)))?;
                let result = runtime.block_on(async {
                    // Lazily: a server that is down now is retried below.
                    let pool = PgPoolOptions::new()
                        .max_connections(1)
                        .acquire_timeout(Duration::from_secs(5))
                        .connect_lazy_with(options);
                    let flags = Flags {
                        finishing: &finishing_in,
                        abandoned: &abandoned_in,
                    };
                    index_until_closed(&pool, jobs, &counter, flags).await
                });
                if let Err(e) = &result {
                    tracing::error!(error = %e, "the vector index writer stopped: ideas committed \
                        from now on become searchable when ideaflow next starts");
                }
                result
            })
            .map_err(|e| PostgresError::Write(sqlx::Error::Io(e)))?;
        Ok(VectorIndexer {
            queue: Some(queue),
            pending,
            finishing,
            abandoned,
            worker: Some(worker),
        })
    }

    /// The ideas (ids as text) an epoch just committed: inserted, updated or
    /// deleted. Their vectors follow, in this order.
    pub fn committed(&self, ids: Vec<String>) {
        if ids.is_empty() {
            return;
        }
        let n = ids.len() as u64;
        if let Some(queue) = &self.queue {
            self.pending.fetch_add(n, Ordering::Relaxed);
            if queue.send(ids).is_err() {
                // The writer stopped on an error, which `finish` reports;
                // the next start indexes these.
                self.pending.fetch_sub(n, Ordering::Relaxed);
            }
        }
    }

    /// Ideas committed whose vectors are not searchable yet (a gauge).
    pub fn pending(&self) -> Arc<AtomicU64> {
        self.pending.clone()
    }

    /// Waits (polling) until every idea committed so far is indexed, or
    /// the writer stopped.
    pub fn wait_indexed(&self) {
        while self.pending.load(Ordering::Relaxed) > 0
            && self.worker.as_ref().is_some_and(|w| !w.is_finished())
        {
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Waits until every committed idea is indexed, and stops the writer.
    pub fn finish(&mut self) -> Result<(), PostgresError> {
        self.finishing.store(true, Ordering::Relaxed);
        self.queue = None;
        match self.worker.take().map(JoinHandle::join) {
            None => Ok(()),
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(PostgresError::Write(sqlx::Error::WorkerCrashed)),
        }
    }
}

impl VectorIndexer {
    /// Stops after the batch being written (a service asked to stop): the
    /// ideas still queued are committed already, and the next start
    /// indexes them.
    pub fn abandon(&mut self) -> Result<(), PostgresError> {
        self.abandoned.store(true, Ordering::Relaxed);
        let left = self.pending.load(Ordering::Relaxed);
        if left > 0 {
            tracing::info!(
                ideas = left,
                "stopping: vectors not indexed yet are indexed at the next start"
            );
        }
        self.finish()
    }
}

impl Drop for VectorIndexer {
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            tracing::warn!(error = %e, "the vector index is behind; the next start catches it up");
        }
    }
}

/// How the writer is told to end: once the queue is drained (finishing),
/// or at once (abandoned).
#[derive(Clone, Copy)]
struct Flags<'a> {
    finishing: &'a AtomicBool,
    abandoned: &'a AtomicBool,
}

async fn index_until_closed(
    pool: &PgPool,
    jobs: Receiver<Vec<String>>,
    pending: &AtomicU64,
    flags: Flags<'_>,
) -> Result<(), PostgresError> {
    let finishing = flags.finishing;
    with_retries(finishing, || catch_up(pool)).await?;
    loop {
        if flags.abandoned.load(Ordering::Relaxed) {
            return Ok(());
        }
        // Blocking the thread is fine: this runtime serves this loop alone.
        let mut batch = match jobs.recv() {
            Ok(ids) => ids,
            Err(_) => return Ok(()),
        };
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(more) => batch.extend(more),
                Err(_) => break,
            }
        }
        with_retries(finishing, || index(pool, &batch)).await?;
        pending.fetch_sub(batch.len() as u64, Ordering::Relaxed);
    }
}

/// Runs `write` until it succeeds: transient failures (the server away or
/// restarting) are tried again with backoff while the run goes on, a few
/// times once it is finishing.
async fn with_retries<F, Fut>(finishing: &AtomicBool, mut write: F) -> Result<(), PostgresError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), PostgresError>>,
{
    let mut backoff = Duration::from_millis(100);
    let mut final_attempts = 0;
    loop {
        match write().await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_transient() && final_attempts < FINAL_ATTEMPTS => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64,
                    "indexing vectors failed; trying again");
                if finishing.load(Ordering::Relaxed) {
                    final_attempts += 1;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Indexes `ids`' vectors in the order given (the HNSW graph depends on it),
/// and drops those of ideas no longer there.
async fn index(pool: &PgPool, ids: &[String]) -> Result<(), PostgresError> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "DELETE FROM idea_vectors v WHERE v.idea_id = ANY($1::text[]::uuid[]) \
         AND NOT EXISTS (SELECT 1 FROM idea_rows r WHERE r.id = v.idea_id)",
    )
    .bind(ids)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO idea_vectors (idea_id, embedding) \
         SELECT r.id, r.embedding FROM UNNEST($1::text[]) WITH ORDINALITY AS u(id, n) \
         JOIN idea_rows r ON r.id = u.id::uuid ORDER BY u.n \
         ON CONFLICT (idea_id) DO NOTHING",
    )
    .bind(ids)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// What earlier runs committed and did not index, and vectors of ideas
/// deleted since.
async fn catch_up(pool: &PgPool) -> Result<(), PostgresError> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "DELETE FROM idea_vectors v \
         WHERE NOT EXISTS (SELECT 1 FROM idea_rows r WHERE r.id = v.idea_id)",
    )
    .execute(&mut *tx)
    .await?;
    let added = sqlx::query(
        "INSERT INTO idea_vectors (idea_id, embedding) \
         SELECT r.id, r.embedding FROM idea_rows r \
         WHERE NOT EXISTS (SELECT 1 FROM idea_vectors v WHERE v.idea_id = r.id) \
         ORDER BY r.first_seen, r.id ON CONFLICT (idea_id) DO NOTHING",
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    if added > 0 {
        tracing::info!(
            ideas = added,
            "indexed the vectors of ideas an earlier run committed"
        );
    }
    Ok(())
}
