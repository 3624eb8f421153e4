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
