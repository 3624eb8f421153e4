//! Replays event time at a chosen speed against the wall clock.

use std::str::FromStr;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Speed {
    /// As fast as the pipeline takes it.
    Max,
    /// Event time runs this many times faster than wall time (1.0 = real time).
    Multiplier(f64),
}

impl FromStr for Speed {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("max") {
            return Ok(Speed::Max);
        }
        let x: f64 = s.trim_end_matches(['x', 'X']).parse().map_err(|_| {
            format!("speed {s:?} is neither `max` nor a positive multiplier such as 1, 60 or 3600")
        })?;
        if x.is_finite() && x > 0.0 {
            Ok(Speed::Multiplier(x))
        } else {
            Err(format!(
                "speed must be `max` or a positive multiplier, got {s}"
            ))
        }
    }
}

pub struct Pacer {
    speed: Speed,
    origin: Option<(DateTime<Utc>, Instant)>,
}

impl Pacer {
    pub fn new(speed: Speed) -> Self {
        Pacer {
            speed,
            origin: None,
        }
    }

    pub fn speed(&self) -> Speed {
        self.speed
    }

    /// Sleeps until `event_time` is due. Out-of-order events never sleep.
    pub fn pace(&mut self, event_time: DateTime<Utc>) {
        let Speed::Multiplier(x) = self.speed else {
            return;
        };
        let (t0, w0) = *self.origin.get_or_insert((event_time, Instant::now()));
        let ahead_ms = (event_time - t0).num_milliseconds();
        if ahead_ms <= 0 {
            return;
        }
        let due = w0 + Duration::from_secs_f64(ahead_ms as f64 / 1000.0 / x);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
    }
}
