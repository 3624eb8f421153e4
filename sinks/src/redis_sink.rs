//! The Redis sink. Keys follow the seeds' `{namespace}:{entity}:{id}`:
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `{ns}:idea:{id}` | hash | content, category, anchor_class, status, counts, score and the five factors |
//! | `{ns}:top:{category}` | sorted set | the top K active ideas of the category by score (only K members) |
//! | `{ns}:topics:hot` | sorted set | topic → signals in the window, all categories (TTL 48 h) |
//! | `{ns}:distinct:{source}:{window_start}` | hash | HyperLogLog estimates: signals, ideas, communities |
//! | `{ns}:progress` | string | the last committed epoch (seconds) |
//! | `{ns}:epochs` | pub/sub channel | one JSON message per committed epoch |
//! | `{ns}:events` | stream | an `idea.scored` envelope (seed 004 §2.3.2) whenever an epoch moves an idea into or out of its category's top K (capped at about 100,000 entries) |
//! | `{ns}:ab:{idea}` | hash | `{marketplace}:{treatment}` → the latest 7-day A/B result (JSON) |
//! | `{ns}:allocation:{idea}` | hash | `{marketplace}:{variant}` → the latest day's promotion budget |
//! | `{ns}:weights` | string | the scoring weights in force (JSON, with `effective_from`) |
//!
//! The feedback windows live in Postgres (`feedback_windows`) only.
//!
//! Each epoch is one pipelined MULTI/EXEC: a reader never sees half of it.

use std::collections::{BTreeMap, HashMap};

use ideaflow_operators::top_k::{TopK, TopKDelta};
use ideaflow_operators::views::{Change, ViewKey, ViewRow};
use redis::Commands;

/// The hot-topics set expires this long after its last update (seed: ≤ 48 h).
pub const HOT_TOPICS_TTL_SECS: i64 = 48 * 3600;

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("cannot connect to Redis at {url}: {source}; is it running? scripts/setup.sh starts it (or set IDEAFLOW_REDIS_URL)")]
    Connect {
        url: String,
        source: redis::RedisError,
    },
    #[error("Redis write failed: {0}")]
    Write(#[from] redis::RedisError),
}

pub struct RedisSink {
    conn: redis::Connection,
    namespace: String,
    top: TopK,
    /// topic → count per category, to sum a topic over categories.
    topics: BTreeMap<String, BTreeMap<String, u64>>,
    /// The newest window written per hash field: a revised older window
    /// (late feedback) must not replace a newer one.
    newest: HashMap<String, i64>,
}

/// Entries the `{ns}:events` stream keeps (approximately: MAXLEN ~).
pub const EVENTS_MAXLEN: usize = 100_000;

impl RedisSink {
    pub fn connect(url: &str, namespace: &str, top_k: usize) -> Result<Self, RedisError> {
        let connect = |source| RedisError::Connect {
            url: url.to_owned(),
            source,
        };
        let client = redis::Client::open(url).map_err(connect)?;
        let conn = client.get_connection().map_err(connect)?;
        Ok(RedisSink {
            conn,
            namespace: namespace.to_owned(),
            top: TopK::new(top_k),
            topics: BTreeMap::new(),
            newest: HashMap::new(),
        })
    }

    pub fn key(&self, parts: &[&str]) -> String {
        let mut k = self.namespace.clone();
        for p in parts {
            k.push(':');
            k.push_str(p);
        }
        k
    }

    /// Deletes every key of the namespace (a replay starts from nothing).
    pub fn clear(&mut self) -> Result<(), RedisError> {
        let pattern = format!("{}:*", self.namespace);
        let keys: Vec<String> = self.conn.scan_match::<_, String>(&pattern)?.collect();
        for chunk in keys.chunks(500) {
            let _: () = self.conn.del(chunk)?;
        }
        Ok(())
    }

    /// The top-K moves of the last epoch written (for `idea.scored` events).
    pub fn write_epoch(
        &mut self,
        epoch_end: i64,
        changes: &[Change],
    ) -> Result<BTreeMap<String, TopKDelta>, RedisError> {
        let moves = self.top.apply(changes);
        let mut pipe = redis::pipe();
        pipe.atomic();
        let mut topics_changed = false;
        for c in changes {
            match (&c.key, &c.row) {
                (_, Some(ViewRow::Idea(i))) => {
                    let status = serde_json::to_value(i.status)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default();
                    pipe.hset_multiple(
                        self.key(&["idea", &i.id]),
                        &[
                            ("content", i.content.clone()),
                            (
                                "category",
                                i.category.as_deref().unwrap_or_default().to_owned(),
                            ),
                            ("anchor_class", i.anchor_class.clone().unwrap_or_default()),
                            ("community", i.community.clone().unwrap_or_default()),
                            ("status", status),
                            ("signal_count", i.signal_count.to_string()),
                            ("first_seen", i.first_seen.to_rfc3339()),
                            ("last_seen", i.last_seen.to_rfc3339()),
                        ],
                    )
                    .ignore();
                }
                (_, Some(ViewRow::Score(s))) => {
                    let f = &s.factors;
                    pipe.hset_multiple(
                        self.key(&["idea", &s.idea_id]),
                        &[
                            ("score", s.score.to_string()),
                            ("freshness", f.freshness.to_string()),
                            ("engagement", f.engagement.to_string()),
                            ("novelty", f.novelty.to_string()),
                            ("community_fit", f.community_fit.to_string()),
                            ("seasonality", f.seasonality.to_string()),
                            ("scored_at", s.scored_at.to_rfc3339()),
                        ],
                    )
                    .ignore();
                }
                (ViewKey::Idea(id), None) => {
                    pipe.del(self.key(&["idea", id])).ignore();
                }
                (_, Some(ViewRow::TopicCount(t))) => {
                    self.topics
                        .entry(t.topic.clone())
                        .or_default()
                        .insert(t.category.clone(), t.count);
                    topics_changed = true;
                }
                (ViewKey::TopicCount(cat, topic), None) => {
                    if let Some(m) = self.topics.get_mut(topic) {
                        m.remove(cat);
                    }
                    topics_changed = true;
                }
                (_, Some(ViewRow::AbResult(r))) => {
                    let field = format!("{}:{}", r.marketplace, r.treatment);
                    let key = self.key(&["ab", &r.idea_id]);
                    if self.is_newest(&key, &field, r.window_end.timestamp()) {
                        let json = serde_json::to_string(r).unwrap_or_default();
                        pipe.hset(key, field, json).ignore();
                    }
                }
                (_, Some(ViewRow::Allocation(a))) => {
                    let field = format!("{}:{}", a.marketplace, a.variant);
                    let key = self.key(&["allocation", &a.idea_id]);
                    if self.is_newest(&key, &field, a.day_start.timestamp()) {
                        pipe.hset(key, field, a.budget).ignore();
                    }
                }
                (_, Some(ViewRow::Weights(w))) => {
                    let key = self.key(&["weights"]);
                    if self.is_newest(&key, "", w.effective_from.timestamp()) {
                        let json = serde_json::to_string(w).unwrap_or_default();
                        pipe.set(key, json).ignore();
                    }
                }
                (_, Some(ViewRow::DistinctCount(d))) => {
                    let start = d.window_start.timestamp().to_string();
                    pipe.hset_multiple(
                        self.key(&["distinct", d.source.as_str(), &start]),
                        &[
                            ("signals", d.signals),
                            ("ideas", d.ideas),
                            ("communities", d.communities),
                        ],
                    )
                    .ignore();
                }
                _ => {}
            }
        }
        self.append_scored_events(&mut pipe, epoch_end, &moves);
        for (category, delta) in &moves {
            let key = self.key(&["top", category]);
            pipe.del(&key).ignore();
            if !delta.top.is_empty() {
                let members: Vec<(f64, &str)> =
                    delta.top.iter().map(|(id, s)| (*s, id.as_str())).collect();
                pipe.zadd_multiple(&key, &members).ignore();
            }
        }
        if topics_changed {
            let key = self.key(&["topics", "hot"]);
            pipe.del(&key).ignore();
            let members: Vec<(u64, &str)> = self
                .topics
                .iter()
                .map(|(t, by_cat)| (by_cat.values().sum::<u64>(), t.as_str()))
                .filter(|(n, _)| *n > 0)
                .collect();
            if !members.is_empty() {
                pipe.zadd_multiple(&key, &members).ignore();
                pipe.expire(&key, HOT_TOPICS_TTL_SECS).ignore();
            }
        }
        pipe.set(self.key(&["progress"]), epoch_end).ignore();
        let message = serde_json::json!({
            "epoch": epoch_end,
            "changes": changes.len(),
            "top_moves": moves.len(),
        })
        .to_string();
        pipe.publish(self.key(&["epochs"]), message).ignore();
        let _: () = pipe.query(&mut self.conn)?;
        Ok(moves)
    }

    fn is_newest(&mut self, key: &str, field: &str, at: i64) -> bool {
        let slot = self
            .newest
            .entry(format!("{key}\u{0}{field}"))
            .or_insert(i64::MIN);
        if at >= *slot {
            *slot = at;
            true
        } else {
            false
        }
    }

    /// One `idea.scored` envelope per idea entering or leaving a top K, in
    /// category and id order; the event id is derived from the epoch, so a
    /// replay appends the same events.
    fn append_scored_events(
        &self,
        pipe: &mut redis::Pipeline,
        epoch_end: i64,
        moves: &BTreeMap<String, TopKDelta>,
    ) {
        let stream = self.key(&["events"]);
        let timestamp = chrono::DateTime::from_timestamp(epoch_end, 0)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        for (category, delta) in moves {
            let moved = delta
                .entered
                .iter()
                .map(|id| (id, "entered"))
                .chain(delta.left.iter().map(|id| (id, "left")));
            for (idea_id, movement) in moved {
                let rank = delta.top.iter().position(|(id, _)| id == idea_id);
                let score = rank.map(|r| delta.top[r].1);
                let envelope = serde_json::json!({
                    "eventType": "idea.scored",
                    "eventId": format!("scored-{epoch_end}-{category}-{idea_id}-{movement}"),
                    "timestamp": timestamp,
                    "source": "ideaflow",
                    "version": "1.0",
                    "data": {
                        "ideaId": idea_id,
                        "category": category,
                        "movement": movement,
                        "rank": rank.map(|r| r + 1),
                        "score": score,
                        "topK": self.top.k(),
                    },
                    "correlationId": idea_id,
                });
                pipe.cmd("XADD")
                    .arg(&stream)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(EVENTS_MAXLEN)
                    .arg("*")
                    .arg("event")
                    .arg(envelope.to_string())
                    .ignore();
            }
        }
    }

    pub fn top_k(&self) -> &TopK {
        &self.top
    }

    pub fn connection(&mut self) -> &mut redis::Connection {
        &mut self.conn
    }
}
