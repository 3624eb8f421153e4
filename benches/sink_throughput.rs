//! Sink throughput against real Postgres/pgvector and Redis, next to a naive
//! writer that sends one autocommitted statement per row. Both run in the
//! same process, on the same tables, in the same run: only ratios matter.
//!
//! Measured:
//! - new ideas/s into `idea_rows`, whose HNSW index must take in every vector;
//!   with the index, without it, and without it followed by building it (a
//!   bulk replay's option);
//! - score updates/s for existing ideas (`idea_scores`, apart from the vectors);
//! - Redis ops/s (one op = one row's 7-field hash write, into a new hash and
//!   into an existing one; the median of three alternating rounds of each
//!   writer). Ours also keeps each category's top-K set (and appends an
//!   event per top-K move), so it is set against two naive writers: one
//!   writing the hashes alone (less work than ours), and one writing the same
//!   keys as ours, a command per round trip (`HSET`, `ZADD`,
//!   `ZREMRANGEBYRANK`).
//!
//! ```text
//! scripts/setup.sh && source state/env
//! cargo bench --bench sink_throughput                 # defaults below
//! cargo bench --bench sink_throughput -- --scores 200000 --hnsw-ideas 2000
//! ```

use std::time::Instant;

use anyhow::{Context, Result};
use chrono::{DateTime, TimeZone, Utc};
use ideaflow_operators::content_hash::ContentHash;
use ideaflow_operators::idea::IdeaId;
use ideaflow_operators::score::Factors;
use ideaflow_operators::top_k::TopK;
use ideaflow_operators::views::{Change, IdeaRow, IdeaStatus, ScoreRow, ViewKey, ViewRow};
use ideaflow_operators::{Engagement, Source, EMBEDDING_DIM};
use ideaflow_sinks::postgres::{self, vector_param, PostgresSink};
use ideaflow_sinks::redis_sink::{EpochMoves, RedisSink};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sqlx::PgPool;

const SCHEMA: &str = "bench_sinks";

fn arg(name: &str, default: usize) -> usize {
    let argv: Vec<String> = std::env::args().collect();
    argv.iter()
        .position(|a| a == name)
        .and_then(|i| argv.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn at(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_727_740_800 + secs, 0)
        .single()
        .expect("in range")
}

fn idea_id(i: usize) -> IdeaId {
    IdeaId::from_bits(0x1dea_0000_0000_0000_0000_0000_0000_0000 | i as u128)
}

/// Random unit vectors: the worst case for HNSW (no cluster structure).
fn ideas(n: usize, rng: &mut ChaCha8Rng) -> Vec<IdeaRow> {
    (0..n)
        .map(|i| {
            let mut v: Vec<f32> = (0..EMBEDDING_DIM)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter_mut().for_each(|x| *x /= norm);
            IdeaRow {
                id: idea_id(i),
                content_hash: ContentHash((i as u128).to_be_bytes()),
                content: format!("benchmark idea number {i} wearing a tiny hat"),
                source: Source::Reddit,
                category: Some(["animals", "food", "gaming", "humor"][i % 4].into()),
                category_similarity: Some(0.5),
                anchor_class: Some("Observation".to_owned()),
                community: Some("r/bench".to_owned()),
                locale: Some("US".to_owned()),
                topics: vec!["cats".to_owned(), "hats".to_owned()],
                signal_count: 1,
                near_duplicates: 0,
                engagement: Engagement::default(),
                engagement_rate: 1.0,
                first_seen: at(i as i64),
                last_seen: at(i as i64),
                peak_at: at(i as i64),
                status: IdeaStatus::Active,
                embedding: v.into(),
            }
        })
        .collect()
}

fn scores(n: usize, round: u32, rng: &mut ChaCha8Rng) -> Vec<ScoreRow> {
    (0..n)
        .map(|i| {
            let mut f = || rng.random_range(0.0..1.0);
            let factors = Factors {
                freshness: f(),
                engagement: f(),
                novelty: f(),
                community_fit: f(),
                seasonality: f(),
            };
            ScoreRow {
                idea_id: idea_id(i),
                category: Some(["animals", "food", "gaming", "humor"][i % 4].into()),
                score: factors.freshness * 0.3 + factors.engagement * 0.7,
                factors,
                scored_at: at(3600 * round as i64),
            }
        })
        .collect()
}

fn idea_changes(rows: &[IdeaRow]) -> Vec<Change> {
    rows.iter()
        .map(|r| Change {
            key: ViewKey::Idea(r.id),
            row: Some(ViewRow::Idea(Box::new(r.clone()))),
        })
        .collect()
}

fn score_changes(rows: &[ScoreRow]) -> Vec<Change> {
    rows.iter()
        .map(|r| Change {
            key: ViewKey::Score(r.idea_id),
            row: Some(ViewRow::Score(r.clone())),
        })
        .collect()
}

/// The baseline: what a first version would write, one autocommitted
/// statement per row (the rows of an epoch are not atomic for readers).
mod naive {
    use super::*;

    pub async fn insert_ideas(pool: &PgPool, rows: &[IdeaRow]) -> sqlx::Result<()> {
        for i in rows {
            sqlx::query(
                "INSERT INTO idea_rows (id, content_hash, title, source, category, \
                 category_similarity, anchor_class, community, locale, topics, embedding, \
                 signal_count, near_duplicates, views, likes, comments, shares, engagement_rate, \
                 status, first_seen, last_seen, peak_at) VALUES ($1::uuid, $2, $3, $4, $5, $6, \
                 $7, $8, $9, $10, $11, $12, 0, 0, 0, 0, 0, $13, 'active', $14, $14, $14)",
            )
            .bind(i.id.to_string())
            .bind(i.content_hash.to_string())
            .bind(&i.content)
            .bind(i.source.as_str())
            .bind(i.category.as_deref())
            .bind(i.category_similarity)
            .bind(&i.anchor_class)
            .bind(&i.community)
            .bind(&i.locale)
            .bind(&i.topics)
            .bind(vector_param(&i.embedding))
            .bind(i.signal_count as i64)
            .bind(i.engagement_rate)
            .bind(i.first_seen)
            .execute(pool)
            .await?;
            sqlx::query("INSERT INTO idea_vectors (idea_id, embedding) VALUES ($1::uuid, $2)")
                .bind(i.id.to_string())
                .bind(vector_param(&i.embedding))
                .execute(pool)
                .await?;
        }
        Ok(())
    }

    pub async fn upsert_scores(pool: &PgPool, rows: &[ScoreRow]) -> sqlx::Result<()> {
        for s in rows {
            let f = &s.factors;
            sqlx::query(
                "INSERT INTO idea_scores (idea_id, category, score, freshness, engagement, \
                 novelty, community_fit, seasonality, scored_at) \
                 VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, $8, $9) \
                 ON CONFLICT (idea_id) DO UPDATE SET score = EXCLUDED.score, \
                 freshness = EXCLUDED.freshness, engagement = EXCLUDED.engagement, \
                 novelty = EXCLUDED.novelty, community_fit = EXCLUDED.community_fit, \
                 seasonality = EXCLUDED.seasonality, scored_at = EXCLUDED.scored_at",
            )
            .bind(s.idea_id.to_string())
            .bind(s.category.as_deref())
            .bind(s.score)
            .bind(f.freshness)
            .bind(f.engagement)
            .bind(f.novelty)
            .bind(f.community_fit)
            .bind(f.seasonality)
            .bind(s.scored_at)
            .execute(pool)
            .await?;
        }
        Ok(())
    }

    /// One round trip per row: the hash alone.
    pub fn redis_scores(conn: &mut redis::Connection, ns: &str, rows: &[ScoreRow]) -> Result<()> {
        for s in rows {
            hset_score(conn, ns, s)?;
        }
        Ok(())
    }

    /// One round trip per command, writing the keys our sink keeps for a
    /// score: the hash, and the category's top-K set, trimmed to K after
    /// each insert (the naive way; it cannot bring back an idea trimmed
    /// earlier whose rivals' scores later fell, which ours, ranking every
    /// idea client-side, does).
    pub fn redis_scores_and_top(
        conn: &mut redis::Connection,
        ns: &str,
        k: usize,
        rows: &[ScoreRow],
    ) -> Result<()> {
        for s in rows {
            hset_score(conn, ns, s)?;
            if let Some(category) = &s.category {
                let key = format!("{ns}:top:{category}");
                redis::cmd("ZADD")
                    .arg(&key)
                    .arg(s.score)
                    .arg(s.idea_id.to_string())
                    .query::<()>(conn)?;
                redis::cmd("ZREMRANGEBYRANK")
                    .arg(&key)
                    .arg(0)
                    .arg(-(k as i64) - 1)
                    .query::<()>(conn)?;
            }
        }
        Ok(())
    }

    fn hset_score(conn: &mut redis::Connection, ns: &str, s: &ScoreRow) -> Result<()> {
        let f = &s.factors;
        redis::cmd("HSET")
            .arg(format!("{ns}:idea:{}", s.idea_id))
            .arg(&[
                ("score", s.score.to_string()),
                ("freshness", f.freshness.to_string()),
                ("engagement", f.engagement.to_string()),
                ("novelty", f.novelty.to_string()),
                ("community_fit", f.community_fit.to_string()),
                ("seasonality", f.seasonality.to_string()),
                ("scored_at", s.scored_at.to_rfc3339()),
            ])
            .query::<()>(conn)?;
        Ok(())
    }
}

struct Report {
    lines: Vec<String>,
}

impl Report {
    fn row(&mut self, what: &str, ours: (usize, f64), naive: Option<(usize, f64)>) {
        let ours_rate = ours.0 as f64 / ours.1;
        let line = match naive {
            Some((n, s)) => {
                let naive_rate = n as f64 / s;
                format!(
                    "| {what} | {ours_rate:>10.0}/s | {naive_rate:>8.0}/s | {:>6.1}x |",
                    ours_rate / naive_rate
                )
            }
            None => format!("| {what} | {ours_rate:>10.0}/s | | |"),
        };
        println!("{line}");
        self.lines.push(line);
    }
}

async fn reset(pool: &PgPool) -> Result<()> {
    postgres::truncate(pool).await?;
    Ok(())
}

async fn set_index(pool: &PgPool, on: bool) -> Result<f64> {
    let started = Instant::now();
    if on {
        sqlx::query(
            "CREATE INDEX IF NOT EXISTS idea_vectors_embedding ON idea_vectors \
             USING hnsw (embedding vector_cosine_ops)",
        )
        .execute(pool)
        .await?;
    } else {
        sqlx::query("DROP INDEX IF EXISTS idea_vectors_embedding")
            .execute(pool)
            .await?;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Rounds of each Redis writer.
const REDIS_ROUNDS: usize = 3;

fn median(mut seconds: Vec<f64>) -> f64 {
    seconds.sort_by(f64::total_cmp);
    seconds[seconds.len() / 2]
}

async fn timed<F: std::future::Future<Output = Result<()>>>(f: F) -> Result<f64> {
    let started = Instant::now();
    f.await?;
    Ok(started.elapsed().as_secs_f64())
}

/// Both Redis writers, on one namespace.
struct RedisBench {
    sink: RedisSink,
    naive: redis::Connection,
    batch: usize,
    /// Rows the naive writer writes per round (a prefix of ours).
    naive_rows: usize,
}

impl RedisBench {
    /// The median seconds of `REDIS_ROUNDS` alternating rounds of each
    /// writer writing `rows`: ours, the naive one writing hashes alone, and
    /// the naive one writing the same keys as ours (hash and top-K set).
    /// With `existing`, every round starts from those rows already written
    /// (untimed), so `rows` (the same ids) update existing hashes.
    fn rounds(
        &mut self,
        existing: Option<&[ScoreRow]>,
        rows: &[ScoreRow],
    ) -> Result<(f64, f64, f64)> {
        let changes = score_changes(rows);
        let existing = existing.map(score_changes);
        let mut times: [Vec<f64>; 3] = Default::default();
        for _ in 0..REDIS_ROUNDS {
            for (writer, time) in times.iter_mut().enumerate() {
                self.sink.clear()?;
                // Our epoch writes: pipelined MULTI/EXEC, the top K maintained.
                let mut top = TopK::new(self.sink.top_k());
                if let Some(existing) = &existing {
                    let n = if writer == 0 {
                        existing.len()
                    } else {
                        self.naive_rows
                    };
                    self.ours(&mut top, &existing[..n], 0)?;
                }
                let (ns, k) = (self.sink.namespace().to_owned(), self.sink.top_k());
                let naive_rows = &rows[..self.naive_rows];
                let started = Instant::now();
                match writer {
                    0 => self.ours(&mut top, &changes, 1_000)?,
                    1 => naive::redis_scores(&mut self.naive, &ns, naive_rows)?,
                    _ => naive::redis_scores_and_top(&mut self.naive, &ns, k, naive_rows)?,
                }
                time.push(started.elapsed().as_secs_f64());
            }
        }
        let [ours, naive, naive_keys] = times.map(median);
        Ok((ours, naive, naive_keys))
    }

    /// Our sink: `changes` in epochs of `batch` rows, numbered from `first_epoch`.
    fn ours(&mut self, top: &mut TopK, changes: &[Change], first_epoch: i64) -> Result<()> {
        for (e, chunk) in changes.chunks(self.batch).enumerate() {
            let epoch = first_epoch + e as i64;
            let moves = EpochMoves {
                epoch_end: epoch,
                moves: top.apply(chunk),
            };
            self.sink.write_epoch(epoch, chunk, &[moves])?;
        }
        Ok(())
    }
}

/// Our sink: the changes split into epochs of `batch`, one transaction each.
async fn ours(sink: &PostgresSink, changes: &[Change], batch: usize) -> Result<()> {
    for (e, chunk) in changes.chunks(batch).enumerate() {
        sink.write_epoch(e as i64, chunk, &[]).await?;
    }
    Ok(())
}

async fn naive_ideas(pool: &PgPool, rows: &[IdeaRow], batch: usize) -> Result<()> {
    for chunk in rows.chunks(batch) {
        naive::insert_ideas(pool, chunk).await?;
    }
    Ok(())
}

async fn naive_scores(pool: &PgPool, rows: &[ScoreRow], batch: usize) -> Result<()> {
    for chunk in rows.chunks(batch) {
        naive::upsert_scores(pool, chunk).await?;
    }
    Ok(())
}

fn main() -> Result<()> {
    let hnsw_ideas = arg("--hnsw-ideas", 1_000);
    let plain_ideas = arg("--ideas", 20_000);
    let naive_ideas_n = arg("--naive-ideas", 2_000);
    let score_rows = arg("--scores", 100_000);
    let naive_scores_n = arg("--naive-scores", 10_000);
    let redis_rows = arg("--redis", 100_000);
    let naive_redis_n = arg("--naive-redis", 10_000);
    let batch = arg("--batch", 5_000);
    let pg_url = std::env::var("IDEAFLOW_POSTGRES_URL")
        .context("IDEAFLOW_POSTGRES_URL is unset: run scripts/setup.sh and source state/env")?;
    let redis_url = std::env::var("IDEAFLOW_REDIS_URL")
        .context("IDEAFLOW_REDIS_URL is unset: run scripts/setup.sh and source state/env")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let all = ideas(plain_ideas.max(naive_ideas_n).max(hnsw_ideas), &mut rng);
    let mut report = Report { lines: Vec::new() };
    println!("| what | ideaflow sink | naive (row by row) | ratio |");
    println!("| --- | ---: | ---: | ---: |");

    // Redis first, while Postgres is idle (its checkpoints and autovacuum
    // after the sections below would share the two cores with whichever
    // writer ran first). Each writer runs in alternating rounds and the
    // median of each is reported, as these machines' speed swings within a
    // run. Two shapes: new hashes (the namespace emptied before each round:
    // ideas appearing) and updates of existing hashes (what a tick's
    // re-scoring writes: most of a live stream's rows).
    let ns = "bench_sinks";
    let mut redis = RedisBench {
        sink: RedisSink::connect(&redis_url, ns, 100)?,
        naive: redis::Client::open(redis_url.as_str())?.get_connection()?,
        batch,
        naive_rows: naive_redis_n,
    };
    let first = scores(redis_rows, 3, &mut rng);
    let update = scores(redis_rows, 4, &mut rng);
    for (shape, existing, rows) in [
        ("new hashes", None, &first),
        ("existing hashes", Some(&first[..]), &update),
    ] {
        let (t_ours, t_naive, t_naive_keys) = redis.rounds(existing, rows)?;
        report.row(
            &format!("Redis score writes/s, {shape}"),
            (redis_rows, t_ours),
            Some((naive_redis_n, t_naive)),
        );
        report.row(
            &format!(
                "Redis score writes/s, {shape}, naive writing the same keys (hash, top-K set)"
            ),
            (redis_rows, t_ours),
            Some((naive_redis_n, t_naive_keys)),
        );
    }
    redis.sink.clear()?;

    rt.block_on(async {
        let pool = postgres::connect(&pg_url, SCHEMA).await?;
        postgres::migrate(&pool).await?;
        let sink = PostgresSink::new(pool.clone(), "bench")?;

        // New ideas with the HNSW index live: committed (what a reader of
        // the views waits for), then searchable (the index behind).
        reset(&pool).await?;
        set_index(&pool, true).await?;
        let n = hnsw_ideas;
        let started = Instant::now();
        ours(&sink, &idea_changes(&all[..n]), batch.min(500)).await?;
        let t_commit = started.elapsed().as_secs_f64();
        sink.wait_indexed();
        let t_ours = started.elapsed().as_secs_f64();
        reset(&pool).await?;
        let t_naive = timed(naive_ideas(&pool, &all[..n], 500)).await?;
        report.row(
            "new ideas/s committed, HNSW index live",
            (n, t_commit),
            Some((n, t_naive)),
        );
        report.row(
            "new ideas/s searchable, HNSW index live",
            (n, t_ours),
            Some((n, t_naive)),
        );

        // New ideas with no vector index.
        reset(&pool).await?;
        set_index(&pool, false).await?;
        let t_ours = timed(async {
            ours(&sink, &idea_changes(&all[..plain_ideas]), batch).await?;
            sink.wait_indexed();
            Ok(())
        })
        .await?;
        reset(&pool).await?;
        let t_naive = timed(naive_ideas(&pool, &all[..naive_ideas_n], batch)).await?;
        report.row(
            "new ideas/s, no vector index",
            (plain_ideas, t_ours),
            Some((naive_ideas_n, t_naive)),
        );
        // ... and the index built after the load (a bulk replay's option).
        reset(&pool).await?;
        let t_load = timed(async {
            ours(&sink, &idea_changes(&all[..plain_ideas]), batch).await?;
            sink.wait_indexed();
            Ok(())
        })
        .await?;
        let t_index = set_index(&pool, true).await?;
        report.row(
            "new ideas/s, load then build HNSW",
            (plain_ideas, t_load + t_index),
            None,
        );

        // Score updates of existing ideas (the ideas and their vectors stay
        // put; the HNSW index is there, built after the load as above).
        let rounds = score_rows.div_ceil(plain_ideas).max(1);
        let mut updates = Vec::new();
        for round in 1..=rounds as u32 {
            updates.extend(score_changes(&scores(plain_ideas, round, &mut rng)));
        }
        updates.truncate(score_rows);
        ours(
            &sink,
            &score_changes(&scores(plain_ideas, 0, &mut rng)),
            batch,
        )
        .await?;
        // An epoch holds at most one change per key: one round's rows at most.
        let t_ours = timed(ours(&sink, &updates, batch.min(plain_ideas))).await?;
        let naive_rows = scores(naive_scores_n.min(plain_ideas), 99, &mut rng);
        let t_naive = timed(naive_scores(&pool, &naive_rows, batch)).await?;
        report.row(
            "score updates/s (existing ideas)",
            (updates.len(), t_ours),
            Some((naive_rows.len(), t_naive)),
        );
        reset(&pool).await?;
        anyhow::Ok(())
    })?;

    // The workspace's target folder (cargo runs benches from the package's).
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-results");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("sink_throughput.md");
    std::fs::write(&path, report.lines.join("\n") + "\n")?;
    eprintln!("report written to {}", path.display());
    Ok(())
}
