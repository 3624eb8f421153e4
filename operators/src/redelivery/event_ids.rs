//! Envelopes taken once per `eventId` within a horizon.

use std::collections::{HashMap, VecDeque};

use foldhash::fast::FixedState;
use sha2::{Digest, Sha256};

use super::{RecordDigest, RepeatLog};

/// The `eventId`s taken within the horizon, by a 128-bit digest (an id is
/// any string a producer chose; the digest keeps every entry the same size).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct EventIdsSeen {
    horizon_secs: i64,
    /// Digest → the event time it was taken at.
    seen: HashMap<u128, i64, FixedState>,
    /// (event time, digest) in the order taken, to age entries out.
    order: VecDeque<(i64, u128)>,
    repeats: u64,
    /// What a run logs is its own: a resumed state starts with the log off.
    #[serde(skip)]
    log: RepeatLog,
}

pub(super) fn digest(event_id: &str) -> u128 {
    let d = Sha256::digest(event_id.as_bytes());
    u128::from_le_bytes(d[..16].try_into().expect("32 bytes"))
}

impl EventIdsSeen {
    /// `horizon_secs` ≤ 0 takes every envelope (no redelivery protection).
    pub fn new(horizon_secs: i64) -> Self {
        EventIdsSeen {
            horizon_secs,
            seen: HashMap::with_hasher(FixedState::with_seed(0x5ee1)),
            order: VecDeque::new(),
            repeats: 0,
            log: RepeatLog::default(),
        }
    }

    pub fn horizon_secs(&self) -> i64 {
        self.horizon_secs
    }

    /// Whether the envelope with `event_id` at event time `time` is taken:
    /// false when the same id was taken within the horizon (a redelivery).
    /// Call in the order the events are applied.
    pub fn take(&mut self, event_id: &str, time: i64) -> bool {
        if self.horizon_secs <= 0 {
            return true;
        }
        let key = digest(event_id);
        if let Some(&at) = self.seen.get(&key) {
            if time - at < self.horizon_secs {
                self.repeats += 1;
                self.log.refused(RecordDigest::Envelope(key));
                return false;
            }
        }
        self.seen.insert(key, time);
        self.order.push_back((time, key));
        true
    }

    /// Lets go of the ids taken a horizon or more before `watermark`.
    pub fn expire(&mut self, watermark: i64) {
        while let Some(&(at, key)) = self.order.front() {
            if watermark - at < self.horizon_secs {
                break;
            }
            self.order.pop_front();
            // Not if it was taken again later (a later entry is its own).
            if self.seen.get(&key) == Some(&at) {
                self.seen.remove(&key);
            }
        }
    }

    /// Logs the digests of refused envelopes for [`Self::take_refused`].
    pub fn log_refused(&mut self) {
        self.log.switch_on();
    }

    /// The envelopes refused since the last call (when logging).
    pub fn take_refused(&mut self) -> Vec<RecordDigest> {
        self.log.take()
    }

    /// Envelopes refused as repeats so far.
    pub fn repeats(&self) -> u64 {
        self.repeats
    }

    /// Ids held now.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_taken_once_within_the_horizon() {
        let mut seen = EventIdsSeen::new(100);
        assert!(seen.take("a", 10));
        assert!(!seen.take("a", 10));
        assert!(!seen.take("a", 109));
        assert!(seen.take("b", 20));
        assert_eq!(seen.repeats(), 2);
        // Past the horizon the same id is a new event.
        assert!(seen.take("a", 110));
    }

    #[test]
    fn entries_age_out() {
        let mut seen = EventIdsSeen::new(100);
        for i in 0..50 {
            assert!(seen.take(&format!("e{i}"), i));
        }
        seen.expire(120);
        assert_eq!(seen.len(), 29);
        seen.expire(1_000);
        assert!(seen.is_empty());
        assert!(seen.take("e1", 1_000));
    }

    #[test]
    fn no_horizon_takes_everything() {
        let mut seen = EventIdsSeen::new(0);
        assert!(seen.take("a", 1));
        assert!(seen.take("a", 1));
        assert!(seen.is_empty());
    }
}
