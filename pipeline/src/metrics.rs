//! Prometheus metrics (served at `/metrics`). Names follow seed 004 where it
//! names them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ideaflow_operators::views::{Change, ViewRow};
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry,
};

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub epochs: IntCounter,
    pub changes: IntCounterVec,
    pub epoch_write_seconds: Histogram,
    /// Epochs folded into each write (1 while the sinks keep up).
    pub epochs_per_write: Histogram,
    /// Changes the dataflow completed that wait for the sinks.
    pub sink_pending_changes: IntGauge,
    /// Failed tries to write a batch to Postgres or Redis (each is retried).
    pub sink_write_failures: IntCounter,
    /// Times Redis came back without its data and was filled again.
    pub redis_refills: IntCounter,
    pub http_requests: IntCounterVec,
    pub http_request_seconds: HistogramVec,
    /// Seed 004 §7: first signal's captured_at to listing.published.
    pub signal_to_publish: Histogram,
    pub sla_alerts: IntCounter,
    /// Prometheus wants base units: seconds, not hours.
    pub sla_average_seconds: Gauge,
    /// How long each checkpoint paused the dataflow (encoding the state).
    pub checkpoint_pause_seconds: Histogram,
    pub checkpoint_bytes: IntGauge,
    pub checkpoints_written: IntCounter,
    /// Every epoch starting before this is in the last checkpoint written.
    pub checkpoint_epoch: IntGauge,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let epochs = IntCounter::new(
            "ideaflow_epochs_committed_total",
            "Epochs written to every sink",
        )
        .expect("valid metric");
        let changes = IntCounterVec::new(
            Opts::new(
                "ideaflow_view_changes_total",
                "Rows upserted or deleted, by view",
            ),
            &["view"],
        )
        .expect("valid metric");
        let epoch_write_seconds = Histogram::with_opts(HistogramOpts::new(
            "ideaflow_epoch_write_seconds",
            "Time to write one batch of epochs to Postgres and Redis (one transaction each)",
        ))
        .expect("valid metric");
        let epochs_per_write = Histogram::with_opts(
            HistogramOpts::new(
                "ideaflow_epochs_per_write",
                "Epochs written together in one transaction per sink (more when the sinks fall behind)",
            )
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 64.0, 256.0, 1024.0, 4096.0]),
        )
        .expect("valid metric");
        let sink_pending_changes = IntGauge::new(
            "ideaflow_sink_pending_changes",
            "Changes completed by the dataflow and waiting for Postgres and Redis",
        )
        .expect("valid metric");
        let sink_write_failures = IntCounter::new(
            "ideaflow_sink_write_failures_total",
            "Failed tries to write a batch to Postgres or Redis (retried for pipeline.sink_retry_secs)",
        )
        .expect("valid metric");
        let redis_refills = IntCounter::new(
            "ideaflow_redis_refills_total",
            "Times Redis came back without its data (a restart without persistence) and every view it holds was written again from Postgres",
        )
        .expect("valid metric");
        let http_requests = IntCounterVec::new(
            Opts::new(
                "ideaflow_http_requests_total",
                "HTTP answers by route (the route's pattern; unmatched for unknown paths) and status",
            ),
            &["route", "status"],
        )
        .expect("valid metric");
        let http_request_seconds = HistogramVec::new(
            HistogramOpts::new(
                "ideaflow_http_request_duration_seconds",
                "Time to answer an HTTP request (to its response head; a stream's lifetime is not counted), by route",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["route"],
        )
        .expect("valid metric");
        let signal_to_publish = Histogram::with_opts(
            HistogramOpts::new(
                "signal_to_publish_seconds",
                "Time from an idea's first signal to its listing being published",
            )
            .buckets(
                [0.5, 1.0, 2.0, 4.0, 8.0, 12.0, 24.0, 48.0, 96.0]
                    .iter()
                    .map(|h| h * 3600.0)
                    .collect(),
            ),
        )
        .expect("valid metric");
        let sla_alerts = IntCounter::new(
            "ideaflow_sla_alerts_total",
            "Time-to-publish SLA alerts raised (SLA_THRESHOLD_HOURS breached)",
        )
        .expect("valid metric");
        let sla_average_seconds = Gauge::new(
            "ideaflow_sla_average_seconds",
            "Average time from first signal to listing over the SLA window at the last alert",
        )
        .expect("valid metric");
        let checkpoint_pause_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "ideaflow_checkpoint_pause_seconds",
                "Time the dataflow paused while a checkpoint's state was encoded",
            )
            .buckets(vec![0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
        )
        .expect("valid metric");
        let checkpoint_bytes = IntGauge::new(
            "ideaflow_checkpoint_bytes",
            "Size of the last checkpoint written",
        )
        .expect("valid metric");
        let checkpoints_written = IntCounter::new(
            "ideaflow_checkpoints_written_total",
            "Checkpoints written (pipeline.checkpoint_dir)",
        )
        .expect("valid metric");
        let checkpoint_epoch = IntGauge::new(
            "ideaflow_checkpoint_epoch_seconds",
            "Every epoch starting before this (event time, seconds) is in the last checkpoint written",
        )
        .expect("valid metric");
        for c in [
            Box::new(epochs.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(checkpoint_pause_seconds.clone()),
            Box::new(checkpoint_bytes.clone()),
            Box::new(checkpoints_written.clone()),
            Box::new(checkpoint_epoch.clone()),
            Box::new(changes.clone()),
            Box::new(epoch_write_seconds.clone()),
            Box::new(epochs_per_write.clone()),
            Box::new(sink_pending_changes.clone()),
            Box::new(sink_write_failures.clone()),
            Box::new(redis_refills.clone()),
            Box::new(http_requests.clone()),
            Box::new(http_request_seconds.clone()),
            Box::new(signal_to_publish.clone()),
            Box::new(sla_alerts.clone()),
            Box::new(sla_average_seconds.clone()),
        ] {
            registry.register(c).expect("unique metric names");
        }
        Metrics {
            registry,
            epochs,
            changes,
            epoch_write_seconds,
            epochs_per_write,
            sink_pending_changes,
            sink_write_failures,
            redis_refills,
            http_requests,
            http_request_seconds,
            signal_to_publish,
            sla_alerts,
            sla_average_seconds,
            checkpoint_pause_seconds,
            checkpoint_bytes,
            checkpoints_written,
            checkpoint_epoch,
        }
    }

    /// One batch of `epochs` epochs written (one transaction per sink), and
    /// its changes (at most one per key).
    pub fn observe_write(&self, epochs: usize, changes: &[Change], seconds: f64) {
        self.epochs.inc_by(epochs as u64);
        self.epochs_per_write.observe(epochs as f64);
        self.epoch_write_seconds.observe(seconds);
        for c in changes {
            let view = match &c.row {
                Some(ViewRow::Idea(_)) => "ideas",
                Some(ViewRow::Score(_)) => "scores",
                Some(ViewRow::Signal(_)) => "signals",
                Some(ViewRow::Centroid(_)) => "centroids",
                Some(ViewRow::TopicCount(_)) => "topic_counts",
                Some(ViewRow::DistinctCount(_)) => "distinct_counts",
                Some(ViewRow::Window(_)) => "windows",
                Some(ViewRow::AbResult(_)) => "ab_results",
                Some(ViewRow::Allocation(_)) => "allocations",
                Some(ViewRow::Weights(_)) => "weights_history",
                Some(ViewRow::DeadLetter(..)) => "dead_letters",
                Some(ViewRow::Publish(p)) => {
                    self.signal_to_publish.observe(p.seconds);
                    "publish_latencies"
                }
                Some(ViewRow::Anchor(_)) => "anchors_history",
                Some(ViewRow::SlaAlert(a)) => {
                    self.sla_alerts.inc();
                    self.sla_average_seconds.set(a.average_hours * 3600.0);
                    tracing::warn!(
                        average_hours = format!("{:.2}", a.average_hours),
                        threshold_hours = a.threshold_hours,
                        listings = a.listings,
                        at = %a.at,
                        "SLA alert: average time from first signal to listing exceeds SLA_THRESHOLD_HOURS"
                    );
                    "sla_alerts"
                }
                None => "deletes",
            };
            self.changes.with_label_values(&[view]).inc();
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let encoder = prometheus::TextEncoder::new();
        encoder
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }
}

impl Metrics {
    /// Exposes `value`, owned and updated elsewhere, as the gauge `name`,
    /// read when scraped.
    pub fn register_gauge_of(&self, name: &str, help: &str, value: Arc<AtomicU64>) {
        let collector = match IntGauge::new(name, help) {
            Ok(gauge) => AtomicGauge { gauge, value },
            Err(e) => return tracing::warn!(error = %e, name, "metric not registered"),
        };
        if let Err(e) = self.registry.register(Box::new(collector)) {
            tracing::debug!(error = %e, name, "metric already registered");
        }
    }
}

/// A gauge whose value is an atomic someone else keeps.
struct AtomicGauge {
    gauge: IntGauge,
    value: Arc<AtomicU64>,
}

impl Collector for AtomicGauge {
    fn desc(&self) -> Vec<&Desc> {
        self.gauge.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let v = self.value.load(Ordering::Relaxed);
        self.gauge.set(i64::try_from(v).unwrap_or(i64::MAX));
        self.gauge.collect()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
