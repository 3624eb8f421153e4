//! Event-time progress: the watermark trails the largest event time seen by
//! the allowed lateness. Anything behind it belongs to windows already closed.

use chrono::{DateTime, Duration, Utc};

#[derive(Clone, Debug)]
pub struct Watermark {
    allowed_lateness: Duration,
    max_seen: Option<DateTime<Utc>>,
}

/// An event behind the watermark, and by how much.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Late {
    pub watermark: DateTime<Utc>,
    pub behind: Duration,
}

impl Watermark {
    pub fn new(allowed_lateness: Duration) -> Self {
        Watermark {
            allowed_lateness,
            max_seen: None,
        }
    }

    /// Admits an event at `time`, or reports it late. Admitted events may move the watermark.
    pub fn observe(&mut self, time: DateTime<Utc>) -> Result<(), Late> {
        if let Some(wm) = self.current() {
            if time < wm {
                return Err(Late {
                    watermark: wm,
                    behind: wm - time,
                });
            }
        }
        if self.max_seen.is_none_or(|m| time > m) {
            self.max_seen = Some(time);
        }
        Ok(())
    }

    /// The current watermark: no event earlier than this is admitted any more.
    pub fn current(&self) -> Option<DateTime<Utc>> {
        self.max_seen.map(|m| m - self.allowed_lateness)
    }

    pub fn max_seen(&self) -> Option<DateTime<Utc>> {
        self.max_seen
    }

    /// Puts back the largest event time seen (a source resuming where a
    /// checkpoint says): what follows is judged exactly as it was then.
    pub fn restore(&mut self, max_seen: Option<DateTime<Utc>>) {
        self.max_seen = max_seen;
    }
}

/// A source's partition: (source index, partition).
pub type PartKey = (usize, u32);

/// The watermarks of several live sources and their partitions, and the
/// pipeline's: the minimum over the partitions that are neither ended nor
/// idle. A partition is idle once its reads have come back empty for
/// `idle_after` (processing time): it then stops holding the pipeline back;
/// when every partition is idle the pipeline's watermark follows the wall
/// clock (now − allowed lateness), so quiet hours still complete epochs.
/// A reader held back by back-pressure never reads empty, so it never looks
/// idle. The pipeline's watermark never moves backwards.
#[derive(Clone, Debug)]
pub struct SourceWatermarks {
    allowed_lateness: Duration,
    idle_after: std::time::Duration,
    parts: std::collections::BTreeMap<PartKey, Part>,
    pipeline: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, Default)]
struct Part {
    /// Its own watermark: its largest event time minus the allowed lateness.
    own: Option<DateTime<Utc>>,
    /// When its reads started coming back empty.
    empty_since: Option<std::time::Instant>,
    ended: bool,
}

impl SourceWatermarks {
    pub fn new(allowed_lateness: Duration, idle_after: std::time::Duration) -> Self {
        SourceWatermarks {
            allowed_lateness,
            idle_after,
            parts: Default::default(),
            pipeline: None,
        }
    }

    /// A partition now known: it holds the watermark until it has records
    /// or is idle.
    pub fn add(&mut self, key: PartKey) {
        self.parts.entry(key).or_default();
    }

    /// The partition ended (a file chain at its end): it holds nothing back.
    pub fn end(&mut self, key: PartKey) {
        self.parts.entry(key).or_default().ended = true;
    }

    /// Records arrived from the partition.
    pub fn records(&mut self, key: PartKey) {
        self.parts.entry(key).or_default().empty_since = None;
    }

    /// A read of the partition came back empty at `now`.
    pub fn empty(&mut self, key: PartKey, now: std::time::Instant) {
        self.parts
            .entry(key)
            .or_default()
            .empty_since
            .get_or_insert(now);
    }

    /// Sets the partition's own watermark where its reader judges lateness
    /// itself (the file chain).
    pub fn set_own(&mut self, key: PartKey, watermark: Option<DateTime<Utc>>) {
        let part = self.parts.entry(key).or_default();
        if watermark > part.own {
            part.own = watermark;
        }
    }

    /// Admits an event of the partition at `time`, or reports it late: behind
    /// its own watermark or behind the pipeline's (whose epochs may be complete).
    pub fn observe(&mut self, key: PartKey, time: DateTime<Utc>) -> Result<(), Late> {
        let part = self.parts.entry(key).or_default();
        if let Some(limit) = part.own.max(self.pipeline) {
            if time < limit {
                return Err(Late {
                    watermark: limit,
                    behind: limit - time,
                });
            }
        }
        let own = time - self.allowed_lateness;
        if part.own.is_none_or(|o| own > o) {
            part.own = Some(own);
        }
        Ok(())
    }

    fn idle(&self, part: &Part, now: std::time::Instant) -> bool {
        part.empty_since
            .is_some_and(|since| now.duration_since(since) >= self.idle_after)
    }

    /// Whether every partition has ended or is idle (and there is one).
    pub fn all_quiet(&self, now: std::time::Instant) -> bool {
        self.parts.values().all(|p| p.ended || self.idle(p, now))
    }

    /// The pipeline's watermark at `now` (processing time) and `wall` (the
    /// wall clock): the minimum of the active partitions' own, or the wall
    /// clock less the allowed lateness when every partition that has not
    /// ended is idle.
    pub fn advance(
        &mut self,
        now: std::time::Instant,
        wall: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let mut active = self
            .parts
            .values()
            .filter(|p| !p.ended && !self.idle(p, now))
            .peekable();
        let candidate = if active.peek().is_some() {
            active.map(|p| p.own).min().flatten()
        } else if self.parts.values().any(|p| !p.ended) {
            Some(wall - self.allowed_lateness)
        } else {
            None
        };
        if candidate > self.pipeline {
            self.pipeline = candidate;
        }
        self.pipeline
    }

    pub fn current(&self) -> Option<DateTime<Utc>> {
        self.pipeline
    }

    /// A partition's own watermark.
    pub fn own(&self, key: PartKey) -> Option<DateTime<Utc>> {
        self.parts.get(&key).and_then(|p| p.own)
    }
}

/// Event time as a timely timestamp: whole seconds since the Unix epoch, rounded
/// down to `epoch_secs`, so records of one epoch share a timestamp and
/// differential consolidates them together. Times before 1970 map to 0.
pub fn epoch_of(time: DateTime<Utc>, epoch_secs: u64) -> u64 {
    let secs = time.timestamp().max(0) as u64;
    let e = epoch_secs.max(1);
    secs / e * e
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap()
    }

    #[test]
    fn admits_within_lateness_and_rejects_behind() {
        let mut wm = Watermark::new(Duration::seconds(60));
        assert!(wm.observe(t(100)).is_ok());
        assert!(wm.observe(t(50)).is_ok()); // 50 s late: allowed
        assert!(wm.observe(t(200)).is_ok());
        let late = wm.observe(t(100)).unwrap_err();
        assert_eq!(late.behind, Duration::seconds(40));
        assert_eq!(wm.current(), Some(t(140)));
    }

    #[test]
    fn the_pipeline_follows_the_slowest_active_partition() {
        use std::time::{Duration as Std, Instant};
        let mut wms = SourceWatermarks::new(Duration::seconds(60), Std::from_secs(5));
        let start = Instant::now();
        wms.add((0, 0));
        wms.add((0, 1));
        assert!(wms.observe((0, 0), t(1000)).is_ok());
        // Partition 1 has no record yet: it holds the watermark.
        assert_eq!(wms.advance(start, t(5000)), None);
        assert!(wms.observe((0, 1), t(500)).is_ok());
        assert_eq!(wms.advance(start, t(5000)), Some(t(440)));
        // Behind its own watermark, or behind the pipeline's: late.
        assert!(wms.observe((0, 0), t(930)).is_err());
        assert!(wms.observe((0, 1), t(450)).is_ok());
        assert!(wms.observe((0, 1), t(430)).is_err());
        // Partition 1 reads empty for 5 s: it stops holding the watermark.
        wms.empty((0, 1), start);
        assert_eq!(
            wms.advance(start + Std::from_secs(4), t(5000)),
            Some(t(440))
        );
        assert_eq!(
            wms.advance(start + Std::from_secs(5), t(5000)),
            Some(t(940))
        );
        assert!(!wms.all_quiet(start + Std::from_secs(5)));
        // Every partition idle: the wall clock less the lateness.
        wms.empty((0, 0), start + Std::from_secs(5));
        assert!(wms.all_quiet(start + Std::from_secs(10)));
        assert_eq!(
            wms.advance(start + Std::from_secs(10), t(5000)),
            Some(t(4940))
        );
        // Records again: the watermark does not move back.
        wms.records((0, 1));
        assert_eq!(
            wms.advance(start + Std::from_secs(11), t(5001)),
            Some(t(4940))
        );
        assert!(wms.observe((0, 1), t(4000)).is_err());
    }

    #[test]
    fn ended_partitions_hold_nothing() {
        let mut wms =
            SourceWatermarks::new(Duration::seconds(60), std::time::Duration::from_secs(5));
        let now = std::time::Instant::now();
        wms.set_own((0, 0), Some(t(100)));
        wms.add((1, 0));
        assert!(wms.observe((1, 0), t(400)).is_ok());
        assert_eq!(wms.advance(now, t(9000)), Some(t(100)));
        wms.end((0, 0));
        assert_eq!(wms.advance(now, t(9000)), Some(t(340)));
    }

    #[test]
    fn epochs_round_down() {
        assert_eq!(epoch_of(t(0), 60) % 60, 0);
        assert_eq!(
            epoch_of(t(59), 60),
            epoch_of(t(0), 60)
                + if (1_700_000_000 % 60) + 59 >= 60 {
                    60
                } else {
                    0
                }
        );
    }
}
