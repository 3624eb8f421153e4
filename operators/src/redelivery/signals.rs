//! Signals taken once per `(source, id)`: a signal delivered again is a
//! re-poll. The later capture wins (at equal capture times, the larger
//! engagement), so an idea's engagement is the sum over its distinct signals
//! of their latest figures, whatever order the polls arrive in.

use std::collections::{HashMap, VecDeque};

use foldhash::fast::FixedState;
use sha2::{Digest, Sha256};

use crate::views::DedupeKind;
use crate::{Engagement, Source};

/// A 128-bit digest of `(source, id)`: every entry the same size, whatever
/// the producer's ids look like.
pub type SignalKey = u128;

pub fn signal_key(source: Source, id: &str) -> SignalKey {
    let mut h = Sha256::new();
    h.update(source.as_str().as_bytes());
    h.update([0]);
    h.update(id.as_bytes());
    let d = h.finalize();
    u128::from_le_bytes(d[..16].try_into().expect("32 bytes"))
}

/// What the idea state took of a signal: enough to replace its figures and
/// to write its row again.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SeenSignal {
    /// The idea it went into, as [`crate::idea::IdeaId::bits`].
    pub idea: u128,
    /// The capture (µs) of the figures taken.
    pub captured_at: i64,
    pub engagement: Engagement,
    pub dedupe: DedupeKind,
    pub similarity: Option<f32>,
    pub content_hash: [u8; 16],
}

impl SeenSignal {
    /// Whether a poll captured at `captured_at` with `engagement` replaces
    /// these figures: a later capture does, and at the same capture the
    /// larger figures (so that the result does not depend on which of two
    /// such polls came first).
    pub fn replaced_by(&self, captured_at: i64, engagement: &Engagement) -> bool {
        let key = |e: &Engagement| (e.views, e.likes, e.comments, e.shares);
        (captured_at, key(engagement)) > (self.captured_at, key(&self.engagement))
    }
}

/// The signals taken within the horizon (event time after their latest capture).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SeenSignals {
    horizon_secs: i64,
    seen: HashMap<SignalKey, SeenSignal, FixedState>,
    /// (expiry in seconds, key) in the order taken or re-polled; an entry
    /// whose signal was polled again since is skipped when its turn comes.
    expiry: VecDeque<(i64, SignalKey)>,
}

impl SeenSignals {
    /// `horizon_secs` ≤ 0 remembers nothing: every delivery is a new signal.
    pub fn new(horizon_secs: i64) -> Self {
        SeenSignals {
            horizon_secs,
            seen: HashMap::with_hasher(FixedState::with_seed(0x5ee2)),
            expiry: VecDeque::new(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.horizon_secs > 0
    }

    pub fn get(&self, key: SignalKey) -> Option<&SeenSignal> {
        self.seen.get(&key)
    }

    /// Records (or replaces) what was taken of a signal.
    pub fn insert(&mut self, key: SignalKey, seen: SeenSignal) {
        if !self.enabled() {
            return;
        }
        let expires = seen.captured_at.div_euclid(1_000_000) + self.horizon_secs;
        self.seen.insert(key, seen);
        self.expiry.push_back((expires, key));
    }

    pub fn remove(&mut self, key: SignalKey) {
        self.seen.remove(&key);
    }

    /// Lets go of the signals last captured a horizon or more before
    /// `watermark` (seconds). Entries are pushed in epoch order, so expiries
    /// are nearly sorted; an entry out of order waits for the ones before it.
    pub fn expire(&mut self, watermark: i64) {
        while let Some(&(expires, key)) = self.expiry.front() {
            if expires > watermark {
                break;
            }
            self.expiry.pop_front();
            let stale = self.seen.get(&key).is_some_and(|s| {
                s.captured_at.div_euclid(1_000_000) + self.horizon_secs <= watermark
            });
            if stale {
                self.seen.remove(&key);
            }
        }
    }

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

    fn seen(captured_at: i64, views: u64) -> SeenSignal {
        SeenSignal {
            idea: 1,
            captured_at,
            engagement: Engagement {
                views,
                ..Engagement::default()
            },
            dedupe: DedupeKind::New,
            similarity: None,
            content_hash: [0; 16],
        }
    }

    #[test]
    fn later_capture_or_larger_figures_win() {
        let s = seen(10, 5);
        let e = |v| Engagement {
            views: v,
            ..Engagement::default()
        };
        assert!(s.replaced_by(11, &e(0)));
        assert!(s.replaced_by(10, &e(6)));
        assert!(
            !s.replaced_by(10, &e(5)),
            "an identical copy changes nothing"
        );
        assert!(!s.replaced_by(9, &e(100)), "an older poll changes nothing");
    }

    #[test]
    fn keys_tell_sources_apart() {
        assert_ne!(
            signal_key(Source::Reddit, "abc"),
            signal_key(Source::Youtube, "abc")
        );
        assert_eq!(
            signal_key(Source::Reddit, "abc"),
            signal_key(Source::Reddit, "abc")
        );
    }

    #[test]
    fn entries_age_out_after_their_latest_capture() {
        let mut set = SeenSignals::new(100);
        set.insert(1, seen(0, 1));
        set.insert(2, seen(50_000_000, 1));
        // Re-polled at 90 s: it now lives until 190 s.
        set.insert(1, seen(90_000_000, 2));
        set.expire(100);
        assert!(set.get(1).is_some());
        set.expire(150);
        assert!(set.get(2).is_none());
        assert!(set.get(1).is_some());
        set.expire(190);
        assert!(set.is_empty());
    }
}
