//! A Fluvio topic, every partition, read by partition and offset with the
//! `fluvio` client, built without TLS (`default-features = false`; a cluster
//! profile that asks for TLS is refused by the client, clearly) but with
//! `compress`: without it, compressed batches are decoded as if plain.
//!
//! Positions are ours, as with Kafka: each partition is read from an
//! absolute offset (the position the sinks committed, else the log start),
//! never from a consumer offset kept by the cluster. A position below a
//! partition's log start (deleted by retention) is an error that names it,
//! never a silent jump: the client's own retry, which would jump to the next
//! available offset and reconnect on its own schedule, is turned off.
//!
//! After commit, acknowledged offsets are stored under the consumer id
//! `ideaflow`, for monitoring only (`fluvio consumer list`). The client
//! commits "the last record a stream yielded", never a given offset, and its
//! stream holds a lock while a read is pending; so each commit is made on a
//! short-lived stream of its own, opened at the acknowledged record.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::Duration;

use ::fluvio::consumer::{
    BoxConsumerStream, ConsumerConfigExt, ConsumerRecord, ConsumerStream, OffsetManagementStrategy,
    RetryMode,
};
use ::fluvio::dataplane::link::ErrorCode;
use ::fluvio::metadata::partition::PartitionSpec;
use ::fluvio::metadata::topic::TopicSpec;
use ::fluvio::{
    Fluvio, FluvioConfig, Isolation, Offset, RecordKey, TopicProducerConfigBuilder,
    TopicProducerPool,
};
use futures_util::future::select_all;
use futures_util::StreamExt;
use tokio::runtime::Runtime;
use tokio::time::timeout;

use super::{Append, BusError, BusPosition, BusRecord, Polled};
use crate::input::FluvioSpec;

/// The consumer id acknowledged offsets are stored under.
const CONSUMER_ID: &str = "ideaflow";
/// How long a request may take before the cluster counts as unreachable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The client's errors (`anyhow`, `FluvioError`, `ErrorCode`), boxed.
type Failure = Box<dyn std::error::Error + Send + Sync>;

pub struct FluvioSource {
    spec: FluvioSpec,
    name: String,
    runtime: Option<Runtime>,
    client: Option<Fluvio>,
    streams: BTreeMap<u32, BoxConsumerStream>,
    /// Where each partition is read from, once positioned (kept across reconnects).
    next: BTreeMap<u32, i64>,
    /// Set from a checkpoint: the offset after the last record committed.
    start: BTreeMap<u32, i64>,
    /// Cleared when storing consumer offsets fails, until the next connect.
    commits: bool,
}

fn unreachable(name: &str, e: impl std::fmt::Display) -> BusError {
    BusError::Unreachable {
        source_name: name.to_owned(),
        message: format!("{e}; is the cluster up and the endpoint right?"),
    }
}

/// The runtime in `slot`, made on first use.
fn runtime<'a>(slot: &'a mut Option<Runtime>, name: &str) -> Result<&'a Runtime, BusError> {
    if slot.is_none() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        *slot = Some(rt.map_err(|e| unreachable(name, e))?);
    }
    Ok(slot.as_ref().expect("made above"))
}

/// Runs `f` to its end, or fails as unreachable after `limit`.
fn block<T>(
    rt: &Runtime,
    name: &str,
    limit: Duration,
    f: impl Future<Output = Result<T, Failure>>,
) -> Result<T, BusError> {
    // The timer is made inside the runtime: it needs its time driver.
    rt.block_on(async { timeout(limit, f).await })
        .map_err(|_| unreachable(name, "the cluster did not answer in time"))?
        .map_err(|e| unreachable(name, e))
}

/// Where a partition is read from: our position (`next`), else the
/// checkpoint's (`start`), else the log start (`None`).
fn start_offset(next: &BTreeMap<u32, i64>, start: &BTreeMap<u32, i64>, p: u32) -> Option<i64> {
    next.get(&p).or(start.get(&p)).copied()
}

/// The partition a partition object's name (`TOPIC-N`) names, in this topic.
fn partition_of(object: &str, topic: &str) -> Option<u32> {
    object.strip_prefix(topic)?.strip_prefix('-')?.parse().ok()
}

async fn connect_client(endpoint: &str) -> Result<Fluvio, Failure> {
    Ok(Fluvio::connect_with_config(&FluvioConfig::new(endpoint)).await?)
}

/// The topic's partition count, `None` when there is no such topic.
async fn partition_count(client: &Fluvio, topic: &str) -> Result<Option<u32>, Failure> {
    let admin = client.admin().await;
    let topics = admin.list::<TopicSpec, String>(vec![topic.into()]).await?;
    // Name filters match by substring: keep the exact name only.
    let found = topics.into_iter().find(|t| t.name == topic);
    Ok(found.map(|t| t.spec.partitions()))
}

/// A stream of one partition from `start` (the log start if `None`),
/// storing offsets under [`CONSUMER_ID`] if `commits`.
async fn open_stream(
    client: &Fluvio,
    topic: &str,
    partition: u32,
    start: Option<i64>,
    commits: bool,
) -> Result<BoxConsumerStream, Failure> {
    let mut config = ConsumerConfigExt::builder();
    config
        .topic(topic)
        .partition(partition)
        .offset_start(match start {
            Some(o) => Offset::absolute(o)?,
            None => Offset::beginning(),
        })
        // Replicated records only: an unreplicated one can vanish in a
        // leader change, and its offset then names another record.
        .isolation(Isolation::ReadCommitted)
        .retry_mode(RetryMode::Disabled);
    if commits {
        config
            .offset_consumer(CONSUMER_ID)
            .offset_strategy(OffsetManagementStrategy::Manual);
    }
    Ok(Box::pin(
        client.consumer_with_config(config.build()?).await?,
    ))
}

/// Why reading a partition stopped: an error, or `None` when it ended.
type Stop = (u32, Option<ErrorCode>);

/// Takes the records already there, a partition at a time in turn (so one
/// busy partition cannot starve the others), up to `max`.
async fn take_ready(
    streams: &mut BTreeMap<u32, BoxConsumerStream>,
    max: usize,
    out: &mut Vec<(u32, ConsumerRecord)>,
) -> Result<(), Stop> {
    let mut dry = BTreeSet::new();
    while out.len() < max && dry.len() < streams.len() {
        for (&p, stream) in streams.iter_mut() {
            if out.len() >= max || dry.contains(&p) {
                continue;
            }
            // A zero timeout still polls once: what is there comes, nothing waits.
            match timeout(Duration::ZERO, stream.next()).await {
                Err(_) => _ = dry.insert(p),
                Ok(Some(Ok(r))) => out.push((p, r)),
                Ok(Some(Err(e))) => return Err((p, Some(e))),
                Ok(None) => return Err((p, None)),
            }
        }
    }
    Ok(())
}

/// Reads what is there; if nothing is, waits up to `wait` for the first
/// record of any partition, then takes what came with it.
async fn read(
    streams: &mut BTreeMap<u32, BoxConsumerStream>,
    max: usize,
    wait: Duration,
) -> Result<Vec<(u32, ConsumerRecord)>, Stop> {
    let mut out = Vec::new();
    take_ready(streams, max, &mut out).await?;
    if out.is_empty() && !streams.is_empty() && !wait.is_zero() {
        let firsts = (streams.iter_mut())
            .map(|(&p, stream)| Box::pin(async move { (p, stream.next().await) }));
        // A stream keeps a read in progress when its `next()` is dropped: nothing is lost.
        if let Ok(((p, first), _, _)) = timeout(wait, select_all(firsts)).await {
            match first {
                Some(Ok(r)) => out.push((p, r)),
                Some(Err(e)) => return Err((p, Some(e))),
                None => return Err((p, None)),
            }
            take_ready(streams, max, &mut out).await?;
        }
    }
    Ok(out)
}

/// Stores `offset` as the last record of `partition` that [`CONSUMER_ID`]
/// processed: a stream opened at it yields it, then commits it.
async fn commit_offset(
    client: &Fluvio,
    topic: &str,
    partition: u32,
    offset: i64,
) -> Result<(), Failure> {
    let mut stream = open_stream(client, topic, partition, Some(offset), true).await?;
    match stream.next().await {
        Some(Ok(r)) if r.offset == offset => {}
        Some(Ok(r)) => return Err(format!("read offset {} for {offset}", r.offset).into()),
        Some(Err(e)) => return Err(e.into()),
        None => return Err("the stream ended".into()),
    }
    stream.offset_commit().await?;
    Ok(stream.offset_flush().await?)
}

impl FluvioSource {
    pub fn new(spec: FluvioSpec, name: String) -> Self {
        FluvioSource {
            spec,
            name,
            runtime: None,
            client: None,
            streams: BTreeMap::new(),
            next: BTreeMap::new(),
            start: BTreeMap::new(),
            commits: true,
        }
    }

    /// Reads each partition from these offsets instead of its log start.
    pub fn start_at(mut self, offsets: BTreeMap<u32, i64>) -> Self {
        self.start = offsets;
        self
    }

    /// The error for a partition whose read stopped (and a new connection).
    fn stopped(&mut self, (p, error): Stop) -> BusError {
        self.streams.clear();
        self.client = None;
        let fatal = |why: String| BusError::Fatal {
            source_name: self.name.clone(),
            message: format!("partition {p}: {why}; nothing was skipped silently"),
        };
        match (error, start_offset(&self.next, &self.start, p)) {
            (Some(ErrorCode::OffsetEvicted { offset, next_available }), Some(_)) => fatal(format!(
                "offset {offset} is to be read, but the log starts at {next_available}: the records \
                 in between were deleted (retention) before they were committed; raise the topic's \
                 retention, then rebuild"
            )),
            // The SPU's words for an offset past the log's end.
            (Some(ErrorCode::Other(e)), Some(at)) if e.contains("greater than leo") => fatal(format!(
                "offset {at} is past the log's end ({e}): the topic was recreated; \
                 rebuild from the topic's beginning"
            )),
            // Read from the log start, which moved on meanwhile: read from there.
            (Some(ErrorCode::OffsetEvicted { next_available, .. }), None) => {
                self.next.insert(p, next_available);
                let why = format!("partition {p}: the log start moved to {next_available}");
                unreachable(&self.name, why)
            }
            (Some(e), _) => unreachable(&self.name, format!("partition {p}: {e}")),
            (None, _) => unreachable(&self.name, format!("partition {p}: the stream ended")),
        }
    }
}

impl super::Bus for FluvioSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn connect(&mut self) -> Result<Vec<u32>, BusError> {
        self.streams.clear();
        self.client = None;
        self.commits = true;
        let (name, topic) = (self.name.as_str(), self.spec.topic.as_str());
        let rt = runtime(&mut self.runtime, name)?;
        let found = block(rt, name, REQUEST_TIMEOUT * 2, async {
            let client = connect_client(&self.spec.endpoint).await?;
            let count = partition_count(&client, topic).await?;
            Ok(count.map(|count| (client, count)))
        })?;
        let Some((client, count)) = found else {
            return Err(unreachable(
                name,
                format!("topic {topic:?} does not exist (yet)"),
            ));
        };
        let from: BTreeMap<u32, Option<i64>> = (0..count)
            .map(|p| (p, start_offset(&self.next, &self.start, p)))
            .collect();
        let streams = block(rt, name, REQUEST_TIMEOUT * 2, async {
            let mut streams = BTreeMap::new();
            for (&p, &start) in &from {
                streams.insert(p, open_stream(&client, topic, p, start, false).await?);
            }
            Ok(streams)
        })?;
        tracing::info!(source = %name, partitions = streams.len(), ?from,
            "reading the topic by partition and offset");
        self.streams = streams;
        self.client = Some(client);
        Ok(self.streams.keys().copied().collect())
    }

    fn poll(&mut self, max: usize, wait: Duration) -> Result<Polled, BusError> {
        let rt = runtime(&mut self.runtime, &self.name)?;
        let reading = read(&mut self.streams, max, wait);
        let records = match rt.block_on(async { timeout(wait + REQUEST_TIMEOUT, reading).await }) {
            Err(_) => {
                return Err(unreachable(
                    &self.name,
                    "the cluster did not answer in time",
                ))
            }
            // Records read before the stop are dropped unpositioned: they are read again.
            Ok(Err(stop)) => return Err(self.stopped(stop)),
            Ok(Ok(records)) => records,
        };
        let mut polled = Polled::default();
        for (p, r) in records {
            self.next.insert(p, r.offset + 1);
            polled.records.push(BusRecord {
                partition: p,
                position: BusPosition::Offset(r.offset),
                payload: Some(r.value().to_vec()),
                redelivered: false,
            });
        }
        let got: BTreeSet<u32> = polled.records.iter().map(|r| r.partition).collect();
        polled.empty = self
            .streams
            .keys()
            .filter(|p| !got.contains(p))
            .copied()
            .collect();
        Ok(polled)
    }

    fn ack(&mut self, done: &[(u32, BusPosition)]) -> Result<(), BusError> {
        // Our positions, in the sinks' progress rows, are what restarts use;
        // the consumer offsets are for monitoring only, so a failure to store
        // them is logged and stops storing them, nothing more.
        let (Some(client), Some(rt), true) = (&self.client, &self.runtime, self.commits) else {
            return Ok(());
        };
        let mut highest: BTreeMap<u32, i64> = BTreeMap::new();
        for &(p, position) in done {
            if let BusPosition::Offset(o) = position {
                let h = highest.entry(p).or_insert(o);
                *h = (*h).max(o);
            }
        }
        for (p, offset) in highest {
            let stored = commit_offset(client, &self.spec.topic, p, offset);
            if let Err(e) = block(rt, &self.name, REQUEST_TIMEOUT, stored) {
                tracing::warn!(source = %self.name, partition = p, offset, error = %e,
                    "could not store the consumer offset; not storing them until the next connect");
                self.commits = false;
                break;
            }
        }
        Ok(())
    }

    fn lag(&mut self) -> Vec<(u32, Option<u64>)> {
        let (topic, name) = (self.spec.topic.as_str(), self.name.as_str());
        // High watermarks and log starts as the SPUs last reported them.
        let status = match (&self.client, runtime(&mut self.runtime, name)) {
            (Some(client), Ok(rt)) => block(rt, name, REQUEST_TIMEOUT, async {
                let admin = client.admin().await;
                Ok(admin
                    .list::<PartitionSpec, String>(vec![topic.into()])
                    .await?)
            })
            .unwrap_or_default(),
            _ => Vec::new(),
        };
        let ends: BTreeMap<u32, (i64, i64)> = (status.into_iter())
            .filter_map(|s| {
                let p = partition_of(&s.name, topic)?;
                Some((p, (s.status.leader.hw, s.status.base_offset)))
            })
            .collect();
        (self.streams.keys())
            .map(|&p| {
                let lag = ends.get(&p).map(|&(hw, log_start)| {
                    (hw - start_offset(&self.next, &self.start, p).unwrap_or(log_start)).max(0)
                        as u64
                });
                (p, lag)
            })
            .collect()
    }

    fn resume_after(&mut self, positions: &BTreeMap<u32, BusPosition>) {
        self.start = super::next_offsets(positions).collect();
    }

    fn describe_position(&self, partition: u32, position: BusPosition) -> String {
        format!("{}/{}/{}", self.spec.topic, partition, position)
    }
}

/// Produces records to a topic (the webhook endpoint's bus), spread over its
/// partitions by the client, acknowledged once replicated.
pub struct FluvioAppender {
    spec: FluvioSpec,
    name: String,
    runtime: Option<Runtime>,
    /// The client is kept with its producer: the producer uses its connections.
    producer: Option<(Fluvio, TopicProducerPool)>,
}

impl FluvioAppender {
    pub fn new(spec: FluvioSpec, name: String) -> Self {
        FluvioAppender {
            spec,
            name,
            runtime: None,
            producer: None,
        }
    }
}

impl Append for FluvioAppender {
    fn name(&self) -> &str {
        &self.name
    }

    fn append(&mut self, payloads: &[Vec<u8>]) -> Result<Vec<String>, BusError> {
        let (name, topic) = (self.name.as_str(), self.spec.topic.as_str());
        let rt = runtime(&mut self.runtime, name)?;
        if self.producer.is_none() {
            let made = block(rt, name, REQUEST_TIMEOUT * 2, async {
                let client = connect_client(&self.spec.endpoint).await?;
                if partition_count(&client, topic).await?.is_none() {
                    // Created with one partition when nobody made it yet; an
                    // error is most likely another creation racing ours.
                    let spec = TopicSpec::new_computed(1, 1, None);
                    let admin = client.admin().await;
                    if let Err(e) = admin.create(topic.into(), false, spec).await {
                        tracing::debug!(source = %name, error = %e, "creating the topic");
                    }
                }
                // Acknowledged once replicated, as reads with ReadCommitted see it.
                let config = (TopicProducerConfigBuilder::default())
                    .isolation(Isolation::ReadCommitted)
                    .build()?;
                let producer = client.topic_producer_with_config(topic, config).await?;
                Ok((client, producer))
            })?;
            self.producer = Some(made);
        }
        let (_, producer) = self.producer.as_ref().expect("made above");
        let sent = block(rt, name, REQUEST_TIMEOUT, async {
            let mut outputs = Vec::with_capacity(payloads.len());
            for p in payloads {
                outputs.push(producer.send(RecordKey::NULL, p.clone()).await?);
            }
            producer.flush().await?;
            let mut out = Vec::with_capacity(outputs.len());
            for o in outputs {
                let at = o.wait().await?;
                out.push(format!("{topic}/{}/{}", at.partition_id(), at.offset()));
            }
            Ok(out)
        });
        if sent.is_err() {
            self.producer = None; // a new connection next time
        }
        sent
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::super::Bus;
    use super::*;

    fn spec(endpoint: &str) -> FluvioSpec {
        FluvioSpec {
            endpoint: endpoint.into(),
            topic: "events".into(),
        }
    }

    #[test]
    fn positions_read_as_topic_partition_offset() {
        let s = FluvioSource::new(
            spec("127.0.0.1:9003"),
            "fluvio://127.0.0.1:9003/events".into(),
        );
        assert_eq!(
            s.describe_position(2, BusPosition::Offset(41)),
            "events/2/41"
        );
    }

    #[test]
    fn reads_from_our_position_then_the_checkpoint_then_the_log_start() {
        let next = BTreeMap::from([(0, 7)]);
        let start = BTreeMap::from([(0, 3), (1, 3)]);
        assert_eq!(start_offset(&next, &start, 0), Some(7));
        assert_eq!(start_offset(&next, &start, 1), Some(3));
        assert_eq!(start_offset(&next, &start, 2), None);
        let s = FluvioSource::new(spec("h:1"), "f".into()).start_at(start);
        assert_eq!(start_offset(&s.next, &s.start, 1), Some(3));
    }

    #[test]
    fn evicted_positions_are_fatal_unless_reading_from_the_log_start() {
        let mut s = FluvioSource::new(spec("h:1"), "f".into()).start_at(BTreeMap::from([(0, 5)]));
        let evicted = |offset| ErrorCode::OffsetEvicted {
            offset,
            next_available: 9,
        };
        let e = s.stopped((0, Some(evicted(5))));
        assert!(
            e.is_fatal() && e.to_string().contains("log starts at 9"),
            "{e}"
        );
        let e = s.stopped((1, Some(evicted(0))));
        assert!(!e.is_fatal(), "{e}");
        assert_eq!(start_offset(&s.next, &s.start, 1), Some(9));
        let past = ErrorCode::Other("start offset: 5 is greater than leo: 2".into());
        assert!(s.stopped((0, Some(past))).is_fatal());
        assert!(!s
            .stopped((0, Some(ErrorCode::Other("boom".into()))))
            .is_fatal());
        assert!(!s.stopped((0, None)).is_fatal());
    }

    #[test]
    fn partition_objects_are_matched_by_exact_topic() {
        assert_eq!(partition_of("events-3", "events"), Some(3));
        assert_eq!(partition_of("events-2-0", "events"), None);
        assert_eq!(partition_of("my-events-0", "events"), None);
        assert_eq!(partition_of("events-x", "events"), None);
    }

    #[test]
    fn a_closed_port_is_unreachable_in_time() {
        let mut s = FluvioSource::new(spec("127.0.0.1:1"), "fluvio://127.0.0.1:1/events".into());
        let began = Instant::now();
        let e = s.connect().expect_err("nothing listens there");
        assert!(!e.is_fatal(), "{e}");
        assert!(began.elapsed() <= REQUEST_TIMEOUT * 2 + Duration::from_secs(1));
        // Not connected: nothing to read, acknowledge or measure.
        assert!(s.ack(&[(0, BusPosition::Offset(1))]).is_ok());
        assert!(s.lag().is_empty());
        let polled = s
            .poll(10, Duration::from_millis(10))
            .expect("no partitions");
        assert!(polled.records.is_empty() && polled.empty.is_empty());

        let mut a = FluvioAppender::new(spec("127.0.0.1:1"), "fluvio://127.0.0.1:1/events".into());
        let e = a
            .append(&[b"{}".to_vec()])
            .expect_err("nothing listens there");
        assert!(!e.is_fatal(), "{e}");
        eprintln!("{e}");
    }

    #[test]
    #[ignore = "waits out the request timeout (20 s)"]
    fn a_silent_server_is_unreachable_in_time() {
        // Accepts connections (the kernel's backlog) and never answers.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let at = listener.local_addr().unwrap().to_string();
        let mut s = FluvioSource::new(spec(&at), format!("fluvio://{at}/events"));
        let began = Instant::now();
        let e = s.connect().expect_err("nobody answers");
        assert!(!e.is_fatal(), "{e}");
        assert!(began.elapsed() <= REQUEST_TIMEOUT * 2 + Duration::from_secs(1));
        eprintln!("{e} after {:?}", began.elapsed());
    }
}
