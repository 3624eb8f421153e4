//! How the live sources are doing, for ops: per source and partition,
//! records read, acknowledged and read again, lag and watermark; whether
//! each bus is reachable (`/health/ready`); redeliveries the state ignored.
//! Exposed on `/metrics` by a collector that reads the figures when scraped.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use foldhash::fast::FixedState;
use ideaflow_operators::redelivery::RecordDigest;
use ideaflow_sources::bus::in_flight::InFlight;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts};

#[derive(Clone, Debug, Default)]
struct PartitionStatus {
    lag: Option<u64>,
    /// Seconds since the Unix epoch.
    watermark: Option<i64>,
}

#[derive(Clone, Debug)]
struct BusStatus {
    name: String,
    reachable: bool,
    message: Option<String>,
    partitions: BTreeMap<u32, PartitionStatus>,
}

/// Redeliveries the idea state and the feedback operator ignored.
#[derive(Debug, Default)]
pub struct RepeatCounters {
    /// Signals delivered again that changed nothing.
    pub signal_repeats: AtomicU64,
    /// Signals polled again whose newer figures replaced the earlier ones.
    pub signal_repolls: AtomicU64,
    /// Envelopes whose `eventId` was taken before.
    pub envelope_repeats: AtomicU64,
    /// Where the records of the epochs not yet applied were read, to count
    /// the repeats by bus partition.
    origins: Mutex<RepeatOrigins>,
}

/// A bus source (its index) and partition.
type Origin = (usize, u32);

#[derive(Debug, Default)]
struct RepeatOrigins {
    /// Digest of a record read from a bus → its epoch and where it was read
    /// (the latest read, when read twice: most likely the repeat).
    read: HashMap<RecordDigest, (u64, Origin), FixedState>,
    ignored: BTreeMap<Origin, u64>,
}

impl RepeatCounters {
    fn origins(&self) -> MutexGuard<'_, RepeatOrigins> {
        self.origins.lock().expect("holders do not panic")
    }

    /// Bus records handed to the dataflow: (digest, epoch, source, partition).
    pub fn note_read(&self, records: &[(RecordDigest, u64, usize, u32)]) {
        if records.is_empty() {
            return;
        }
        let mut o = self.origins();
        for &(digest, epoch, source, partition) in records {
            o.read.insert(digest, (epoch, (source, partition)));
        }
    }

    /// Records the state refused as repeats: counted where they were read
    /// (records from files have no entry and count in the totals only).
    pub fn refused(&self, digests: &[RecordDigest]) {
        if digests.is_empty() {
            return;
        }
        let mut o = self.origins();
        for d in digests {
            if let Some((_, origin)) = o.read.remove(d) {
                *o.ignored.entry(origin).or_default() += 1;
            }
        }
    }

    /// Every epoch through `epoch` is applied: its records' entries go.
    pub fn applied_through(&self, epoch: u64) {
        let mut o = self.origins();
        if !o.read.is_empty() {
            o.read.retain(|_, (e, _)| *e > epoch);
        }
    }

    fn ignored_by_origin(&self) -> Vec<(Origin, u64)> {
        self.origins()
            .ignored
            .iter()
            .map(|(o, n)| (*o, *n))
            .collect()
    }
}

pub struct SourceStatus {
    buses: Mutex<Vec<BusStatus>>,
    pub in_flight: InFlight,
    pub repeats: Arc<RepeatCounters>,
    pipeline_watermark: AtomicU64,
    /// Signals the source handed to the dataflow, and those that reached the
    /// idea state (embedded and prepared): the difference is the embedder's
    /// queue, which back-pressure bounds (`pipeline.max_in_flight`).
    signals_read: AtomicU64,
    signals_through: std::sync::OnceLock<Arc<AtomicU64>>,
    read: IntCounterVec,
    acked: IntCounterVec,
    redelivered: IntCounterVec,
    ignored: IntCounterVec,
    ignored_by_source: IntCounterVec,
    lag: IntGaugeVec,
    watermark: IntGaugeVec,
    up: IntGaugeVec,
    in_flight_gauge: IntGauge,
    pipeline_watermark_gauge: IntGauge,
    embed_queue_gauge: IntGauge,
}

impl SourceStatus {
    pub fn new(in_flight: InFlight) -> Arc<Self> {
        let labels = &["source", "partition"];
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric")
        };
        Arc::new(SourceStatus {
            buses: Mutex::new(Vec::new()),
            in_flight,
            repeats: Arc::default(),
            pipeline_watermark: AtomicU64::new(0),
            signals_read: AtomicU64::new(0),
            signals_through: std::sync::OnceLock::new(),
            read: counter(
                "ideaflow_source_records_read_total",
                "Records read from a bus source, by source and partition",
                labels,
            ),
            acked: counter(
                "ideaflow_source_records_acked_total",
                "Records acknowledged to their bus after every sink committed their epoch",
                labels,
            ),
            redelivered: counter(
                "ideaflow_source_records_redelivered_total",
                "Records read that the bus had delivered before (read again after a restart)",
                labels,
            ),
            ignored: counter(
                "ideaflow_repeats_ignored_total",
                "Redelivered records the state took once: kind=signal (identical or older copy), repoll (newer figures replaced the earlier), envelope (eventId seen)",
                &["kind"],
            ),
            ignored_by_source: counter(
                "ideaflow_source_repeats_ignored_total",
                "Records read from a bus that the state ignored as repeats (an identical or older copy of a signal, an envelope whose eventId was taken), by source and partition",
                labels,
            ),
            lag: gauge(
                "ideaflow_source_lag_records",
                "Records behind the head of the partition, where the bus can say",
                labels,
            ),
            watermark: gauge(
                "ideaflow_source_watermark_seconds",
                "The partition's own watermark (largest event time less the allowed lateness), Unix seconds",
                labels,
            ),
            up: gauge(
                "ideaflow_source_up",
                "1 while the bus source is reachable, 0 while it is retried",
                &["source"],
            ),
            in_flight_gauge: IntGauge::new(
                "ideaflow_source_records_in_flight",
                "Records read from buses whose epochs are not committed yet",
            )
            .expect("valid metric"),
            pipeline_watermark_gauge: IntGauge::new(
                "ideaflow_watermark_seconds",
                "The pipeline's watermark (the minimum over active sources), Unix seconds",
            )
            .expect("valid metric"),
            embed_queue_gauge: IntGauge::new(
                "ideaflow_embed_queue_signals",
                "Signals read and not yet embedded and prepared (bounded by pipeline.max_in_flight plus one read batch)",
            )
            .expect("valid metric"),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Vec<BusStatus>> {
        self.buses.lock().expect("holders do not panic")
    }

    /// A bus source, named; it counts as unreachable until it connects.
    pub fn add_bus(&self, name: String) {
        self.lock().push(BusStatus {
            name,
            reachable: false,
            message: Some("connecting".into()),
            partitions: BTreeMap::new(),
        });
    }

    pub fn connected(&self, source: usize, partitions: &[u32]) {
        if let Some(b) = self.lock().get_mut(source) {
            b.reachable = true;
            b.message = None;
            for p in partitions {
                b.partitions.entry(*p).or_default();
            }
        }
    }

    pub fn unreachable(&self, source: usize, message: String) {
        if let Some(b) = self.lock().get_mut(source) {
            b.reachable = false;
            b.message = Some(message);
        }
    }

    pub fn set_lag(&self, source: usize, lag: &[(u32, Option<u64>)]) {
        if let Some(b) = self.lock().get_mut(source) {
            for (p, l) in lag {
                b.partitions.entry(*p).or_default().lag = *l;
            }
        }
    }

    pub fn set_watermark(&self, source: usize, partition: u32, watermark: Option<i64>) {
        if let Some(b) = self.lock().get_mut(source) {
            b.partitions.entry(partition).or_default().watermark = watermark;
        }
    }

    /// The dataflow's count of signals through embedding and preparation
    /// (set once, by the worker that drives the source).
    pub fn count_through(&self, through: Arc<AtomicU64>) {
        let _ = self.signals_through.set(through);
    }

    /// The source's count of signals handed to the dataflow.
    pub fn set_signals_read(&self, read: u64) {
        self.signals_read.store(read, Ordering::Relaxed);
    }

    /// Signals waiting for the embedder (and preparation).
    pub fn embed_queue(&self) -> u64 {
        let through = self
            .signals_through
            .get()
            .map_or(0, |t| t.load(Ordering::Relaxed));
        self.signals_read
            .load(Ordering::Relaxed)
            .saturating_sub(through)
    }

    pub fn set_pipeline_watermark(&self, secs: i64) {
        self.pipeline_watermark
            .store(secs.max(0) as u64, Ordering::Relaxed);
    }

    /// Records behind: read and not yet committed, plus those the buses
    /// say are not read yet.
    pub fn backlog(&self) -> u64 {
        let unread: u64 = self
            .lock()
            .iter()
            .flat_map(|b| b.partitions.values())
            .filter_map(|p| p.lag)
            .sum();
        self.in_flight.in_flight() + unread
    }

    /// Whether every bus source is reachable, and what each says.
    pub fn ready(&self) -> (bool, serde_json::Value) {
        let buses = self.lock();
        let all = buses.iter().all(|b| b.reachable);
        let detail = buses
            .iter()
            .map(|b| {
                (
                    b.name.clone(),
                    match &b.message {
                        Some(m) if !b.reachable => serde_json::Value::String(m.clone()),
                        _ => serde_json::Value::Bool(true),
                    },
                )
            })
            .collect::<serde_json::Map<_, _>>();
        (all, serde_json::Value::Object(detail))
    }

    fn counters(&self) -> [&IntCounterVec; 5] {
        [
            &self.read,
            &self.acked,
            &self.redelivered,
            &self.ignored,
            &self.ignored_by_source,
        ]
    }

    fn refresh(&self) {
        for (source, partition, counts) in self.in_flight.counts() {
            let p = partition.to_string();
            let labels = [source.as_str(), p.as_str()];
            for (vec, value) in [
                (&self.read, counts.read),
                (&self.acked, counts.acked),
                (&self.redelivered, counts.redelivered),
            ] {
                let c = vec.with_label_values(&labels);
                c.inc_by(value.saturating_sub(c.get()));
            }
        }
        for (kind, value) in [
            ("signal", &self.repeats.signal_repeats),
            ("repoll", &self.repeats.signal_repolls),
            ("envelope", &self.repeats.envelope_repeats),
        ] {
            let c = self.ignored.with_label_values(&[kind]);
            c.inc_by(value.load(Ordering::Relaxed).saturating_sub(c.get()));
        }
        let buses = self.lock();
        for ((source, partition), n) in self.repeats.ignored_by_origin() {
            let Some(b) = buses.get(source) else { continue };
            let p = partition.to_string();
            let c = self
                .ignored_by_source
                .with_label_values(&[b.name.as_str(), p.as_str()]);
            c.inc_by(n.saturating_sub(c.get()));
        }
        for b in buses.iter() {
            self.up
                .with_label_values(&[b.name.as_str()])
                .set(i64::from(b.reachable));
            for (p, s) in &b.partitions {
                let p = p.to_string();
                let labels = [b.name.as_str(), p.as_str()];
                // An unknown lag (a Redis group resumed mid-stream, until it
                // reaches the end) is no series at all, not the last figure.
                match s.lag {
                    Some(l) => self.lag.with_label_values(&labels).set(l as i64),
                    None => {
                        let _ = self.lag.remove_label_values(&labels);
                    }
                }
                if let Some(w) = s.watermark {
                    self.watermark.with_label_values(&labels).set(w);
                }
            }
        }
        self.in_flight_gauge.set(self.in_flight.in_flight() as i64);
        self.pipeline_watermark_gauge
            .set(self.pipeline_watermark.load(Ordering::Relaxed) as i64);
        self.embed_queue_gauge.set(self.embed_queue() as i64);
    }
}

/// Registered in the metrics registry; figures are read when scraped.
pub struct StatusCollector(pub Arc<SourceStatus>);

impl Collector for StatusCollector {
    fn desc(&self) -> Vec<&Desc> {
        let s = &self.0;
        let mut d = Vec::new();
        for c in s.counters() {
            d.extend(c.desc());
        }
        for g in [&s.lag, &s.watermark, &s.up] {
            d.extend(g.desc());
        }
        d.extend(s.in_flight_gauge.desc());
        d.extend(s.pipeline_watermark_gauge.desc());
        d.extend(s.embed_queue_gauge.desc());
        d
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let s = &self.0;
        s.refresh();
        let mut m = Vec::new();
        for c in s.counters() {
            m.extend(c.collect());
        }
        for g in [&s.lag, &s.watermark, &s.up] {
            m.extend(g.collect());
        }
        m.extend(s.in_flight_gauge.collect());
        m.extend(s.pipeline_watermark_gauge.collect());
        m.extend(s.embed_queue_gauge.collect());
        m
    }
}
