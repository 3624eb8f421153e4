//! The committed views read back from Postgres: what a Redis that came back
//! without its data is filled again from.
//!
//! Redis holds keys derived from a subset of the views (ideas, scores, topic
//! counts, distinct counts, A/B results, allocations, weights), and Postgres
//! holds every one of them, committed whole epochs at a time. A run keeps
//! no complete copy in memory (one resumed from a checkpoint has seen only
//! the epochs since), so Postgres, not the run, is where a refill reads.

use ideaflow_operators::views::{
    AbResultRow, AllocationRow, Change, DistinctCountRow, IdeaRow, ScoreRow, TopicCountRow,
    ViewRow, WeightsRow,
};
use serde::de::DeserializeOwned;
use sqlx::{Connection, PgPool};

use crate::postgres::PostgresError;

/// Each view Redis holds, as a query giving each row in its serde form (the
/// rows' own field names, so that `serde` reads them as written).
///
/// Ideas leave out their vector, which Redis does not hold (the rows' vector
/// is empty): read back, it would be ~1.5 KB per idea for nothing.
const IDEAS: &str = "SELECT jsonb_build_object(\
     'id', id, 'content_hash', content_hash, 'content', title, 'source', source, \
     'category', category, 'category_similarity', category_similarity, \
     'anchor_class', anchor_class, 'community', community, 'locale', locale, \
     'topics', to_jsonb(topics), 'signal_count', signal_count, \
     'near_duplicates', near_duplicates, \
     'engagement', jsonb_build_object('views', views, 'likes', likes, \
        'comments', comments, 'shares', shares), \
     'engagement_rate', engagement_rate, 'first_seen', first_seen, \
     'last_seen', last_seen, 'peak_at', peak_at, 'status', status, \
     'embedding', '[]'::jsonb) FROM idea_rows";
const SCORES: &str = "SELECT jsonb_build_object(\
     'idea_id', idea_id, 'category', category, 'score', score, \
     'factors', jsonb_build_object('freshness', freshness, 'engagement', engagement, \
        'novelty', novelty, 'community_fit', community_fit, 'seasonality', seasonality), \
     'scored_at', scored_at) FROM idea_scores";
// The other tables are written from the rows' serde form
// (`jsonb_populate_recordset`): their columns are the rows' fields.
const TOPIC_COUNTS: &str = "SELECT to_jsonb(t) FROM topic_counts t";
const DISTINCT_COUNTS: &str = "SELECT to_jsonb(t) FROM distinct_counts t";
const AB_RESULTS: &str = "SELECT to_jsonb(t) FROM ab_results t";
const ALLOCATIONS: &str = "SELECT to_jsonb(t) FROM allocations t";
const WEIGHTS: &str = "SELECT to_jsonb(t) FROM weights_history t";

/// Every row of the views Redis holds, as upserts sorted by key, read in one
/// snapshot (a repeatable-read transaction): the state of the last epoch
/// Postgres committed.
pub async fn rows_redis_holds(pool: &PgPool) -> Result<Vec<Change>, PostgresError> {
    let mut conn = pool.acquire().await.map_err(PostgresError::Read)?;
    let mut tx = conn.begin().await.map_err(PostgresError::Read)?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut *tx)
        .await
        .map_err(PostgresError::Read)?;
    let mut rows = Vec::new();
    read(&mut tx, IDEAS, &mut rows, |r: IdeaRow| {
        ViewRow::Idea(Box::new(r))
    })
    .await?;
    read(&mut tx, SCORES, &mut rows, |r: ScoreRow| ViewRow::Score(r)).await?;
    read(&mut tx, TOPIC_COUNTS, &mut rows, |r: TopicCountRow| {
        ViewRow::TopicCount(r)
    })
    .await?;
    read(
        &mut tx,
        DISTINCT_COUNTS,
        &mut rows,
        |r: DistinctCountRow| ViewRow::DistinctCount(r),
    )
    .await?;
    read(&mut tx, AB_RESULTS, &mut rows, |r: AbResultRow| {
        ViewRow::AbResult(Box::new(r))
    })
    .await?;
    read(&mut tx, ALLOCATIONS, &mut rows, |r: AllocationRow| {
        ViewRow::Allocation(r)
    })
    .await?;
    read(&mut tx, WEIGHTS, &mut rows, |r: WeightsRow| {
        ViewRow::Weights(r)
    })
    .await?;
    tx.commit().await.map_err(PostgresError::Read)?;
    rows.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    Ok(rows)
}

/// Appends the rows `query` gives, each read as a `T` and made a view row.
async fn read<T: DeserializeOwned>(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    query: &str,
    rows: &mut Vec<Change>,
    row: impl Fn(T) -> ViewRow,
) -> Result<(), PostgresError> {
    let found: Vec<(serde_json::Value,)> = sqlx::query_as(query)
        .fetch_all(&mut **tx)
        .await
        .map_err(PostgresError::Read)?;
    rows.reserve(found.len());
    for (json,) in found {
        let value: T = serde_json::from_value(json).map_err(|e| {
            PostgresError::ReadBack(format!(
                "a row of `{query}` does not read as the view it was written from ({e}); \
                 was the schema written by another version of ideaflow? Rebuild it by \
                 starting `ideaflow run` without checkpoints"
            ))
        })?;
        rows.push(Change::upsert(row(value)));
    }
    Ok(())
}

/// How many ideas (active and archived) Postgres holds.
pub async fn idea_count(pool: &PgPool) -> Result<u64, PostgresError> {
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM idea_rows")
        .fetch_one(pool)
        .await
        .map_err(PostgresError::Read)?;
    Ok(n.max(0) as u64)
}
