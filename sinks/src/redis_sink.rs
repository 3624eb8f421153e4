//! The Redis sink. Keys follow the seeds' `{namespace}:{entity}:{id}`:
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `{ns}:idea:{id}` | hash | content, category, anchor_class, status, counts, score and the five factors |
//! | `{ns}:top:{category}` | sorted set | the top K active ideas of the category by score (only K members) |
//! | `{ns}:topics:hot` | sorted set | topic → signals in the window, all categories (TTL 48 h) |
//! | `{ns}:distinct:{source}:{window_start}` | hash | HyperLogLog estimates: signals, ideas, communities |
//! | `{ns}:progress` | string | the last committed epoch (seconds); never moves backwards |
//! | `{ns}:positions` | string | JSON: each source's committed position per partition, as of `{ns}:progress` |
//! | `{ns}:epochs` | pub/sub channel | one JSON message per committed epoch |
//! | `{ns}:events` | stream | an `idea.scored` envelope (seed 004 §2.3.2) whenever an epoch moves an idea into or out of its category's top K (capped at about 100,000 entries) |
//! | `{ns}:ab:{idea}` | hash | `{marketplace}:{treatment}` → the latest 7-day A/B result (JSON) |
//! | `{ns}:allocation:{idea}` | hash | `{marketplace}:{variant}` → the latest day's promotion budget |
//! | `{ns}:weights` | string | the scoring weights in force (JSON, with `effective_from`) |
//!
//! The feedback windows live in Postgres (`feedback_windows`) only.
//!
//! Each write (one or more whole epochs) is one MULTI/EXEC, streamed to the
//! server as it is built (`redis_transaction`): a reader never sees part of
//! an epoch.

use std::collections::{BTreeMap, HashMap};

use ideaflow_operators::top_k::TopKDelta;
use ideaflow_operators::views::{Change, ViewKey, ViewRow};
use redis::Commands;

use crate::redis_transaction::StreamedTransaction;

/// Sets `KEYS[1]` (progress) to `ARGV[1]` and `KEYS[2]` (positions) to
/// `ARGV[2]` unless the progress already stands later.
const SET_PROGRESS: &str = "local cur = tonumber(redis.call('GET', KEYS[1])) \
if cur == nil or cur <= tonumber(ARGV[1]) then \
redis.call('SET', KEYS[1], ARGV[1]) \
if ARGV[2] ~= '' then redis.call('SET', KEYS[2], ARGV[2]) end \
return 1 end return 0";

/// The hot-topics set expires this long after its last update (seed: ≤ 48 h).
pub const HOT_TOPICS_TTL_SECS: i64 = 48 * 3600;

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("cannot connect to Redis at {url}: {source}; is it running? scripts/setup.sh starts it (or set IDEAFLOW_REDIS_URL)")]
    Connect {
        url: String,
        source: redis::RedisError,
    },
    #[error("Redis write failed: {0}; check that Redis is up and that nothing else writes keys under this namespace (or choose another with --namespace)")]
    Write(#[from] redis::RedisError),
}

impl RedisError {
    /// Whether trying again may succeed: the server or the connection went
    /// away. Not an error the server answered (a key of another type under
    /// the namespace, say): that one would be answered again.
    pub fn is_transient(&self) -> bool {
        let e = match self {
            RedisError::Connect { source, .. } => source,
            RedisError::Write(e) => e,
        };
        e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout()
    }
}

pub struct RedisSink {
    /// What a lost connection is opened again from ([`RedisSink::reconnect`]).
    client: redis::Client,
    conn: redis::Connection,
    namespace: String,
    /// K of the `{ns}:top:{category}` sets (for the events' `topK`).
    top_k: usize,
    /// topic → count per category, to sum a topic over categories.
    topics: BTreeMap<String, BTreeMap<String, u64>>,
    /// The sources' positions to record with the next write.
    positions: Option<String>,
    /// The newest window written per hash field: a revised older window
    /// (late feedback) must not replace a newer one.
    newest: HashMap<String, i64>,
    /// After a restart: the `idea.scored` events of epochs ending by this
    /// are in `{ns}:events` already (appended before the restart), and are
    /// not appended again when those epochs are written again.
    events_through: Option<i64>,
}

/// What a [`RedisSink`] keeps in memory of its earlier writes: the topic
/// counts the hot-topics set sums, and the newest window written per A/B
/// result, allocation and the weights (an older revision never replaces a
/// newer one). A run resumed from a checkpoint rebuilds it from Postgres.
#[derive(Debug, Default)]
pub struct Remembered {
    /// (category, topic, count).
    pub topic_counts: Vec<(String, String, u64)>,
    /// (idea, marketplace, treatment, newest window end).
    pub ab: Vec<(String, String, String, i64)>,
    /// (idea, marketplace, variant, newest day start).
    pub allocations: Vec<(String, String, String, i64)>,
    pub weights_from: Option<i64>,
}

/// One epoch's top-K moves, by category.
#[derive(Clone, Debug, Default)]
pub struct EpochMoves {
    pub epoch_end: i64,
    pub moves: BTreeMap<String, TopKDelta>,
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
        let conn = open_connection(&client).map_err(connect)?;
        Ok(RedisSink {
            client,
            conn,
            namespace: namespace.to_owned(),
            top_k,
            topics: BTreeMap::new(),
            newest: HashMap::new(),
            positions: None,
            events_through: None,
        })
    }

    /// Takes back what it remembered of its earlier writes (see [`Remembered`]).
    pub fn remember(&mut self, r: Remembered) -> Result<(), RedisError> {
        self.events_through = self.committed_epoch()?;
        self.topics.clear();
        self.newest.clear();
        for (category, topic, count) in r.topic_counts {
            self.topics
                .entry(topic)
                .or_default()
                .insert(category, count);
        }
        let ns = self.namespace.clone();
        for (idea, marketplace, treatment, at) in r.ab {
            let field = format!("{marketplace}:{treatment}");
            is_newest(&mut self.newest, &key(&ns, &["ab", &idea]), &field, at);
        }
        for (idea, marketplace, variant, at) in r.allocations {
            let field = format!("{marketplace}:{variant}");
            is_newest(
                &mut self.newest,
                &key(&ns, &["allocation", &idea]),
                &field,
                at,
            );
        }
        if let Some(at) = r.weights_from {
            is_newest(&mut self.newest, &key(&ns, &["weights"]), "", at);
        }
        Ok(())
    }

    /// The sources' committed positions (JSON) to record with the next write.
    pub fn set_positions(&mut self, positions: Option<String>) {
        self.positions = positions;
    }

    /// The namespace every key starts with.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn key(&self, parts: &[&str]) -> String {
        key(&self.namespace, parts)
    }

    /// Deletes every key of the namespace (a replay starts from nothing),
    /// and forgets what this sink wrote there. Streams other than the
    /// sink's own `{ns}:events` are kept: they are buses (a Redis stream
    /// source, the webhook's bus) that happen to share the prefix, such as
    /// the live config's `ideaflow:signals`, and a start that deleted them
    /// would lose every record not yet read.
    pub fn clear(&mut self) -> Result<(), RedisError> {
        self.topics.clear();
        self.newest.clear();
        self.events_through = None;
        let pattern = format!("{}:*", self.namespace);
        let events = self.key(&["events"]);
        let buses: std::collections::HashSet<String> = self
            .streams_matching(&pattern)?
            .into_iter()
            .filter(|k| *k != events)
            .collect();
        let keys: Vec<String> = self
            .conn
            .scan_match::<_, String>(&pattern)?
            .filter(|k| !buses.contains(k))
            .collect();
        for chunk in keys.chunks(500) {
            let _: () = self.conn.del(chunk)?;
        }
        Ok(())
    }

    /// The stream keys matching `pattern` (`SCAN … TYPE stream`, Redis ≥ 6).
    fn streams_matching(&mut self, pattern: &str) -> Result<Vec<String>, RedisError> {
        let mut cursor: u64 = 0;
        let mut out = Vec::new();
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000)
                .arg("TYPE")
                .arg("stream")
                .query(&mut self.conn)?;
            out.extend(keys);
            if next == 0 {
                return Ok(out);
            }
            cursor = next;
        }
    }

    /// Writes the changes of one or more consecutive epochs (at most one per
    /// key; the last epoch ends at `epoch_end`) in one MULTI/EXEC. `moves`
    /// holds each of those epochs' top-K moves, in epoch order (see
    /// [`TopK::apply`](ideaflow_operators::top_k::TopK::apply)): every epoch's
    /// `idea.scored` events are appended, and each moved category's set
    /// becomes its latest top K.
    pub fn write_epoch(
        &mut self,
        epoch_end: i64,
        changes: &[Change],
        moves: &[EpochMoves],
    ) -> Result<(), RedisError> {
        let RedisSink {
            client: _,
            conn,
            namespace: ns,
            top_k,
            topics,
            newest,
            positions,
            events_through,
        } = self;
        let mut tx = StreamedTransaction::begin(conn)?;
        let mut topics_changed = false;
        let mut idea_key = key(ns, &["idea", ""]);
        let idea_prefix = idea_key.len();
        let mut scored_at: (Option<i64>, String) = (None, String::new());
        // Reused for the rows of every tick: a command per live idea.
        let mut score_cmd = redis::Cmd::new();
        for c in changes {
            match (&c.key, &c.row) {
                (_, Some(ViewRow::Idea(i))) => {
                    let status = serde_json::to_value(i.status)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default();
                    tx.add(
                        redis::cmd("HSET")
                            .arg(key(ns, &["idea", i.id.write(&mut [0; 36])]))
                            .arg(&[
                                ("content", i.content.as_str()),
                                ("category", i.category.as_deref().unwrap_or_default()),
                                (
                                    "anchor_class",
                                    i.anchor_class.as_deref().unwrap_or_default(),
                                ),
                                ("community", i.community.as_deref().unwrap_or_default()),
                                ("status", status.as_str()),
                                ("signal_count", i.signal_count.to_string().as_str()),
                                ("first_seen", i.first_seen.to_rfc3339().as_str()),
                                ("last_seen", i.last_seen.to_rfc3339().as_str()),
                            ]),
                    )?;
                }
                (_, Some(ViewRow::Score(s))) => {
                    // Ticks re-score every live idea: this is most of the
                    // rows. Numbers go straight into the command (shortest
                    // round-trip form), the epoch's time is formatted once.
                    let f = &s.factors;
                    let at = s.scored_at.timestamp_nanos_opt().unwrap_or_default();
                    if scored_at.0 != Some(at) {
                        scored_at = (Some(at), s.scored_at.to_rfc3339());
                    }
                    idea_key.truncate(idea_prefix);
                    idea_key.push_str(s.idea_id.write(&mut [0; 36]));
                    score_cmd.clear();
                    score_cmd
                        .arg("HSET")
                        .arg(&*idea_key)
                        .arg("score")
                        .arg(s.score)
                        .arg("freshness")
                        .arg(f.freshness)
                        .arg("engagement")
                        .arg(f.engagement)
                        .arg("novelty")
                        .arg(f.novelty)
                        .arg("community_fit")
                        .arg(f.community_fit)
                        .arg("seasonality")
                        .arg(f.seasonality)
                        .arg("scored_at")
                        .arg(&scored_at.1);
                    tx.add(&score_cmd)?;
                }
                (ViewKey::Idea(id), None) => {
                    tx.add(redis::cmd("DEL").arg(key(ns, &["idea", id.write(&mut [0; 36])])))?;
                }
                (_, Some(ViewRow::TopicCount(t))) => {
                    topics
                        .entry(t.topic.clone())
                        .or_default()
                        .insert(t.category.clone(), t.count);
                    topics_changed = true;
                }
                (ViewKey::TopicCount(key), None) => {
                    let (cat, topic) = &**key;
                    if let Some(m) = topics.get_mut(topic) {
                        m.remove(cat);
                    }
                    topics_changed = true;
                }
                (_, Some(ViewRow::AbResult(r))) => {
                    let field = format!("{}:{}", r.marketplace, r.treatment);
                    let key = key(ns, &["ab", &r.idea_id]);
                    if is_newest(newest, &key, &field, r.window_end.timestamp()) {
                        let json = serde_json::to_string(r).unwrap_or_default();
                        tx.add(redis::cmd("HSET").arg(key).arg(field).arg(json))?;
                    }
                }
                (_, Some(ViewRow::Allocation(a))) => {
                    let field = format!("{}:{}", a.marketplace, a.variant);
                    let key = key(ns, &["allocation", &a.idea_id]);
                    if is_newest(newest, &key, &field, a.day_start.timestamp()) {
                        tx.add(redis::cmd("HSET").arg(key).arg(field).arg(a.budget))?;
                    }
                }
                (_, Some(ViewRow::Weights(w))) => {
                    let key = key(ns, &["weights"]);
                    if is_newest(newest, &key, "", w.effective_from.timestamp()) {
                        let json = serde_json::to_string(w).unwrap_or_default();
                        tx.add(redis::cmd("SET").arg(key).arg(json))?;
                    }
                }
                (_, Some(ViewRow::DistinctCount(d))) => {
                    let start = d.window_start.timestamp().to_string();
                    tx.add(
                        redis::cmd("HSET")
                            .arg(key(ns, &["distinct", d.source.as_str(), &start]))
                            .arg(&[
                                ("signals", d.signals),
                                ("ideas", d.ideas),
                                ("communities", d.communities),
                            ]),
                    )?;
                }
                _ => {}
            }
        }
        let mut latest: BTreeMap<&str, &TopKDelta> = BTreeMap::new();
        for epoch in moves {
            if events_through.is_none_or(|t| epoch.epoch_end > t) {
                append_scored_events(&mut tx, ns, *top_k, epoch.epoch_end, &epoch.moves)?;
            }
            latest.extend(epoch.moves.iter().map(|(c, d)| (c.as_str(), d)));
        }
        for (category, delta) in latest {
            let key = key(ns, &["top", category]);
            tx.add(redis::cmd("DEL").arg(&key))?;
            if !delta.top.is_empty() {
                let members: Vec<(f64, &str)> =
                    delta.top.iter().map(|(id, s)| (*s, id.as_str())).collect();
                tx.add(redis::cmd("ZADD").arg(&key).arg(&members))?;
            }
        }
        if topics_changed {
            let key = key(ns, &["topics", "hot"]);
            tx.add(redis::cmd("DEL").arg(&key))?;
            let members: Vec<(u64, &str)> = topics
                .iter()
                .map(|(t, by_cat)| (by_cat.values().sum::<u64>(), t.as_str()))
                .filter(|(n, _)| *n > 0)
                .collect();
            if !members.is_empty() {
                tx.add(redis::cmd("ZADD").arg(&key).arg(&members))?;
                tx.add(redis::cmd("EXPIRE").arg(&key).arg(HOT_TOPICS_TTL_SECS))?;
            }
        }
        // Guarded: a write from a process that fell behind (or a refill)
        // never moves the progress marker, or the positions, backwards.
        tx.add(
            redis::cmd("EVAL")
                .arg(SET_PROGRESS)
                .arg(2)
                .arg(key(ns, &["progress"]))
                .arg(key(ns, &["positions"]))
                .arg(epoch_end)
                .arg(positions.as_deref().unwrap_or("")),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Announces a committed epoch on `{ns}:epochs`. The materializer calls
    /// it once every sink has committed the epoch, so a subscriber that reads
    /// Postgres or Redis on the message finds the epoch there.
    pub fn announce(
        &mut self,
        epoch_end: i64,
        changes: usize,
        top_moves: usize,
    ) -> Result<(), RedisError> {
        let message = serde_json::json!({
            "epoch": epoch_end,
            "changes": changes,
            "top_moves": top_moves,
        })
        .to_string();
        let _: () = self.conn.publish(self.key(&["epochs"]), message)?;
        Ok(())
    }

    /// Opens a new connection in place of one a failed write left in an
    /// unknown state (the server went away, or a transaction broke off).
    pub fn reconnect(&mut self) -> Result<(), RedisError> {
        self.conn = open_connection(&self.client)?;
        Ok(())
    }

    /// The last epoch a write committed (`{ns}:progress`, set in the same
    /// MULTI/EXEC), if any: after a failed write, whether it landed anyway.
    pub fn committed_epoch(&mut self) -> Result<Option<i64>, RedisError> {
        let key = self.key(&["progress"]);
        Ok(self.conn.get(key)?)
    }

    /// K of the top sets.
    pub fn top_k(&self) -> usize {
        self.top_k
    }

    pub fn connection(&mut self) -> &mut redis::Connection {
        &mut self.conn
    }
}

/// A server that stops answering (up but stuck) fails a write after this
/// long instead of hanging the writer; the write is then tried again. Long
/// enough for the EXEC of the largest batch (a million changes take ~15 s).
const IO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

fn open_connection(client: &redis::Client) -> redis::RedisResult<redis::Connection> {
    let conn = client.get_connection()?;
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(conn)
}

/// `{namespace}:{part}:{part}...`
fn key(namespace: &str, parts: &[&str]) -> String {
    let mut k = namespace.to_owned();
    for p in parts {
        k.push(':');
        k.push_str(p);
    }
    k
}

/// Whether `at` is the newest time written to `key`'s `field` (and records
/// it): a revised older window (late feedback) must not replace a newer one.
fn is_newest(newest: &mut HashMap<String, i64>, key: &str, field: &str, at: i64) -> bool {
    let slot = newest
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
    tx: &mut StreamedTransaction,
    ns: &str,
    top_k: usize,
    epoch_end: i64,
    moves: &BTreeMap<String, TopKDelta>,
) -> redis::RedisResult<()> {
    let stream = key(ns, &["events"]);
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
                    "topK": top_k,
                },
                "correlationId": idea_id,
            });
            tx.add(
                redis::cmd("XADD")
                    .arg(&stream)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(EVENTS_MAXLEN)
                    .arg("*")
                    .arg("event")
                    .arg(envelope.to_string()),
            )?;
        }
    }
    Ok(())
}
