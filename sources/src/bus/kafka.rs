//! A Kafka topic, every partition, read by partition and offset with
//! `rskafka` (a pure-Rust client: no librdkafka to build or ship); the
//! consumer group's offsets are committed after commit ([`GroupOffsets`]).
//!
//! Positions are ours: each partition is read from the position the sinks
//! committed (the log start until checkpoints exist), never from where a
//! broker-side group last was. A position below a partition's log start
//! (the records were deleted by retention) is an error that names it, never
//! a silent jump. Lag and "caught up" come from fetch answers' high
//! watermarks, which every broker we tried reports correctly (a
//! `ListOffsets(latest)` answer is not always right).

use std::collections::BTreeMap;
use std::time::Duration;

use rskafka::client::error::{Error as KafkaError, ProtocolError};
use rskafka::client::partition::{Compression, OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::Record;
use rskafka::BackoffConfig;
use tokio::runtime::Runtime;

use super::kafka_group::GroupOffsets;
use super::{Append, BusError, BusPosition, BusRecord, Polled};
use crate::input::KafkaSpec;

/// Most bytes one fetch of one partition brings.
const FETCH_MAX_BYTES: i32 = 4 << 20;
/// How long a request may take before the broker counts as unreachable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

struct Partition {
    client: PartitionClient,
    /// The next offset to read.
    next: i64,
    /// The high watermark of the last fetch answer.
    high: Option<i64>,
}

pub struct KafkaSource {
    spec: KafkaSpec,
    name: String,
    runtime: Option<Runtime>,
    client: Option<Client>,
    partitions: BTreeMap<i32, Partition>,
    /// Where each partition is read from, once positioned (kept across reconnects).
    next: BTreeMap<i32, i64>,
    /// Set from a checkpoint: the offset after the last record committed.
    start: BTreeMap<i32, i64>,
    /// The consumer group's offsets on the broker (monitoring only).
    group: GroupOffsets,
    /// The group's committed offsets when this process started: records
    /// below them were delivered (and committed) before.
    delivered_before: Option<BTreeMap<i32, i64>>,
    /// Whether the last group commit failed (warned once until it works).
    group_failing: bool,
}

fn unreachable(name: &str, e: impl std::fmt::Display) -> BusError {
    BusError::Unreachable {
        source_name: name.to_owned(),
        message: format!("{e}; is the broker up and the URL right?"),
    }
}

fn runtime() -> std::io::Result<Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

async fn connect_client(brokers: Vec<String>) -> Result<Client, KafkaError> {
    ClientBuilder::new(brokers)
        .client_id("ideaflow")
        .backoff_config(BackoffConfig {
            deadline: Some(REQUEST_TIMEOUT),
            ..BackoffConfig::default()
        })
        .build()
        .await
}

impl KafkaSource {
    pub fn new(spec: KafkaSpec, name: String) -> Self {
        KafkaSource {
            group: GroupOffsets::new(spec.brokers.clone(), spec.group.clone()),
            spec,
            name,
            runtime: None,
            client: None,
            partitions: BTreeMap::new(),
            next: BTreeMap::new(),
            start: BTreeMap::new(),
            delivered_before: None,
            group_failing: false,
        }
    }

    fn block_on<F: std::future::Future>(&mut self, f: F) -> Result<F::Output, BusError> {
        if self.runtime.is_none() {
            self.runtime = Some(runtime().map_err(|e| unreachable(&self.name, e))?);
        }
        block(self.runtime.as_ref().expect("made above"), &self.name, f)
    }
}

impl super::Bus for KafkaSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn connect(&mut self) -> Result<Vec<u32>, BusError> {
        let name = self.name.clone();
        let brokers = self.spec.brokers.clone();
        let client = self
            .block_on(connect_client(brokers))?
            .map_err(|e| unreachable(&name, e))?;
        let topics = self
            .block_on(client.list_topics())?
            .map_err(|e| unreachable(&name, e))?;
        let Some(topic) = topics.into_iter().find(|t| t.name == self.spec.topic) else {
            return Err(unreachable(
                &name,
                format!("topic {:?} does not exist (yet)", self.spec.topic),
            ));
        };
        self.partitions.clear();
        for p in topic.partitions {
            let topic_name = self.spec.topic.clone();
            let pc = self
                .block_on(client.partition_client(topic_name, p, UnknownTopicHandling::Error))?
                .map_err(|e| unreachable(&name, e))?;
            let log_start = self
                .block_on(pc.get_offset(OffsetAt::Earliest))?
                .map_err(|e| unreachable(&name, e))?;
            let next = match (self.next.get(&p), self.start.get(&p)) {
                (Some(n), _) => *n,
                (None, Some(s)) => *s,
                (None, None) => log_start,
            };
            if next < log_start {
                return Err(BusError::Fatal {
                    source_name: name,
                    message: format!(
                        "partition {p} is to be read from offset {next}, but its log starts at {log_start}: \
                         the records in between were deleted (retention) before they were committed; \
                         nothing was skipped silently: raise the topic's retention, then rebuild"
                    ),
                });
            }
            self.next.insert(p, next);
            self.partitions.insert(
                p,
                Partition {
                    client: pc,
                    next,
                    high: None,
                },
            );
        }
        self.client = Some(client);
        if self.delivered_before.is_none() {
            let ids: Vec<i32> = self.partitions.keys().copied().collect();
            let topic = self.spec.topic.clone();
            let rt = self.runtime.as_ref().expect("made by block_on");
            let fetched = block(rt, &name, self.group.fetch(&topic, &ids))?;
            self.delivered_before = Some(fetched.unwrap_or_else(|e| {
                tracing::warn!(source = %name, error = %e, "cannot read the consumer group's offsets; redeliveries are not counted");
                BTreeMap::new()
            }));
        }
        tracing::info!(source = %name, partitions = self.partitions.len(), from = ?self.next,
            group = %self.spec.group, committed_before = ?self.delivered_before,
            "reading the topic by partition and offset");
        Ok(self.partitions.keys().map(|p| *p as u32).collect())
    }

    fn poll(&mut self, max: usize, wait: Duration) -> Result<Polled, BusError> {
        let name = self.name.clone();
        let mut polled = Polled::default();
        let count = self.partitions.len().max(1) as u32;
        let wait_ms = (wait / count).as_millis().clamp(1, i32::MAX as u128) as i32;
        if self.runtime.is_none() {
            self.runtime = Some(runtime().map_err(|e| unreachable(&name, e))?);
        }
        let ids: Vec<i32> = self.partitions.keys().copied().collect();
        for p in ids {
            if polled.records.len() >= max {
                break;
            }
            let part = self.partitions.get(&p).expect("listed");
            let next = part.next;
            let rt = self.runtime.as_ref().expect("made above");
            let fetched = block(
                rt,
                &name,
                part.client.fetch_records(next, 1..FETCH_MAX_BYTES, wait_ms),
            )?;
            let (records, high) = match fetched {
                Ok(r) => r,
                Err(KafkaError::ServerError {
                    protocol_error: ProtocolError::OffsetOutOfRange,
                    ..
                }) => {
                    return Err(BusError::Fatal {
                        source_name: name,
                        message: format!(
                            "partition {p}: offset {next} is out of the log's range (deleted by retention or the topic was recreated); \
                             nothing was skipped silently: rebuild from the topic's beginning"
                        ),
                    })
                }
                Err(e) => return Err(unreachable(&name, e)),
            };
            let part = self.partitions.get_mut(&p).expect("listed");
            part.high = Some(high);
            if records.is_empty() {
                polled.empty.push(p as u32);
                continue;
            }
            for r in records {
                if r.offset < part.next {
                    continue; // a batch fetched from inside starts earlier
                }
                part.next = r.offset + 1;
                let redelivered = self
                    .delivered_before
                    .as_ref()
                    .and_then(|d| d.get(&p))
                    .is_some_and(|committed| r.offset < *committed);
                polled.records.push(BusRecord {
                    partition: p as u32,
                    position: BusPosition::Offset(r.offset),
                    payload: r.record.value,
                    redelivered,
                });
            }
            self.next.insert(p, part.next);
        }
        Ok(polled)
    }

    /// Commits the group's offsets past the acknowledged records: for
    /// monitoring (the usual Kafka tools show the group's lag); our
    /// positions, in the sinks' progress rows, are what restarts use, so a
    /// failure here is logged and reading goes on.
    fn ack(&mut self, done: &[(u32, BusPosition)]) -> Result<(), BusError> {
        let mut next: BTreeMap<i32, i64> = BTreeMap::new();
        for (p, pos) in done {
            if let BusPosition::Offset(o) = pos {
                let e = next.entry(*p as i32).or_insert(o + 1);
                *e = (*e).max(o + 1);
            }
        }
        if next.is_empty() {
            return Ok(());
        }
        if self.runtime.is_none() {
            self.runtime = Some(runtime().map_err(|e| unreachable(&self.name, e))?);
        }
        let topic = self.spec.topic.clone();
        let rt = self.runtime.as_ref().expect("made above");
        match block(rt, &self.name, self.group.commit(&topic, &next))? {
            Ok(()) => self.group_failing = false,
            Err(e) => {
                if !self.group_failing {
                    tracing::warn!(source = %self.name, group = %self.spec.group, error = %e,
                        "committing the consumer group's offsets failed (monitoring only; reading goes on)");
                }
                self.group_failing = true;
            }
        }
        Ok(())
    }

    fn lag(&mut self) -> Vec<(u32, Option<u64>)> {
        self.partitions
            .iter()
            .map(|(p, part)| {
                (
                    *p as u32,
                    part.high.map(|h| h.saturating_sub(part.next).max(0) as u64),
                )
            })
            .collect()
    }

    fn resume_after(&mut self, positions: &BTreeMap<u32, BusPosition>) {
        self.start = super::next_offsets(positions)
            .map(|(p, o)| (p as i32, o))
            .collect();
    }

    fn describe_position(&self, partition: u32, position: BusPosition) -> String {
        format!("{}/{}/{}", self.spec.topic, partition, position)
    }
}

/// Runs `f` to its end, or fails as unreachable after a timeout.
fn block<F: std::future::Future>(rt: &Runtime, name: &str, f: F) -> Result<F::Output, BusError> {
    rt.block_on(async { tokio::time::timeout(REQUEST_TIMEOUT * 2, f).await })
        .map_err(|_| unreachable(name, "the broker did not answer in time"))
}

/// Produces records to a topic (the webhook endpoint's bus): each payload
/// to a partition chosen by a hash of it, acknowledged by the broker.
pub struct KafkaAppender {
    spec: KafkaSpec,
    name: String,
    runtime: Option<Runtime>,
    partitions: BTreeMap<i32, PartitionClient>,
}

impl KafkaAppender {
    pub fn new(spec: KafkaSpec, name: String) -> Self {
        KafkaAppender {
            spec,
            name,
            runtime: None,
            partitions: BTreeMap::new(),
        }
    }

    fn connect(&mut self) -> Result<(), BusError> {
        let name = self.name.clone();
        if self.runtime.is_none() {
            self.runtime = Some(runtime().map_err(|e| unreachable(&name, e))?);
        }
        let rt = self.runtime.as_ref().expect("made above");
        let (brokers, topic) = (self.spec.brokers.clone(), self.spec.topic.clone());
        let partitions = rt
            .block_on(async {
                tokio::time::timeout(REQUEST_TIMEOUT * 2, async {
                    let client = connect_client(brokers).await?;
                    let ids = client
                        .list_topics()
                        .await?
                        .into_iter()
                        .find(|t| t.name == topic)
                        .map(|t| t.partitions)
                        .unwrap_or_default();
                    let ids = if ids.is_empty() {
                        // Created with one partition when nobody made it yet.
                        client
                            .controller_client()?
                            .create_topic(topic.clone(), 1, 1, 5_000)
                            .await
                            .or_else(|e| match e {
                                KafkaError::ServerError {
                                    protocol_error: ProtocolError::TopicAlreadyExists,
                                    ..
                                } => Ok(()),
                                e => Err(e),
                            })?;
                        std::iter::once(0).collect()
                    } else {
                        ids
                    };
                    let mut out = BTreeMap::new();
                    for p in ids {
                        out.insert(
                            p,
                            client
                                .partition_client(topic.clone(), p, UnknownTopicHandling::Retry)
                                .await?,
                        );
                    }
                    Ok::<_, KafkaError>(out)
                })
                .await
            })
            .map_err(|_| unreachable(&name, "the broker did not answer in time"))?
            .map_err(|e| unreachable(&name, e))?;
        self.partitions = partitions;
        Ok(())
    }
}

impl Append for KafkaAppender {
    fn name(&self) -> &str {
        &self.name
    }

    fn append(&mut self, payloads: &[Vec<u8>]) -> Result<Vec<String>, BusError> {
        if self.partitions.is_empty() {
            self.connect()?;
        }
        let name = self.name.clone();
        let count = self.partitions.len() as u64;
        let mut by_partition: BTreeMap<i32, Vec<(usize, Record)>> = BTreeMap::new();
        for (i, p) in payloads.iter().enumerate() {
            let partition = (foldhash_of(p) % count) as usize;
            let id = *self.partitions.keys().nth(partition).expect("in range");
            by_partition.entry(id).or_default().push((
                i,
                Record {
                    key: None,
                    value: Some(p.clone()),
                    headers: BTreeMap::new(),
                    timestamp: rskafka::chrono::Utc::now(),
                },
            ));
        }
        let mut out = vec![String::new(); payloads.len()];
        let rt = self.runtime.as_ref().expect("connected");
        for (p, records) in by_partition {
            let client = &self.partitions[&p];
            let (index, records): (Vec<usize>, Vec<Record>) = records.into_iter().unzip();
            let offsets = rt
                .block_on(async {
                    tokio::time::timeout(
                        REQUEST_TIMEOUT,
                        client.produce(records, Compression::NoCompression),
                    )
                    .await
                })
                .map_err(|_| unreachable(&name, "the broker did not answer in time"))
                .and_then(|r| r.map_err(|e| unreachable(&name, e)));
            let offsets = match offsets {
                Ok(o) => o,
                Err(e) => {
                    self.partitions.clear();
                    return Err(e);
                }
            };
            for (i, o) in index.into_iter().zip(offsets) {
                out[i] = format!("{}/{}/{}", self.spec.topic, p, o);
            }
        }
        Ok(out)
    }
}

/// A stable hash of a payload, to spread appends over partitions.
fn foldhash_of(bytes: &[u8]) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = foldhash::fast::FixedState::with_seed(0xb05).build_hasher();
    h.write(bytes);
    h.finish()
}
