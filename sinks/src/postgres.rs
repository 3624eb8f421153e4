//! The Postgres/pgvector sink: the changelog of each write (one or more whole
//! epochs, at most one change per key) becomes batched upserts and deletes
//! (one multi-row `UNNEST` statement per table and kind, never one statement
//! per row), committed in one transaction together with the last epoch's
//! `pipeline_progress` row. A reader sees whole epochs only,
//! and after a restart `pipeline_progress` says which epoch was the last.
//! Vectors go in pgvector's binary form (no text to format or parse).
//!
//! Every view lives in its own schema (the namespace), so a replay can write
//! beside the live pipeline without touching it.

use crate::dead_letter::KeyedDeadLetter;
use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use ideaflow_operators::feedback::anchors::AnchorRow;
use ideaflow_operators::views::{
    AbResultRow, AllocationRow, CentroidRow, Change, DistinctCountRow, IdeaRow, PublishRow,
    ScoreRow, SignalRow, SlaAlertRow, TopicCountRow, ViewKey, ViewRow, WeightsRow, WindowRow,
};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Executor, Postgres, Transaction};

use crate::vector_index::VectorIndexer;

#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    #[error("invalid postgres url: {0}; set postgres.url or IDEAFLOW_POSTGRES_URL (e.g. postgres://ideaflow@127.0.0.1:54329/ideaflow)")]
    Url(sqlx::Error),
    #[error("cannot connect to Postgres: {0}; is it running, and do the URL's role and database exist? scripts/setup.sh starts it and creates them (or set IDEAFLOW_POSTGRES_URL)")]
    Connect(sqlx::Error),
    #[error("schema name {0:?} is invalid: use lowercase letters, digits and _ (it comes from the namespace)")]
    Schema(String),
    #[error("applying migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("Postgres write failed: {0}")]
    Write(#[from] sqlx::Error),
    #[error("reading the views back from Postgres failed: {0}")]
    Read(sqlx::Error),
    #[error("reading the views back from Postgres failed: {0}")]
    ReadBack(String),
}

impl PostgresError {
    /// Whether trying again may succeed: the server or the connection went
    /// away or is starting, or PostgreSQL aborted the transaction to break a
    /// deadlock or a serialization conflict. Not a refused statement or a
    /// refused login: those would be refused again.
    pub fn is_transient(&self) -> bool {
        match self {
            PostgresError::Connect(e) | PostgresError::Write(e) | PostgresError::Read(e) => match e
            {
                sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed
                | sqlx::Error::Protocol(_) => true,
                sqlx::Error::Database(d) => d.code().is_some_and(|c| {
                    // 08: connection exception; 57P01-3: the server shutting
                    // down or starting; 40001/40P01: serialization, deadlock.
                    c.starts_with("08") || c.starts_with("57P") || c == "40001" || c == "40P01"
                }),
                _ => false,
            },
            _ => false,
        }
    }
}

/// The migrations, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

pub fn valid_schema(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

/// How long a caller waits for a connection. sqlx's default (30 s) is how
/// long each write waited while the server was down, so the writer's retries
/// came 30 s apart whatever their backoff; the pool's four connections are
/// never all busy for this long when the server is up.
const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A pool whose connections see `schema` first, then `public` (pgvector).
pub async fn connect(url: &str, schema: &str) -> Result<PgPool, PostgresError> {
    if !valid_schema(schema) {
        return Err(PostgresError::Schema(schema.to_owned()));
    }
    let base = PgConnectOptions::from_str(url).map_err(PostgresError::Url)?;
    {
        // One plain connection, not a pool: a pool retries until its timeout
        // and then says only that it timed out, where this says why (refused,
        // no such database or role, a bad password) at once.
        let mut admin = PgConnection::connect_with(&base)
            .await
            .map_err(PostgresError::Connect)?;
        admin
            .execute(format!("CREATE SCHEMA IF NOT EXISTS {schema}").as_str())
            .await?;
        admin.close().await?;
    }
    // The application name says which pipeline a connection serves
    // (pg_stat_activity), for whoever administers the server.
    let options = base
        .options([("search_path", format!("{schema},public"))])
        .application_name(&format!("ideaflow:{schema}"));
    PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(PostgresError::Connect)
}

/// Applies pending migrations in `schema`.
pub async fn migrate(pool: &PgPool) -> Result<(), PostgresError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// The HNSW index over ideas' embeddings, as migration 0007 creates it.
const VECTOR_INDEX: &str = "CREATE INDEX IF NOT EXISTS idea_vectors_embedding ON idea_vectors \
     USING hnsw (embedding vector_cosine_ops)";

/// Drops the vector index of `schema` before a bulk load. Each insert into a
/// live HNSW index walks the graph (~3–5 ms a new idea here); building the
/// index once over the loaded table is many times cheaper. Until
/// [`build_vector_index`], nearest-neighbour queries scan (exactly).
pub async fn drop_vector_index(pool: &PgPool, schema: &str) -> Result<(), PostgresError> {
    if !valid_schema(schema) {
        return Err(PostgresError::Schema(schema.to_owned()));
    }
    pool.execute(format!("DROP INDEX IF EXISTS {schema}.idea_vectors_embedding").as_str())
        .await?;
    Ok(())
}

/// Builds the vector index if it is absent (a bulk load that dropped it was
/// cut short), with `memory` as `maintenance_work_mem`
/// (PostgreSQL units, e.g. `1GB`): a graph that does not fit is built on
/// disk, much more slowly.
pub async fn build_vector_index(pool: &PgPool, memory: &str) -> Result<(), PostgresError> {
    // Its own connection (the pool's settings and search path), on which a
    // long build is expected rather than logged as a slow statement.
    let options = (*pool.connect_options())
        .clone()
        .disable_statement_logging();
    let mut conn = PgConnection::connect_with(&options)
        .await
        .map_err(PostgresError::Connect)?;
    sqlx::query("SELECT set_config('maintenance_work_mem', $1, false)")
        .bind(memory)
        .execute(&mut conn)
        .await?;
    wait_for_a_build_left_running(&mut conn).await?;
    conn.execute(VECTOR_INDEX).await?;
    conn.close().await?;
    Ok(())
}

/// A run killed while it built the vector index leaves its server process
/// building it (PostgreSQL notices a vanished client only when it next
/// writes to it), and a second build beside it fails on the catalog
/// (`duplicate key value violates unique constraint
/// "pg_class_relname_nsp_index"`). Waits until no other connection of this
/// pipeline (same application name) is building it; the build left running
/// is then done, or gone and done again here.
async fn wait_for_a_build_left_running(conn: &mut PgConnection) -> Result<(), PostgresError> {
    let mut said = false;
    loop {
        let building: Option<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid() \
             AND datname = current_database() \
             AND application_name = current_setting('application_name') \
             AND state <> 'idle' AND query ILIKE '%CREATE INDEX%idea_vectors_embedding%' LIMIT 1",
        )
        .fetch_optional(&mut *conn)
        .await?;
        let Some(pid) = building else {
            return Ok(());
        };
        if !said {
            tracing::warn!(
                pid,
                "a vector index build of an earlier run of this pipeline is still running in \
                 PostgreSQL (it was stopped during the build); waiting for it to end \
                 (pg_terminate_backend({pid}) to stop it, and this run builds the index itself)"
            );
            said = true;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// Empties every view (a replay starts from nothing).
///
/// TRUNCATE locks its tables one after another, and a reader's query does
/// too, in its own order: a dashboard reading several views while a replay
/// starts can deadlock with it, and PostgreSQL then aborts one of the two.
/// When that is the TRUNCATE, it is tried again (nothing was emptied).
pub async fn truncate(pool: &PgPool) -> Result<(), PostgresError> {
    const ATTEMPTS: u32 = 5;
    let mut attempt = 1;
    loop {
        let result = pool
            .execute(
                "TRUNCATE signals, idea_rows, idea_vectors, idea_scores, centroids, topic_counts, distinct_counts, \
                 dead_letters, pipeline_progress, feedback_windows, ab_results, allocations, \
                 weights_history, publish_latencies, sla_alerts, anchors_history",
            )
            .await;
        match result {
            Ok(_) => return Ok(()),
            Err(e) if attempt < ATTEMPTS && is_deadlock(&e) => {
                tracing::warn!(
                    attempt,
                    "emptying the views deadlocked with a reader; trying again"
                );
                tokio::time::sleep(std::time::Duration::from_millis(100 * u64::from(attempt)))
                    .await;
                attempt += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// SQLSTATE 40P01: PostgreSQL aborted this statement to break a deadlock.
fn is_deadlock(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|code| code == "40P01")
}

pub struct PostgresSink {
    pool: PgPool,
    name: String,
    /// The sources' positions to record with the next write.
    positions: Option<serde_json::Value>,
    /// Indexes the vectors of what each write committed, behind it.
    vectors: VectorIndexer,
}

/// A vector as pgvector's binary form (big-endian f32s), bound as `vector`
/// or `vector[]`: the server neither parses text nor rounds, so the stored
/// vector is bit-identical to ours.
pub fn vector_param(v: &[f32]) -> pgvector::Vector {
    pgvector::Vector::from(v.to_vec())
}

fn utc(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(secs, 0).single().unwrap_or_default()
}

/// One epoch's changes, split by table.
#[derive(Default)]
struct Batches<'a> {
    ideas: Vec<&'a IdeaRow>,
    idea_deletes: Vec<String>,
    scores: Vec<&'a ScoreRow>,
    score_deletes: Vec<String>,
    signals: Vec<&'a SignalRow>,
    centroids: Vec<&'a CentroidRow>,
    centroid_deletes: (Vec<String>, Vec<String>),
    topics: Vec<&'a TopicCountRow>,
    topic_deletes: (Vec<String>, Vec<String>),
    distinct: Vec<&'a DistinctCountRow>,
    windows: Vec<&'a WindowRow>,
    ab_results: Vec<&'a AbResultRow>,
    allocations: Vec<&'a AllocationRow>,
    weights: Vec<&'a WeightsRow>,
    publishes: Vec<&'a PublishRow>,
    sla_alerts: Vec<&'a SlaAlertRow>,
    anchors: Vec<&'a AnchorRow>,
    dead_letters: Vec<KeyedDeadLetter>,
}

impl<'a> Batches<'a> {
    fn split(changes: &'a [Change]) -> Self {
        let mut b = Batches::default();
        for c in changes {
            match (&c.key, &c.row) {
                (_, Some(ViewRow::Idea(r))) => b.ideas.push(r),
                (_, Some(ViewRow::Score(r))) => b.scores.push(r),
                (_, Some(ViewRow::Signal(r))) => b.signals.push(r),
                (_, Some(ViewRow::Centroid(r))) => b.centroids.push(r),
                (_, Some(ViewRow::TopicCount(r))) => b.topics.push(r),
                (_, Some(ViewRow::DistinctCount(r))) => b.distinct.push(r),
                (_, Some(ViewRow::Window(r))) => b.windows.push(r),
                (_, Some(ViewRow::AbResult(r))) => b.ab_results.push(r),
                (_, Some(ViewRow::Allocation(r))) => b.allocations.push(r),
                (_, Some(ViewRow::Weights(r))) => b.weights.push(r),
                (_, Some(ViewRow::Publish(r))) => b.publishes.push(r),
                (_, Some(ViewRow::SlaAlert(r))) => b.sla_alerts.push(r),
                (_, Some(ViewRow::Anchor(r))) => b.anchors.push(r),
                (_, Some(ViewRow::DeadLetter(n, d))) => {
                    b.dead_letters.push((format!("d{n}"), d.clone()))
                }
                (ViewKey::Idea(id), None) => b.idea_deletes.push(id.to_string()),
                (ViewKey::Score(id), None) => b.score_deletes.push(id.to_string()),
                (ViewKey::Centroid(kind, key), None) => {
                    b.centroid_deletes.0.push(kind.as_str().to_owned());
                    b.centroid_deletes.1.push(key.clone());
                }
                (ViewKey::TopicCount(key), None) => {
                    let (c, t) = &**key;
                    b.topic_deletes.0.push(c.clone());
                    b.topic_deletes.1.push(t.clone());
                }
                // Signals, distinct counts and the feedback views are never
                // retracted (a revised window is a new value for its key).
                (
                    ViewKey::Signal(..)
                    | ViewKey::DistinctCount(..)
                    | ViewKey::Window(..)
                    | ViewKey::AbResult(..)
                    | ViewKey::Allocation(..)
                    | ViewKey::Weights(..)
                    | ViewKey::DeadLetter(..)
                    | ViewKey::Publish(..)
                    | ViewKey::SlaAlert(..)
                    | ViewKey::Anchor(..),
                    None,
                ) => {}
            }
        }
        b
    }
}

impl PostgresSink {
    /// A sink writing to `pool` under the progress row `name`; it starts
    /// the writer that indexes its ideas' vectors (see [`VectorIndexer`]).
    pub fn new(pool: PgPool, name: &str) -> Result<Self, PostgresError> {
        let vectors = VectorIndexer::start(&pool)?;
        Ok(PostgresSink {
            pool,
            name: name.to_owned(),
            positions: None,
            vectors,
        })
    }

    /// Ideas committed whose vectors are not searchable yet (a gauge).
    pub fn vectors_pending(&self) -> std::sync::Arc<std::sync::atomic::AtomicU64> {
        self.vectors.pending()
    }

    /// Waits until the vectors of every idea committed so far are indexed.
    pub fn wait_indexed(&self) {
        self.vectors.wait_indexed();
    }

    /// Stops indexing after the batch being written (a service asked to
    /// stop); the next start indexes the rest.
    pub fn abandon_indexing(&mut self) -> Result<(), PostgresError> {
        self.vectors.abandon()
    }

    /// Waits until every committed idea's vector is in the index's table,
    /// and stops the writer that puts them there.
    pub fn finish_indexing(&mut self) -> Result<(), PostgresError> {
        self.vectors.finish()
    }

    /// The sources' committed positions to record in the progress row with
    /// the next write (kept as they were when `None`).
    pub fn set_positions(&mut self, positions: Option<serde_json::Value>) {
        self.positions = positions;
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The last epoch this sink committed, if any.
    pub async fn committed_epoch(&self) -> Result<Option<i64>, PostgresError> {
        let row: Option<(i64,)> =
            sqlx::query_as("SELECT epoch FROM pipeline_progress WHERE sink = $1")
                .bind(&self.name)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|r| r.0))
    }

    /// What the Redis sink keeps in memory of its earlier writes, as the
    /// rows here say: a run resumed from a checkpoint gives it to
    /// [`crate::redis_sink::RedisSink::remember`] before its first write.
    pub async fn remembered(&self) -> Result<crate::redis_sink::Remembered, PostgresError> {
        let topic_counts: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT category, topic, count FROM topic_counts")
                .fetch_all(&self.pool)
                .await?;
        let ab: Vec<(String, String, String, i64)> = sqlx::query_as(
            "SELECT idea_id::text, marketplace, treatment, \
             extract(epoch FROM max(window_end))::bigint FROM ab_results GROUP BY 1, 2, 3",
        )
        .fetch_all(&self.pool)
        .await?;
        let allocations: Vec<(String, String, String, i64)> = sqlx::query_as(
            "SELECT idea_id::text, marketplace, variant, \
             extract(epoch FROM max(day_start))::bigint FROM allocations GROUP BY 1, 2, 3",
        )
        .fetch_all(&self.pool)
        .await?;
        let weights: (Option<i64>,) = sqlx::query_as(
            "SELECT extract(epoch FROM max(effective_from))::bigint FROM weights_history",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(crate::redis_sink::Remembered {
            topic_counts: topic_counts
                .into_iter()
                .map(|(c, t, n)| (c, t, n.max(0) as u64))
                .collect(),
            ab,
            allocations,
            weights_from: weights.0,
        })
    }

    /// Writes the changes of one or more whole epochs (the last ending at
    /// `epoch_end`) atomically.
    pub async fn write_epoch(
        &self,
        epoch_end: i64,
        changes: &[Change],
        dead_letters: &[KeyedDeadLetter],
    ) -> Result<(), PostgresError> {
        let b = Batches::split(changes);
        let mut tx = self.pool.begin().await?;
        insert_dead_letters(&mut tx, dead_letters).await?;
        insert_dead_letters(&mut tx, &b.dead_letters).await?;
        write_feedback(&mut tx, &b).await?;
        write_ideas(&mut tx, &b).await?;
        write_scores(&mut tx, &b).await?;
        write_signals(&mut tx, &b).await?;
        write_aggregates(&mut tx, &b).await?;
        sqlx::query(
            "INSERT INTO pipeline_progress (sink, epoch, frontier, committed_at, source_positions) \
             VALUES ($1, $2, $3, now(), $4) \
             ON CONFLICT (sink) DO UPDATE SET epoch = EXCLUDED.epoch, \
             frontier = EXCLUDED.frontier, committed_at = now(), \
             source_positions = COALESCE(EXCLUDED.source_positions, pipeline_progress.source_positions)",
        )
        .bind(&self.name)
        .bind(epoch_end)
        .bind(utc(epoch_end))
        .bind(&self.positions)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        let touched = b.ideas.iter().map(|i| i.id.to_string());
        self.vectors
            .committed(touched.chain(b.idea_deletes.iter().cloned()).collect());
        Ok(())
    }

    /// Dead letters outside an epoch (those refused after the last one).
    pub async fn write_dead_letters(
        &self,
        letters: &[KeyedDeadLetter],
    ) -> Result<(), PostgresError> {
        let mut tx = self.pool.begin().await?;
        insert_dead_letters(&mut tx, letters).await?;
        tx.commit().await?;
        Ok(())
    }
}

async fn insert_dead_letters(
    tx: &mut Transaction<'_, Postgres>,
    letters: &[KeyedDeadLetter],
) -> sqlx::Result<()> {
    if letters.is_empty() {
        return Ok(());
    }
    let key: Vec<&str> = letters.iter().map(|(k, _)| k.as_str()).collect();
    let raw: Vec<&str> = letters.iter().map(|(_, d)| d.raw.as_str()).collect();
    let reason: Vec<String> = letters.iter().map(|(_, d)| d.reason.to_string()).collect();
    let message: Vec<&str> = letters.iter().map(|(_, d)| d.message.as_str()).collect();
    let file: Vec<&str> = letters
        .iter()
        .map(|(_, d)| d.position.file.as_str())
        .collect();
    let line: Vec<i64> = letters
        .iter()
        .map(|(_, d)| d.position.line as i64)
        .collect();
    let offset: Vec<i64> = letters
        .iter()
        .map(|(_, d)| d.position.offset as i64)
        .collect();
    // Keyed: a restart that refuses the same record again, or writes an
    // epoch again, leaves one row.
    sqlx::query(
        "INSERT INTO dead_letters (key, raw, reason, message, file, line, byte_offset) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
         $6::int8[], $7::int8[]) ON CONFLICT (key) DO NOTHING",
    )
    .bind(key)
    .bind(raw)
    .bind(reason)
    .bind(message)
    .bind(file)
    .bind(line)
    .bind(offset)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Upserts rows whose JSON field names are the table's columns: one statement
/// per table and epoch, whatever the number of rows.
async fn upsert_json<T: serde::Serialize>(
    tx: &mut Transaction<'_, Postgres>,
    table: &str,
    key: &str,
    columns: &[&str],
    rows: &[&T],
) -> sqlx::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let json = serde_json::to_value(rows).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let set: Vec<String> = columns
        .iter()
        .map(|c| format!("{c} = EXCLUDED.{c}"))
        .collect();
    // Table and column names are ours (constants below), never input.
    let sql = format!(
        "INSERT INTO {table} SELECT * FROM jsonb_populate_recordset(NULL::{table}, $1) \
         ON CONFLICT ({key}) DO UPDATE SET {}",
        set.join(", ")
    );
    sqlx::query(&sql).bind(json).execute(&mut **tx).await?;
    Ok(())
}

async fn write_feedback(tx: &mut Transaction<'_, Postgres>, b: &Batches<'_>) -> sqlx::Result<()> {
    upsert_json(
        tx,
        "feedback_windows",
        "kind, window_start, idea_id, marketplace, variant",
        &[
            "window_end",
            "impressions",
            "clicks",
            "favorites",
            "add_to_cart",
            "sales",
            "ctr",
            "add_to_cart_rate",
            "conversion",
        ],
        &b.windows,
    )
    .await?;
    upsert_json(
        tx,
        "ab_results",
        "idea_id, marketplace, window_end, treatment",
        &[
            "window_start",
            "control",
            "control_impressions",
            "control_clicks",
            "treatment_impressions",
            "treatment_clicks",
            "control_ctr",
            "treatment_ctr",
            "lift",
            "z",
            "p_value",
            "sample_sufficient",
            "winner",
        ],
        &b.ab_results,
    )
    .await?;
    upsert_json(
        tx,
        "allocations",
        "day_start, idea_id, marketplace, variant",
        &["share", "budget", "draws"],
        &b.allocations,
    )
    .await?;
    upsert_json(
        tx,
        "weights_history",
        "effective_from",
        &[
            "learned_from",
            "freshness",
            "engagement",
            "novelty",
            "community_fit",
            "seasonality",
            "origin",
            "ideas",
            "impressions",
        ],
        &b.weights,
    )
    .await?;
    upsert_json(
        tx,
        "publish_latencies",
        "published_at, idea_id, marketplace, variant",
        &["listing_id", "first_seen", "seconds"],
        &b.publishes,
    )
    .await?;
    upsert_json(
        tx,
        "sla_alerts",
        "at",
        &[
            "average_hours",
            "threshold_hours",
            "listings",
            "window_secs",
        ],
        &b.sla_alerts,
    )
    .await?;
    upsert_json(
        tx,
        "anchors_history",
        "effective_from, anchor",
        &["corrections", "rating_sum", "shift"],
        &b.anchors,
    )
    .await
}

async fn write_ideas(tx: &mut Transaction<'_, Postgres>, b: &Batches<'_>) -> sqlx::Result<()> {
    if !b.idea_deletes.is_empty() {
        sqlx::query("DELETE FROM idea_rows WHERE id = ANY($1::text[]::uuid[])")
            .bind(&b.idea_deletes)
            .execute(&mut **tx)
            .await?;
    }
    if b.ideas.is_empty() {
        return Ok(());
    }
    let r = &b.ideas;
    let col = |f: &dyn Fn(&IdeaRow) -> String| r.iter().map(|i| f(i)).collect::<Vec<_>>();
    let opt = |f: &dyn Fn(&IdeaRow) -> Option<String>| r.iter().map(|i| f(i)).collect::<Vec<_>>();
    let int = |f: &dyn Fn(&IdeaRow) -> u64| r.iter().map(|i| f(i) as i64).collect::<Vec<_>>();
    let time = |f: &dyn Fn(&IdeaRow) -> DateTime<Utc>| r.iter().map(|i| f(i)).collect::<Vec<_>>();
    let topics: Vec<String> = r
        .iter()
        .map(|i| serde_json::to_string(&i.topics).unwrap_or_else(|_| "[]".into()))
        .collect();
    let embeddings: Vec<pgvector::Vector> = r.iter().map(|i| vector_param(&i.embedding)).collect();
    sqlx::query(
        "INSERT INTO idea_rows (id, content_hash, title, source, category, category_similarity, \
           anchor_class, community, locale, topics, embedding, signal_count, near_duplicates, \
           views, likes, comments, shares, engagement_rate, status, first_seen, last_seen, \
           peak_at, updated_at) \
         SELECT u.id::uuid, u.content_hash, u.title, u.source, u.category, u.category_similarity, \
           u.anchor_class, u.community, u.locale, \
           ARRAY(SELECT jsonb_array_elements_text(u.topics::jsonb)), u.embedding, \
           u.signal_count, u.near_duplicates, u.views, u.likes, u.comments, u.shares, \
           u.engagement_rate, u.status, u.first_seen, u.last_seen, u.peak_at, now() \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::real[], \
           $7::text[], $8::text[], $9::text[], $10::text[], $11::vector[], $12::int8[], \
           $13::int8[], $14::int8[], $15::int8[], $16::int8[], $17::int8[], $18::float8[], \
           $19::text[], $20::timestamptz[], $21::timestamptz[], $22::timestamptz[]) \
           AS u(id, content_hash, title, source, category, category_similarity, anchor_class, \
           community, locale, topics, embedding, signal_count, near_duplicates, views, likes, \
           comments, shares, engagement_rate, status, first_seen, last_seen, peak_at) \
         ON CONFLICT (id) DO UPDATE SET content_hash = EXCLUDED.content_hash, \
           title = EXCLUDED.title, source = EXCLUDED.source, category = EXCLUDED.category, \
           category_similarity = EXCLUDED.category_similarity, \
           anchor_class = EXCLUDED.anchor_class, community = EXCLUDED.community, \
           locale = EXCLUDED.locale, topics = EXCLUDED.topics, \
           signal_count = EXCLUDED.signal_count, near_duplicates = EXCLUDED.near_duplicates, \
           views = EXCLUDED.views, likes = EXCLUDED.likes, comments = EXCLUDED.comments, \
           shares = EXCLUDED.shares, engagement_rate = EXCLUDED.engagement_rate, \
           status = EXCLUDED.status, first_seen = EXCLUDED.first_seen, \
           last_seen = EXCLUDED.last_seen, peak_at = EXCLUDED.peak_at, updated_at = now()",
    )
    .bind(col(&|i| i.id.to_string()))
    .bind(col(&|i| i.content_hash.to_string()))
    .bind(col(&|i| i.content.clone()))
    .bind(col(&|i| i.source.as_str().to_owned()))
    .bind(opt(&|i| i.category.as_deref().map(str::to_owned)))
    .bind(r.iter().map(|i| i.category_similarity).collect::<Vec<_>>())
    .bind(opt(&|i| i.anchor_class.clone()))
    .bind(opt(&|i| i.community.clone()))
    .bind(opt(&|i| i.locale.clone()))
    .bind(topics)
    .bind(embeddings)
    .bind(int(&|i| i.signal_count))
    .bind(int(&|i| i.near_duplicates))
    .bind(int(&|i| i.engagement.views))
    .bind(int(&|i| i.engagement.likes))
    .bind(int(&|i| i.engagement.comments))
    .bind(int(&|i| i.engagement.shares))
    .bind(r.iter().map(|i| i.engagement_rate).collect::<Vec<_>>())
    .bind(col(&|i| {
        serde_json::to_value(i.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }))
    .bind(time(&|i| i.first_seen))
    .bind(time(&|i| i.last_seen))
    .bind(time(&|i| i.peak_at))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn write_scores(tx: &mut Transaction<'_, Postgres>, b: &Batches<'_>) -> sqlx::Result<()> {
    if !b.score_deletes.is_empty() {
        sqlx::query("DELETE FROM idea_scores WHERE idea_id = ANY($1::text[]::uuid[])")
            .bind(&b.score_deletes)
            .execute(&mut **tx)
            .await?;
    }
    if b.scores.is_empty() {
        return Ok(());
    }
    let r = &b.scores;
    let f = |g: &dyn Fn(&ScoreRow) -> f64| r.iter().map(|s| g(s)).collect::<Vec<f64>>();
    sqlx::query(
        "INSERT INTO idea_scores (idea_id, category, score, freshness, engagement, novelty, \
           community_fit, seasonality, scored_at) \
         SELECT u.id::uuid, u.category, u.score, u.freshness, u.engagement, u.novelty, \
           u.community_fit, u.seasonality, u.scored_at \
         FROM UNNEST($1::text[], $2::text[], $3::float8[], $4::float8[], $5::float8[], \
           $6::float8[], $7::float8[], $8::float8[], $9::timestamptz[]) \
           AS u(id, category, score, freshness, engagement, novelty, community_fit, \
           seasonality, scored_at) \
         ON CONFLICT (idea_id) DO UPDATE SET category = EXCLUDED.category, \
           score = EXCLUDED.score, freshness = EXCLUDED.freshness, \
           engagement = EXCLUDED.engagement, novelty = EXCLUDED.novelty, \
           community_fit = EXCLUDED.community_fit, seasonality = EXCLUDED.seasonality, \
           scored_at = EXCLUDED.scored_at",
    )
    .bind(r.iter().map(|s| s.idea_id.to_string()).collect::<Vec<_>>())
    .bind(
        r.iter()
            .map(|s| s.category.as_deref())
            .collect::<Vec<Option<&str>>>(),
    )
    .bind(f(&|s| s.score))
    .bind(f(&|s| s.factors.freshness))
    .bind(f(&|s| s.factors.engagement))
    .bind(f(&|s| s.factors.novelty))
    .bind(f(&|s| s.factors.community_fit))
    .bind(f(&|s| s.factors.seasonality))
    .bind(r.iter().map(|s| s.scored_at).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn write_signals(tx: &mut Transaction<'_, Postgres>, b: &Batches<'_>) -> sqlx::Result<()> {
    if b.signals.is_empty() {
        return Ok(());
    }
    let r = &b.signals;
    let metadata: Vec<String> = r
        .iter()
        .map(|s| serde_json::to_string(s).unwrap_or_else(|_| "{}".into()))
        .collect();
    let dedupe: Vec<String> = r
        .iter()
        .map(|s| {
            serde_json::to_value(s.dedupe)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        })
        .collect();
    // The first signal of a content keeps the row (seed 004: content_hash UNIQUE).
    sqlx::query(
        "INSERT INTO signals (content_hash, id, source, content, captured_at, idea_id, dedupe, metadata) \
         SELECT DISTINCT ON (u.content_hash) u.content_hash, u.id, u.source, u.content, \
           u.captured_at, u.idea_id::uuid, u.dedupe, u.metadata::jsonb \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], \
           $6::text[], $7::text[], $8::text[]) WITH ORDINALITY \
           AS u(content_hash, id, source, content, captured_at, idea_id, dedupe, metadata, n) \
         ORDER BY u.content_hash, u.captured_at, u.n \
         ON CONFLICT (content_hash) DO NOTHING",
    )
    .bind(r.iter().map(|s| s.content_hash.to_string()).collect::<Vec<_>>())
    .bind(r.iter().map(|s| s.id.clone()).collect::<Vec<_>>())
    .bind(r.iter().map(|s| s.source.as_str().to_owned()).collect::<Vec<_>>())
    .bind(r.iter().map(|s| s.content.clone()).collect::<Vec<_>>())
    .bind(r.iter().map(|s| s.captured_at).collect::<Vec<_>>())
    .bind(r.iter().map(|s| s.idea_id.to_string()).collect::<Vec<_>>())
    .bind(dedupe)
    .bind(metadata)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn write_aggregates(tx: &mut Transaction<'_, Postgres>, b: &Batches<'_>) -> sqlx::Result<()> {
    if !b.centroid_deletes.0.is_empty() {
        sqlx::query(
            "DELETE FROM centroids c USING UNNEST($1::text[], $2::text[]) AS u(kind, key) \
             WHERE c.kind = u.kind AND c.key = u.key",
        )
        .bind(&b.centroid_deletes.0)
        .bind(&b.centroid_deletes.1)
        .execute(&mut **tx)
        .await?;
    }
    if !b.centroids.is_empty() {
        let r = &b.centroids;
        sqlx::query(
            "INSERT INTO centroids (kind, key, window_start, window_end, embedding, n) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[], \
               $5::vector[], $6::int8[]) \
             ON CONFLICT (kind, key) DO UPDATE SET window_start = EXCLUDED.window_start, \
               window_end = EXCLUDED.window_end, embedding = EXCLUDED.embedding, n = EXCLUDED.n",
        )
        .bind(
            r.iter()
                .map(|c| c.kind.as_str().to_owned())
                .collect::<Vec<_>>(),
        )
        .bind(r.iter().map(|c| c.key.clone()).collect::<Vec<_>>())
        .bind(r.iter().map(|c| c.window_start).collect::<Vec<_>>())
        .bind(r.iter().map(|c| c.window_end).collect::<Vec<_>>())
        .bind(
            r.iter()
                .map(|c| vector_param(&c.embedding))
                .collect::<Vec<_>>(),
        )
        .bind(r.iter().map(|c| c.n as i64).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await?;
    }
    if !b.topic_deletes.0.is_empty() {
        sqlx::query(
            "DELETE FROM topic_counts t USING UNNEST($1::text[], $2::text[]) AS u(category, topic) \
             WHERE t.category = u.category AND t.topic = u.topic",
        )
        .bind(&b.topic_deletes.0)
        .bind(&b.topic_deletes.1)
        .execute(&mut **tx)
        .await?;
    }
    if !b.topics.is_empty() {
        let r = &b.topics;
        sqlx::query(
            "INSERT INTO topic_counts (category, topic, count) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[]) \
             ON CONFLICT (category, topic) DO UPDATE SET count = EXCLUDED.count",
        )
        .bind(r.iter().map(|t| t.category.clone()).collect::<Vec<_>>())
        .bind(r.iter().map(|t| t.topic.clone()).collect::<Vec<_>>())
        .bind(r.iter().map(|t| t.count as i64).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await?;
    }
    if !b.distinct.is_empty() {
        let r = &b.distinct;
        sqlx::query(
            "INSERT INTO distinct_counts (source, window_start, window_end, signals, ideas, communities) \
             SELECT * FROM UNNEST($1::text[], $2::timestamptz[], $3::timestamptz[], $4::int8[], \
               $5::int8[], $6::int8[]) \
             ON CONFLICT (source, window_start) DO UPDATE SET window_end = EXCLUDED.window_end, \
               signals = EXCLUDED.signals, ideas = EXCLUDED.ideas, communities = EXCLUDED.communities",
        )
        .bind(r.iter().map(|d| d.source.as_str().to_owned()).collect::<Vec<_>>())
        .bind(r.iter().map(|d| d.window_start).collect::<Vec<_>>())
        .bind(r.iter().map(|d| d.window_end).collect::<Vec<_>>())
        .bind(r.iter().map(|d| d.signals as i64).collect::<Vec<_>>())
        .bind(r.iter().map(|d| d.ideas as i64).collect::<Vec<_>>())
        .bind(r.iter().map(|d| d.communities as i64).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}
