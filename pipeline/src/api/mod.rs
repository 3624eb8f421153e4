//! The HTTP API and dashboard `ideaflow run` serves (axum). Reads come from
//! the materialized views (Postgres, Redis) and the live feed of committed
//! epochs; every error uses the envelope in [`error`].

pub mod cors;
mod error;
mod openapi;
mod protocol_errors;
pub mod server;
pub mod webhook;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::Stream;
use ideaflow_operators::embed::Embedder;
use ideaflow_operators::score::Weights;
use serde_json::{json, Value};
use sqlx::postgres::PgPool;
use sqlx::Row;
use tokio::sync::broadcast;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::StreamExt;

pub use error::ApiError;

use crate::materialize::EpochCommitted;
use crate::metrics::Metrics;

pub struct AppState {
    pub pool: PgPool,
    pub redis: redis::Client,
    pub namespace: String,
    pub categories: Vec<String>,
    pub weights: Weights,
    pub embedder: Arc<Mutex<Embedder>>,
    pub feed: broadcast::Sender<EpochCommitted>,
    pub metrics: Metrics,
    pub max_limit: usize,
    pub max_query_chars: usize,
    /// The live sources: readiness is false while one is unreachable.
    pub sources: Option<Arc<crate::source_status::SourceStatus>>,
    /// Webhook ingest, when tokens are set.
    pub webhook: Option<Arc<webhook::Webhook>>,
}

type Shared = Arc<AppState>;
type ApiResult<T> = Result<T, ApiError>;

pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/api/v1/ideas/top", get(ideas_top))
        .route("/api/v1/ideas/{id}", get(idea))
        .route("/api/v1/topics/hot", get(topics_hot))
        .route("/api/v1/centroids", get(centroids))
        .route("/api/v1/heatmap", get(heatmap))
        .route("/api/v1/volume", get(volume))
        .route("/api/v1/scores/histogram", get(score_histogram))
        .route("/api/v1/progress", get(progress))
        .route("/api/v1/search", get(search))
        .route("/api/v1/stream", get(stream))
        .route("/api/v1/signals", axum::routing::post(webhook::ingest))
        .route("/api/v1/weights", get(weights))
        .route("/api/v1/ab", get(ab_results))
        .route("/api/v1/anchors", get(anchors))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::not_found("no such route; see /api/v1/openapi.json") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not answer this method; see /api/v1/openapi.json",
            )
        })
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Binds the API's address. Separate from [`serve`] so that `run` fails
/// before it reads any input when the address is taken, not after.
pub async fn bind(listen: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on {listen}: {e}; set api.listen (or --listen) to a free address, or \"\" to serve nothing"
        )
    })
}

fn limit(q: &HashMap<String, String>, default: usize, max: usize) -> ApiResult<usize> {
    match q.get("limit") {
        None => Ok(default),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::invalid(
                "limit",
                format!("limit must be an integer from 1 to {max}"),
            )),
        },
    }
}

/// Counts every answer with its real status, and times it, by the route's
/// pattern (`unmatched` for unknown paths: never the raw path, which a
/// client could make up without end).
async fn observe(
    State(s): State<Shared>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let started = std::time::Instant::now();
    let response = next.run(req).await;
    let m = &s.metrics;
    m.http_requests
        .with_label_values(&[route.as_str(), response.status().as_str()])
        .inc();
    m.http_request_seconds
        .with_label_values(&[route.as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}

const IDEA_COLUMNS: &str = "id::text AS id, title, category, anchor_class, community, status, \
    signal_count, near_duplicates, views + likes + comments + shares AS engagement, \
    first_seen, last_seen, score, freshness, engagement AS f_engagement, novelty, \
    community_fit, seasonality, scored_at";

/// The scoring weights over time (`weights_history`): a score is explained
/// with the weights in force when it was computed.
struct WeightsInForce {
    history: Vec<(chrono::DateTime<chrono::Utc>, Weights)>,
    configured: Weights,
}

impl WeightsInForce {
    async fn load(s: &AppState) -> ApiResult<Self> {
        let rows = sqlx::query(
            "SELECT effective_from, freshness, engagement, novelty, community_fit, seasonality \
             FROM weights_history ORDER BY effective_from",
        )
        .fetch_all(&s.pool)
        .await?;
        let history = rows
            .iter()
            .map(|r| {
                let f = |k: &str| r.try_get::<f64, _>(k).unwrap_or_default();
                (
                    r.try_get("effective_from").unwrap_or_default(),
                    Weights {
                        freshness: f("freshness"),
                        engagement: f("engagement"),
                        novelty: f("novelty"),
                        community_fit: f("community_fit"),
                        seasonality: f("seasonality"),
                    },
                )
            })
            .collect();
        Ok(WeightsInForce {
            history,
            configured: s.weights,
        })
    }

    fn at(&self, t: Option<chrono::DateTime<chrono::Utc>>) -> Weights {
        let Some(t) = t else {
            return self.current();
        };
        self.history
            .iter()
            .rev()
            .find(|(from, _)| *from <= t)
            .map_or(self.configured, |(_, w)| *w)
    }

    fn current(&self) -> Weights {
        self.history.last().map_or(self.configured, |(_, w)| *w)
    }
}

fn idea_json(row: &sqlx::postgres::PgRow, in_force: &WeightsInForce) -> Value {
    let scored_at = row
        .try_get::<Option<chrono::DateTime<chrono::Utc>>, _>("scored_at")
        .ok()
        .flatten();
    let weights = &in_force.at(scored_at);
    let f = |k: &str| row.try_get::<Option<f64>, _>(k).ok().flatten();
    let factors = [
        ("freshness", f("freshness")),
        ("engagement", f("f_engagement")),
        ("novelty", f("novelty")),
        ("community_fit", f("community_fit")),
        ("seasonality", f("seasonality")),
    ];
    let w = weights.normalized();
    let weight = |k: &str| match k {
        "freshness" => w.freshness,
        "engagement" => w.engagement,
        "novelty" => w.novelty,
        "community_fit" => w.community_fit,
        _ => w.seasonality,
    };
    let breakdown: Vec<Value> = factors
        .iter()
        .map(|(k, v)| {
            json!({"factor": k, "value": v, "weight": weight(k),
                   "contribution": v.map(|v| v * weight(k))})
        })
        .collect();
    let time = |k: &str| {
        row.try_get::<Option<chrono::DateTime<chrono::Utc>>, _>(k)
            .ok()
            .flatten()
            .map(|t| t.to_rfc3339())
    };
    json!({
        "id": row.try_get::<String, _>("id").unwrap_or_default(),
        "title": row.try_get::<String, _>("title").unwrap_or_default(),
        "category": row.try_get::<Option<String>, _>("category").ok().flatten(),
        "anchor_class": row.try_get::<Option<String>, _>("anchor_class").ok().flatten(),
        "community": row.try_get::<Option<String>, _>("community").ok().flatten(),
        "status": row.try_get::<String, _>("status").unwrap_or_default(),
        "signal_count": row.try_get::<i64, _>("signal_count").unwrap_or_default(),
        "near_duplicates": row.try_get::<i64, _>("near_duplicates").unwrap_or_default(),
        "engagement": row.try_get::<i64, _>("engagement").unwrap_or_default(),
        "first_seen": time("first_seen"),
        "last_seen": time("last_seen"),
        "score": f("score"),
        "scored_at": time("scored_at"),
        "factors": breakdown,
    })
}

async fn ideas_top(
    State(s): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let limit = limit(&q, 20, s.max_limit)?;
    let category = q.get("category").filter(|c| !c.is_empty());
    if let Some(c) = category {
        if !s.categories.contains(c) {
            let mut e = ApiError::not_found(format!("unknown category {c:?}"));
            e.details = json!({"categories": s.categories});
            return Err(e);
        }
    }
    let sql = format!(
        "SELECT {IDEA_COLUMNS} FROM ideas WHERE status = 'active' \
         AND ($1::text IS NULL OR category = $1) AND score IS NOT NULL \
         ORDER BY score DESC, id LIMIT $2"
    );
    let rows = sqlx::query(&sql)
        .bind(category)
        .bind(limit as i64)
        .fetch_all(&s.pool)
        .await?;
    let in_force = WeightsInForce::load(&s).await?;
    let ideas: Vec<Value> = rows.iter().map(|r| idea_json(r, &in_force)).collect();
    Ok(Json(json!({"category": category, "ideas": ideas})))
}

async fn idea(
    State(s): State<Shared>,
    // Taken as a Result: axum's own rejection (an id that is not UTF-8) is
    // plain text, and every error here answers in the envelope.
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let Ok(Path(id)) = id else {
        return Err(ApiError::invalid("id", "id must be an idea UUID"));
    };
    if uuid::Uuid::parse_str(&id).is_err() {
        return Err(ApiError::invalid("id", "id must be an idea UUID"));
    }
    let sql = format!("SELECT {IDEA_COLUMNS} FROM ideas WHERE id = $1::uuid");
    let row = sqlx::query(&sql).bind(&id).fetch_optional(&s.pool).await?;
    match row {
        Some(r) => Ok(Json(idea_json(&r, &WeightsInForce::load(&s).await?))),
        None => Err(ApiError::not_found(format!("no idea {id}"))),
    }
}

async fn topics_hot(
    State(s): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let limit = limit(&q, 20, s.max_limit)?;
    let mut conn = s.redis.get_multiplexed_async_connection().await?;
    let key = format!("{}:topics:hot", s.namespace);
    let top: Vec<(String, f64)> = redis::cmd("ZREVRANGE")
        .arg(&key)
        .arg(0)
        .arg(limit as i64 - 1)
        .arg("WITHSCORES")
        .query_async(&mut conn)
        .await?;
    let topics: Vec<Value> = top
        .into_iter()
        .map(|(t, n)| json!({"topic": t, "count": n as u64}))
        .collect();
    Ok(Json(json!({ "topics": topics })))
}

async fn centroids(
    State(s): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let kind = q.get("kind").cloned();
    if let Some(k) = &kind {
        if k != "category" && k != "community" {
            return Err(ApiError::invalid(
                "kind",
                "kind must be category or community",
            ));
        }
    }
    let with_vectors = match q.get("embedding").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(ApiError::invalid(
                "embedding",
                "embedding must be true or false",
            ))
        }
    };
    let rows = sqlx::query(
        "SELECT kind, key, window_start, window_end, n, embedding::text AS embedding \
         FROM centroids WHERE ($1::text IS NULL OR kind = $1) ORDER BY kind, key",
    )
    .bind(kind)
    .fetch_all(&s.pool)
    .await?;
    let out: Vec<Value> = rows
        .iter()
        .map(|r| {
            let mut v = json!({
                "kind": r.try_get::<String, _>("kind").unwrap_or_default(),
                "key": r.try_get::<String, _>("key").unwrap_or_default(),
                "window_start": r.try_get::<chrono::DateTime<chrono::Utc>, _>("window_start").ok(),
                "window_end": r.try_get::<chrono::DateTime<chrono::Utc>, _>("window_end").ok(),
                "n": r.try_get::<i64, _>("n").unwrap_or_default(),
            });
            if with_vectors {
                let text: String = r.try_get("embedding").unwrap_or_default();
                v["embedding"] = serde_json::from_str(&text).unwrap_or(Value::Null);
            }
            v
        })
        .collect();
    Ok(Json(json!({ "centroids": out })))
}

/// Ideas first seen per category per day: the dashboard's heatmap.
async fn heatmap(State(s): State<Shared>) -> ApiResult<Json<Value>> {
    let rows = sqlx::query(
        "SELECT category, to_char(date_trunc('day', first_seen), 'YYYY-MM-DD') AS day, \
         count(*) AS n FROM ideas WHERE category IS NOT NULL GROUP BY 1, 2 ORDER BY 2, 1",
    )
    .fetch_all(&s.pool)
    .await?;
    let cells: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "category": r.try_get::<String, _>("category").unwrap_or_default(),
                "day": r.try_get::<String, _>("day").unwrap_or_default(),
                "ideas": r.try_get::<i64, _>("n").unwrap_or_default(),
            })
        })
        .collect();
    Ok(Json(json!({ "cells": cells })))
}

/// Distinct signals per category per day (each signal counted under its
/// idea's category): the dashboard's volume chart.
async fn volume(State(s): State<Shared>) -> ApiResult<Json<Value>> {
    let rows = sqlx::query(
        "SELECT i.category, to_char(date_trunc('day', g.captured_at), 'YYYY-MM-DD') AS day, \
         count(*) AS n FROM signals g JOIN idea_rows i ON i.id = g.idea_id \
         WHERE i.category IS NOT NULL GROUP BY 1, 2 ORDER BY 2, 1",
    )
    .fetch_all(&s.pool)
    .await?;
    let points: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "category": r.try_get::<String, _>("category").unwrap_or_default(),
                "day": r.try_get::<String, _>("day").unwrap_or_default(),
                "signals": r.try_get::<i64, _>("n").unwrap_or_default(),
            })
        })
        .collect();
    Ok(Json(json!({ "points": points })))
}

/// How many bins a score histogram has unless asked.
const SCORE_BINS: usize = 10;

/// Active ideas per score bin and category (scores lie in [0, 1]): the
/// dashboard's score distributions.
async fn score_histogram(
    State(s): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let bins = match q.get("bins") {
        None => SCORE_BINS,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=100).contains(&n) => n,
            _ => {
                return Err(ApiError::invalid(
                    "bins",
                    "bins must be an integer from 1 to 100",
                ))
            }
        },
    };
    let rows = sqlx::query(
        "SELECT category, LEAST(GREATEST(width_bucket(score, 0, 1, $1), 1), $1) AS bin, \
         count(*) AS n FROM ideas WHERE status = 'active' AND score IS NOT NULL \
         AND category IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .bind(bins as i32)
    .fetch_all(&s.pool)
    .await?;
    let mut by_category: std::collections::BTreeMap<String, Vec<i64>> = Default::default();
    for r in &rows {
        let category: String = r.try_get("category").unwrap_or_default();
        let bin: i32 = r.try_get("bin").unwrap_or(1);
        let n: i64 = r.try_get("n").unwrap_or_default();
        by_category.entry(category).or_insert_with(|| vec![0; bins])
            [(bin.max(1) as usize - 1).min(bins - 1)] += n;
    }
    let categories: Vec<Value> = by_category
        .into_iter()
        .map(|(category, counts)| json!({"category": category, "counts": counts}))
        .collect();
    Ok(Json(json!({"bins": bins, "categories": categories})))
}

/// The last epoch every sink committed (what the views hold), if any.
async fn progress(State(s): State<Shared>) -> ApiResult<Json<Value>> {
    let row = sqlx::query(
        "SELECT epoch, frontier, committed_at FROM pipeline_progress WHERE sink = 'views'",
    )
    .fetch_optional(&s.pool)
    .await?;
    let time = |r: &sqlx::postgres::PgRow, k: &str| {
        r.try_get::<chrono::DateTime<chrono::Utc>, _>(k)
            .ok()
            .map(|t| t.to_rfc3339())
    };
    Ok(Json(match row {
        Some(r) => json!({
            "epoch": r.try_get::<i64, _>("epoch").ok(),
            "through": time(&r, "frontier"),
            "committed_at": time(&r, "committed_at"),
        }),
        None => json!({"epoch": null, "through": null, "committed_at": null}),
    }))
}

/// Seed 003's semantic search: the query embedded with the same model, the
/// nearest ideas by cosine (pgvector HNSW).
async fn search(
    State(s): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let limit = limit(&q, 20, s.max_limit)?;
    let raw = q.get("q").map(String::as_str).unwrap_or_default();
    // Blank as the document's pattern says (JSON Schema's ECMA-262 `\s`,
    // which has U+FEFF and lacks U+0085; Rust's whitespace the reverse).
    let text = raw
        .trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}')
        .to_owned();
    if text.is_empty() {
        return Err(ApiError::invalid(
            "q",
            "q (the search text) is required and must not be blank",
        ));
    }
    // The limit is on what was sent (as documented), spaces included; a
    // parameter out of its bounds, so 422 like any other.
    if raw.chars().count() > s.max_query_chars {
        let mut e = ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "query_too_long",
            format!("q is longer than {} characters", s.max_query_chars),
        );
        e.details = json!({"parameter": "q", "max_chars": s.max_query_chars});
        return Err(e);
    }
    let embedder = s.embedder.clone();
    let vector = tokio::task::spawn_blocking(move || {
        embedder
            .lock()
            .map_err(|_| "the embedder is unavailable".to_owned())?
            .embed(&[text.as_str()])
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| ApiError::unavailable("the model", e))?
    .map_err(|e| ApiError::unavailable("the model", e))?;
    let query_vector = ideaflow_sinks::postgres::vector_param(&vector[0]);
    // The nearest vectors through the HNSW index on idea_vectors, then their
    // ideas (a vector whose idea was just deleted has none: left out).
    let sql = format!(
        "SELECT {IDEA_COLUMNS}, n.similarity FROM \
           (SELECT idea_id, 1 - (embedding <=> $1::vector) AS similarity FROM idea_vectors \
            ORDER BY embedding <=> $1::vector LIMIT $2) n \
         JOIN ideas ON ideas.id = n.idea_id ORDER BY n.similarity DESC, ideas.id"
    );
    let rows = sqlx::query(&sql)
        .bind(query_vector)
        .bind(limit as i64)
        .fetch_all(&s.pool)
        .await?;
    let in_force = WeightsInForce::load(&s).await?;
    let results: Vec<Value> = rows
        .iter()
        .map(|r| {
            let mut v = idea_json(r, &in_force);
            v["similarity"] = json!(r.try_get::<f64, _>("similarity").unwrap_or_default());
            v
        })
        .collect();
    Ok(Json(json!({ "query": q.get("q"), "results": results })))
}

/// The scoring weights in force and their history (learned from feedback).
async fn weights(State(s): State<Shared>) -> ApiResult<Json<Value>> {
    let rows = sqlx::query(
        "SELECT effective_from, freshness, engagement, novelty, community_fit, seasonality, \
         origin, ideas, impressions FROM weights_history ORDER BY effective_from",
    )
    .fetch_all(&s.pool)
    .await?;
    let history: Vec<Value> = rows
        .iter()
        .map(|r| {
            let f = |k: &str| r.try_get::<f64, _>(k).unwrap_or_default();
            json!({
                "effective_from": r.try_get::<chrono::DateTime<chrono::Utc>, _>("effective_from")
                    .map(|t| t.to_rfc3339()).ok(),
                "freshness": f("freshness"), "engagement": f("engagement"),
                "novelty": f("novelty"), "community_fit": f("community_fit"),
                "seasonality": f("seasonality"),
                "origin": r.try_get::<String, _>("origin").unwrap_or_default(),
                "ideas": r.try_get::<i64, _>("ideas").unwrap_or_default(),
                "impressions": r.try_get::<i64, _>("impressions").unwrap_or_default(),
            })
        })
        .collect();
    let configured = s.weights.normalized();
    let current = history.last().cloned().unwrap_or_else(|| json!(configured));
    Ok(Json(
        json!({"current": current, "configured": configured, "history": history}),
    ))
}

/// How classification feedback moved the classifier's anchors, oldest first.
async fn anchors(State(s): State<Shared>) -> ApiResult<Json<Value>> {
    let rows = sqlx::query(
        "SELECT row_to_json(a)::text AS row FROM \
         (SELECT * FROM anchors_history ORDER BY effective_from, anchor) a",
    )
    .fetch_all(&s.pool)
    .await?;
    let history: Vec<Value> = rows
        .iter()
        .filter_map(|r| r.try_get::<String, _>("row").ok())
        .filter_map(|t| serde_json::from_str(&t).ok())
        .collect();
    Ok(Json(json!({ "history": history })))
}

/// The latest A/B result per idea, marketplace and treatment, newest first.
async fn ab_results(
    State(s): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let limit = limit(&q, 50, s.max_limit)?;
    // Present means a UUID: an empty one is refused like any other non-UUID.
    let idea = q.get("idea_id");
    if let Some(id) = idea {
        if uuid::Uuid::parse_str(id).is_err() {
            return Err(ApiError::invalid("idea_id", "idea_id must be an idea UUID"));
        }
    }
    let rows = sqlx::query(
        "SELECT row_to_json(r)::text AS row FROM ( \
           SELECT DISTINCT ON (a.idea_id, a.marketplace, a.treatment) a.*, i.title \
           FROM ab_results a LEFT JOIN ideas i ON i.id = a.idea_id \
           WHERE ($1::text IS NULL OR a.idea_id = $1::uuid) \
           ORDER BY a.idea_id, a.marketplace, a.treatment, a.window_end DESC) r \
         ORDER BY r.window_end DESC, r.p_value, r.idea_id LIMIT $2",
    )
    .bind(idea)
    .bind(limit as i64)
    .fetch_all(&s.pool)
    .await?;
    let results: Vec<Value> = rows
        .iter()
        .filter_map(|r| r.try_get::<String, _>("row").ok())
        .filter_map(|t| serde_json::from_str(&t).ok())
        .collect();
    Ok(Json(json!({ "results": results })))
}

/// Server-sent events: one `epoch` event per committed epoch.
async fn stream(State(s): State<Shared>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let events = BroadcastStream::new(s.feed.subscribe()).map(|m| {
        let (name, data) = feed_event(m);
        Ok(Event::default().event(name).data(data))
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(10)))
}

/// The SSE event (name, data) for what the feed gave a client. A client too
/// slow for the feed is told how many epochs it missed (the views are whole
/// either way: it reads them again), not left to guess.
fn feed_event(m: Result<EpochCommitted, BroadcastStreamRecvError>) -> (&'static str, String) {
    match m {
        Ok(epoch) => ("epoch", serde_json::to_string(&epoch).unwrap_or_default()),
        Err(BroadcastStreamRecvError::Lagged(missed)) => {
            ("lagged", json!({ "missed": missed }).to_string())
        }
    }
}

async fn openapi(State(s): State<Shared>) -> Json<Value> {
    Json(openapi::document(openapi::Bounds {
        max_limit: s.max_limit,
        max_query_chars: s.max_query_chars,
    }))
}

async fn live() -> Json<Value> {
    Json(json!({"status": "live"}))
}

async fn ready(State(s): State<Shared>) -> Response {
    let pg = sqlx::query("SELECT 1").execute(&s.pool).await.is_ok();
    let redis = match s.redis.get_multiplexed_async_connection().await {
        Ok(mut c) => redis::cmd("PING")
            .query_async::<String>(&mut c)
            .await
            .is_ok(),
        Err(_) => false,
    };
    let model = s.embedder.lock().is_ok();
    let (sources, detail) = match &s.sources {
        Some(status) => status.ready(),
        None => (true, json!({})),
    };
    let body = json!({"postgres": pg, "redis": redis, "model": model, "sources": detail});
    if pg && redis && model && sources {
        (
            StatusCode::OK,
            Json(json!({"status": "ready", "checks": body})),
        )
            .into_response()
    } else {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "not_ready",
            message: "a dependency is not ready".into(),
            details: body,
        }
        .into_response()
    }
}

async fn metrics(State(s): State<Shared>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}

async fn dashboard() -> Html<&'static str> {
    Html(include_str!("dashboard.html"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(n: i64) -> EpochCommitted {
        EpochCommitted {
            epoch: n,
            changes: 1,
            ideas_changed: Vec::new(),
            top_moves: Vec::new(),
            signals: Vec::new(),
        }
    }

    #[tokio::test]
    async fn a_client_behind_the_feed_is_told_what_it_missed() {
        let (feed, rx) = broadcast::channel(2);
        for n in 0..5 {
            feed.send(epoch(n)).unwrap();
        }
        drop(feed);
        let got: Vec<(&str, Value)> = BroadcastStream::new(rx)
            .map(|m| {
                let (name, data) = feed_event(m);
                (name, serde_json::from_str(&data).unwrap())
            })
            .collect()
            .await;
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0], ("lagged", json!({"missed": 3})));
        assert_eq!((got[1].0, &got[1].1["epoch"]), ("epoch", &json!(3)));
        assert_eq!((got[2].0, &got[2].1["epoch"]), ("epoch", &json!(4)));
    }
}
